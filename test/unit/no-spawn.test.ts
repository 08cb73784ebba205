// The unit tier runs in-process: a test that starts node, cara, Synapse or any other child process belongs in
// test/integration (see vitest.config.ts). This reads every file under test/unit (but itself) and names the
// offenders.
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const UNIT = path.resolve("test/unit")
const SELF = fileURLToPath(import.meta.url)

/** What starting a process looks like in a test file. */
const SPAWNING: ReadonlyArray<readonly [string, RegExp]> = [
  ["the child_process module", /child_process/],
  ["a spawn or exec call", /\b(spawn|spawnSync|execFile|execFileSync|execSync)\s*\(/],
  ["the CLI helpers (runCli, startDaemon)", /support\/cli/],
  ["bundleChild (a bundled child process)", /bundleChild/],
  ["the Synapse harness", /support\/synapse/],
  ["the node binary", /process\.execPath/]
]

const filesUnder = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name)
    return entry.isDirectory() ? filesUnder(full) : /\.(ts|mts|js|mjs|cjs)$/.test(entry.name) ? [full] : []
  })

/** `file: what` for each way a file starts a process. */
const offenders = (files: ReadonlyArray<string>, read: (file: string) => string): Array<string> =>
  files.flatMap((file) => {
    const text = read(file)
    return SPAWNING.filter(([, pattern]) => pattern.test(text)).map(([what]) => `${path.basename(file)}: ${what}`)
  })

describe("the unit tier starts no process", () => {
  it("no file under test/unit imports child_process, the CLI or Synapse helpers, or runs node", () => {
    const files = filesUnder(UNIT).filter((file) => file !== SELF)
    expect(files.length).toBeGreaterThan(10)
    expect(offenders(files, (file) => fs.readFileSync(file, "utf8"))).toEqual([])
  })

  it("recognises each way of starting a process, and not an Effect fork", () => {
    const samples: Record<string, string> = {
      "a.test.ts": `import { spawn } from "node:child_process"`,
      "b.test.ts": `const r = spawnSync("script", [])`,
      "c.test.ts": `import { runCli } from "../support/cli.js"`,
      "d.test.ts": `await bundleChild("x.ts")`,
      "e.test.ts": `import { describeSynapse } from "../support/synapse/index.js"`,
      "f.test.ts": `const node = process.execPath`,
      "g.test.ts": `const fiber = yield* Effect.fork(task)`
    }
    const found = offenders(Object.keys(samples), (file) => samples[file]!)
    expect(found.map((line) => line.split(":")[0])).toEqual([
      "a.test.ts",
      "b.test.ts",
      "c.test.ts",
      "d.test.ts",
      "e.test.ts",
      "f.test.ts"
    ])
  })
})
