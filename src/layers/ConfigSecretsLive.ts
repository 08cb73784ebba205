import { constants as fsConstants } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Data, Effect, Either, Layer, Option, Redacted, Ref, Schema } from "effect"
import JSON5 from "json5"
import {
  allSecretPaths,
  CaraConfig,
  ConfigFinding,
  hasErrors,
  isSecretPath,
  KNOWN_TOP_LEVEL_KEYS,
  parseModelRef,
  schemaProblems,
  SECRET_ENV_NAMES,
  type SecretRef
} from "../domain/config.js"
import { bindToHost } from "../domain/gateway.js"
import { applyEdits, duplicateKeys, type Edit, parseWithPositions } from "../domain/json5edit.js"
import { registerSecret } from "../domain/redact.js"
import {
  type Argon2Params,
  ARGON2_PARAMS,
  deriveKey,
  downgradeViolations,
  envelopeVersion,
  isExactPlaceholder,
  isMalformedPlaceholder,
  makeSealer,
  openWithKey,
  parseEnvelope
} from "../domain/secrets.js"
import {
  ConfigLoadError,
  ConfigSecretError,
  ConfigSecrets,
  type ConfigSecretsShape,
  ConfigWriteError
} from "../services/ConfigSecrets.js"
import { StateDir } from "../services/StateDir.js"

/** The environment the config is read against; injected so tests never touch `process.env`. */
export type ConfigEnv = Readonly<Record<string, string | undefined>>

export const MAX_CONFIG_BYTES = 4 * 1024 * 1024

export type SecretSlot =
  | { readonly state: "open"; readonly value: Redacted.Redacted<string> }
  | { readonly state: "locked" }
  | { readonly state: "wrong-password" }

/** One load of the config file: what was read, what it decodes to, what is wrong with it. */
export interface ConfigSnapshot {
  /** The file read, `None` when there was no file. */
  readonly path: Option.Option<string>
  /** Where write-backs go (the discovered path, also when the file does not exist yet). */
  readonly targetPath: string
  readonly config: CaraConfig
  readonly findings: ReadonlyArray<ConfigFinding>
  /** Secret values by dot path, opened at load when the password allows. */
  readonly secrets: ReadonlyMap<string, SecretSlot>
  /** Set when the file itself was refused (world-writable, foreign owner, not a regular file). */
  readonly refused?: "config-file-unsafe"
}

/** What `{state_dir}/matrix/store_passphrase` looks like (it counts as a store key source). */
export type StorePassphraseFile = { readonly state: "absent" | "present" } | { readonly state: "bad"; readonly problem: string }

const dot = (p: ReadonlyArray<PropertyKey>) => (p.length === 0 ? "." : `.${p.map(String).join(".")}`)
const err = (path: string, message: string) => new ConfigFinding({ severity: "error", path, message })
const warn = (path: string, message: string) => new ConfigFinding({ severity: "warning", path, message })

const configPassword = (env: ConfigEnv): Option.Option<string> => {
  const p = env["CARAPACE_CONFIG_PASSWORD"]
  return p === undefined || p === "" ? Option.none() : Option.some(p)
}

type Json = unknown
type JsonObject = Record<string, Json>
const isObject = (v: Json): v is JsonObject => v !== null && typeof v === "object" && !Array.isArray(v)

const getIn = (v: Json, p: ReadonlyArray<string>): Json =>
  p.reduce<Json>((acc, k) => (isObject(acc) && Object.hasOwn(acc, k) ? acc[k] : undefined), v)

/** Sets a value inside existing objects only (returns false when a parent is missing). */
const setIn = (v: Json, p: ReadonlyArray<string>, value: Json): boolean => {
  const parent = getIn(v, p.slice(0, -1))
  if (!isObject(parent)) return false
  parent[p[p.length - 1]!] = value
  return true
}

const deleteIn = (v: Json, p: ReadonlyArray<string>) => {
  const parent = getIn(v, p.slice(0, -1))
  if (isObject(parent)) delete parent[p[p.length - 1]!]
}

const mapStrings = (v: Json, f: (s: string, p: ReadonlyArray<string>) => string, p: ReadonlyArray<string> = []): Json => {
  if (typeof v === "string") return f(v, p)
  if (Array.isArray(v)) return v.map((e, i) => mapStrings(e, f, [...p, String(i)]))
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, e]) => [k, mapStrings(e, f, [...p, k])]))
  return v
}

const VAR = /\$\$\{([A-Z_][A-Z0-9_]*)\}|\$\{([A-Z_][A-Z0-9_]*)\}/g

const utf8Bytes = (s: string) => Buffer.byteLength(s, "utf8")

// ---------------------------------------------------------------------------------------------------------
// Semantic validation

