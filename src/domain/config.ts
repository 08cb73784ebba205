import { Option, Schema } from "effect"

/**
 * The decoded, validated configuration (`carapace.json5`).
 *
 * This is the typed view that every part of the daemon reads through the ConfigSecrets service:
 * `${VAR}` placeholders are already substituted, env fallbacks (`MATRIX_*`, `ANTHROPIC_API_KEY`,
 * `OPENAI_API_KEY`) are applied, defaults are filled in. Secret values never appear here as strings:
 * a secret field holds a `SecretRef`, and the plaintext is obtained as a `Redacted` from
 * `ConfigSecrets.secret(ref)` (which also opens `enc:v2` envelopes and fails with a typed error
 * naming the path when they are locked).
 */

// ---------------------------------------------------------------------------------------------------------
// Secrets

/**
 * Where a secret value lives. `path` is the dot path in the config file (`"matrix.accessToken"`); for a
 * value that came from an env fallback, `source` is `"env"` and `env` names the variable.
 */
export class SecretRef extends Schema.Class<SecretRef>("SecretRef")({
  path: Schema.String,
  source: Schema.Literal("config", "env"),
  env: Schema.optional(Schema.String)
}) {}

/** A field that holds a secret; `null` in the file means absent. */
const Secret = Schema.optionalWith(SecretRef, { nullable: true })

/**
 * Secret paths (reference §2.4) as dot paths. Only these are sealed to `enc:v2` on write-back and
 * re-sealed by `cara config rekey`. `env.<NAME>` / `env.vars.<NAME>` aliases are covered by
 * `SECRET_ENV_NAMES`.
 */
export const SECRET_PATHS: ReadonlyArray<string> = [
  "gateway.auth.token",
  "gateway.auth.password",
  "gateway.hooks.token",
  "anthropic.apiKey",
  "openai.apiKey",
  "google.apiKey",
  "nearai.apiKey",
  "venice.apiKey",
  "ollama.apiKey",
  "providers.ollama.apiKey",
  "bedrock.accessKeyId",
  "bedrock.secretAccessKey",
  "bedrock.sessionToken",
  "models.providers.openai.apiKey",
  "auth.profiles.providers.google.clientSecret",
  "auth.profiles.providers.github.clientSecret",
  "auth.profiles.providers.discord.clientSecret",
  "auth.profiles.providers.openai.clientSecret",
  "telegram.botToken",
  "telegram.webhookSecret",
  "discord.botToken",
  "slack.botToken",
  "slack.signingSecret",
  "matrix.accessToken",
  "matrix.password",
  "matrix.storePassphrase"
]

export const SECRET_ENV_NAMES: ReadonlyArray<string> = [
  "CARAPACE_SERVER_SECRET",
  "CARAPACE_GATEWAY_TOKEN",
  "CARAPACE_GATEWAY_PASSWORD",
  "CARAPACE_HOOKS_TOKEN",
  "ANTHROPIC_API_KEY",
  "OPENAI_API_KEY",
  "GOOGLE_API_KEY",
  "NEARAI_API_KEY",
  "VENICE_API_KEY",
  "OLLAMA_API_KEY",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "TELEGRAM_BOT_TOKEN",
  "TELEGRAM_WEBHOOK_SECRET",
  "DISCORD_BOT_TOKEN",
  "SLACK_BOT_TOKEN",
  "SLACK_SIGNING_SECRET",
  "MATRIX_ACCESS_TOKEN",
  "MATRIX_PASSWORD",
  "MATRIX_STORE_PASSPHRASE",
  "OPENAI_OAUTH_CLIENT_SECRET",
  "GOOGLE_OAUTH_CLIENT_SECRET",
  "GITHUB_OAUTH_CLIENT_SECRET",
  "DISCORD_OAUTH_CLIENT_SECRET"
]

