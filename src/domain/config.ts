import { Option, ParseResult, Schema, SchemaAST as AST } from "effect"
import { DEFAULT_INBOUND_BUDGET } from "./inboundBudget.js"
import { DEFAULT_THREAD_REPLIES } from "./threads.js"

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

const MATRIX_OUTBOUND_DEFAULTS = { sendAttempts: 12, deadLetterAfterRounds: 12 } as const

export const MatrixOutbound = Schema.Struct({
  /** Attempts per message before a reply is held as pending (1, 2, 4 … 60 s apart: 12 ≈ 6 min). */
  sendAttempts: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 100)), {
    nullable: true,
    default: () => MATRIX_OUTBOUND_DEFAULTS.sendAttempts
  }),
  /** Failed retry rounds of a pending reply, while the homeserver is reachable, before it goes to the DLQ. */
  deadLetterAfterRounds: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 1000)), {
    nullable: true,
    default: () => MATRIX_OUTBOUND_DEFAULTS.deadLetterAfterRounds
  })
})
const BudgetNumber = (fallback: number) =>
  Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 100_000)), { nullable: true, default: () => fallback })

const defaultBudgetConfig = {
  roomBurst: DEFAULT_INBOUND_BUDGET.room.burst,
  roomPerMinute: DEFAULT_INBOUND_BUDGET.room.perMinute,
  senderBurst: DEFAULT_INBOUND_BUDGET.sender.burst,
  senderPerMinute: DEFAULT_INBOUND_BUDGET.sender.perMinute
}

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
  groupMessages: Schema.optionalWith(Schema.Literal("mention", "all"), {
    nullable: true,
    default: () => "mention" as const
  }),
  /** Lifecycle reactions on the question (👀 while working, ❌ on failure); off by default. */
  reactions: Schema.optionalWith(Schema.Boolean, { nullable: true, default: () => false }),
  /**
   * Issue 20.5: answer in the question's thread (`"inbound"`, default), start a thread on every main-timeline
   * question (`"always"`) or never thread (`"off"`: one conversation per room). See src/domain/threads.ts.
   */
  threadReplies: Schema.optionalWith(Schema.Literal("inbound", "always", "off"), {
    nullable: true,
    default: () => DEFAULT_THREAD_REPLIES
  }),
  /**
   * When a question cara answered is redacted (by its sender or a room moderator), redact cara's answer too;
   * on by default (docs/channels.md, "Redactions and feedback").
   */
  redactAnswers: Schema.optionalWith(Schema.Boolean, { nullable: true, default: () => true }),
  /**
   * Streamed answers: "edits" (default) sends the first chunk as the reply once there is a sentence (or
   * after ~1 s) and then updates it with throttled `m.replace` edits (src/domain/streaming.ts); "off" sends
   * the whole answer once it is complete. On by default: a long answer otherwise shows only "typing…" for
   * as long as the model writes, and an answer that is complete before the first chunk is due (most short
   * ones) is still one event.
   */
  streaming: Schema.optionalWith(Schema.Literal("edits", "off"), { nullable: true, default: () => "edits" as const }),
  autoJoin: Schema.optionalWith(AutoJoin, {
    nullable: true,
    default: () => ({ allowUsers: [], allowServerNames: [] })
  }),
  rooms: Schema.optionalWith(Schema.Record({ key: Schema.String, value: MatrixRoom }), {
    nullable: true,
    default: () => ({})
  }),
  /**
   * Issue 16 §6: token buckets in front of the model (see domain/inboundBudget.ts); defaults there and in
   * docs/channels.md.
   */
  inboundBudget: Schema.optionalWith(
    Schema.Struct({
      roomBurst: BudgetNumber(DEFAULT_INBOUND_BUDGET.room.burst),
      roomPerMinute: BudgetNumber(DEFAULT_INBOUND_BUDGET.room.perMinute),
      senderBurst: BudgetNumber(DEFAULT_INBOUND_BUDGET.sender.burst),
      senderPerMinute: BudgetNumber(DEFAULT_INBOUND_BUDGET.sender.perMinute)
    }),
    { nullable: true, default: () => defaultBudgetConfig }
  ),
  /**
   * Issue 16 §10: answer only messages from devices their owner has cross-signed (Element's "exclude
   * insecure devices"). Off by default: see docs/channels.md for why.
   */
  requireCrossSignedSenders: Schema.optionalWith(Schema.Boolean, { nullable: true, default: () => false }),
  inboundDlq: Schema.optionalWith(
    Schema.Struct({
      legacyEnvelopePolicy: Schema.optionalWith(Schema.Literal("accept", "refuse"), {
        nullable: true,
        default: () => "accept" as const
      })
    }),
    { nullable: true, default: () => ({ legacyEnvelopePolicy: "accept" as const }) }
  ),
  /**
   * Issue 20.2, images and files in: `images: "auto"` sends images to models whose name says they take
   * them (domain/attachment.ts `modelAcceptsImages`); `"on"` / `"off"` override the guess.
   */
  attachments: Schema.optionalWith(
    Schema.Struct({
      images: Schema.optionalWith(Schema.Literal("auto", "on", "off"), {
        nullable: true,
        default: () => "auto" as const
      })
    }),
    { nullable: true, default: () => ({ images: "auto" as const }) }
  ),
  /**
   * Issue 20.2, voice messages: an OpenAI-compatible `/audio/transcriptions` endpoint, keyed with
   * `openai.apiKey` (or OPENAI_API_KEY); `baseUrl` defaults to `openai.baseUrl`. Absent: audio is answered
   * with what to configure.
   */
  transcription: nullable(Schema.Struct({
    provider: Schema.optionalWith(Schema.Literal("openai"), { nullable: true, default: () => "openai" as const }),
    model: Schema.optionalWith(Schema.NonEmptyTrimmedString, { nullable: true, default: () => "whisper-1" }),
    baseUrl: nullable(Schema.String)
  })),
  /** Replies whose send fails: see docs/channels.md, "Replies that cannot be sent". */
  outbound: Schema.optionalWith(MatrixOutbound, { nullable: true, default: () => MATRIX_OUTBOUND_DEFAULTS })
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
  gateway: Schema.optionalWith(Gateway, {
    nullable: true,
    default: () => ({ port: 18789, bind: "loopback", allowedHosts: [] })
  }),
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
// Schema errors without values