const isLoopbackHost = (host: string) =>
  host === "localhost" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host)

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
  if (u.username !== "" || u.password !== "") return "homeserverUrl must not contain user:password@; remove the credentials from the URL"
  if (u.hostname === "") return "homeserverUrl has no host"
  if (url.includes("?")) return "homeserverUrl must not have a query string"
  if (url.includes("#")) return "homeserverUrl must not have a fragment"
  if (u.pathname !== "/" && u.pathname !== "") return "homeserverUrl must not have a path; give only the scheme and host"
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

interface ValidationContext {
  readonly raw: JsonObject
  readonly env: ConfigEnv
  readonly secrets: ReadonlyMap<string, SecretSlot>
  readonly storePassphraseFile: StorePassphraseFile
}

const usable = (secrets: ReadonlyMap<string, SecretSlot>, p: string) => secrets.get(p)?.state === "open"

const unusableReason = (secrets: ReadonlyMap<string, SecretSlot>, p: string): string | undefined => {
  const s = secrets.get(p)
  if (s?.state === "locked") {
    return `${p} is sealed (enc:v2) but CARAPACE_CONFIG_PASSWORD is not set; set it to the password the value was sealed with`
  }
  if (s?.state === "wrong-password") {
    return `CARAPACE_CONFIG_PASSWORD does not open the sealed ${p}; set the password it was sealed with, or replace the value`
  }
  return undefined
}


