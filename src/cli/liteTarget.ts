// Where the daemon is and how to authenticate, read without Effect for lite.ts: the same answer client.ts
// `resolveTarget` gives (flags, then CARAPACE_GATEWAY_TOKEN and the config file, then defaults), or `undefined`
// wherever this reading cannot be sure it is the same answer. The full loader decodes the whole config with its
// schema and falls back to the defaults when any section fails; this reading has no schema, so it only answers
// when the outcome cannot depend on that: the port from `--port`, or a config whose `gateway.port` is absent or
// the default; `gateway.auth.mode "none"` (which `cara status` reports) is left to the full loader. A sealed
// credential (it needs CARAPACE_CONFIG_PASSWORD and a key derivation), `$include`, a file the loader would
// refuse or could not parse, a state directory it would create or repair: all left to the full loader.
// test/unit/cli-lite.test.ts compares this reading with `resolveTarget`.
import { constants as fsConstants } from "node:fs"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { DEFAULT_GATEWAY_PORT } from "../domain/gateway.js"
import type { PlainFlags } from "./directArgs.js"
import { isLoopbackLiteral } from "./loopback.js"

export interface LiteTarget {
  /** As typed (or 127.0.0.1): what the messages show. */
  readonly host: string
  /** The address to connect to (without brackets). */
  readonly address: string
  readonly port: number
  /** The bearer; never printed. */
  readonly token: string | undefined
  /** Every value the full path could have registered as a secret (and more): see `mayRedact` in lite.ts. */
  readonly secretCandidates: ReadonlyArray<string>
}

type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [k: string]: Json }
type JsonObject = { readonly [k: string]: Json }

const isObject = (v: Json | undefined): v is JsonObject => v !== null && typeof v === "object" && !Array.isArray(v)
const field = (v: Json | undefined, k: string): Json | undefined =>
  isObject(v) && Object.hasOwn(v, k) ? v[k] : undefined

/** The same pattern as src/domain/configValidation.ts `VAR` (a unit test holds them equal). */
export const LITE_VAR = /\$\$\{([A-Z_][A-Z0-9_]*)\}|\$\{([A-Z_][A-Z0-9_]*)\}/g

/** `${VAR}` substitution as the loader does it: a missing variable is empty, `$${VAR}` a literal `${VAR}`. */
export const substitute = (s: string, env: NodeJS.ProcessEnv): string =>
  s.replace(
    LITE_VAR,
    (_whole, escaped: string | undefined, name: string | undefined) =>
      escaped !== undefined ? `\${${escaped}}` : env[name!] ?? ""
  )

/** As src/layers/StateDirLive.ts `resolveStateDirPath`. */
export const liteStateRoot = (env: NodeJS.ProcessEnv): string => {
  const explicit = env["CARAPACE_STATE_DIR"]
  if (explicit !== undefined && explicit.trim() !== "") return path.resolve(explicit)
  const xdg = env["XDG_CONFIG_HOME"]
  const configHome = xdg !== undefined && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".config")
  return path.join(configHome, "carapace")
}

const exists = (p: string) => fs.stat(p).then(() => true, () => false)

/** As src/layers/ConfigSecretsLive.ts `discoverConfigPath`. */
const configPath = async (env: NodeJS.ProcessEnv, root: string): Promise<string> => {
  const explicit = env["CARAPACE_CONFIG_PATH"]
  if (explicit !== undefined && explicit.trim() !== "") return path.resolve(explicit)
  const json5 = path.join(root, "carapace.json5")
  const json = path.join(root, "carapace.json")
  if (await exists(json5)) return json5
  if (await exists(json)) return json
  return json5
}

const MAX_CONFIG_BYTES = 4 * 1024 * 1024

