import { Context, type Effect, type Option, type Redacted, Schema } from "effect"
import { type CaraConfig, ConfigFinding, type SecretRef } from "../domain/config.js"

/**
 * The startup configuration is unusable: a syntax error, a missing `${VAR}`, an unsupported envelope or a
 * schema error. `findings` lists every problem with its config path.
 */
export class ConfigLoadError extends Schema.TaggedError<ConfigLoadError>()("ConfigLoadError", {
  /** `config-file-unsafe`: the file was not read at all (world-writable, another user's, not a regular file). */
  kind: Schema.Literal("config-invalid", "config-file-unsafe"),
  path: Schema.String,
  message: Schema.String,
  findings: Schema.Array(ConfigFinding)
}) {}

/** A secret value cannot be given out. `path` is the config path (`matrix.accessToken`). */
export class ConfigSecretError extends Schema.TaggedError<ConfigSecretError>()("ConfigSecretError", {
  kind: Schema.Literal(
    "config-secret-locked",
    "config-secret-wrong-password",
    "config-secret-malformed",
    "config-secret-missing"
  ),
  path: Schema.String,
  message: Schema.String
}) {}

/** A write-back to the config file was refused or failed; the file on disk is unchanged. */
export class ConfigWriteError extends Schema.TaggedError<ConfigWriteError>()("ConfigWriteError", {
  kind: Schema.Literal(
    "config-password-missing",
    "config-write-refused",
    "config-write-downgrade",
    "config-write-conflict",
    "config-write-io"
  ),
  path: Schema.String,
  message: Schema.String
}) {}

export interface ConfigSecretsShape {
  /** The config file actually read (`None` when there was none and defaults apply). */
  readonly path: Option.Option<string>
  /** The decoded, validated config as loaded at startup (`${VAR}` substituted, env fallbacks applied). */
  readonly config: CaraConfig
  /** Every finding of the startup load; errors have already stopped startup, warnings were logged once. */
  readonly findings: ReadonlyArray<ConfigFinding>
  /**
   * The plaintext of a secret, from a `SecretRef` of the decoded config or a dot path
   * (`"matrix.accessToken"`). Reflects write-backs made since startup.
   */
  readonly secret: (ref: SecretRef | string) => Effect.Effect<Redacted.Redacted<string>, ConfigSecretError>
  /** Like `secret`, but `None` when the path holds no value. */
  readonly secretOption: (
    ref: SecretRef | string
  ) => Effect.Effect<Option.Option<Redacted.Redacted<string>>, ConfigSecretError>
  /**
   * After a password login: seals the access token to `enc:v2` (requires `CARAPACE_CONFIG_PASSWORD`) and
   * writes `matrix.accessToken` and `matrix.deviceId` into the file as minimal in-place edits.
   */
  readonly setMatrixAccessToken: (
    token: Redacted.Redacted<string>,
    deviceId: string
  ) => Effect.Effect<void, ConfigWriteError>
  /** Deletes `matrix.password` from the file (whatever it holds); a no-op when it is absent. */
  readonly removeMatrixPassword: () => Effect.Effect<void, ConfigWriteError>
  /** Seals a value to `enc:v2` and writes it at a secret path (`"openai.apiKey"`), keeping the file's text. */
  readonly setSealedSecret: (path: string, value: Redacted.Redacted<string>) => Effect.Effect<void, ConfigWriteError>
  /** Writes a value at a path that is not a secret path (`cara config set`), keeping the file's text. */
  readonly setValue: (path: string, value: unknown) => Effect.Effect<void, ConfigWriteError>
}

export class ConfigSecrets extends Context.Tag("cara/ConfigSecrets")<ConfigSecrets, ConfigSecretsShape>() {}
