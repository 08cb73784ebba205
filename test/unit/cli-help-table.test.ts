// `cara [command…] --help` is answered from dist/cli/help.json (src/cli/helpTable.ts, written by
// scripts/bundle.mjs): which arguments take that way, and that every stored text is what the command tree prints.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { commandPaths, helpOf } from "../../src/cli/docs.js"
import { HELP_TABLE_FILE, helpKey, type HelpTable, storedHelp } from "../../src/cli/helpTable.js"
import { version } from "../../src/version.js"

const BUILT = path.resolve("dist/cli", HELP_TABLE_FILE)
const stripAnsi = (s: string) => s.replace(/\u001b\[[0-9;]*m/g, "")

describe("the stored help texts", () => {
  it("are used only for a plain command path followed by --help or -h", () => {
    expect(helpKey(["--help"])).toBe("")
    expect(helpKey(["-h"])).toBe("")
    expect(helpKey(["matrix", "dlq", "list", "--help"])).toBe("matrix dlq list")
    expect(helpKey(["status", "-h"])).toBe("status")
    for (
      const args of [
        [],
        ["status"],
        ["--help", "status"],
        ["status", "--json", "--help"],
        ["--log-level", "debug", "--help"],
        ["config", "get", "Gateway.Port", "--help"],
        ["status", "--help", "--help"]
      ]
    ) expect(helpKey(args), args.join(" ")).toBeUndefined()
  })

  it("come from a table of this version only, and not when CARA_HELP_TABLE=off", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cara-help-"))
    const write = (table: unknown) => fs.writeFileSync(path.join(dir, HELP_TABLE_FILE), JSON.stringify(table))
    expect(storedHelp(["--help"], dir, "1.0.0", {})).toBeUndefined()
    write({ version: "1.0.0", texts: { "": "root\n", "status": "status\n" } })
    expect(storedHelp(["--help"], dir, "1.0.0", {})).toBe("root\n")
    expect(storedHelp(["status", "-h"], dir, "1.0.0", {})).toBe("status\n")
    expect(storedHelp(["nope", "--help"], dir, "1.0.0", {})).toBeUndefined()
    expect(storedHelp(["constructor", "--help"], dir, "1.0.0", {})).toBeUndefined()
    expect(storedHelp(["--help"], dir, "1.0.1", {})).toBeUndefined()
    expect(storedHelp(["--help"], dir, "1.0.0", { CARA_HELP_TABLE: "off" })).toBeUndefined()
    fs.writeFileSync(path.join(dir, HELP_TABLE_FILE), "{not json")
    expect(storedHelp(["--help"], dir, "1.0.0", {})).toBeUndefined()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  // dist/ is built by `npm test` (scripts/test.mjs) before vitest runs
  it.effect.skipIf(!fs.existsSync(BUILT))(
    "of the build hold every command path, each as the tree prints it",
    () =>
      Effect.gen(function*() {
        const table = JSON.parse(fs.readFileSync(BUILT, "utf8")) as HelpTable
        expect(table.version).toBe(version)
        const rootHelp = yield* helpOf([])
        const paths = ["", ...commandPaths(rootHelp)]
        expect(Object.keys(table.texts).sort()).toEqual([...paths].sort())
        for (const p of paths) {
          const stored = table.texts[p]!
          // printed by Console.log: one trailing newline; the tree's own text with the version of the build
          expect(stored.endsWith("\n"), p).toBe(true)
          const plain = stripAnsi(stored).replace(`cara ${version}\n`, "cara (version)\n").trim()
          expect(plain, `cara ${p} --help`).toBe(p === "" ? rootHelp : yield* helpOf(p.split(" ")))
        }
      })
  )
})
