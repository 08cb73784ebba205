// `npm test`: build, type-check everything (sources and tests), lint, run vitest, and close with one plain
// line `N passed, N failed, N skipped` that CI reads. Exits non-zero on a type error, a lint error or a failing
// test (each failed tsc or eslint run counts as one failed test in that line).
import { spawnSync } from "node:child_process"
import { existsSync, readFileSync, rmSync } from "node:fs"

const run = (cmd, args) => spawnSync(cmd, args, { stdio: "inherit", env: process.env }).status ?? 1
const entry = { tsc: "typescript/bin/tsc", eslint: "eslint/bin/eslint.js", vitest: "vitest/vitest.mjs" }
// Run the tools with this very Node (the project's Node 24), not whatever `node` is first on PATH.
const npx = ([tool, ...args]) =>
  run(process.execPath, [new URL(`../node_modules/${entry[tool]}`, import.meta.url).pathname, ...args])

const startedAt = Date.now()
const extra = process.argv.slice(2)
const results = new URL("../.test-results.json", import.meta.url).pathname

let typeErrors = 0
if (npx(["tsc", "-p", "tsconfig.build.json"]) !== 0) typeErrors++
// the bundled CLI in dist/cli (what `cara` runs and the integration tests start), from the build above
else if (run(process.execPath, [new URL("./bundle.mjs", import.meta.url).pathname]) !== 0) typeErrors++
if (npx(["tsc", "-p", "tsconfig.json", "--noEmit"]) !== 0) typeErrors++

const lintStartedAt = Date.now()
const lintFailed = npx(["eslint", "."]) !== 0
console.log(`eslint took ${Math.round((Date.now() - lintStartedAt) / 1000)} s`)

rmSync(results, { force: true })
const vitestStatus = npx([
  "vitest",
  "run",
  "--reporter=default",
  "--reporter=json",
  `--outputFile.json=${results}`,
  ...extra
])

let passed = 0, failed = 0, skipped = 0
if (existsSync(results)) {
  const report = JSON.parse(readFileSync(results, "utf8"))
  passed = report.numPassedTests ?? 0
  failed = report.numFailedTests ?? 0
  skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0)
  // A file that failed to load (syntax error, failing beforeAll) has no test results: count it as failed.
  for (const file of report.testResults ?? []) {
    if (file.status === "failed" && (file.assertionResults ?? []).every((a) => a.status !== "failed")) failed++
  }
} else if (vitestStatus !== 0) {
  failed++
}
if (typeErrors > 0) {
  console.error(`type check failed (${typeErrors} tsc run${typeErrors > 1 ? "s" : ""} reported errors)`)
  failed += typeErrors
}
if (lintFailed) {
  console.error("lint failed (eslint reported errors; `npx eslint --fix .` repairs the formatting ones)")
  failed++
}
console.log(`test run took ${Math.round((Date.now() - startedAt) / 1000)} s`)
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
process.exit(failed > 0 || vitestStatus !== 0 ? 1 : 0)
