// The read-only commands that only ask the daemon (`cara status`, `cara matrix dlq list`, `cara matrix
// verifications`, `cara matrix devices`), started without building the @effect/cli command tree: most of
// their start was the framework's, not theirs (issue 19 §5, docs/benchmarks.md cli-wall). Only arguments
// this strict reading fully understands take this way: the exact command path, then `--json`, `--host H`
// (`--host=H`), `--port N` (`--port=N`, `-p N`), each at most once. Anything else (another flag, a value
// that looks like a flag, a repeated option, `--help`; or CARA_DIRECT=off) goes to @effect/cli, which parses and
// reports as before. test/unit/cli-direct.test.ts checks that the two readings agree wherever this one answers.
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { runCommand } from "./runtime.js"

/** The flags every command here takes, as @effect/cli hands them to the handler. */
export interface GatewayArgs {
  readonly host: Option.Option<string>
  readonly port: Option.Option<number>
  readonly json: boolean
}

/** The commands started directly, by their path as typed. */
export const DIRECT_COMMANDS = ["status", "matrix dlq list", "matrix verifications", "matrix devices"] as const
export type DirectCommand = typeof DIRECT_COMMANDS[number]

const PORT = /^(0|[1-9][0-9]{0,8})$/

/** Reads `[host, port, json]` flags; `undefined` for anything this reading does not fully understand. */
export const parseGatewayFlags = (words: ReadonlyArray<string>): GatewayArgs | undefined => {
  let host: string | undefined
  let port: number | undefined
  let json = false
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!
    const eq = w.indexOf("=")
    const [name, inline] = w.startsWith("--") && eq > 0 ? [w.slice(0, eq), w.slice(eq + 1)] : [w, undefined]
    if (name === "--json" && inline === undefined && !json) {
      json = true
      continue
    }
    if ((name === "--host" || name === "--port" || (name === "-p" && inline === undefined))) {
      const value = inline ?? words[++i]
      if (value === undefined || value === "" || value.startsWith("-")) return undefined
      if (name === "--host" && host === undefined) {
        host = value
        continue
      }
      if (name !== "--host" && port === undefined && PORT.test(value)) {
        port = Number(value)
        continue
      }
    }
    return undefined
  }
  return { host: Option.fromNullable(host), port: Option.fromNullable(port), json }
}

/** The command and its flags when `args` (argv without node and the script) can be run directly. */
export const directArgs = (
  args: ReadonlyArray<string>,
  env: NodeJS.ProcessEnv = process.env
): { readonly command: DirectCommand; readonly flags: GatewayArgs } | undefined => {
  if (env["CARA_DIRECT"] === "off") return undefined
  for (const command of DIRECT_COMMANDS) {
    const path = command.split(" ")
    if (args.length < path.length || path.some((w, i) => args[i] !== w)) continue
    const flags = parseGatewayFlags(args.slice(path.length))
    return flags === undefined ? undefined : { command, flags }
  }
  return undefined
}

type Handler = (flags: GatewayArgs) => Effect.Effect<void, unknown, never>

/** Each command's handler, the same one src/cli/tree.ts gives @effect/cli, loaded when it runs. */
const HANDLERS: { readonly [K in DirectCommand]: () => Promise<Handler> } = {
  "status": () => import("./status.js").then((m) => m.status),
  "matrix dlq list": () => import("./dlq.js").then((m) => m.list),
  "matrix verifications": () => import("./verification.js").then((m) => m.list),
  "matrix devices": () => import("./verification.js").then((m) => m.devices)
}

/** Runs a command `directArgs` accepted, as the full command line would (runtime.ts). */
export const runDirect = (command: DirectCommand, flags: GatewayArgs) =>
  runCommand(Effect.flatMap(Effect.promise(HANDLERS[command]), (handler) => handler(flags)))
