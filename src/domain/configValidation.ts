// Semantic validation of a decoded config (reference §1.5): pure functions from the config, the raw file
// object and the secrets' states to findings. The load pipeline (src/domain/configAnalysis.ts) calls it last.
import { Option, type Redacted } from "effect"
import {
  type CaraConfig,
  ConfigFinding,
  KNOWN_TOP_LEVEL_KEYS,
  type Matrix as MatrixConfig,
  parseModelRef
} from "./config.js"
import { bindToHost } from "./gateway.js"

/** The environment the config is read against; injected so tests never touch `process.env`. */
export type ConfigEnv = Readonly<Record<string, string | undefined>>

export type SecretSlot =
  | { readonly state: "open"; readonly value: Redacted.Redacted<string> }
  | { readonly state: "locked" }
  | { readonly state: "wrong-password" }

/** What `{state_dir}/matrix/store_passphrase` looks like (it counts as a store key source). */
export type StorePassphraseFile = { readonly state: "absent" | "present" } | {
  readonly state: "bad"
  readonly problem: string
}

export const dot = (p: ReadonlyArray<PropertyKey>) => (p.length === 0 ? "." : `.${p.map(String).join(".")}`)
export const err = (path: string, message: string) => new ConfigFinding({ severity: "error", path, message })
export const warn = (path: string, message: string) => new ConfigFinding({ severity: "warning", path, message })

export const configPassword = (env: ConfigEnv): Option.Option<string> => {
  const p = env["CARAPACE_CONFIG_PASSWORD"]
  return p === undefined || p === "" ? Option.none() : Option.some(p)
}

export type Json = unknown
export type JsonObject = Record<string, Json>
export const isObject = (v: Json): v is JsonObject => v !== null && typeof v === "object" && !Array.isArray(v)

export const getIn = (v: Json, p: ReadonlyArray<string>): Json =>
  p.reduce<Json>((acc, k) => (isObject(acc) && Object.hasOwn(acc, k) ? acc[k] : undefined), v)

/** Sets a value inside existing objects only (returns false when a parent is missing). */
export const setIn = (v: Json, p: ReadonlyArray<string>, value: Json): boolean => {
  const parent = getIn(v, p.slice(0, -1))
  if (!isObject(parent)) return false
  parent[p[p.length - 1]!] = value
  return true
}

export const deleteIn = (v: Json, p: ReadonlyArray<string>) => {
  const parent = getIn(v, p.slice(0, -1))
  if (isObject(parent)) delete parent[p[p.length - 1]!]
}

export const mapStrings = (
  v: Json,
  f: (s: string, p: ReadonlyArray<string>) => string,
  p: ReadonlyArray<string> = []
): Json => {
  if (typeof v === "string") return f(v, p)
  if (Array.isArray(v)) return v.map((e, i) => mapStrings(e, f, [...p, String(i)]))
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, e]) => [k, mapStrings(e, f, [...p, k])]))
  return v
}

export const VAR = /\$\$\{([A-Z_][A-Z0-9_]*)\}|\$\{([A-Z_][A-Z0-9_]*)\}/g

export const utf8Bytes = (s: string) => Buffer.byteLength(s, "utf8")

// ---------------------------------------------------------------------------------------------------------
// Semantic validation

const isLoopbackHost = (host: string) => host === "localhost" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host)

/** Homeserver URL rules of reference §1.5; `undefined` when valid. */
export const homeserverUrlProblem = (url: string): string | undefined => {
  const bytes = utf8Bytes(url)
  if (bytes > 2048) return `homeserverUrl exceeds 2048 bytes (got ${bytes})`
  // IDN-homograph defence: a non-ASCII host must be written in Punycode.
  if (!/^[\x20-\x7e]*$/.test(url)) return "homeserverUrl must be ASCII; write a non-ASCII host name in Punycode (xn--…)"
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return "homeserverUrl is not a valid URL; use the form https://matrix.example.com"
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") return `homeserverUrl must use https (got ${u.protocol})`
  if (u.username !== "" || u.password !== "") {
    return "homeserverUrl must not contain user:password@; remove the credentials from the URL"
  }
  if (u.hostname === "") return "homeserverUrl has no host"
  if (url.includes("?")) return "homeserverUrl must not have a query string"
  if (url.includes("#")) return "homeserverUrl must not have a fragment"
  if (u.pathname !== "/" && u.pathname !== "") {
    return "homeserverUrl must not have a path; give only the scheme and host"
  }
  if (u.protocol === "http:" && !isLoopbackHost(u.hostname)) {
    return "homeserverUrl uses plaintext http to a non-loopback host, which would expose passwords, tokens and recovery material; use https"
  }
  return undefined
}

/** Canonical MXID `@localpart:server` (ports allowed); `undefined` when valid. */
export const userIdProblem = (userId: string): string | undefined => {
  const bytes = utf8Bytes(userId)
  if (bytes > 256) return `userId exceeds 256 bytes (got ${bytes})`
  const colon = userId.indexOf(":")
  if (/\s/.test(userId) || !userId.startsWith("@") || colon <= 1 || colon === userId.length - 1) {
    return `userId must be a Matrix user ID in canonical form \`@localpart:server-name\` (e.g. \`@cara:example.com\`); got "${userId}"`
  }
  return undefined
}

