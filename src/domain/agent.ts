import { Duration, Either, Option, Redacted, Schema } from "effect"
import type { ContentPart } from "./attachment.js"
import type { ModelRef, ProviderName } from "./config.js"
import { redactSecrets } from "./redact.js"

export type { ModelRef, ProviderName } from "./config.js"

// ---------------------------------------------------------------------------------------------------------
// Messages and turns

export type ChatRole = "user" | "assistant"

/** One message as the model sees it (history and the new message alike). */
export interface ChatMessage {
  readonly role: ChatRole
  /** The text (for an attachment: its reference line, which is what the history keeps and trimming counts). */
  readonly content: string
  /**
   * What the provider gets instead of `content` (an image, a framed text file), for the new user message
   * only: never stored, so the next turn sees the reference line.
   */
  readonly parts?: ReadonlyArray<ContentPart>
}

/** The message's content as parts (its text as one part when it has none). */
export const partsOf = (m: ChatMessage): ReadonlyArray<ContentPart> => m.parts ?? [{ _tag: "Text", text: m.content }]

/** Audio for the transcription endpoint (issue 20.2): the clear bytes, in memory only. */
export interface TranscriptionRequest {
  readonly audio: Uint8Array
  readonly name: string
  readonly mimeType: string | undefined
}

/** `matrix.transcription`: an OpenAI-compatible `/audio/transcriptions` endpoint, keyed like `openai`. */
export interface TranscriptionSettings {
  readonly model: string
  /** The endpoint's base URL; none = the `openai` provider's (configured or official). */
  readonly baseUrl: Option.Option<string>
}

/** What a provider is asked for: one completion over the system prompt and the (trimmed) history. */
export interface ChatRequest {
  readonly model: ModelRef
  readonly system: string | undefined
  readonly messages: ReadonlyArray<ChatMessage>
  readonly maxTokens: number
}

export interface Usage {
  readonly inputTokens: number | undefined
  readonly outputTokens: number | undefined
}

/** A piece of a streamed completion: text deltas in order, then at most one `Finish`. */
export type StreamPart =
  | { readonly _tag: "TextDelta"; readonly text: string }
  | { readonly _tag: "Finish"; readonly reason: string | undefined; readonly usage: Usage }

// ---------------------------------------------------------------------------------------------------------
// Errors

export const AgentErrorKind = Schema.Literal(
  "agent-rate-limited",
  "agent-auth",
  "agent-model-not-found",
  "agent-unavailable",
  "agent-invalid-request",
  "agent-quota",
  "agent-not-configured"
)
export type AgentErrorKind = typeof AgentErrorKind.Type

/**
 * A model call that finally failed (after retries). `message` is for operators (status, logs) and
 * says what to do next; `userReply` turns it into the short text the room gets.
 */
export class AgentError extends Schema.TaggedError<AgentError>()("AgentError", {
  kind: AgentErrorKind,
  provider: Schema.optional(Schema.String),
  model: Schema.optional(Schema.String),
  /** HTTP status of the last attempt, when there was a response. */
  status: Schema.optional(Schema.Number),
  /** What the provider asked us to wait (`retry-after`), in milliseconds. */
  retryAfterMs: Schema.optional(Schema.Number),
  message: Schema.String
}) {}

/** The agent settings derived from the config are unusable (bad model string, unknown agent name). */
export class AgentConfigError extends Schema.TaggedError<AgentConfigError>()("AgentConfigError", {
  kind: Schema.Literal("agent-config-invalid"),
  path: Schema.String,
  message: Schema.String
}) {}

const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000))

