// The `local` provider: models shipped with cara that need no network and no key, so a new installation
// (and `npm run demo`) can see the whole encrypted round trip before choosing a real provider. They are
// test models, documented as such: deterministic, instant, and they do not think.
import { Stream } from "effect"
import { type AgentError, type ChatRequest, LOCAL_MODELS, type StreamPart } from "../domain/agent.js"
import type { ProviderClient } from "../services/LanguageModel.js"

/**
 * `local:echo`'s answer: the newest user message, quoted back. Pure, so the same conversation always gets
 * the same answer (tests and the demo can match it exactly).
 */
export const echoAnswer = (request: ChatRequest): string => {
  const last = [...request.messages].reverse().find((m) => m.role === "user")
  const text = last?.content.trim() ?? ""
  return text === "" ? "echo: (an empty message)" : `echo: ${text}`
}

/** The answer in word-sized deltas (so streaming consumers see more than one), then `Finish`. */
export const echoParts = (request: ChatRequest): ReadonlyArray<StreamPart> => {
  const answer = echoAnswer(request).slice(0, Math.max(1, request.maxTokens * 4))
  const deltas = answer.match(/\S+\s*|\s+/g) ?? [answer]
  const inputChars = request.messages.reduce((n, m) => n + m.content.length, request.system?.length ?? 0)
  return [
    ...deltas.map((text): StreamPart => ({ _tag: "TextDelta", text })),
    // tokens estimated at ~4 characters each, as a rough stand-in for a tokenizer
    {
      _tag: "Finish",
      reason: "stop",
      usage: { inputTokens: Math.ceil(inputChars / 4), outputTokens: Math.ceil(answer.length / 4) }
    }
  ]
}

export const makeLocalClient = (): ProviderClient => ({
  provider: "local",
  stream: (request: ChatRequest): Stream.Stream<StreamPart, AgentError> =>
    // parseModel admits only LOCAL_MODELS, so anything else here is a bug in the caller
    LOCAL_MODELS.includes(request.model.model)
      ? Stream.fromIterable(echoParts(request))
      : Stream.dieMessage(`unknown local model ${request.model.model}`)
})