/** Every secret dot path, including the `env` aliases. */
export const allSecretPaths = (): ReadonlyArray<string> => [
  ...SECRET_PATHS,
  ...SECRET_ENV_NAMES.map((n) => `env.${n}`),
  ...SECRET_ENV_NAMES.map((n) => `env.vars.${n}`)
]

const secretPathSet = new Set(allSecretPaths())
export const isSecretPath = (dotPath: string): boolean => secretPathSet.has(dotPath)

// ---------------------------------------------------------------------------------------------------------
// Sections

const nullable = <S extends Schema.Schema.Any>(s: S) => Schema.optionalWith(s, { nullable: true })

export const GatewayAuth = Schema.Struct({
  mode: nullable(Schema.Literal("token", "password", "none")),
  token: Secret,
  password: Secret
})

export const Gateway = Schema.Struct({
  port: Schema.optionalWith(Schema.Int.pipe(Schema.between(0, 65535)), { nullable: true, default: () => 18789 }),
  /** `"loopback"` (127.0.0.1), `"lan"` (0.0.0.0) or a literal address. */
  bind: Schema.optionalWith(Schema.NonEmptyTrimmedString, { nullable: true, default: () => "loopback" }),
  auth: nullable(GatewayAuth),
  /**
   * Extra `Host` header values the control API answers to (e.g. a name in /etc/hosts), besides the loopback
   * names and addresses with the bound port. Anything else is refused (DNS rebinding).
   */
  allowedHosts: Schema.optionalWith(Schema.Array(Schema.NonEmptyTrimmedString), { nullable: true, default: () => [] }),
  hooks: nullable(Schema.Struct({ token: Secret }))
})
export type Gateway = typeof Gateway.Type

const StringList = Schema.optionalWith(Schema.Array(Schema.String), { nullable: true, default: () => [] })

export const AutoJoin = Schema.Struct({
  allowUsers: StringList,
  allowServerNames: StringList
})
export type AutoJoin = typeof AutoJoin.Type

/** Per-room settings under `matrix.rooms.<roomId>`. */
export const MatrixRoom = Schema.Struct({
  /** Name of an agent under `agents.<name>`; absent = the default agent. */
  agent: nullable(Schema.NonEmptyTrimmedString)
})
export type MatrixRoom = typeof MatrixRoom.Type

export const Matrix = Schema.Struct({
  enabled: Schema.optionalWith(Schema.Boolean, { nullable: true, default: () => true }),
  homeserverUrl: nullable(Schema.String),
  userId: nullable(Schema.String),
  accessToken: Secret,
  password: Secret,
  deviceId: nullable(Schema.String),
  storePassphrase: Secret,
  encrypted: Schema.optionalWith(Schema.Boolean, { nullable: true, default: () => true }),
  /** In rooms with more than two members: answer only when mentioned (default) or every message. */
  groupMessages: Schema.optionalWith(Schema.Literal("mention", "all"), { nullable: true, default: () => "mention" as const }),
  autoJoin: Schema.optionalWith(AutoJoin, {
    nullable: true,
    default: () => ({ allowUsers: [], allowServerNames: [] })
  }),
  rooms: Schema.optionalWith(Schema.Record({ key: Schema.String, value: MatrixRoom }), {
    nullable: true,
    default: () => ({})
  }),
  inboundDlq: Schema.optionalWith(
    Schema.Struct({
      legacyEnvelopePolicy: Schema.optionalWith(Schema.Literal("accept", "refuse"), {
        nullable: true,
        default: () => "accept" as const
      })
    }),
    { nullable: true, default: () => ({ legacyEnvelopePolicy: "accept" as const }) }
  )
})
export type Matrix = typeof Matrix.Type

/** `anthropic` / `openai`: the API key (sealed, `${VAR}` or env fallback) and an optional base URL. */
export const Provider = Schema.Struct({
  apiKey: Secret,
  /** For OpenAI-compatible servers (Ollama, vLLM, llama.cpp) or a test fake. */
  baseUrl: nullable(Schema.String)
})
export type Provider = typeof Provider.Type

