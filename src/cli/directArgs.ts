// The strict reading of the read-only gateway commands' arguments (see direct.ts) and of the acting commands'
// (liteActions.ts), without Effect: bin.ts reads them before deciding which start to take (lite.ts, direct.ts,
// liteActions.ts or the @effect/cli tree).

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

// ---------------------------------------------------------------------------------------------------------
// The commands that act (or need an argument) lite.ts also answers: their path, positional arguments and
// switches, the same as src/cli/tree.ts declares them (test/unit/cli-direct.test.ts holds the two readings equal).

interface ActionSpec {
  /** The positional arguments' names; the ones after `required` are optional. */
  readonly args: ReadonlyArray<string>
  readonly required: number
  /** Boolean flags besides `--json`. */
  readonly switches: ReadonlyArray<string>
}

export const ACTION_COMMANDS = {
  "matrix dlq show": { args: ["id"], required: 1, switches: ["reveal"] },
  "matrix dlq replay": { args: ["id"], required: 0, switches: ["all"] },
  "matrix dlq purge": { args: ["id"], required: 0, switches: ["all", "yes"] },
  "matrix accept": { args: ["flowId"], required: 1, switches: [] },
  "matrix cancel": { args: ["flowId"], required: 1, switches: [] },
  "matrix verify": { args: ["user", "device"], required: 1, switches: [] }
} as const satisfies Record<string, ActionSpec>
export type ActionCommand = keyof typeof ACTION_COMMANDS

/** An action command as typed: its gateway flags, its positional arguments by name, the switches given. */
export interface ActionArgs {
  readonly command: ActionCommand
  readonly flags: PlainFlags
  readonly args: Readonly<Record<string, string>>
  readonly switches: ReadonlySet<string>
}

/** A positional value this reading is sure @effect/cli reads as the same text (never a flag, nor a boolean's value). */
const PLAIN_ARG = /^[^\s-](?:.*\S)?$/s
const BOOLEAN_WORD = /^(true|false|yes|no|y|n|on|off|1|0)$/i

/** The words after the command path, read strictly: `undefined` for anything not fully understood. */
export const readActionWords = (spec: ActionSpec, words: ReadonlyArray<string>) => {
  const positionals: Array<string> = []
  const switches = new Set<string>()
  const gateway: Array<string> = []
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!
    if (w.startsWith("--") && (spec.switches as ReadonlyArray<string>).includes(w.slice(2))) {
      if (switches.has(w.slice(2))) return undefined
      switches.add(w.slice(2))
    } else if (w === "--json") gateway.push(w)
    else if (w === "--host" || w === "--port" || w === "-p") gateway.push(w, words[++i] ?? "")
    else if (w.startsWith("--host=") || w.startsWith("--port=")) gateway.push(w)
    else if (PLAIN_ARG.test(w) && !BOOLEAN_WORD.test(w) && !/[\u0000-\u001f\u007f]/.test(w)) positionals.push(w)
    else return undefined
  }
  if (positionals.length < spec.required || positionals.length > spec.args.length) return undefined
  const flags = readGatewayFlags(gateway)
  if (flags === undefined) return undefined
  const args = Object.fromEntries(positionals.map((v, i) => [spec.args[i]!, v]))
  return { flags, args, switches }
}

/** The action command and its arguments when `args` (argv without node and the script) can be read strictly. */
export const readActionArgs = (
  args: ReadonlyArray<string>,
  env: NodeJS.ProcessEnv = process.env
): ActionArgs | undefined => {
  if (env["CARA_DIRECT"] === "off") return undefined
  for (const [command, spec] of Object.entries(ACTION_COMMANDS) as Array<[ActionCommand, ActionSpec]>) {
    const path = command.split(" ")
    if (args.length < path.length || path.some((w, i) => args[i] !== w)) continue
    const read = readActionWords(spec, args.slice(path.length))
    return read === undefined ? undefined : { command, ...read }
  }
  return undefined
}