/** One schema problem: where (`["gateway", "port"]`) and what was expected; never the value found. */
export interface SchemaProblem {
  readonly path: ReadonlyArray<PropertyKey>
  readonly message: string
}

/** What a schema node accepts, in words (`a number between 0 and 65535`, `"token", "password" or "none"`). */
export const describeExpected = (ast: AST.AST): string => {
  const annotated = AST.getDescriptionAnnotation(ast)
  if (ast._tag === "Refinement") {
    // Every condition of the chain (Int then between): the one that failed is among them.
    const conditions: Array<string> = []
    let at: AST.AST = ast
    while (at._tag === "Refinement") {
      const d = AST.getDescriptionAnnotation(at)
      if (Option.isSome(d) && !conditions.includes(d.value)) conditions.unshift(d.value)
      at = at.from
    }
    return conditions.length === 0 ? describeExpected(at) : conditions.join(" and ")
  }
  switch (ast._tag) {
    case "StringKeyword":
      return "a string"
    case "NumberKeyword":
      return "a number"
    case "BooleanKeyword":
      return "true or false"
    case "Literal":
      return JSON.stringify(ast.literal)
    case "TypeLiteral":
      return "an object"
    case "TupleType":
      return "an array"
    case "Transformation":
      return describeExpected(ast.from)
    case "Declaration":
      return "an object"
    case "Union": {
      const parts = [...new Set(ast.types.filter((t) => !isAbsentAst(t)).map(describeExpected))]
      return parts.length <= 1
        ? parts[0] ?? "a value"
        : `${parts.slice(0, -1).join(", ")} or ${parts[parts.length - 1]}`
    }
    default:
      return Option.getOrElse(annotated, () => "a valid value")
  }
}