/** One agent: a model (`provider:model`) and an optional system prompt. */
export const AgentSpec = Schema.Struct({
  model: nullable(Schema.String),
  systemPrompt: nullable(Schema.String),
  /** Upper bound on the conversation history given to the model, in characters. */
  historyBudget: nullable(Schema.Int.pipe(Schema.positive())),
  maxConcurrent: nullable(Schema.Int.pipe(Schema.positive()))
})
export type AgentSpec = typeof AgentSpec.Type

/**
 * `agents.defaults` (the reference's spelling) and `agents.default` (the seed's) both name the default
 * agent; any other key is a named agent that rooms can choose with `matrix.rooms.<roomId>.agent`.
 */
export const Agents = Schema.Record({ key: Schema.String, value: AgentSpec })
export type Agents = typeof Agents.Type

export const CaraConfig = Schema.Struct({
  gateway: Schema.optionalWith(Gateway, { nullable: true, default: () => ({ port: 18789, bind: "loopback", allowedHosts: [] }) }),
  matrix: nullable(Matrix),
  anthropic: nullable(Provider),
  openai: nullable(Provider),
  agents: Schema.optionalWith(Agents, { nullable: true, default: () => ({}) })
})
export type CaraConfig = typeof CaraConfig.Type
export type CaraConfigEncoded = typeof CaraConfig.Encoded

/** Top-level keys that are not warned about as unknown (sections other parts read or the reference uses). */
export const KNOWN_TOP_LEVEL_KEYS: ReadonlyArray<string> = [
  "gateway",
  "matrix",
  "anthropic",
  "openai",
  "agents",
  "env",
  "session",
  "channels",
  "logging",
  "$include"
]

// ---------------------------------------------------------------------------------------------------------
// Findings

export const Severity = Schema.Literal("error", "warning")
export type Severity = typeof Severity.Type

/** One validation result; `path` has a leading dot (`.matrix.userId`), `.` for the root. */
export class ConfigFinding extends Schema.Class<ConfigFinding>("ConfigFinding")({
  severity: Severity,
  path: Schema.String,
  message: Schema.String
}) {}

export const hasErrors = (findings: ReadonlyArray<ConfigFinding>): boolean =>
  findings.some((f) => f.severity === "error")

// ---------------------------------------------------------------------------------------------------------
// Agent routing helpers (pure; the Agent runtime builds on them)

export const ProviderName = Schema.Literal("anthropic", "openai")
export type ProviderName = typeof ProviderName.Type

export interface ModelRef {
  readonly provider: ProviderName
  readonly model: string
}

/** Parses a canonical `provider:model` string; `None` when it is not one. */
export const parseModelRef = (s: string): Option.Option<ModelRef> => {
  const i = s.indexOf(":")
  if (i <= 0) return Option.none()
  const provider = s.slice(0, i).trim()
  const model = s.slice(i + 1).trim()
  if (model === "" || (provider !== "anthropic" && provider !== "openai")) return Option.none()
  return Option.some({ provider, model })
}

/** The default agent: `agents.defaults`, else `agents.default` (the seed's spelling). */
export const defaultAgent = (config: CaraConfig): Option.Option<AgentSpec> =>
  Option.fromNullable(config.agents["defaults"] ?? config.agents["default"])

/** Names that denote the default agent rather than a named one. */
export const isDefaultAgentName = (name: string): boolean => name === "default" || name === "defaults"

/**
 * The agent for a room: `matrix.rooms.<roomId>.agent` if set (a named agent inheriting unset fields from
 * the default agent), else the default agent.
 */
export const agentForRoom = (config: CaraConfig, roomId: string): Option.Option<AgentSpec> => {
  const base = defaultAgent(config)
  const name = config.matrix?.rooms[roomId]?.agent
  if (name === undefined || isDefaultAgentName(name)) return base
  const named = config.agents[name]
  if (named === undefined) return base
  return Option.some(Option.match(base, { onNone: () => named, onSome: (b) => ({ ...b, ...named }) }))
}
