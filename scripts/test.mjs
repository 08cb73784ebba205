// `npm test`: build, type-check everything (sources and tests) and lint (the three side by side), run vitest,
// and close with one plain line `N passed, N failed, N skipped` that CI reads. Exits non-zero on a type error, a lint error or a failing
// test (each failed tsc or eslint run counts as one failed test in that line).
import { spawn, spawnSync } from "node:child_process"
import { existsSync, readFileSync, rmSync } from "node:fs"

const run = (cmd, args) => spawnSync(cmd, args, { stdio: "inherit", env: process.env }).status ?? 1
const entry = { tsc: "typescript/bin/tsc", eslint: "eslint/bin/eslint.js", vitest: "vitest/vitest.mjs" }
// Run the tools with this very Node (the project's Node 24), not whatever `node` is first on PATH.
const tool = (
  [name, ...args]
) => [process.execPath, [new URL(`../node_modules/${entry[name]}`, import.meta.url).pathname, ...args]]
const npx = (argv) => run(...tool(argv))

/**
 * Runs a child with its output held back and printed in one piece when it ends (the checks below run side by
 * side, and interleaved lines would be unreadable); resolves to its exit status.
 */
const runQuiet = (label, [cmd, args]) =>
  new Promise((resolve) => {
    const startedAt = Date.now()
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: process.env })
    const out = []
    child.stdout.on("data", (d) => out.push(d))
    child.stderr.on("data", (d) => out.push(d))
    child.on("close", (code) => {
      const text = Buffer.concat(out).toString()
      if (text !== "") process.stdout.write(text.endsWith("\n") ? text : `${text}\n`)
      console.log(`${label} took ${Math.round((Date.now() - startedAt) / 1000)} s`)
      resolve(code ?? 1)
    })
    child.on("error", (e) => {
      console.error(`${label}: ${e.message}`)
      resolve(1)
    })
  })

const startedAt = Date.now()
const extra = process.argv.slice(2)
const results = new URL("../.test-results.json", import.meta.url).pathname

// The build (tsc, then the bundled CLI in dist/cli that `cara` runs and the integration tests start), the
// type check of everything (sources and tests) and the lint are independent: they run side by side.
const build = runQuiet("build", tool(["tsc", "-p", "tsconfig.build.json"])).then((status) =>
  status !== 0 ? status : runQuiet("bundle", [process.execPath, [new URL("./bundle.mjs", import.meta.url).pathname]])
)
const [buildStatus, checkStatus, lintStatus] = await Promise.all([
  build,
  runQuiet("type check", tool(["tsc", "-p", "tsconfig.json", "--noEmit"])),
  runQuiet("eslint", tool(["eslint", "."]))
])
const typeErrors = (buildStatus !== 0 ? 1 : 0) + (checkStatus !== 0 ? 1 : 0)
const lintFailed = lintStatus !== 0

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