/** The short reply a room gets when its turn failed: what went wrong and what to do. */
export const userReply = (error: AgentError): string => {
  const who = error.provider === "openai"
    ? "OpenAI"
    : error.provider === "anthropic"
    ? "Anthropic"
    : error.provider === "local"
    ? "The local test model"
    : "the AI provider"
  switch (error.kind) {
    case "agent-rate-limited":
      return error.retryAfterMs !== undefined
        ? `⚠️ ${who} is rate limiting requests right now. Please try again in about ${
          seconds(error.retryAfterMs)
        } seconds.`
        : `⚠️ ${who} is rate limiting requests right now. Please try again in a minute.`
    case "agent-auth":
      return `⚠️ ${who} rejected the API key. The operator needs to set a valid key (${
        error.provider === "openai" ? "openai.apiKey or OPENAI_API_KEY" : "anthropic.apiKey or ANTHROPIC_API_KEY"
      }) and restart cara.`
    case "agent-model-not-found":
      return `⚠️ The model ${
        error.model ?? ""
      } is not available at ${who}. The operator needs to set a valid model in agents.defaults.model (for example anthropic:claude-sonnet-4-6).`
    case "agent-unavailable":
      return `⚠️ ${who} is not responding right now. Please try again in a few minutes.`
    case "agent-invalid-request":
      return `⚠️ ${who} could not process this conversation. Send /new to start a fresh one, or try a shorter message.`
    case "agent-quota":
      return `⚠️ The ${who} account behind this bot has run out of credit or quota. The operator needs to check the provider's billing page.`
    case "agent-not-configured":
      return `⚠️ No AI model is configured yet. The operator needs to ${notConfiguredHint(error)}`
  }
}

const notConfiguredHint = (error: AgentError): string =>
  error.provider === "openai"
    ? "set OPENAI_API_KEY (or openai.apiKey in carapace.json5) and restart cara."
    : error.provider === "anthropic"
    ? "set ANTHROPIC_API_KEY (or anthropic.apiKey in carapace.json5) and restart cara."
    : "set agents.defaults.model (for example \"anthropic:claude-sonnet-4-6\") and an API key (ANTHROPIC_API_KEY or OPENAI_API_KEY) in carapace.json5, then restart cara."

export const noModelConfigured = (): AgentError =>
  new AgentError({
    kind: "agent-not-configured",
    message:
      "No agent model is configured: set agents.defaults.model to a provider:model string (for example \"anthropic:claude-sonnet-4-6\") in carapace.json5 and restart."
  })

export const noApiKey = (model: ModelRef): AgentError =>
  new AgentError({
    kind: "agent-not-configured",
    provider: model.provider,
    model: model.model,
    message: model.provider === "anthropic"
      ? "No Anthropic API key is configured: set anthropic.apiKey in carapace.json5 (sealed or ${ANTHROPIC_API_KEY}) or export ANTHROPIC_API_KEY, then restart."
      : "No OpenAI API key is configured: set openai.apiKey in carapace.json5 (sealed or ${OPENAI_API_KEY}) or export OPENAI_API_KEY (or set openai.baseUrl for a local OpenAI-compatible server), then restart."
  })

// ---------------------------------------------------------------------------------------------------------
// Model strings

const PROVIDERS: ReadonlyArray<ProviderName> = ["anthropic", "openai", "local"]

/** The built-in test models of the `local` provider (deterministic, offline; see LanguageModelLocal). */
export const LOCAL_MODELS: ReadonlyArray<string> = ["echo"]

/**
 * Parses a canonical `provider:model` string. Only the first `:` separates, so OpenAI-compatible model
 * names with tags (`openai:llama3.1:8b`) survive.
 */
export const parseModel = (raw: string): Either.Either<ModelRef, string> => {
  const s = raw.trim()
  const i = s.indexOf(":")
  if (i < 0) {
    return Either.left(
      `model "${s}" has no provider: write it as provider:model, for example "anthropic:${
        s || "claude-sonnet-4-6"
      }" or "openai:${s || "gpt-4o"}"`
    )
  }
  const provider = s.slice(0, i).trim().toLowerCase()
  const model = s.slice(i + 1).trim()
  if (!PROVIDERS.includes(provider as ProviderName)) {
    return Either.left(
      `model "${s}" names the unknown provider "${provider}": use anthropic:<model> or openai:<model> (openai also covers OpenAI-compatible servers via openai.baseUrl), or local:echo (the built-in test model)`
    )
  }
  if (model === "") return Either.left(`model "${s}" has no model name after "${provider}:"`)
  if (provider === "local" && !LOCAL_MODELS.includes(model)) {
    return Either.left(
      `model "${s}": the local provider has only the test model${LOCAL_MODELS.length > 1 ? "s" : ""} ${
        LOCAL_MODELS.map((m) => `local:${m}`).join(", ")
      }`
    )
  }
  return Either.right({ provider: provider as ProviderName, model })
}