export interface ValidationContext {
  readonly raw: JsonObject
  readonly env: ConfigEnv
  readonly secrets: ReadonlyMap<string, SecretSlot>
  readonly storePassphraseFile: StorePassphraseFile
}

export const usable = (secrets: ReadonlyMap<string, SecretSlot>, p: string) => secrets.get(p)?.state === "open"

export const unusableReason = (secrets: ReadonlyMap<string, SecretSlot>, p: string): string | undefined => {
  const s = secrets.get(p)
  if (s?.state === "locked") {
    return `${p} is sealed (enc:v2) but CARAPACE_CONFIG_PASSWORD is not set; set it to the password the value was sealed with`
  }
  if (s?.state === "wrong-password") {
    return `CARAPACE_CONFIG_PASSWORD does not open the sealed ${p}; set the password it was sealed with, or replace the value`
  }
  return undefined
}

const topLevelFindings = (config: CaraConfig, raw: JsonObject): Array<ConfigFinding> => {
  const out: Array<ConfigFinding> = []
  for (const key of Object.keys(raw)) {
    if (!KNOWN_TOP_LEVEL_KEYS.includes(key)) out.push(warn(`.${key}`, `Unknown configuration key: ${key} (ignored)`))
  }
  if (bindToHost(config.gateway.bind) === undefined) {
    out.push(err(".gateway.bind", `gateway.bind must be "loopback", "lan" or an IP address`))
  }
  return out
}

/** homeserverUrl, userId, deviceId of an enabled channel. */
const matrixIdentityFindings = (m: MatrixConfig): Array<ConfigFinding> => {
  const out: Array<ConfigFinding> = []
  // homeserverUrl may be omitted: the daemon then discovers it from the user id (.well-known/matrix/client)
  if (m.homeserverUrl !== undefined) {
    const p = homeserverUrlProblem(m.homeserverUrl)
    if (p !== undefined) out.push(err(".matrix.homeserverUrl", p))
  }
  if (m.userId === undefined) {
    out.push(err(".matrix.userId", "userId is required when matrix is enabled (or set MATRIX_USER_ID)"))
  } else {
    const p = userIdProblem(m.userId)
    if (p !== undefined) out.push(err(".matrix.userId", p))
  }
  if (m.deviceId !== undefined && utf8Bytes(m.deviceId) > 255) {
    out.push(err(".matrix.deviceId", `deviceId exceeds 255 bytes (got ${utf8Bytes(m.deviceId)})`))
  }
  return out
}

/** The login credentials of an enabled channel: a token or a password, and a device id with a token. */
const matrixCredentialFindings = (m: MatrixConfig, ctx: ValidationContext): Array<ConfigFinding> => {
  const out: Array<ConfigFinding> = []
  const token = usable(ctx.secrets, "matrix.accessToken")
  const password = usable(ctx.secrets, "matrix.password")
  if (!token && !password) {
    const reason = unusableReason(ctx.secrets, "matrix.accessToken") ?? unusableReason(ctx.secrets, "matrix.password")
    out.push(
      err(
        ".matrix.accessToken",
        reason ??
          "matrix.accessToken or matrix.password is required when matrix is enabled (in the config, or MATRIX_ACCESS_TOKEN / MATRIX_PASSWORD)"
      )
    )
  }
  // The password is a one-shot bootstrap credential: both present is normal right after the first
  // login's write-back, so this is only a reminder (the reference's hard error broke its own flow).
  if (token && password) {
    out.push(
      warn(
        ".matrix.password",
        "matrix.accessToken and matrix.password are both set; the token is used. The daemon removes matrix.password from the file after cross-signing bootstrap; unset MATRIX_PASSWORD in the service environment once it is no longer needed"
      )
    )
  }
  if (m.accessToken !== undefined && m.deviceId === undefined) {
    out.push(
      err(
        ".matrix.deviceId",
        "deviceId is required whenever accessToken is configured (token restore needs the SDK-issued device ID); set matrix.deviceId or MATRIX_DEVICE_ID, or remove matrix.accessToken to fall back to password login"
      )
    )
  }
  return out
}

/** An encrypted channel needs a store key source (reference §3.3). */
const matrixStoreKeyFindings = (m: MatrixConfig, ctx: ValidationContext): Array<ConfigFinding> => {
  const out: Array<ConfigFinding> = []
  const hasPassphrase = m.storePassphrase !== undefined
  if (!m.encrypted && hasPassphrase) {
    out.push(
      warn(
        ".matrix.storePassphrase",
        "storePassphrase is set (via config or env) but matrix.encrypted=false; the value will be ignored — flip encrypted=true to use it"
      )
    )
  }
  if (m.encrypted) {
    const passphraseOk = usable(ctx.secrets, "matrix.storePassphrase")
    const configPw = Option.isSome(configPassword(ctx.env))
    const file = ctx.storePassphraseFile
    if (!passphraseOk && !configPw && file.state !== "present") {
      const reason = unusableReason(ctx.secrets, "matrix.storePassphrase")
      out.push(
        err(
          ".matrix.encrypted",
          reason ??
            (file.state === "bad"
              ? `matrix.encrypted=true needs a store key, and ${file.problem}`
              : "matrix.encrypted=true requires matrix.storePassphrase, MATRIX_STORE_PASSPHRASE, CARAPACE_CONFIG_PASSWORD, or a non-empty <state_dir>/matrix/store_passphrase file")
        )
      )
    }
  }
  return out
}

