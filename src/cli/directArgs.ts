// The strict reading of the read-only gateway commands' arguments (see direct.ts), without Effect: bin.ts reads
// them before deciding which start to take (lite.ts, direct.ts or the @effect/cli tree).

/** The commands started without the command tree, by their path as typed. */
export const DIRECT_COMMANDS = ["status", "matrix dlq list", "matrix verifications", "matrix devices"] as const
export type DirectCommand = typeof DIRECT_COMMANDS[number]

/** `--host`, `--port` and `--json` as typed (absent flags absent). */
export interface PlainFlags {
  readonly host?: string
  readonly port?: number
  readonly json: boolean
}

const PORT = /^(0|[1-9][0-9]{0,8})$/

/** Reads `[host, port, json]` flags; `undefined` for anything this reading does not fully understand. */
export const readGatewayFlags = (words: ReadonlyArray<string>): PlainFlags | undefined => {
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
  return { ...(host !== undefined ? { host } : {}), ...(port !== undefined ? { port } : {}), json }
}

/** The command and its flags when `args` (argv without node and the script) can be run without the tree. */
export const readDirectArgs = (
  args: ReadonlyArray<string>,
  env: NodeJS.ProcessEnv = process.env
): { readonly command: DirectCommand; readonly flags: PlainFlags } | undefined => {
  if (env["CARA_DIRECT"] === "off") return undefined
  for (const command of DIRECT_COMMANDS) {
    const path = command.split(" ")
    if (args.length < path.length || path.some((w, i) => args[i] !== w)) continue
    const flags = readGatewayFlags(args.slice(path.length))
    return flags === undefined ? undefined : { command, flags }
  }
  return undefined
}
