// docs/cli.md, generated from the command tree (`npm run docs:cli`; test/unit/cli-docs.test.ts keeps it in
// sync): every command's help as @effect/cli prints it (flags, arguments), its exit codes and an example.
import * as Command from "@effect/cli/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { dedupeHelpPaths } from "./helpText.js"
import { root } from "./tree.js"

/** Exit codes and one example per command path; a path of the tree without an entry fails the docs test. */
export const COMMAND_NOTES: Readonly<Record<string, { readonly exit: string; readonly example: string }>> = {
  "": {
    exit: "runs until SIGTERM/SIGINT (then 0); 1 when the start is refused (no config, a config error, a held lock)",
    example: "cara"
  },
  "config": { exit: "0 (help)", example: "cara config --help" },
  "config check": { exit: "0 when the config has no errors, 1 otherwise", example: "cara config check --json" },
  "config show": { exit: "0", example: "cara config show" },
  "config get": { exit: "0; 1 when the path is not set and has no default", example: "cara config get gateway.port" },
  "config set": {
    exit:
      "0; 1 when the write is refused (invalid value, daemon running for a path it owns, no CARAPACE_CONFIG_PASSWORD for a secret)",
    example: "cara config set matrix.allowedUsers '[\"@alice:example.org\"]'"
  },
  "config rekey": {
    exit: "0; 1 when nothing could be re-sealed (the file is unchanged)",
    example: "cara config rekey --new-password-env NEW_PASSWORD"
  },
  "doctor": { exit: "0 all ok, 1 warnings, 2 errors", example: "cara doctor --offline" },
  "matrix": { exit: "0 (help)", example: "cara matrix --help" },
  "matrix rekey-store": {
    exit: "0; 1 when refused (daemon running, no key source)",
    example: "cara matrix rekey-store --new"
  },
  "matrix dlq": { exit: "0 (help)", example: "cara matrix dlq --help" },
  "matrix dlq list": { exit: "0; 1 when the daemon cannot be asked", example: "cara matrix dlq list --json" },
  "matrix dlq show": {
    exit: "0; 1 when the record is unknown or --reveal is not on a terminal",
    example: "cara matrix dlq show <id>"
  },
  "matrix dlq replay": { exit: "0; 1 when a record failed again", example: "cara matrix dlq replay --all" },
  "matrix dlq purge": { exit: "0; 1 when not confirmed", example: "cara matrix dlq purge <id> --yes" },
  "matrix recovery-key": { exit: "0 (help)", example: "cara matrix recovery-key --help" },
  "matrix recovery-key show": {
    exit: "0; 1 when there is no key or stdout is not a terminal",
    example: "cara matrix recovery-key show"
  },
  "matrix recovery-key restore": {
    exit: "0; 1 when the key is refused or the daemon runs",
    example: "cara matrix recovery-key restore --key-file key.txt"
  },
  "matrix recovery-key rotate": {
    exit: "0; 1 when refused or the homeserver fails",
    example: "cara matrix recovery-key rotate --yes"
  },
  "matrix verifications": { exit: "0; 1 when the daemon cannot be asked", example: "cara matrix verifications --json" },
  "matrix accept": { exit: "0; 1 on an unknown or finished flow", example: "cara matrix accept <flow-id>" },
  "matrix confirm": {
    exit: "0; 1 when aborted, not on a terminal, or the flow is not ready",
    example: "cara matrix confirm <flow-id> --match"
  },
  "matrix cancel": { exit: "0; 1 on an unknown flow", example: "cara matrix cancel <flow-id>" },
  "matrix verify": {
    exit: "0; 1 when the user or device is unknown",
    example: "cara matrix verify @alice:example.org"
  },
  "matrix devices": { exit: "0; 1 when the daemon cannot be asked", example: "cara matrix devices" },
  "setup": {
    exit: "0 when the written config checks clean; 1 otherwise (an existing config without --force, no password login)",
    example: "cara setup --user @cara:example.org --allow-user @alice:example.org --provider local --yes"
  },
  "status": { exit: "0 when the gateway answered; 1 when it cannot be reached", example: "cara status --json" },
  "verify": {
    exit: "0 only when every check passed (skips allowed); 1 otherwise",
    example: "cara verify --outcome matrix --matrix-to '!room:example.org'"
  }
}

const stripAnsi = (s: string) => s.replace(/\u001b\[[0-9;]*m/g, "")

/** What `cara <args…> --help` prints, run in this process with the output captured. */
export const helpOf = (args: ReadonlyArray<string>): Effect.Effect<string> =>
  Effect.gen(function*() {
    const out: Array<string> = []
    const base = yield* Console.consoleWith(Effect.succeed)
    const capture: Console.Console = {
      ...base,
      log: (...xs: ReadonlyArray<unknown>) => Effect.sync(() => void out.push(xs.map(String).join(" ")))
    }
    yield* Command.run(root, { name: "cara", version: "(version)" })(["node", "cara", ...args, "--help"]).pipe(
      Console.withConsole(capture),
      Effect.provide(NodeContext.layer),
      Effect.orDie
    )
    return dedupeHelpPaths(stripAnsi(out.join("\n"))).trim()
  })

const BUILT_INS = ["--completions", "--log-level", "(-h, --help)", "--wizard", "--version"]

/**
 * One command's help for the page: without the banner, its usage line with the full path, trailing blanks
 * trimmed, and (below the root) without the built-in options every command has.
 */
export const tidyHelp = (help: string, path: string): string => {
  const out: Array<string> = []
  let skipping = false
  for (const raw of help.split("\n").map((l) => l.trimEnd())) {
    if (raw !== "" && !raw.startsWith(" ")) skipping = path !== "" && BUILT_INS.some((b) => raw.startsWith(b))
    if (skipping) continue
    out.push(path !== "" && raw.startsWith("$ ") ? raw.replace(/^\$ \S+/, `$ cara ${path}`) : raw)
  }
  return out.join("\n").replace(/^cara\n+/, "").replace(/\n{3,}/g, "\n\n").trim()
}

/** Every command path the root's help lists (`config check`, `matrix dlq list`, ...), in its order. */
export const commandPaths = (rootHelp: string): ReadonlyArray<string> =>
  rootHelp.split("\n").flatMap((line) => {
    const m = /^\s*- ((?:[a-z][\w-]*)(?: [a-z][\w-]*)*)/.exec(line)
    return m === null ? [] : [m[1]!]
  })

/** The whole of docs/cli.md. */
export const renderCliDocs: Effect.Effect<string> = Effect.gen(function*() {
  const rootHelp = yield* helpOf([])
  const paths = commandPaths(rootHelp)
  const sections: Array<string> = [
    "# cara command reference",
    "",
    "Generated from the command tree (src/cli/tree.ts) by `npm run docs:cli`; do not edit by hand.",
    "Every command takes `--help`. Errors go to stderr as `cara: <message> [<kind>]`, usually with the next step.",
    ""
  ]
  for (const p of ["", ...paths]) {
    const notes = COMMAND_NOTES[p]
    const help = p === "" ? rootHelp : yield* helpOf(p.split(" "))
    sections.push(
      `## \`cara${p === "" ? "" : ` ${p}`}\``,
      "",
      "```text",
      tidyHelp(help.replace(/^cara \(version\)\n*/m, ""), p),
      "```",
      "",
      `Exit codes: ${notes?.exit ?? "(undocumented)"}`,
      "",
      `Example: \`${notes?.example ?? `cara ${p}`}\``,
      ""
    )
  }
  return sections.join("\n")
})
