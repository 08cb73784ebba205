// The read-only commands that only ask the daemon (`cara status`, `cara matrix dlq list`, `cara matrix
// verifications`, `cara matrix devices`), started without building the @effect/cli command tree: most of
// their start was the framework's, not theirs (issue 19 §5, docs/benchmarks.md cli-wall). Only arguments
// this strict reading fully understands take this way: the exact command path, then `--json`, `--host H`
// (`--host=H`), `--port N` (`--port=N`, `-p N`), each at most once. Anything else (another flag, a value
// that looks like a flag, a repeated option, `--help`; or CARA_DIRECT=off) goes to @effect/cli, which parses and
// reports as before. test/unit/cli-direct.test.ts checks that the two readings agree wherever this one answers. The
// reading itself is directArgs.ts (no Effect); lite.ts answers these commands without Effect when it can.
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { type DirectCommand, type PlainFlags, readDirectArgs, readGatewayFlags } from "./directArgs.js"
import { runCommand } from "./runtime.js"

/** The flags every command here takes, as @effect/cli hands them to the handler. */
export interface GatewayArgs {
  readonly host: Option.Option<string>
  readonly port: Option.Option<number>
  readonly json: boolean
}

export { DIRECT_COMMANDS, type DirectCommand } from "./directArgs.js"

/** The plain reading as @effect/cli hands it to a handler. */
export const gatewayArgs = (f: PlainFlags): GatewayArgs => ({
  host: Option.fromNullable(f.host),
  port: Option.fromNullable(f.port),
  json: f.json
})

/** Reads `[host, port, json]` flags; `undefined` for anything this reading does not fully understand. */
export const parseGatewayFlags = (words: ReadonlyArray<string>): GatewayArgs | undefined => {
  const flags = readGatewayFlags(words)
  return flags === undefined ? undefined : gatewayArgs(flags)
}

/** The command and its flags when `args` (argv without node and the script) can be run directly. */
export const directArgs = (
  args: ReadonlyArray<string>,
  env: NodeJS.ProcessEnv = process.env
): { readonly command: DirectCommand; readonly flags: GatewayArgs } | undefined => {
  const direct = readDirectArgs(args, env)
  return direct === undefined ? undefined : { command: direct.command, flags: gatewayArgs(direct.flags) }
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
