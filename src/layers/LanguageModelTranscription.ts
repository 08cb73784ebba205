// Voice messages to text (issue 20.2): an OpenAI-compatible `POST {baseUrl}/audio/transcriptions` through the
// official SDK (multipart upload of the clear audio, from memory). The key is the `openai` provider's
// (config or OPENAI_API_KEY); the base URL is `matrix.transcription.baseUrl`, else the provider's. Loaded
// only when `matrix.transcription` is set (LanguageModelLive imports this module on first use).
import { Duration, Effect, Option } from "effect"
import OpenAI, { toFile } from "openai"
import type { AgentError, AgentSettings, TranscriptionRequest, TranscriptionSettings } from "../domain/agent.js"
// Layer imports by design: the transcriber speaks the same SDK as the OpenAI chat client.
import { openaiFailure } from "./LanguageModelOpenAI.js"
import { sdkKey } from "./LanguageModelSdk.js"

const OFFICIAL_BASE_URL = "https://api.openai.com/v1"

/** The transcript of one audio attachment (trimmed; may be empty when nothing was heard). */
export type Transcribe = (request: TranscriptionRequest) => Effect.Effect<string, AgentError>

export const makeTranscriber = (settings: AgentSettings, t: TranscriptionSettings): Transcribe => {
  const { apiKey, secrets } = sdkKey(settings.openai)
  const baseURL = Option.getOrElse(Option.orElse(t.baseUrl, () => settings.openai.baseUrl), () => OFFICIAL_BASE_URL)
  const client = new OpenAI({
    apiKey: apiKey === "" ? "no-key" : apiKey,
    baseURL,
    maxRetries: 1,
    timeout: Duration.toMillis(settings.requestTimeout),
    logLevel: "off"
  })
  return (request) =>
    Effect.tryPromise({
      try: async (signal) => {
        const file = await toFile(request.audio, request.name, {
          ...(request.mimeType === undefined ? {} : { type: request.mimeType })
        })
        const r = await client.audio.transcriptions.create({ file, model: t.model }, { signal })
        return r.text.trim()
      },
      catch: (cause) => openaiFailure(cause, t.model, secrets, Date.now())
    }).pipe(Effect.withSpan("LanguageModel.transcribe", { attributes: { model: t.model } }))
}