/** The config text, `null` when there is no file, `undefined` for a file the loader would refuse or not read. */
const readConfig = async (file: string): Promise<string | null | undefined> => {
  const handle = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK).catch((e: unknown) =>
    (e as NodeJS.ErrnoException).code === "ENOENT" ? null : undefined
  )
  if (handle === null || handle === undefined) return handle
  try {
    const st = await handle.stat()
    const uid = typeof process.getuid === "function" ? process.getuid() : undefined
    if (!st.isFile() || (st.mode & 0o002) !== 0 || st.size > MAX_CONFIG_BYTES) return undefined
    if (uid !== undefined && st.uid !== uid && st.uid !== 0) return undefined
    const text = await handle.readFile("utf8")
    return Buffer.byteLength(text, "utf8") > MAX_CONFIG_BYTES ? undefined : text
  } catch {
    return undefined
  } finally {
    await handle.close()
  }
}

/** The state directory exists as the full path leaves it (a directory, mode 0700): nothing to create or repair. */
const stateDirReady = async (root: string): Promise<boolean> => {
  const st = await fs.stat(root).catch(() => undefined)
  return st !== undefined && st.isDirectory() && (st.mode & 0o777) === 0o700
}

/** One credential path of the config: its value, `null` when it gives none, `undefined` when sealed. */
const credential = (v: Json | undefined, env: NodeJS.ProcessEnv): string | null | undefined => {
  if (typeof v !== "string") return null
  const s = substitute(v, env)
  if (s.trim() === "") return null
  return /^enc:v\d+:/.test(s) ? undefined : s
}

/** Every string of the tree (the candidates for the redaction check). */
const strings = (v: Json | undefined, out: Array<string>): Array<string> => {
  if (typeof v === "string") out.push(v)
  else if (Array.isArray(v)) { for (const x of v) strings(x, out) }
  else if (isObject(v)) { for (const x of Object.values(v)) strings(x, out) }
  return out
}

/** The config as parsed, `{}` without a file; `undefined` when the loader's reading could differ. */
const readTree = async (env: NodeJS.ProcessEnv): Promise<JsonObject | undefined> => {
  const root = liteStateRoot(env)
  if (!(await stateDirReady(root))) return undefined
  const text = await readConfig(await configPath(env, root))
  if (text === undefined) return undefined
  if (text === null) return {}
  try {
    const { default: JSON5 } = await import("json5")
    const tree = JSON5.parse<Json>(text)
    return isObject(tree) && !Object.hasOwn(tree, "$include") ? tree : undefined
  } catch {
    return undefined
  }
}

/** Header-safe printable ASCII without surrounding blanks: anything else is left to the full client. */
const PLAIN_TOKEN = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/

/** Where to connect and with which credential, or `undefined` when only the full path can be sure. */
export const liteTarget = async (
  flags: PlainFlags,
  env: NodeJS.ProcessEnv,
  forStatus: boolean
): Promise<LiteTarget | undefined> => {
  if (env["CARA_LOG_LEVEL"] !== undefined && env["CARA_LOG_LEVEL"] !== "info") return undefined
  const tree = await readTree(env)
  if (tree === undefined) return undefined
  const gateway = field(tree, "gateway")
  const auth = field(gateway, "auth")
  const mode = field(auth, "mode")
  if (forStatus && typeof mode === "string" && substitute(mode, env) === "none") return undefined
  const configured = field(gateway, "port")
  const port = flags.port ??
    (configured === undefined || configured === null || configured === DEFAULT_GATEWAY_PORT
      ? DEFAULT_GATEWAY_PORT
      : undefined)
  if (port === undefined) return undefined
  const envToken = (env["CARAPACE_GATEWAY_TOKEN"] ?? "").trim()
  let token: string | null | undefined = envToken !== "" ? envToken : credential(field(auth, "token"), env)
  if (token === null) token = credential(field(auth, "password"), env)
  if (token === undefined || (token !== null && !PLAIN_TOKEN.test(token))) return undefined
  const host = flags.host ?? "127.0.0.1"
  const address = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host
  if (net.isIP(address) === 0 || (token !== null && !isLoopbackLiteral(host))) return undefined
  const secretCandidates = [...Object.values(env).filter((v): v is string => v !== undefined), ...strings(tree, [])]
  return { host, address, port, token: token ?? undefined, secretCandidates }
}
