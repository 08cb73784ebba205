import { Duration, Option, Stream } from "effect"
import OpenAI from "openai"
import {
  type AgentError,
  type ChatMessage,
  type ChatRequest,
  mergeConsecutive,
  type ProviderSettings,
  type StreamPart
} from "../domain/agent.js"
import { openAiContent } from "../domain/attachment.js"
import type { ProviderClient } from "../services/LanguageModel.js"
// Layer imports by design: both provider clients are built on the shared SDK helpers.
import { sdkFailure, sdkKey, sdkStreamParts } from "./LanguageModelSdk.js"

export interface OpenAIClientOptions {
  readonly settings: ProviderSettings
  readonly requestTimeout: Duration.Duration
}

const OFFICIAL_BASE_URL = "https://api.openai.com/v1"

/** Turns anything the SDK throws into a classified `AgentError`; key material never survives. */
export const openaiFailure = (
  cause: unknown,
  model: string,
  secrets: ReadonlyArray<string>,
  nowMs: number
): AgentError => {
  if (!(cause instanceof OpenAI.APIError) || cause instanceof OpenAI.APIConnectionError) {
    return sdkFailure("openai", model, secrets, nowMs, cause, undefined)
  }
  const body = cause.error as { message?: unknown } | undefined
  const detail = typeof body?.message === "string" ? body.message : cause.status === undefined ? cause.message : ""
  return sdkFailure("openai", model, secrets, nowMs, cause, {
    status: cause.status,
    errorType: cause.type ?? undefined,
    errorCode: cause.code ?? undefined,
    detail,
    headers: cause.headers
  })
}

/**
 * A message as Chat Completions takes it: a user message with parts becomes content parts (images as
 * `image_url` data URLs); an assistant message is always text.
 */
export const openaiMessage = (m: ChatMessage): OpenAI.Chat.ChatCompletionMessageParam =>
  m.role === "assistant"
    ? { role: "assistant", content: m.content }
    : { role: "user", content: m.parts === undefined ? m.content : openAiContent(m.parts) }

/** Completion chunks to stream parts; the finish (with the usage, official API only) comes after the last. */
const readChunks = () => {
  let reason: string | undefined
  let inputTokens: number | undefined
  let outputTokens: number | undefined
  const read = (chunk: OpenAI.Chat.ChatCompletionChunk): ReadonlyArray<StreamPart> => {
    if (chunk.usage != null) {
      inputTokens = chunk.usage.prompt_tokens
      outputTokens = chunk.usage.completion_tokens
    }
    const choice = chunk.choices[0]
    if (choice === undefined) return []
    if (choice.finish_reason != null) reason = choice.finish_reason
    const text = choice.delta.content
    return typeof text === "string" && text !== "" ? [{ _tag: "TextDelta", text }] : []
  }
  return {
    read,
    tail: Stream.sync((): StreamPart => ({ _tag: "Finish", reason, usage: { inputTokens, outputTokens } }))
  }
}

/**
 * OpenAI Chat Completions through the official SDK, also for OpenAI-compatible servers (Ollama, vLLM,
 * llama.cpp) via `openai.baseUrl`. One attempt per call; the router retries.
 */
export const makeOpenAIClient = (options: OpenAIClientOptions): ProviderClient => {
  const { apiKey, secrets } = sdkKey(options.settings)
  // Explicit (also when unset): OPENAI_BASE_URL reaches us through the settings, where the config wins.
  const baseURL = Option.getOrElse(options.settings.baseUrl, () => OFFICIAL_BASE_URL)
  const official = baseURL.replace(/\/+$/, "") === OFFICIAL_BASE_URL
  const client = new OpenAI({
    // Local compatible servers usually take no key, but the SDK insists on one.
    apiKey: apiKey === "" ? "no-key" : apiKey,
    baseURL,
    maxRetries: 0,
    timeout: Duration.toMillis(options.requestTimeout),
    logLevel: "off"
  })

  const stream = (request: ChatRequest): Stream.Stream<StreamPart, AgentError> => {
    const messages: Array<OpenAI.Chat.ChatCompletionMessageParam> = [
      ...(request.system === undefined || request.system === ""
        ? []
        : [{ role: "system" as const, content: request.system }]),
      ...mergeConsecutive(request.messages).map(openaiMessage)
    ]
    return sdkStreamParts(
      (signal) =>
        client.chat.completions.create(
          {
            model: request.model.model,
            messages,
            stream: true,
            // The official API wants max_completion_tokens (reasoning models reject max_tokens);
            // compatible servers mostly know only max_tokens. Usage in the stream is official-only.
            ...(official
              ? { max_completion_tokens: request.maxTokens, stream_options: { include_usage: true } }
              : { max_tokens: request.maxTokens })
          },
          { signal }
        ),
      (cause) => openaiFailure(cause, request.model.model, secrets, Date.now()),
      readChunks
    )
  }

  return { provider: "openai", stream }
}