export const formatModel = (m: ModelRef): string => `${m.provider}:${m.model}`

// ---------------------------------------------------------------------------------------------------------
// Settings: the explicit input of the agent layers (derived from the decoded config by AgentSettings.ts)

export interface ProviderSettings {
  readonly apiKey: Option.Option<Redacted.Redacted<string>>
  /** Absent = the provider's public endpoint. */
  readonly baseUrl: Option.Option<string>
}

export interface AgentProfile {
  /** `"default"` for the default agent, else the key under `agents`. */
  readonly name: string
  readonly model: ModelRef
  readonly systemPrompt: string | undefined
  /** History given to the model, in characters (the newest user message is kept regardless). */
  readonly historyBudget: number
  readonly maxTokens: number
}

export interface RetrySettings {
  /** First backoff delay when the provider gives no `retry-after`. */
  readonly initialDelay: Duration.Duration
  readonly maxDelay: Duration.Duration
  /** Total time a turn may spend on attempts and waits before it gives up. */
  readonly budget: Duration.Duration
  readonly maxAttempts: number
}

export interface AgentSettings {
  readonly anthropic: ProviderSettings
  readonly openai: ProviderSettings
  /** `None` when no default model is configured (the agent then replies with how to configure one). */
  readonly defaultAgent: Option.Option<AgentProfile>
  readonly agents: ReadonlyMap<string, AgentProfile>
  /** roomId → agent name (`matrix.rooms.<roomId>.agent`). */
  readonly roomAgents: ReadonlyMap<string, string>
  readonly retry: RetrySettings
  /** Per-request timeout given to the SDKs. */
  readonly requestTimeout: Duration.Duration
  /** Model calls running at once across all rooms; further turns wait their turn (none are dropped). */
  readonly maxConcurrent: number
  /** Voice messages are transcribed only when set (`matrix.transcription`). */
  readonly transcription?: TranscriptionSettings | undefined
}

export const DEFAULT_HISTORY_BUDGET = 24_000
export const DEFAULT_MAX_TOKENS = 4096
export const DEFAULT_MAX_CONCURRENT = 4

export const defaultRetrySettings: RetrySettings = {
  initialDelay: Duration.seconds(1),
  maxDelay: Duration.seconds(20),
  budget: Duration.seconds(60),
  maxAttempts: 6
}

const noProvider: ProviderSettings = { apiKey: Option.none(), baseUrl: Option.none() }

/** Settings with nothing configured; tests and callers override the fields they need. */
export const emptyAgentSettings: AgentSettings = {
  anthropic: noProvider,
  openai: noProvider,
  defaultAgent: Option.none(),
  agents: new Map(),
  roomAgents: new Map(),
  retry: defaultRetrySettings,
  requestTimeout: Duration.minutes(5),
  maxConcurrent: DEFAULT_MAX_CONCURRENT
}

/** The agent profile for a room: the room's named agent if it exists, else the default agent. */
export const resolveAgent = (settings: AgentSettings, roomId: string): Option.Option<AgentProfile> => {
  const name = settings.roomAgents.get(roomId)
  if (name !== undefined) {
    const named = settings.agents.get(name)
    if (named !== undefined) return Option.some(named)
  }
  return settings.defaultAgent
}

/** The environment variable each SDK's own users set for another endpoint (`ANTHROPIC_BASE_URL`, …). */
export const BASE_URL_ENV = { anthropic: "ANTHROPIC_BASE_URL", openai: "OPENAI_BASE_URL" } as const

/**
 * A provider's endpoint: the config's `baseUrl`, else the provider's conventional environment variable
 * (the config wins, so an exported variable never overrides what the file says), else the public API.
 * Empty or blank values count as unset.
 */
export const resolveBaseUrl = (configured: string | undefined, fromEnv: string | undefined): Option.Option<string> => {
  const c = configured?.trim()
  if (c !== undefined && c !== "") return Option.some(c)
  const e = fromEnv?.trim()
  return e === undefined || e === "" ? Option.none() : Option.some(e)
}

