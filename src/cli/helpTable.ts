// `cara --help` and `cara <command…> --help` without the CLI framework: scripts/bundle.mjs runs the bundled
// CLI once per command path at build time and stores each help text, byte for byte, in dist/cli/help.json;
// bin.ts prints the stored text when the arguments are exactly a known path and `--help` / `-h`. Anything
// else (flags before `--help`, an unknown path, no table, CARA_HELP_TABLE=off) goes to @effect/cli as before.
// test/unit/cli-help-table.test.ts keeps every stored text equal to what the command tree prints.
import * as fs from "node:fs"
import * as path from "node:path"

/** The file beside the bundled bin.js. */
export const HELP_TABLE_FILE = "help.json"

/** What the table holds: the help text of each command path ("" is the root), as printed to stdout. */
export interface HelpTable {
  readonly version: string
  readonly texts: Readonly<Record<string, string>>
}

/** The table's key for `cara <args…>` when they are a plain command path followed by `--help` or `-h`. */
export const helpKey = (args: ReadonlyArray<string>): string | undefined => {
  const last = args.at(-1)
  if (last !== "--help" && last !== "-h") return undefined
  const words = args.slice(0, -1)
  return words.every((w) => /^[a-z][a-z0-9-]*$/.test(w)) ? words.join(" ") : undefined
}

/** The stored help for these arguments, or `undefined` (not a plain help request, no table, no entry). */
export const storedHelp = (
  args: ReadonlyArray<string>,
  dir: string,
  version: string,
  env: NodeJS.ProcessEnv = process.env
): string | undefined => {
  const key = helpKey(args)
  if (key === undefined || env["CARA_HELP_TABLE"] === "off") return undefined
  let table: HelpTable
  try {
    table = JSON.parse(fs.readFileSync(path.join(dir, HELP_TABLE_FILE), "utf8")) as HelpTable
  } catch {
    return undefined
  }
  // a table from another build would show another version's flags
  if (table.version !== version || typeof table.texts !== "object" || table.texts === null) return undefined
  const text = Object.hasOwn(table.texts, key) ? table.texts[key] : undefined
  return typeof text === "string" ? text : undefined
}