// `null` / `undefined` members come from `optionalWith({ nullable: true })`: absence is always allowed, so
// naming it in every message is noise.
const isAbsentAst = (ast: AST.AST) =>
  ast._tag === "UndefinedKeyword" || (ast._tag === "Literal" && ast.literal === null)

/** The kind of a value (`a string`, `an array`), which is safe to print where the value itself is not. */
export const kindOf = (v: unknown): string =>
  v === null
    ? "null"
    : Array.isArray(v)
    ? "an array"
    : typeof v === "object"
    ? "an object"
    : typeof v === "string"
    ? "a string"
    : typeof v === "number"
    ? "a number"
    : typeof v === "boolean"
    ? "true or false"
    : typeof v

const leaf = (path: ReadonlyArray<PropertyKey>, expected: string, actual: unknown): SchemaProblem => ({
  path,
  message: `expected ${expected}, got ${kindOf(actual)}`
})

const isDeep = (issue: ParseResult.ParseIssue): boolean =>
  issue._tag === "Pointer" || (issue._tag === "Composite" && issue.ast._tag !== "Union") ||
  ((issue._tag === "Refinement" || issue._tag === "Transformation") && isDeep(issue.issue))

const walk = (issue: ParseResult.ParseIssue, path: ReadonlyArray<PropertyKey>): ReadonlyArray<SchemaProblem> => {
  switch (issue._tag) {
    case "Pointer":
      return walk(issue.issue, [...path, ...(Array.isArray(issue.path) ? issue.path : [issue.path as PropertyKey])])
    case "Composite": {
      const issues = Array.isArray(issue.issues) ? issue.issues : [issue.issues as ParseResult.ParseIssue]
      if (issue.ast._tag !== "Union") return issues.flatMap((i) => walk(i, path))
      // A union (in practice: a nullable field): when the value had the right shape and failed inside, the
      // inner problem is the useful one; otherwise say which alternatives are accepted.
      const deep = issues.filter(isDeep)
      if (deep.length > 0) return deep.flatMap((i) => walk(i, path))
      return [leaf(path, describeExpected(issue.ast), issue.actual)]
    }
    case "Refinement":
      return issue.kind === "From" && isDeep(issue.issue)
        ? walk(issue.issue, path)
        : [leaf(path, describeExpected(issue.ast), issue.actual)]
    case "Transformation":
      return walk(issue.issue, path)
    case "Type":
      return [leaf(path, describeExpected(issue.ast), issue.actual)]
    case "Missing":
      return [{ path, message: `is required (expected ${describeExpected(issue.ast.type)})` }]
    case "Unexpected":
      return [{ path, message: "is not allowed here" }]
    case "Forbidden":
      return [{ path, message: "cannot be checked" }]
  }
}

/**
 * Schema errors as path + expected kind. Effect's own formatters quote the actual value ("Expected number,
 * actual \"https://user:pw@host\""), which puts a misplaced API key or a URL with credentials into the log;
 * this one never looks at a value beyond its kind.
 */
export const schemaProblems = (error: ParseResult.ParseError): ReadonlyArray<SchemaProblem> => {
  const seen = new Set<string>()
  return walk(error.issue, []).filter((p) => {
    const key = `${p.path.map(String).join("\0")}\0${p.message}`
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

// ---------------------------------------------------------------------------------------------------------
// Agent routing helpers (pure; the Agent runtime builds on them)

/** `local`: the built-in deterministic test models (`local:echo`), no network, no key. */
export const ProviderName = Schema.Literal("anthropic", "openai", "local")
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
  if (model === "" || (provider !== "anthropic" && provider !== "openai" && provider !== "local")) return Option.none()
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