/**
 * A provider is usable with a key, or (OpenAI only) with a custom base URL: local servers need none. The
 * built-in `local` test models always are.
 */
export const providerUsable = (settings: AgentSettings, provider: ProviderName): boolean => {
  if (provider === "local") return true
  const p = settings[provider]
  return Option.isSome(p.apiKey) || (provider === "openai" && Option.isSome(p.baseUrl))
}

// ---------------------------------------------------------------------------------------------------------
// History trimming (pure; property-tested)

/** Cost of one message against the history budget: its characters plus a little framing. */
export const messageCost = (m: ChatMessage): number => m.content.length + 8

/**
 * Keeps the newest messages that fit `budget` (in characters), as a contiguous suffix, so the order is
 * never changed. The newest user message (and anything after it) is always kept even if it alone exceeds
 * the budget, and the result starts with a user message because providers reject a conversation that
 * opens with the assistant. No user message at all gives an empty history.
 */
export const trimHistory = <M extends ChatMessage>(
  messages: ReadonlyArray<M>,
  budget: number
): ReadonlyArray<M> => {
  let lastUser = -1
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]!.role === "user") {
      lastUser = i
      break
    }
  }
  if (lastUser < 0) return []
  let used = 0
  for (let i = lastUser; i < messages.length; i++) used += messageCost(messages[i]!)
  let start = lastUser
  while (start > 0) {
    const cost = messageCost(messages[start - 1]!)
    if (used + cost > budget) break
    used += cost
    start--
  }
  while (messages[start]!.role !== "user") start++
  return messages.slice(start)
}

/**
 * Merges consecutive messages of the same role (a failed turn leaves two user messages in a row), which
 * strict providers reject; order and content are kept.
 */
