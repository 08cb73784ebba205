// The config load pipeline (reference §1): parse → ${VAR} → envelopes → secrets → env fallbacks → schema →
// validation. No file I/O: the text comes in, the decoded config, its findings and the secrets' states go out
// (opening a sealed value runs the KDF, hence an Effect; every resolved secret joins the redaction registry).
import { Effect, Either, Option, Redacted, Schema } from "effect"
import JSON5 from "json5"
import {
  allSecretPaths,
  CaraConfig,
  type ConfigFinding,
  isSecretPath,
  schemaProblems,
  SECRET_ENV_NAMES
} from "./config.js"
import {
  type ConfigEnv,
  configPassword,
  deleteIn,
  dot,
  err,
  getIn,
  isObject,
  type Json,
  type JsonObject,
  mapStrings,
  type SecretSlot,
  setIn,
  type StorePassphraseFile,
  validateConfig,
  VAR,
  warn
} from "./configValidation.js"
import { duplicateKeys, parseWithPositions } from "./json5edit.js"
import { registerSecret } from "./redact.js"
import { ARGON2_PARAMS, type Argon2Params, deriveKey, envelopeVersion, openWithKey, parseEnvelope } from "./secrets.js"

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
  /**
   * Which sealed values to open (each costs one Argon2id derivation); the others stay `locked`, and the
   * validation reads them as unavailable (such a caller ignores the findings). All of them when absent: the
   * daemon and `cara config check` need every one, a command that talks to the daemon only the gateway
   * credential (or none, when CARAPACE_GATEWAY_TOKEN is set).
   */
  readonly unseal?: (path: string) => boolean
}

export interface Analysis {
  readonly config: CaraConfig
  readonly findings: ReadonlyArray<ConfigFinding>
  readonly secrets: ReadonlyMap<string, SecretSlot>
}

export const defaultsOnly = (): CaraConfig => Schema.decodeUnknownSync(CaraConfig)({})

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
      `duplicate key ${
        d.path.join(".")
      } in ${file} (lines ${d.first.line} and ${d.again.line}); only the last one is used and the earlier value is ignored. Remove or merge one of them`
    )
  )
}

/** The file text parsed as a JSON5 object, or the finding that stops the load. */
const parseTopLevel = (input: AnalyzeInput): Either.Either<JsonObject, ConfigFinding> => {
  let parsed: Json = {}
  if (Option.isSome(input.text)) {
    try {
      parsed = JSON5.parse(input.text.value)
    } catch (e) {
      const { lineNumber, columnNumber } = e as { lineNumber?: number; columnNumber?: number }
      const where = lineNumber !== undefined ? `${input.file}:${lineNumber}:${columnNumber ?? 0}` : input.file
      const msg = (e as Error).message.replace(/^JSON5: /, "")
      return Either.left(err(".", `${where}: JSON5 syntax error: ${msg}. Fix the file and start again`))
    }
  }
  if (!isObject(parsed)) return Either.left(err(".", `${input.file} must contain a JSON5 object at the top level`))
  return Either.right(parsed)
}

/** Keys cara refuses or ignores at the top level, and duplicate keys. */
const structureFindings = (raw: JsonObject, input: AnalyzeInput): Array<ConfigFinding> => {
  const findings: Array<ConfigFinding> = []
  if (Option.isSome(input.text)) findings.push(...duplicateKeyFindings(input.text.value, input.file))
  if (raw["$include"] !== undefined) {
    findings.push(err(".$include", "$include is not supported by cara; paste the included content into this file"))
  }
  if (raw["env"] !== undefined) {
    findings.push(
      warn(".env", "the env block is not read by cara; export these variables in the daemon's environment instead")
    )
  }
  return findings
}

/** `${VAR}` substitution; `$${VAR}` is the escape for a literal `${VAR}`. */
const substituteVars = (raw: JsonObject, input: AnalyzeInput, findings: Array<ConfigFinding>): JsonObject =>
  mapStrings(raw, (s, p) =>
    s.replace(VAR, (whole, escaped: string | undefined, name: string | undefined) => {
      if (escaped !== undefined) return `\${${escaped}}`
      const v = input.env[name!]
      // A variable substituted into a secret field is itself a secret, also when it is only part of it.
      if (v !== undefined && isSecretPath(p.join("."))) registerSecret(v)
      if (v === undefined) {
        findings.push(
          err(
            dot(p),
            `Missing environment variable ${name} (referenced at ${
              dot(p)
            } in ${input.file}); export it in the daemon's environment or remove the placeholder`
          )
        )
        return ""
      }
      return v
    })) as JsonObject

