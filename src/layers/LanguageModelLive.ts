import { Clock, Duration, Effect, Layer, Random, Stream } from "effect"
import {
  AgentError,
  type AgentSettings,
  backoffDelay,
  type ChatRequest,
  isRetryable,
  noApiKey,
  providerUsable,
  type RetrySettings,
  type StreamPart,
  type TranscriptionRequest
} from "../domain/agent.js"
import type { ProviderName } from "../domain/config.js"
import { AgentSettingsTag } from "../services/Agent.js"
import {
  type Completion,
  LanguageModel,
  type LanguageModelShape,
  type ProviderClient
} from "../services/LanguageModel.js"

type MakeClient = (settings: AgentSettings) => ProviderClient

// A provider's module, and its SDK with it (5–7 MB of heap each, docs/benchmarks.md "Profiles"), loads only
// when that provider is configured: imported here, never statically.
const providerModules: Record<ProviderName, () => Promise<MakeClient>> = {
  anthropic: () =>
    import("./LanguageModelAnthropic.js").then((m) => (s: AgentSettings) =>
      m.makeAnthropicClient({ settings: s.anthropic, requestTimeout: s.requestTimeout })
    ),
  openai: () =>
    import("./LanguageModelOpenAI.js").then((m) => (s: AgentSettings) =>
      m.makeOpenAIClient({ settings: s.openai, requestTimeout: s.requestTimeout })
    ),
  local: () => import("./LanguageModelLocal.js").then((m) => () => m.makeLocalClient())
}
const providerNames = Object.keys(providerModules) as ReadonlyArray<ProviderName>

/** A client whose module is imported at its first request (for callers that did not load it up front). */
const onFirstUse = (settings: AgentSettings, provider: ProviderName): ProviderClient => {
  let client: Promise<ProviderClient> | undefined
  const load = () => (client ??= providerModules[provider]().then((make) => make(settings)))
  return { provider, stream: (request) => Stream.unwrap(Effect.map(Effect.promise(load), (c) => c.stream(request))) }
}

/** Imports and builds the clients of the configured providers (none for a provider without a key). */
export const loadProviderClients = (settings: AgentSettings): Effect.Effect<ProviderClients> =>
  Effect.promise(async () => {
    const clients: Partial<Record<ProviderName, ProviderClient>> = {}
    for (const provider of providerNames) {
      if (providerUsable(settings, provider)) clients[provider] = (await providerModules[provider]())(settings)
    }
    return clients
  })

const withAttempts = (error: AgentError, attempts: number): AgentError =>
  attempts <= 1 ? error : new AgentError({ ...error, message: `${error.message} (gave up after ${attempts} attempts)` })

/**
 * Retries a provider stream on 429 / 5xx / connection failures, but only while nothing has been emitted:
 * once a delta reached the caller a retry would repeat text. Waits honour `retry-after`, else back off
 * exponentially with jitter; the whole sequence stays within `retry.budget`, and a wait that would
 * overrun it is not started (the error, with its `retryAfterMs`, is returned at once instead).
 */
export const retryingStream = (
  retry: RetrySettings,
  attempt: () => Stream.Stream<StreamPart, AgentError>
): Stream.Stream<StreamPart, AgentError> =>
  Stream.unwrap(
    Effect.gen(function*() {
      const startedAt = yield* Clock.currentTimeMillis
      const budgetMs = Duration.toMillis(retry.budget)
      const loop = (n: number): Stream.Stream<StreamPart, AgentError> =>
        Stream.suspend(() => {
          let emitted = false
          return attempt().pipe(
            Stream.tap(() => Effect.sync(() => (emitted = true))),
            Stream.catchAll((error) => {
              if (emitted || !isRetryable(error) || n >= retry.maxAttempts) {
                return Stream.fail(withAttempts(error, n))
              }
              return Stream.unwrap(
                Effect.gen(function*() {
                  const now = yield* Clock.currentTimeMillis
                  const jitter = yield* Random.next
                  const delay = error.retryAfterMs ?? backoffDelay(retry, n, jitter)
                  if (now - startedAt + delay > budgetMs) return Stream.fail(withAttempts(error, n))
                  yield* Effect.logWarning("model call failed; retrying").pipe(
                    Effect.annotateLogs({
                      kind: error.kind,
                      status: error.status ?? "none",
                      attempt: n,
                      delayMs: delay
                    })
                  )
                  yield* Effect.sleep(Duration.millis(delay))
                  return loop(n + 1)
                })
              )
            })
          )
        })
      return loop(1)
    })
  )

export interface ProviderClients {
  readonly anthropic?: ProviderClient
  readonly openai?: ProviderClient
  readonly local?: ProviderClient
}

/**
 * The router: `request.model.provider` picks the client; a provider without a key fails at once with
 * `agent-not-configured` (no retries: nothing will change until the operator acts). A usable provider not
 * in `clients` gets its module imported at its first request.
 */
export const makeLanguageModel = (settings: AgentSettings, clients: ProviderClients = {}): LanguageModelShape => {
  const built: Partial<Record<ProviderName, ProviderClient>> = {}
  for (const provider of providerNames) {
    const given = clients[provider]
    if (given !== undefined) built[provider] = given
    else if (providerUsable(settings, provider)) built[provider] = onFirstUse(settings, provider)
  }

  const stream = (request: ChatRequest): Stream.Stream<StreamPart, AgentError> => {
    const client = built[request.model.provider]
    if (client === undefined) return Stream.fail(noApiKey(request.model))
    return retryingStream(settings.retry, () => client.stream(request)).pipe(
      Stream.withSpan("LanguageModel.stream", {
        attributes: { provider: request.model.provider, model: request.model.model }
      })
    )
  }

  const complete = (request: ChatRequest): Effect.Effect<Completion, AgentError> =>
    stream(request).pipe(
      Stream.runFold(
        { text: "", finishReason: undefined, usage: { inputTokens: undefined, outputTokens: undefined } } as Completion,
        (acc, part) =>
          part._tag === "TextDelta"
            ? { ...acc, text: acc.text + part.text }
            : { ...acc, finishReason: part.reason, usage: part.usage }
      )
    )

  const t = settings.transcription
  if (t === undefined) return { stream, complete }
  // imported (with the OpenAI SDK) at the first voice message
  let transcriber: Promise<(r: TranscriptionRequest) => Effect.Effect<string, AgentError>> | undefined
  const load =
    () => (transcriber ??= import("./LanguageModelTranscription.js").then((m) => m.makeTranscriber(settings, t)))
  const transcribe = (request: TranscriptionRequest) => Effect.flatMap(Effect.promise(load), (run) => run(request))
  return { stream, complete, transcribe }
}

/** LanguageModel over the agent settings (providers' keys, base URLs, retry budget); loads only the configured providers. */
export const LanguageModelLive = Layer.effect(
  LanguageModel,
  Effect.flatMap(
    AgentSettingsTag,
    (settings) => Effect.map(loadProviderClients(settings), (clients) => makeLanguageModel(settings, clients))
  )
)
