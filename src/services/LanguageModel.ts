import { Context, type Effect, type Stream } from "effect"
import type { AgentError, ChatRequest, ProviderName, StreamPart, TranscriptionRequest, Usage } from "../domain/agent.js"

export interface Completion {
  readonly text: string
  readonly finishReason: string | undefined
  readonly usage: Usage
}

/**
 * One provider speaking its wire API: a single attempt, no retries (the router owns retries, so the
 * budget covers both providers alike). Failures are already classified into `AgentError`.
 */
export interface ProviderClient {
  readonly provider: ProviderName
  readonly stream: (request: ChatRequest) => Stream.Stream<StreamPart, AgentError>
}

/**
 * The language model behind every agent: routes `request.model` to its provider, retries 429 and 5xx
 * (honouring `retry-after`) before the first delta within a bounded total time, and streams the
 * answer as text deltas in order.
 */
export interface LanguageModelShape {
  readonly stream: (request: ChatRequest) => Stream.Stream<StreamPart, AgentError>
  /** The whole answer at once (collects `stream`). */
  readonly complete: (request: ChatRequest) => Effect.Effect<Completion, AgentError>
  /** Audio to text through `matrix.transcription`; absent when no transcription endpoint is configured. */
  readonly transcribe?: (request: TranscriptionRequest) => Effect.Effect<string, AgentError>
}

export class LanguageModel extends Context.Tag("cara/LanguageModel")<LanguageModel, LanguageModelShape>() {}
