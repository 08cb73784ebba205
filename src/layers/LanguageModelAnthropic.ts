import Anthropic from "@anthropic-ai/sdk"
import { Duration, Option, type Stream } from "effect"
import {
  type AgentError,
  type ChatMessage,
  type ChatRequest,
  mergeConsecutive,
  type ProviderSettings,
  type StreamPart
} from "../domain/agent.js"
import { anthropicContent } from "../domain/attachment.js"
import type { ProviderClient } from "../services/LanguageModel.js"
// Layer imports by design: both provider clients are built on the shared SDK helpers.
import { sdkFailure, sdkKey, sdkStreamParts } from "./LanguageModelSdk.js"

export interface AnthropicClientOptions {
  readonly settings: ProviderSettings
  readonly requestTimeout: Duration.Duration
}

/** Turns anything the SDK throws into a classified `AgentError`; key material never survives. */
export const anthropicFailure = (
  cause: unknown,
  model: string,
  secrets: ReadonlyArray<string>,
  nowMs: number
): AgentError =>
  sdkFailure(
    "anthropic",
    model,
    secrets,
    nowMs,
    cause,
    cause instanceof Anthropic.APIError && !(cause instanceof Anthropic.APIConnectionError)
      ? {
        status: cause.status,
        errorType: cause.type ?? undefined,
        errorCode: cause.errorCode ?? undefined,
        detail: cause.apiMessage ?? "",
        headers: cause.headers
      }
      : undefined
  )

/** A message as the Messages API takes it: text, or content blocks (`image` as base64) when it has parts. */
export const anthropicMessage = (m: ChatMessage): Anthropic.MessageParam => ({
  role: m.role,
  content: m.parts === undefined ? m.content : anthropicContent(m.parts)
})

/** Message events to stream parts; the usage arrives at the start and grows with the deltas. */
const readEvents = () => {
  let inputTokens: number | undefined
  let outputTokens: number | undefined
  let reason: string | undefined
  const read = (event: Anthropic.RawMessageStreamEvent): ReadonlyArray<StreamPart> => {
    switch (event.type) {
      case "message_start":
        inputTokens = event.message.usage.input_tokens
        outputTokens = event.message.usage.output_tokens
        return []
      case "content_block_delta":
        return event.delta.type === "text_delta" && event.delta.text !== ""
          ? [{ _tag: "TextDelta", text: event.delta.text }]
          : []
      case "message_delta":
        outputTokens = event.usage.output_tokens
        reason = event.delta.stop_reason ?? undefined
        return []
      case "message_stop":
        return [{ _tag: "Finish", reason, usage: { inputTokens, outputTokens } }]
      default:
        return []
    }
  }
  return { read }
}

/**
 * The Anthropic Messages API through the official SDK (one attempt per call; SDK retries off, the router
 * retries). Requires a key: the caller checks `providerUsable` first.
 */
export const makeAnthropicClient = (options: AnthropicClientOptions): ProviderClient => {
  const { apiKey, secrets } = sdkKey(options.settings)
  const client = new Anthropic({
    apiKey,
    // Explicit, so the SDK's own environment lookup never applies: ANTHROPIC_BASE_URL reaches us through
    // the settings, where the config wins over it.
    baseURL: Option.getOrElse(options.settings.baseUrl, () => "https://api.anthropic.com"),
    maxRetries: 0,
    timeout: Duration.toMillis(options.requestTimeout),
    logLevel: "off"
  })

  const stream = (request: ChatRequest): Stream.Stream<StreamPart, AgentError> =>
    sdkStreamParts(
      (signal) =>
        client.messages.create(
          {
            model: request.model.model,
            max_tokens: request.maxTokens,
            ...(request.system === undefined || request.system === "" ? {} : { system: request.system }),
            messages: mergeConsecutive(request.messages).map(anthropicMessage),
            stream: true
          },
          { signal }
        ),
      (cause) => anthropicFailure(cause, request.model.model, secrets, Date.now()),
      readEvents
    )

  return { provider: "anthropic", stream }
}
