// `cara config show | get | set`: the config as the daemon reads it, with every secret masked, and one
// value written back through the config's own write path (comments kept; secrets sealed).
import { Effect, Either, Option, Redacted, Schema } from "effect"
import JSON5 from "json5"
import type { CaraConfig } from "../domain/config.js"
import { isSecretPath, SecretRef } from "../domain/config.js"
import { isExactPlaceholder } from "../domain/secrets.js"
import { type ConfigEnv, ConfigSecretsWith, loadConfigSnapshot } from "../layers/ConfigSecretsLive.js"
import { acquireRekeyLock } from "../layers/StorePassphraseLive.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"
import { StateDir } from "../services/StateDir.js"

/** `cara config get|set` refused; the message says why and what to do. */
export class ConfigEditError extends Schema.TaggedError<ConfigEditError>()("ConfigEditError", {
  kind: Schema.Literal(
    "config-path-not-found",
    "config-path-invalid",
    "config-set-daemon-running",
    "config-set-invalid-value"
  ),
  message: Schema.String
}) {}

/** The values the daemon writes itself (login, bootstrap): changed only while it is stopped. */
export const DAEMON_OWNED_PATHS: ReadonlyArray<string> = ["matrix.accessToken", "matrix.deviceId", "matrix.password"]

/** How a secret is shown: where it comes from, never what it is. */
const maskRef = (ref: SecretRef): string =>
  ref.source === "env" ? `<secret from $${ref.env ?? "?"}>` : `<secret at ${ref.path}>`

/** The config as plain data with every secret (and anything redacted) replaced by its mask. */
export const maskConfig = (value: unknown): unknown => {
  if (value instanceof SecretRef) return maskRef(value)
  if (Redacted.isRedacted(value)) return "<redacted>"
  if (Array.isArray(value)) return value.map(maskConfig)
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(
      Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, maskConfig(v)])
    )
  }
  return value
}

/** `matrix.userId` → `["matrix", "userId"]`; empty segments are refused. */
export const parsePath = (dotted: string): Either.Either<ReadonlyArray<string>, ConfigEditError> => {
  const parts = dotted.trim().split(".")
  return parts.some((p) => p === "")
    ? Either.left(
      new ConfigEditError({
        kind: "config-path-invalid",
        message: `"${dotted}" is not a config path; write it dotted, e.g. gateway.port`
      })
    )
    : Either.right(parts)
}

/** The value at `path` of the masked config, `None` when there is none. */
export const valueAt = (masked: unknown, path: ReadonlyArray<string>): Option.Option<unknown> => {
  let at: unknown = masked
  for (const key of path) {
    if (typeof at !== "object" || at === null || !Object.hasOwn(at, key)) return Option.none()
    at = (at as Record<string, unknown>)[key]
  }
  return Option.some(at)
}

/** A command-line value: JSON5 when it parses as such (`42`, `true`, `["a"]`, `"x"`), else the text itself. */
export const parseValue = (text: string): unknown => {
  try {
    return JSON5.parse(text)
  } catch {
    return text
  }
}

/** The config file and its masked, defaults-filled view. */
export const showConfig = (env: ConfigEnv) =>
  Effect.map(loadConfigSnapshot(env), (s) => ({
    path: s.path,
    targetPath: s.targetPath,
    config: maskConfig(s.config as CaraConfig) as Record<string, unknown>,
    errors: s.findings.filter((f) => f.severity === "error").length
  }))

export const getConfig = (env: ConfigEnv, dotted: string) =>
  Effect.gen(function*() {
    const path = yield* parsePath(dotted)
    const shown = yield* showConfig(env)
    const value = valueAt(shown.config, path)
    if (Option.isNone(value)) {
      return yield* new ConfigEditError({
        kind: "config-path-not-found",
        message:
          `${dotted} is not set in ${shown.targetPath} and has no default; \`cara config show\` lists every value`
      })
    }
    return value.value
  })

/** Whether the daemon holds the maintenance lock right now (it does for its whole life). */
const daemonRunning = Effect.scoped(
  Effect.flatMap(StateDir, (stateDir) => acquireRekeyLock(stateDir, "doctor")).pipe(
    Effect.as(false),
    Effect.catchTag("RekeyLockHeldError", (e) => Effect.succeed(e.holder === "daemon" || e.holder === "unknown")),
    Effect.orElseSucceed(() => false)
  )
)

export interface SetResult {
  readonly file: string
  readonly path: string
  readonly sealed: boolean
}

/**
 * Writes one value. A secret path takes text only and is sealed with CARAPACE_CONFIG_PASSWORD (a `${VAR}`
 * reference is written as it is); a daemon-owned path is refused while the daemon runs.
 */
export const setConfig = (env: ConfigEnv, dotted: string, text: string) =>
  Effect.gen(function*() {
    const path = (yield* parsePath(dotted)).join(".")
    if (DAEMON_OWNED_PATHS.includes(path) && (yield* daemonRunning)) {
      return yield* new ConfigEditError({
        kind: "config-set-daemon-running",
        message:
          `the running daemon owns ${path} (it writes it at login); stop the daemon, then rerun \`cara config set ${path} …\``
      })
    }
    const secrets = yield* Effect.provide(ConfigSecrets, ConfigSecretsWith({ env, failOnErrors: false }))
    const file = Option.getOrElse(secrets.path, () => "the config file")
    if (isSecretPath(path)) {
      yield* secrets.setSealedSecret(path, Redacted.make(text))
      return { file, path, sealed: !isExactPlaceholder(text) } satisfies SetResult
    }
    yield* secrets.setValue(path, parseValue(text))
    return { file, path, sealed: false } satisfies SetResult
  })