export const mergeConsecutive = (messages: ReadonlyArray<ChatMessage>): ReadonlyArray<ChatMessage> => {
  const out: Array<ChatMessage> = []
  for (const m of messages) {
    const prev = out[out.length - 1]
    if (prev !== undefined && prev.role === m.role) {
      const content = `${prev.content}\n\n${m.content}`
      out[out.length - 1] = prev.parts === undefined && m.parts === undefined
        ? { role: m.role, content }
        : { role: m.role, content, parts: [...partsOf(prev), ...partsOf(m)] }
    } else {
      out.push(m)
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// Retry timing (pure)

/**
 * The wait a provider asked for: `retry-after-ms` (OpenAI), else `retry-after` in seconds or as an
 * HTTP date. `undefined` when absent or unreadable.
 */
export const parseRetryAfter = (
  get: (name: string) => string | null | undefined,
  nowMs: number
): number | undefined => {
  const ms = get("retry-after-ms")
  if (ms != null && ms.trim() !== "") {
    const n = Number(ms)
    if (Number.isFinite(n) && n >= 0) return n
  }
  const ra = get("retry-after")
  if (ra == null || ra.trim() === "") return undefined
  const secs = Number(ra)
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000
  const date = Date.parse(ra)
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs)
}

/** Exponential backoff for attempt `n` (1 = the first retry), capped; `jitter` in [0, 1) adds up to 25%. */
export const backoffDelay = (retry: RetrySettings, n: number, jitter: number): number => {
  const base = Duration.toMillis(retry.initialDelay) * 2 ** Math.max(0, n - 1)
  const capped = Math.min(base, Duration.toMillis(retry.maxDelay))
  return Math.round(capped * (1 + 0.25 * jitter))
}

export const isRetryable = (error: AgentError): boolean =>
  error.kind === "agent-rate-limited" || error.kind === "agent-unavailable"

// ---------------------------------------------------------------------------------------------------------
// Classifying provider failures (pure; each provider layer extracts these fields from its SDK's error)

export interface ProviderFailure {
  readonly provider: ProviderName
  readonly model: string
  /** HTTP status; absent for connection failures and for errors sent inside an SSE stream. */
  readonly status: number | undefined
  /** The body's error type (`rate_limit_error`, `overloaded_error`, `insufficient_quota` ...). */
  readonly errorType: string | undefined
  readonly errorCode: string | undefined
  /** The provider's own wording, already scrubbed of secrets. */
  readonly detail: string | undefined
  readonly retryAfterMs: number | undefined
  /** The request never got an answer (refused, reset, timed out). */
  readonly connection: boolean
}

const providerTitle = (p: ProviderName) => (p === "anthropic" ? "Anthropic" : "OpenAI")
const keyHint = (
  p: ProviderName
) => (p === "anthropic" ? "anthropic.apiKey / ANTHROPIC_API_KEY" : "openai.apiKey / OPENAI_API_KEY")

/** A request that never got an HTTP answer (refused, reset, timed out), as a classified error. */
export const connectionFailure = (
  provider: ProviderName,
  model: string,
  cause: unknown,
  secrets: ReadonlyArray<string>
): AgentError =>
  classifyFailure({
    provider,
    model,
    status: undefined,
    errorType: undefined,
    errorCode: undefined,
    detail: scrubSecrets(cause instanceof Error ? cause.message : String(cause), secrets),
    retryAfterMs: undefined,
    connection: true
  })

/** Maps a provider failure to the typed error, with an operator message that says what to do next. */
export const classifyFailure = (f: ProviderFailure): AgentError => {
  const who = providerTitle(f.provider)
  const detail = f.detail === undefined || f.detail === "" ? "" : ` (${f.detail})`
  const at = f.status === undefined ? "" : ` with HTTP ${f.status}`
  const base = { provider: f.provider, model: f.model, ...(f.status === undefined ? {} : { status: f.status }) }
  const type = `${f.errorType ?? ""} ${f.errorCode ?? ""}`
  if (/insufficient_quota|billing/.test(type) || f.status === 402) {
    return new AgentError({
      ...base,
      kind: "agent-quota",
      message:
        `${who} refused the request for lack of credit or quota${at}${detail}. Check the account's billing and limits.`
    })
  }
  if (f.status === 401 || f.status === 403 || /authentication_error|permission_error|invalid_api_key/.test(type)) {
    return new AgentError({
      ...base,
      kind: "agent-auth",
      message: `${who} rejected the API key${at}${detail}. Set a valid key in ${keyHint(f.provider)} and restart.`
    })
  }
  if (f.status === 404 || /not_found_error|model_not_found/.test(type)) {
    return new AgentError({
      ...base,
      kind: "agent-model-not-found",
      message:
        `${who} does not know the model "${f.model}"${at}${detail}. Fix the model in agents.defaults.model (or the room's agent)${
          f.provider === "openai" ? ", and check openai.baseUrl if you use a compatible server" : ""
        }.`
    })
  }
  if (f.status === 429 || /rate_limit/.test(type)) {
    return new AgentError({
      ...base,
      kind: "agent-rate-limited",
      ...(f.retryAfterMs === undefined ? {} : { retryAfterMs: f.retryAfterMs }),
      message: `${who} is rate limiting requests${at}${detail}. Wait, or raise the account's rate limits.`
    })
  }
  if (
    f.connection || f.status === undefined && /overloaded|api_error|server_error/.test(type) ||
    f.status !== undefined && (f.status >= 500 || f.status === 408 || f.status === 409)
  ) {
    return new AgentError({
      ...base,
      kind: "agent-unavailable",
      ...(f.retryAfterMs === undefined ? {} : { retryAfterMs: f.retryAfterMs }),
      message: `${who} is unavailable${at}${detail}. It is retried automatically; check the provider's status page${
        f.provider === "openai" ? " or openai.baseUrl" : ""
      } if it persists.`
    })
  }
  return new AgentError({
    ...base,
    kind: "agent-invalid-request",
    message:
      `${who} rejected the request${at}${detail}. If the conversation is too long, send /new in the room or lower the agent's historyBudget.`
  })
}

/**
 * Removes the provider's key, every other configured secret (the process-wide registry) and anything shaped
 * like an API key from provider text, and bounds its length. Redaction runs before the cut, so a secret
 * that straddles the limit is not left half visible.
 */
export const scrubSecrets = (text: string, secrets: ReadonlyArray<string>): string => {
  let out = redactSecrets(text)
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join("[REDACTED]")
  out = out.replace(/\b(sk|pk|rk)-[A-Za-z0-9_\-*.]{6,}/g, "[REDACTED]")
  return out.length > 300 ? `${out.slice(0, 299)}…` : out
}