export const validateConfig = (config: CaraConfig, ctx: ValidationContext): ReadonlyArray<ConfigFinding> => {
  const out: Array<ConfigFinding> = []
  for (const key of Object.keys(ctx.raw)) {
    if (!KNOWN_TOP_LEVEL_KEYS.includes(key)) out.push(warn(`.${key}`, `Unknown configuration key: ${key} (ignored)`))
  }
  if (bindToHost(config.gateway.bind) === undefined) {
    out.push(err(".gateway.bind", `gateway.bind must be "loopback", "lan" or an IP address`))
  }

  const m = config.matrix
  const matrixOn = m !== undefined && m.enabled
  if (m !== undefined && m.enabled) {
    if (m.homeserverUrl === undefined) {
      out.push(err(".matrix.homeserverUrl", "homeserverUrl is required when matrix is enabled (or set MATRIX_HOMESERVER_URL)"))
    } else {
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
          out.push(warn(at, `allowServerNames entry "${t}" contains whitespace, a control character, / or @ and will never match`))
        }
      }
    }
  }

  // Agents: both spellings of the default agent are read; neither is ignored silently.
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
    out.push(warn(".agents.default", "agents.default and agents.defaults are both set and differ; agents.defaults is used. Keep one of them"))
  }
  for (const [roomId, room] of Object.entries(m?.rooms ?? {})) {
    const name = room.agent
    if (name !== undefined && name !== "default" && name !== "defaults" && agents[name] === undefined) {
      out.push(err(`.matrix.rooms.${roomId}.agent`, `room ${roomId} names agent "${name}", which is not defined under agents`))
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
    Object.values(agents).flatMap((a) => (a.model === undefined ? [] : Option.toArray(parseModelRef(a.model)).map((r) => r.provider)))
  )
  for (const provider of used) {
    if (provider === "local") continue // built in, needs no key
    const section = config[provider]
    if (section?.apiKey === undefined) {
      const env = provider === "anthropic" ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY"
      out.push(warn(`.${provider}.apiKey`, `an agent uses ${provider} but no API key is configured; set ${provider}.apiKey or ${env}`))
    } else {
      const reason = unusableReason(ctx.secrets, `${provider}.apiKey`)
      if (reason !== undefined) out.push(warn(`.${provider}.apiKey`, reason))
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// The load pipeline: parse → ${VAR} → envelopes → secrets → env fallbacks → schema → validation

const MATRIX_ENV: ReadonlyArray<readonly [string, string, boolean]> = [
  ["homeserverUrl", "MATRIX_HOMESERVER_URL", false],
  ["userId", "MATRIX_USER_ID", false],
  ["accessToken", "MATRIX_ACCESS_TOKEN", true],
  ["password", "MATRIX_PASSWORD", true],
  ["deviceId", "MATRIX_DEVICE_ID", false],
  ["storePassphrase", "MATRIX_STORE_PASSPHRASE", true]
]

const PROVIDER_ENV: ReadonlyArray<readonly [string, string]> = [
  ["anthropic", "ANTHROPIC_API_KEY"],
  ["openai", "OPENAI_API_KEY"]
]

export interface AnalyzeInput {
  /** The file text; `None` when there is no file (an empty config). */
  readonly text: Option.Option<string>
  /** The file's path, for messages. */
  readonly file: string
  readonly env: ConfigEnv
  readonly storePassphraseFile: StorePassphraseFile
  readonly argon2?: Argon2Params
}

export interface Analysis {
  readonly config: CaraConfig
  readonly findings: ReadonlyArray<ConfigFinding>
  readonly secrets: ReadonlyMap<string, SecretSlot>
}

const defaultsOnly = (): CaraConfig => Schema.decodeUnknownSync(CaraConfig)({})

/**
 * Every secret value this load resolved goes into the process-wide redaction registry (the logger, the
 * audit writers and the error renderers consult it), together with the secret env variables themselves:
 * those reach the daemon through fallbacks (`MATRIX_PASSWORD`, `CARAPACE_GATEWAY_TOKEN`) that never pass a
 * config field.
 */
const registerLoadedSecrets = (secrets: ReadonlyMap<string, SecretSlot>, env: ConfigEnv) => {
  for (const slot of secrets.values()) if (slot.state === "open") registerSecret(slot.value)
  for (const name of ["CARAPACE_CONFIG_PASSWORD", ...SECRET_ENV_NAMES]) {
    const v = env[name]
    if (v !== undefined) registerSecret(v)
  }
}

/** A warning per repeated key, naming its path and both lines (JSON5 keeps the last value silently). */
const duplicateKeyFindings = (text: string, file: string): ReadonlyArray<ConfigFinding> => {
  const tree = parseWithPositions(text)
  // The position-aware parser is stricter than json5 on a few exotic forms; no tree, no duplicate check.
  if (Either.isLeft(tree)) return []
  return duplicateKeys(text, tree.right).map((d) =>
    warn(
      dot(d.path),
      `duplicate key ${d.path.join(".")} in ${file} (lines ${d.first.line} and ${d.again.line}); only the last one is used and the earlier value is ignored. Remove or merge one of them`
    )
  )
}

export const analyzeConfig = (input: AnalyzeInput): Effect.Effect<Analysis> =>
  Effect.gen(function*() {
    const findings: Array<ConfigFinding> = []
    const secrets = new Map<string, SecretSlot>()
    const stop = () => ({ config: defaultsOnly(), findings, secrets })

    let parsed: Json = {}
    if (Option.isSome(input.text)) {
      try {
        parsed = JSON5.parse(input.text.value)
      } catch (e) {
        const { lineNumber, columnNumber } = e as { lineNumber?: number; columnNumber?: number }
        const where = lineNumber !== undefined ? `${input.file}:${lineNumber}:${columnNumber ?? 0}` : input.file
        const msg = (e as Error).message.replace(/^JSON5: /, "")
        findings.push(err(".", `${where}: JSON5 syntax error: ${msg}. Fix the file and start again`))
        return stop()
      }
    }
    if (!isObject(parsed)) {
      findings.push(err(".", `${input.file} must contain a JSON5 object at the top level`))
      return stop()
    }
    const raw = parsed
    if (Option.isSome(input.text)) findings.push(...duplicateKeyFindings(input.text.value, input.file))
    if (raw["$include"] !== undefined) {
      findings.push(err(".$include", "$include is not supported by cara; paste the included content into this file"))
    }
    if (raw["env"] !== undefined) {
      findings.push(
        warn(".env", "the env block is not read by cara; export these variables in the daemon's environment instead")
      )
    }

    // ${VAR} substitution; `$${VAR}` is the escape for a literal `${VAR}`.
    const tree = mapStrings(raw, (s, p) =>
      s.replace(VAR, (whole, escaped: string | undefined, name: string | undefined) => {
        if (escaped !== undefined) return `\${${escaped}}`
        const v = input.env[name!]
        // A variable substituted into a secret field is itself a secret, also when it is only part of it.
        if (v !== undefined && isSecretPath(p.join("."))) registerSecret(v)
        if (v === undefined) {
          findings.push(
            err(
              dot(p),
              `Missing environment variable ${name} (referenced at ${dot(p)} in ${input.file}); export it in the daemon's environment or remove the placeholder`
            )
          )
          return ""
        }
        return v
      })
    ) as JsonObject

    // Envelopes: only enc:v2, and only at secret paths.
    const sealed: Array<[string, string]> = []
    mapStrings(tree, (s, p) => {
      const version = envelopeVersion(s)
      if (Option.isSome(version)) {
        const at = p.join(".")
        if (version.value !== 2) {
          findings.push(
            err(
              dot(p),
              `unsupported encrypted config secret envelope enc:v${version.value} at ${dot(p)}; only enc:v2 is supported; re-enter this secret`
            )
          )
        } else if (!isSecretPath(at)) {
          findings.push(err(dot(p), `${dot(p)} is not a secret path and cannot hold an enc:v2 value; replace it with the plain value`))
        }
      }
      return s
    })

    const password = configPassword(input.env)
    const params = input.argon2 ?? ARGON2_PARAMS
    for (const at of allSecretPaths()) {
      const p = at.split(".")
      const v = getIn(tree, p)
      if (v === undefined || v === null) continue
      if (typeof v !== "string") {
        findings.push(err(`.${at}`, `${at} must be a string (a plain value, a \${VAR} placeholder or an enc:v2 value)`))
        deleteIn(tree, p)
        continue
      }
      if (v.trim() === "") {
        deleteIn(tree, p)
        continue
      }
      const version = envelopeVersion(v)
      if (Option.isSome(version)) {
        if (version.value !== 2) {
          deleteIn(tree, p)
          continue
        }
        const envelope = parseEnvelope(v)
        if (Either.isLeft(envelope)) {
          findings.push(err(`.${at}`, `the enc:v2 value at ${at} is malformed (${envelope.left.reason}); re-enter this secret`))
          deleteIn(tree, p)
          continue
        }
        sealed.push([at, v])
        if (Option.isNone(password)) {
          secrets.set(at, { state: "locked" })
          findings.push(warn(`.${at}`, `CARAPACE_CONFIG_PASSWORD is not set; the sealed value at ${at} stays locked`))
        } else {
          const key = yield* deriveKey(password.value, envelope.right.salt, params)
          const opened = openWithKey(key, envelope.right)
          if (Either.isRight(opened)) {
            secrets.set(at, { state: "open", value: Redacted.make(opened.right) })
          } else {
            secrets.set(at, { state: "wrong-password" })
            findings.push(
              warn(`.${at}`, `CARAPACE_CONFIG_PASSWORD does not open the sealed value at ${at} (wrong password or corrupted value)`)
            )
          }
        }
      } else {
        secrets.set(at, { state: "open", value: Redacted.make(v) })
        const rawValue = getIn(raw, p)
        if (typeof rawValue === "string" && !rawValue.includes("${")) {
          findings.push(
            warn(`.${at}`, `${at} holds a plaintext secret; use a \${VAR} placeholder, or let cara seal it (cara config rekey keeps sealed values sealed)`)
          )
        }
      }
      setIn(tree, p, { path: at, source: "config" })
    }

    // Env fallbacks: only for keys absent from the config; the config wins.
    const matrix = tree["matrix"]
    if (isObject(matrix)) {
      for (const [field, envName, secret] of MATRIX_ENV) {
        const at = `matrix.${field}`
        const envValue = (input.env[envName] ?? "").trim()
        let present = matrix[field] !== undefined && matrix[field] !== null
        if (!secret && typeof matrix[field] === "string") {
          const t = (matrix[field] as string).trim()
          if (t === "") {
            delete matrix[field]
            present = false
          } else matrix[field] = t
        }
        if (!present && envValue !== "") {
          if (secret) {
            secrets.set(at, { state: "open", value: Redacted.make(envValue) })
            matrix[field] = { path: at, source: "env", env: envName }
          } else {
            matrix[field] = envValue
          }
        } else if (present && envValue !== "") {
          const rawValue = getIn(raw, ["matrix", field])
          if (rawValue !== `\${${envName}}`) {
            const slot = secrets.get(at)
            const configValue = secret
              ? slot?.state === "open" ? Redacted.value(slot.value).trim() : undefined
              : (matrix[field] as string)
            if (configValue !== undefined && configValue !== envValue) {
              findings.push(warn(`.${at}`, `${field} is set in config and ${envName} is also set; the config field takes precedence`))
            }
          }
        }
      }
    }
    for (const [section, envName] of PROVIDER_ENV) {
      const envValue = (input.env[envName] ?? "").trim()
      const s = tree[section]
      if (envValue === "" || (s !== undefined && s !== null && !isObject(s))) continue
      const obj = isObject(s) ? s : (tree[section] = {})
      if (obj["apiKey"] === undefined || obj["apiKey"] === null) {
        secrets.set(`${section}.apiKey`, { state: "open", value: Redacted.make(envValue) })
        ;(obj as JsonObject)["apiKey"] = { path: `${section}.apiKey`, source: "env", env: envName }
      }
    }

    registerLoadedSecrets(secrets, input.env)
    const decoded = Schema.decodeUnknownEither(CaraConfig)(tree, { errors: "all", onExcessProperty: "ignore" })
    if (Either.isLeft(decoded)) {
      for (const problem of schemaProblems(decoded.left)) {
        findings.push(err(dot(problem.path), `${dot(problem.path)}: ${problem.message}`))
      }
      return stop()
    }
    const config = decoded.right
    findings.push(...validateConfig(config, { raw, env: input.env, secrets, storePassphraseFile: input.storePassphraseFile }))
    return { config, findings, secrets }
  })

// ---------------------------------------------------------------------------------------------------------
// File access

const errnoOf = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code

/** The config file could not be read, or was refused as unsafe (`config-file-unsafe`). */
export class ConfigReadError extends Data.TaggedError("ConfigReadError")<{
  readonly kind: "config-file-unsafe" | "config-invalid"
  readonly finding: ConfigFinding
}> {
  override get message() {
    return this.finding.message
  }
}

export interface FileFacts {
  readonly isFile: boolean
  readonly isFifo: boolean
  readonly isDevice: boolean
  readonly mode: number
  readonly uid: number
}

/**
 * Why a config file must not be read, or `undefined`: the config holds secrets and decides where the
 * daemon sends them, so a file that another local user can write (world-writable, or owned by someone
 * else) is refused, as is anything but a regular file (a FIFO would block the read, a device never ends).
 * Root-owned files are accepted: root can change anything the daemon reads anyway, and /etc deployments
 * keep the config root-owned.
 */
export const configFileProblem = (file: string, st: FileFacts, currentUid: number | undefined): string | undefined => {
  if (!st.isFile) {
    const what = st.isFifo ? "a FIFO" : st.isDevice ? "a device" : "not a regular file"
    return `${file} is ${what}; the config must be a regular file. Point CARAPACE_CONFIG_PATH at the config file itself`
  }
  if ((st.mode & 0o002) !== 0) {
    return `${file} is world-writable (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")}), so any local user could change where cara sends its secrets; run \`chmod 600 ${file}\` and start again`
  }
  if (currentUid !== undefined && st.uid !== currentUid && st.uid !== 0) {
    return `${file} is owned by uid ${st.uid}, not by the user cara runs as (uid ${currentUid}); run \`chown ${currentUid} ${file}\` (or start cara as its owner) and start again`
  }
  return undefined
}

const currentUid = () => (typeof process.getuid === "function" ? process.getuid() : undefined)

/**
 * Reads the config, refusing more than 4 MiB and unsafe files (see `configFileProblem`); `None` when the
 * file does not exist. The checks run on the opened descriptor (no swap between check and read), and the
 * open is non-blocking so that a FIFO at the path is refused instead of hanging the daemon.
 */
export const readConfigText = (file: string): Effect.Effect<Option.Option<string>, ConfigReadError> =>
  Effect.tryPromise({
    try: async () => {
      const handle = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK).catch((e: unknown) =>
        errnoOf(e) === "ENOENT" ? undefined : Promise.reject(e)
      )
      if (handle === undefined) return Option.none<string>()
      try {
        const st = await handle.stat()
        const problem = configFileProblem(file, {
          isFile: st.isFile(),
          isFifo: st.isFIFO(),
          isDevice: st.isCharacterDevice() || st.isBlockDevice(),
          mode: st.mode,
          uid: st.uid
        }, currentUid())
        if (problem !== undefined) throw new ConfigReadError({ kind: "config-file-unsafe", finding: err(".", problem) })
        const buf = Buffer.alloc(MAX_CONFIG_BYTES + 1)
        let total = 0
        for (;;) {
          const { bytesRead } = await handle.read(buf, total, buf.length - total, total)
          if (bytesRead === 0) break
          total += bytesRead
          if (total > MAX_CONFIG_BYTES) throw Object.assign(new Error("too large"), { code: "E2BIG" })
        }
        return Option.some(buf.subarray(0, total).toString("utf8"))
      } finally {
        await handle.close()
      }
    },
    catch: (e) =>
      e instanceof ConfigReadError
        ? e
        : new ConfigReadError({
          kind: "config-invalid",
          finding: errnoOf(e) === "E2BIG"
            ? err(".", `${file} is larger than 4 MiB; a config file must be at most ${MAX_CONFIG_BYTES} bytes`)
            : err(".", `cannot read ${file} (${errnoOf(e) ?? String(e)}); check the path and its permissions`)
        })
  })

/** `CARAPACE_CONFIG_PATH`, else `{state_dir}/carapace.json5`, else `{state_dir}/carapace.json`. */
export const discoverConfigPath = (env: ConfigEnv, stateRoot: string): Effect.Effect<string> =>
  Effect.promise(async () => {
    const explicit = env["CARAPACE_CONFIG_PATH"]
    if (explicit !== undefined && explicit.trim() !== "") return path.resolve(explicit)
    const json5 = path.join(stateRoot, "carapace.json5")
    const json = path.join(stateRoot, "carapace.json")
    const exists = (p: string) => fs.stat(p).then(() => true, () => false)
    if (await exists(json5)) return json5
    if (await exists(json)) return json
    return json5
  })

const probeStorePassphraseFile = (stateRoot: string): Effect.Effect<StorePassphraseFile> =>
  Effect.promise(async (): Promise<StorePassphraseFile> => {
    const file = path.join(stateRoot, "matrix", "store_passphrase")
    try {
      const st = await fs.stat(file)
      if (!st.isFile()) return { state: "bad", problem: `${file} is not a regular file` }
      if (st.size > 65536) return { state: "bad", problem: `${file} is larger than 65536 bytes` }
      const text = await fs.readFile(file, "utf8")
      return text.trim() === "" ? { state: "bad", problem: `${file} is empty after trimming` } : { state: "present" }
    } catch (e) {
      return errnoOf(e) === "ENOENT" ? { state: "absent" } : { state: "bad", problem: `${file} could not be read (${errnoOf(e)})` }
    }
  })

/** Discovers, reads and analyses the config (never fails: every problem is a finding). */
export const loadConfigSnapshot = (env: ConfigEnv, argon2?: Argon2Params): Effect.Effect<ConfigSnapshot, never, StateDir> =>
  Effect.gen(function*() {
    const stateDir = yield* StateDir
    const target = yield* discoverConfigPath(env, stateDir.root)
    const read = yield* Effect.either(readConfigText(target))
    const storePassphraseFile = yield* probeStorePassphraseFile(stateDir.root)
    if (Either.isLeft(read)) {
      return {
        path: Option.some(target),
        targetPath: target,
        config: defaultsOnly(),
        findings: [read.left.finding],
        secrets: new Map(),
        ...(read.left.kind === "config-file-unsafe" ? { refused: read.left.kind } : {})
      } satisfies ConfigSnapshot
    }
    const analysis = yield* analyzeConfig({
      text: read.right,
      file: target,
      env,
      storePassphraseFile,
      ...(argon2 !== undefined ? { argon2 } : {})
    })
    const findings = [...analysis.findings]
    if (Option.isNone(read.right) && (env["CARAPACE_CONFIG_PATH"] ?? "").trim() !== "") {
      findings.unshift(warn(".", `CARAPACE_CONFIG_PATH points to ${target}, which does not exist; using an empty config`))
    }
    return {
      path: Option.map(read.right, () => target),
      targetPath: target,
      config: analysis.config,
      findings,
      secrets: analysis.secrets
    } satisfies ConfigSnapshot
  })

export const formatFinding = (f: ConfigFinding) =>
  `Config ${f.severity} at ${f.path}: ${f.message}`

// ---------------------------------------------------------------------------------------------------------
// The service

export interface ConfigSecretsOptions {
  /** Defaults to a snapshot of `process.env` taken when the layer is built. */
  readonly env?: ConfigEnv
  /** Fail the layer when the config has errors (the daemon); `false` for tools that report them. */
  readonly failOnErrors?: boolean
  readonly argon2?: Argon2Params
}

const writeError = (kind: ConfigWriteError["kind"], file: string, message: string) =>
  new ConfigWriteError({ kind, path: file, message })

export const makeConfigSecrets = (options: ConfigSecretsOptions = {}) =>
  Effect.gen(function*() {
    const env: ConfigEnv = options.env ?? { ...process.env }
    const stateDir = yield* StateDir
    const initial: ConfigSnapshot = yield* loadConfigSnapshot(env, options.argon2)
    const file = initial.targetPath

    for (const f of initial.findings) if (f.severity === "warning") yield* Effect.logWarning(formatFinding(f))
    if ((options.failOnErrors ?? true) && hasErrors(initial.findings)) {
      const errors = initial.findings.filter((f) => f.severity === "error")
      for (const f of errors) yield* Effect.logError(formatFinding(f))
      return yield* new ConfigLoadError({
        kind: initial.refused ?? "config-invalid",
        path: Option.getOrElse(initial.path, () => file),
        message: `Configuration contains ${errors.length} error(s), aborting startup: ${
          errors.map((f) => `${f.path}: ${f.message}`).join("; ")
        }. Fix them (cara config check lists them) and start again.`,
        findings: errors
      })
    }

    const current = yield* Ref.make(initial)
    const lock = yield* Effect.makeSemaphore(1)
    const storePassphraseFile = () => probeStorePassphraseFile(stateDir.root)

    const secretOption = (ref: SecretRef | string) =>
      Effect.gen(function*() {
        const at = typeof ref === "string" ? ref : ref.path
        const slot = (yield* Ref.get(current)).secrets.get(at)
        if (slot === undefined) return Option.none<Redacted.Redacted<string>>()
        if (slot.state === "open") return Option.some(slot.value)
        return yield* new ConfigSecretError({
          kind: slot.state === "locked" ? "config-secret-locked" : "config-secret-wrong-password",
          path: at,
          message: slot.state === "locked"
            ? `${at} is sealed (enc:v2) and CARAPACE_CONFIG_PASSWORD is not set; set CARAPACE_CONFIG_PASSWORD to the password it was sealed with and restart`
            : `CARAPACE_CONFIG_PASSWORD does not open the sealed ${at} (wrong password or corrupted value); set the password it was sealed with, or replace the value and restart`
        })
      })

    const secret = (ref: SecretRef | string) =>
      Effect.flatMap(secretOption(ref), (o) =>
        Option.match(o, {
          onSome: Effect.succeed,
          onNone: () => {
            const at = typeof ref === "string" ? ref : ref.path
            return Effect.fail(
              new ConfigSecretError({ kind: "config-secret-missing", path: at, message: `no value is configured at ${at}; set it in the config or its env variable` })
            )
          }
        }))

    /**
     * The one way the file is written: re-read it, plan edits against what is on disk now, splice them in,
     * prove the result, guard against downgrades and new errors, and replace the file atomically only if
     * nobody changed it meanwhile (otherwise start over from the new content).
     */
    const writeBack = (
      plan: (raw: JsonObject) => Effect.Effect<ReadonlyArray<Edit>, ConfigWriteError>
    ): Effect.Effect<void, ConfigWriteError> =>
      lock.withPermits(1)(
        Effect.gen(function*() {
          const target = yield* Effect.promise(() => fs.realpath(file).catch(() => file))
          for (let attempt = 0; attempt < 5; attempt++) {
            const before = yield* Effect.mapError(readConfigText(target), (f) => writeError("config-write-io", target, f.message))
            const text = Option.getOrElse(before, () => "{}\n")
            let raw: Json
            try {
              raw = JSON5.parse(text)
            } catch (e) {
              return yield* writeError(
                "config-write-refused",
                target,
                `config file at ${target} failed to parse (${(e as Error).message}); refusing to write into an unparseable file. Fix its syntax first`
              )
            }
            if (!isObject(raw)) {
              return yield* writeError("config-write-refused", target, `config file at ${target} is not a JSON5 object; fix it first`)
            }
            const edits = yield* plan(raw)
            if (edits.length === 0) return
            const edited = applyEdits(text, edits)
            if (Either.isLeft(edited)) {
              return yield* writeError("config-write-refused", target, `cannot edit ${target}: ${edited.left.reason}`)
            }
            const violations = downgradeViolations(raw, edited.right.value, Option.isSome(configPassword(env)))
            if (violations.length > 0) {
              return yield* writeError(
                "config-write-downgrade",
                target,
                `refusing to replace or change sealed values at ${violations.join(", ")} without sealing them; set CARAPACE_CONFIG_PASSWORD and retry`
              )
            }
            const spf = yield* storePassphraseFile()
            const analyse = (t: string) =>
              analyzeConfig({ text: Option.some(t), file: target, env, storePassphraseFile: spf, ...(options.argon2 ? { argon2: options.argon2 } : {}) })
            const old = yield* analyse(text)
            const next = yield* analyse(edited.right.text)
            const known = new Set(old.findings.filter((f) => f.severity === "error").map((f) => `${f.path}\0${f.message}`))
            const fresh = next.findings.filter((f) => f.severity === "error" && !known.has(`${f.path}\0${f.message}`))
            if (fresh.length > 0) {
              return yield* writeError(
                "config-write-refused",
                target,
                `invalid config after the write: ${fresh.map((f) => `${f.path}: ${f.message}`).join("; ")}`
              )
            }
            const still = yield* Effect.mapError(readConfigText(target), (f) => writeError("config-write-io", target, f.message))
            if (!Option.getEquivalence((a: string, b: string) => a === b)(still, before)) continue
            yield* Effect.mapError(stateDir.writeAtomic(target, edited.right.text, { mode: 0o600 }), (e) =>
              writeError("config-write-io", target, e.message))
            yield* Ref.update(current, (s) => ({ ...s, path: Option.some(file), secrets: next.secrets }))
            return
          }
          return yield* writeError(
            "config-write-conflict",
            target,
            `${target} kept changing while cara tried to update it; stop other writers and retry`
          )
        })
      )

    const requirePassword = (what: string) =>
      Option.match(configPassword(env), {
        onNone: () =>
          Effect.fail(
            writeError(
              "config-password-missing",
              file,
              `CARAPACE_CONFIG_PASSWORD is required to ${what} so the value is sealed (enc:v2) in the config; set it in the daemon environment and retry`
            )
          ),
        onSome: Effect.succeed
      })

    /** A set that reuses the ciphertext when the file already holds the same value (no churn). */
    const sealedEdit = (raw: JsonObject, at: string, plaintext: string, password: string) =>
      Effect.gen(function*() {
        const p = at.split(".")
        const existing = getIn(raw, p)
        if (typeof existing === "string" && !isExactPlaceholder(existing)) {
          const envelope = parseEnvelope(existing)
          if (Either.isRight(envelope)) {
            const key = yield* deriveKey(password, envelope.right.salt, options.argon2 ?? ARGON2_PARAMS)
            const opened = openWithKey(key, envelope.right)
            if (Either.isRight(opened) && opened.right === plaintext) return [] as ReadonlyArray<Edit>
          }
        }
        const sealer = yield* makeSealer(password, options.argon2 ?? ARGON2_PARAMS)
        return [{ op: "set", path: p, value: sealer.seal(plaintext) }] as ReadonlyArray<Edit>
      })

    const setMatrixAccessToken = (token: Redacted.Redacted<string>, deviceId: string) =>
      Effect.gen(function*() {
        const d = deviceId.trim()
        if (d === "" || utf8Bytes(d) > 255) {
          return yield* writeError("config-write-refused", file, "the device id to persist must be 1 to 255 bytes")
        }
        if (Redacted.value(token).trim() === "") {
          return yield* writeError("config-write-refused", file, "refusing to persist an empty access token")
        }
        // A token from a password login was never in the config: known to the redactor from now on.
        registerSecret(token)
        // Snapshot the password once, before sealing: it cannot vanish between check and seal.
        const password = yield* requirePassword("persist the Matrix access token")
        yield* writeBack((raw) =>
          Effect.gen(function*() {
            if (raw["matrix"] !== undefined && !isObject(raw["matrix"])) {
              return yield* writeError("config-write-refused", file, "matrix in the config is not an object; fix it first")
            }
            const tokenEdits = yield* sealedEdit(raw, "matrix.accessToken", Redacted.value(token), password)
            const deviceEdits: ReadonlyArray<Edit> = getIn(raw, ["matrix", "deviceId"]) === d
              ? []
              : [{ op: "set", path: ["matrix", "deviceId"], value: d }]
            return [...tokenEdits, ...deviceEdits]
          })
        )
        yield* Effect.logInfo("Persisted the Matrix access token (sealed) and device id to the config file")
      }).pipe(Effect.withSpan("ConfigSecrets.setMatrixAccessToken"))

    const removeMatrixPassword = () =>
      writeBack((raw) =>
        Effect.succeed(
          isObject(raw["matrix"]) && Object.hasOwn(raw["matrix"], "password")
            ? [{ op: "delete", path: ["matrix", "password"] } as const]
            : []
        )
      ).pipe(
        Effect.withSpan("ConfigSecrets.removeMatrixPassword")
      )

    const setSealedSecret = (at: string, value: Redacted.Redacted<string>) =>
      Effect.gen(function*() {
        if (!isSecretPath(at)) {
          return yield* writeError("config-write-refused", file, `${at} is not a secret path; only secret paths are sealed`)
        }
        const plaintext = Redacted.value(value)
        if (isMalformedPlaceholder(plaintext)) {
          return yield* writeError("config-write-refused", file, `malformed env placeholder at ${at}: use \${UPPERCASE_NAME}`)
        }
        if (isExactPlaceholder(plaintext)) {
          // A placeholder is a reference, not a secret: it is written as is, never sealed.
          yield* writeBack(() => Effect.succeed([{ op: "set", path: at.split("."), value: plaintext.trim() }]))
          return
        }
        const password = yield* requirePassword(`write ${at}`)
        yield* writeBack((raw) => sealedEdit(raw, at, plaintext, password))
      }).pipe(Effect.withSpan("ConfigSecrets.setSealedSecret"))

    // the same write-back (validation, downgrade and conflict checks) for a plain value
    const setValue = (at: string, value: unknown) =>
      isSecretPath(at)
        ? Effect.fail(writeError("config-write-refused", file, `${at} is a secret path; it is written sealed (setSealedSecret)`))
        : writeBack(() => Effect.succeed([{ op: "set", path: at.split("."), value }]))

    return {
      path: initial.path,
      config: initial.config,
      findings: initial.findings,
      secret,
      secretOption,
      setMatrixAccessToken,
      removeMatrixPassword,
      setSealedSecret,
      setValue
    } satisfies ConfigSecretsShape
  }).pipe(Effect.annotateLogs({ service: "ConfigSecrets" }))

/** The daemon's ConfigSecrets: `process.env`, and startup fails on config errors. */
export const ConfigSecretsLive = Layer.effect(ConfigSecrets, makeConfigSecrets())

/** ConfigSecrets with an explicit env and options (tests, tools). */
export const ConfigSecretsWith = (options: ConfigSecretsOptions) => Layer.effect(ConfigSecrets, makeConfigSecrets(options))