/** Envelopes: only enc:v2, and only at secret paths. */
const envelopeFindings = (tree: JsonObject, findings: Array<ConfigFinding>) => {
  mapStrings(tree, (s, p) => {
    const version = envelopeVersion(s)
    if (Option.isSome(version)) {
      const at = p.join(".")
      if (version.value !== 2) {
        findings.push(
          err(
            dot(p),
            `unsupported encrypted config secret envelope enc:v${version.value} at ${
              dot(p)
            }; only enc:v2 is supported; re-enter this secret`
          )
        )
      } else if (!isSecretPath(at)) {
        findings.push(
          err(dot(p), `${dot(p)} is not a secret path and cannot hold an enc:v2 value; replace it with the plain value`)
        )
      }
    }
    return s
  })
}

/**
 * Every secret path: a plain value, a sealed one (opened when the password allows) or nothing; the value in
 * the tree becomes a SecretRef and its state goes into `secrets`.
 */
const resolveSecrets = (
  tree: JsonObject,
  raw: JsonObject,
  input: AnalyzeInput,
  findings: Array<ConfigFinding>,
  secrets: Map<string, SecretSlot>
) =>
  Effect.gen(function*() {
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
          findings.push(
            err(`.${at}`, `the enc:v2 value at ${at} is malformed (${envelope.left.reason}); re-enter this secret`)
          )
          deleteIn(tree, p)
          continue
        }
        if (input.unseal !== undefined && !input.unseal(at)) {
          secrets.set(at, { state: "locked" })
        } else if (Option.isNone(password)) {
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
              warn(
                `.${at}`,
                `CARAPACE_CONFIG_PASSWORD does not open the sealed value at ${at} (wrong password or corrupted value)`
              )
            )
          }
        }
      } else {
        secrets.set(at, { state: "open", value: Redacted.make(v) })
        const rawValue = getIn(raw, p)
        if (typeof rawValue === "string" && !rawValue.includes("${")) {
          findings.push(
            warn(
              `.${at}`,
              `${at} holds a plaintext secret; use a \${VAR} placeholder, or let cara seal it (cara config rekey keeps sealed values sealed)`
            )
          )
        }
      }
      setIn(tree, p, { path: at, source: "config" })
    }
  })

/** Env fallbacks: only for keys absent from the config; the config wins. */
const applyEnvFallbacks = (
  tree: JsonObject,
  raw: JsonObject,
  env: ConfigEnv,
  findings: Array<ConfigFinding>,
  secrets: Map<string, SecretSlot>
) => {
  const matrix = tree["matrix"]
  if (isObject(matrix)) {
    for (const [field, envName, secret] of MATRIX_ENV) {
      const at = `matrix.${field}`
      const envValue = (env[envName] ?? "").trim()
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
            findings.push(
              warn(`.${at}`, `${field} is set in config and ${envName} is also set; the config field takes precedence`)
            )
          }
        }
      }
    }
  }
  for (const [section, envName] of PROVIDER_ENV) {
    const envValue = (env[envName] ?? "").trim()
    const s = tree[section]
    if (envValue === "" || (s !== undefined && s !== null && !isObject(s))) continue
    const obj = isObject(s) ? s : (tree[section] = {})
    if (obj["apiKey"] === undefined || obj["apiKey"] === null) {
      secrets.set(`${section}.apiKey`, { state: "open", value: Redacted.make(envValue) })
      ;(obj as JsonObject)["apiKey"] = { path: `${section}.apiKey`, source: "env", env: envName }
    }
  }
}

export const analyzeConfig = (input: AnalyzeInput): Effect.Effect<Analysis> =>
  Effect.gen(function*() {
    const findings: Array<ConfigFinding> = []
    const secrets = new Map<string, SecretSlot>()
    const stop = () => ({ config: defaultsOnly(), findings, secrets })
    const parsed = parseTopLevel(input)
    if (Either.isLeft(parsed)) {
      findings.push(parsed.left)
      return stop()
    }
    const raw = parsed.right
    findings.push(...structureFindings(raw, input))
    const tree = substituteVars(raw, input, findings)
    envelopeFindings(tree, findings)
    yield* resolveSecrets(tree, raw, input, findings, secrets)
    applyEnvFallbacks(tree, raw, input.env, findings, secrets)
    registerLoadedSecrets(secrets, input.env)
    const decoded = Schema.decodeUnknownEither(CaraConfig)(tree, { errors: "all", onExcessProperty: "ignore" })
    if (Either.isLeft(decoded)) {
      for (const problem of schemaProblems(decoded.left)) {
        findings.push(err(dot(problem.path), `${dot(problem.path)}: ${problem.message}`))
      }
      return stop()
    }
    const config = decoded.right
    findings.push(
      ...validateConfig(config, { raw, env: input.env, secrets, storePassphraseFile: input.storePassphraseFile })
    )
    return { config, findings, secrets }
  })