/** autoJoin allowlists: bounded, no duplicates, entries that can match. */
const autoJoinFindings = (m: MatrixConfig): Array<ConfigFinding> => {
  const out: Array<ConfigFinding> = []
  for (const field of ["allowUsers", "allowServerNames"] as const) {
    const list = m.autoJoin[field]
    const at = `.matrix.autoJoin.${field}`
    if (list.length > 1024) out.push(err(at, `${field} exceeds 1024 entries (got ${list.length})`))
    const seen = new Set<string>()
    for (const entry of list) {
      if (utf8Bytes(entry) > 256) out.push(err(at, `${field} entry exceeds 256 bytes (got ${utf8Bytes(entry)})`))
      const t = entry.trim()
      if (seen.has(t)) out.push(warn(at, `${field} contains duplicate entry "${t}"`))
      seen.add(t)
      if (t === "") continue
      if (field === "allowUsers" && userIdProblem(t) !== undefined) {
        out.push(warn(at, `allowUsers entry "${t}" is not a Matrix user ID (@local:server) and will never match`))
      }
      if (field === "allowServerNames" && /[\s\p{Cc}/@]/u.test(t)) {
        out.push(
          warn(
            at,
            `allowServerNames entry "${t}" contains whitespace, a control character, / or @ and will never match`
          )
        )
      }
    }
  }
  return out
}

/** Agents (both spellings of the default agent are read; neither is ignored silently) and their providers. */
const agentFindings = (config: CaraConfig, ctx: ValidationContext): Array<ConfigFinding> => {
  const out: Array<ConfigFinding> = []
  const m = config.matrix
  const matrixOn = m !== undefined && m.enabled
  const agents = config.agents
  for (const [name, spec] of Object.entries(agents)) {
    if (spec.model !== undefined && Option.isNone(parseModelRef(spec.model))) {
      out.push(
        err(
          `.agents.${name}.model`,
          `model must be "provider:model" with provider anthropic, openai or local (e.g. "anthropic:claude-sonnet-4-6")`
        )
      )
    }
  }
  const dflt = agents["default"]
  const dflts = agents["defaults"]
  if (dflt !== undefined && dflts !== undefined && JSON.stringify(dflt) !== JSON.stringify(dflts)) {
    out.push(
      warn(
        ".agents.default",
        "agents.default and agents.defaults are both set and differ; agents.defaults is used. Keep one of them"
      )
    )
  }
  for (const [roomId, room] of Object.entries(m?.rooms ?? {})) {
    const name = room.agent
    if (name !== undefined && name !== "default" && name !== "defaults" && agents[name] === undefined) {
      out.push(
        err(`.matrix.rooms.${roomId}.agent`, `room ${roomId} names agent "${name}", which is not defined under agents`)
      )
    }
  }
  const defaultModel = (dflts ?? dflt)?.model
  if (matrixOn && defaultModel === undefined) {
    out.push(
      warn(
        ".agents.defaults.model",
        "no default agent model is configured, so inbound Matrix messages cannot be answered; set agents.defaults.model (e.g. \"anthropic:claude-sonnet-4-6\")"
      )
    )
  }
  const used = new Set(
    Object.values(agents).flatMap((
      a
    ) => (a.model === undefined ? [] : Option.toArray(parseModelRef(a.model)).map((r) => r.provider)))
  )
  for (const provider of used) {
    if (provider === "local") continue // built in, needs no key
    const section = config[provider]
    if (section?.apiKey === undefined) {
      const env = provider === "anthropic" ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY"
      out.push(
        warn(
          `.${provider}.apiKey`,
          `an agent uses ${provider} but no API key is configured; set ${provider}.apiKey or ${env}`
        )
      )
    } else {
      const reason = unusableReason(ctx.secrets, `${provider}.apiKey`)
      if (reason !== undefined) out.push(warn(`.${provider}.apiKey`, reason))
    }
  }
  return out
}

/** The semantic checks that the schema cannot express; every finding names its path. */
export const validateConfig = (config: CaraConfig, ctx: ValidationContext): ReadonlyArray<ConfigFinding> => {
  const m = config.matrix
  const matrix = m !== undefined && m.enabled
    ? [
      ...matrixIdentityFindings(m),
      ...matrixCredentialFindings(m, ctx),
      ...matrixStoreKeyFindings(m, ctx),
      ...autoJoinFindings(m)
    ]
    : []
  return [...topLevelFindings(config, ctx.raw), ...matrix, ...agentFindings(config, ctx)]
}
