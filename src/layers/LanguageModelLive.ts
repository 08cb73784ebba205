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
  type StreamPart
} from "../domain/agent.js"
import type { ProviderName } from "../domain/config.js"
import { AgentSettingsTag } from "../services/Agent.js"
import { type Completion, LanguageModel, type LanguageModelShape, type ProviderClient } from "../services/LanguageModel.js"
import { makeAnthropicClient } from "./LanguageModelAnthropic.js"
import { makeLocalClient } from "./LanguageModelLocal.js"
import { makeOpenAIClient } from "./LanguageModelOpenAI.js"

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
                    Effect.annotateLogs({ kind: error.kind, status: error.status ?? "none", attempt: n, delayMs: delay })
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
 * `agent-not-configured` (no retries: nothing will change until the operator acts).
 */
export const makeLanguageModel = (settings: AgentSettings, clients: ProviderClients = {}): LanguageModelShape => {
  const built: Partial<Record<ProviderName, ProviderClient>> = {
    ...(clients.anthropic !== undefined
      ? { anthropic: clients.anthropic }
      : providerUsable(settings, "anthropic")
      ? { anthropic: makeAnthropicClient({ settings: settings.anthropic, requestTimeout: settings.requestTimeout }) }
      : {}),
    ...(clients.openai !== undefined
      ? { openai: clients.openai }
      : providerUsable(settings, "openai")
      ? { openai: makeOpenAIClient({ settings: settings.openai, requestTimeout: settings.requestTimeout }) }
      : {}),
    local: clients.local ?? makeLocalClient()
  }

  const stream = (request: ChatRequest): Stream.Stream<StreamPart, AgentError> => {
    const client = built[request.model.provider]
    if (client === undefined) return Stream.fail(noApiKey(request.model))
    return retryingStream(settings.retry, () => client.stream(request)).pipe(
      Stream.withSpan("LanguageModel.stream", { attributes: { provider: request.model.provider, model: request.model.model } })
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

  return { stream, complete }
}

/** LanguageModel over the agent settings (providers' keys, base URLs, retry budget). */
export const LanguageModelLive = Layer.effect(
  LanguageModel,
  Effect.map(AgentSettingsTag, (settings) => makeLanguageModel(settings))
)
