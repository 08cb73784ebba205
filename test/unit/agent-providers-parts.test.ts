// Attachments on the wire (issue 20.2): a user message with parts becomes Anthropic `image` blocks (base64)
// or OpenAI `image_url` data URLs; the agent gives the parts to the model for the new message only and the
// history keeps the reference line; the transcriber posts the audio to `/audio/transcriptions`; and the
// config keys' defaults.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Option, Redacted, Schema } from "effect"
import {
  type AgentSettings,
  type ChatRequest,
  emptyAgentSettings,
  mergeConsecutive,
  type ProviderName
} from "../../src/domain/agent.js"
import type { ContentPart } from "../../src/domain/attachment.js"
import { CaraConfig } from "../../src/domain/config.js"
import { agentSettingsFromConfig } from "../../src/layers/AgentLive.js"
import { makeLanguageModel } from "../../src/layers/LanguageModelLive.js"
import { Sessions } from "../../src/services/Sessions.js"
import { reply, withAgent } from "../support/agent.js"
import { DEFAULT_TRANSCRIPT, fakeAnthropic, type FakeLlmServer, fakeOpenAI } from "../support/fake-llm.js"
import { scopedTmpDir } from "../support/tmp.js"

const KEY = "test-key-0123456789"
const tempDir = scopedTmpDir("cara-parts-")
const IMAGE = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3, 4])
const B64 = Buffer.from(IMAGE).toString("base64")
const PARTS: ReadonlyArray<ContentPart> = [
  { _tag: "Image", mediaType: "image/png", data: IMAGE },
  { _tag: "Text", text: "What colour is this?" }
]

const settingsFor = (fake: FakeLlmServer, extra: Partial<AgentSettings> = {}): AgentSettings => ({
  ...emptyAgentSettings,
  [fake.flavor]: { apiKey: Option.some(Redacted.make(KEY)), baseUrl: Option.some(fake.baseUrl) },
  defaultAgent: Option.some({
    name: "default",
    model: { provider: fake.flavor, model: fake.flavor === "anthropic" ? "claude-test" : "gpt-4o" },
    systemPrompt: undefined,
    historyBudget: 10_000,
    maxTokens: 256
  }),
  requestTimeout: Duration.seconds(20),
  ...extra
})

const request = (provider: ProviderName): ChatRequest => ({
  model: { provider, model: provider === "anthropic" ? "claude-test" : "gpt-4o" },
  system: undefined,
  messages: [
    { role: "user", content: "earlier" },
    { role: "assistant", content: "earlier answer" },
    { role: "user", content: "[image \"dot.png\"]", parts: PARTS }
  ],
  maxTokens: 64
})

describe("a user message with parts on the wire", () => {
  it.scopedLive("anthropic: an image block (base64) and a text block; other messages stay strings", () =>
    Effect.gen(function*() {
      const fake = yield* fakeAnthropic
      yield* makeLanguageModel(settingsFor(fake)).complete(request("anthropic"))
      const messages = fake.requests[0]!.body.messages
      expect(messages[0]).toEqual({ role: "user", content: "earlier" })
      expect(messages[2]).toEqual({
        role: "user",
        content: [
          { type: "image", source: { type: "base64", media_type: "image/png", data: B64 } },
          { type: "text", text: "What colour is this?" }
        ]
      })
    }))

  it.scopedLive("openai: an image_url data URL and a text part", () =>
    Effect.gen(function*() {
      const fake = yield* fakeOpenAI
      yield* makeLanguageModel(settingsFor(fake)).complete(request("openai"))
      const messages = fake.requests[0]!.body.messages
      expect(messages[1]).toEqual({ role: "assistant", content: "earlier answer" })
      expect(messages[2]).toEqual({
        role: "user",
        content: [
          { type: "image_url", image_url: { url: `data:image/png;base64,${B64}` } },
          { type: "text", text: "What colour is this?" }
        ]
      })
    }))

  it("mergeConsecutive keeps the parts of merged user messages in order", () => {
    const merged = mergeConsecutive([
      { role: "user", content: "failed turn" },
      { role: "user", content: "ref", parts: PARTS }
    ])
    expect(merged).toEqual([{
      role: "user",
      content: "failed turn\n\nref",
      parts: [{ _tag: "Text", text: "failed turn" }, ...PARTS]
    }])
  })
})

describe("the agent with an attachment turn", () => {
  it.scopedLive("the model gets the parts for the new message only; the history keeps the reference line", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const fake = yield* fakeAnthropic
      yield* withAgent(
        dir,
        settingsFor(fake),
        Effect.gen(function*() {
          const base = { roomId: "!dm:hs", senderId: "@alice:hs", isGroup: false }
          yield* reply({ ...base, eventId: "$img", text: "[image \"dot.png\"] What colour?", parts: PARTS })
          yield* reply({ ...base, eventId: "$next", text: "and now?" })
          const first = fake.requests[0]!.body.messages.at(-1)
          expect(first.content[0]).toMatchObject({ type: "image", source: { data: B64 } })
          const second = JSON.stringify(fake.requests[1]!.body.messages)
          expect(second).not.toContain(B64)
          expect(second).toContain("[image \\\"dot.png\\\"] What colour?")
          const stored = yield* (yield* Sessions).history("!dm:hs", 10)
          expect(stored.map((m) => m.content).join("\n")).not.toContain(B64)
        })
      )
    }))

  it.scopedLive("in a group, the first text part is labelled with the sender", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const fake = yield* fakeAnthropic
      yield* withAgent(
        dir,
        settingsFor(fake),
        reply({
          roomId: "!group:hs",
          eventId: "$g",
          senderId: "@bob:hs",
          senderName: "Bob",
          text: "ref",
          isGroup: true,
          parts: PARTS
        })
      )
      const content = fake.requests[0]!.body.messages.at(-1).content
      // the speaker line of every group message (src/domain/speakers.ts)
      expect(content[1]).toEqual({ type: "text", text: "[Bob (@bob:hs)] What colour is this?" })
    }))
})

describe("transcription", () => {
  it.scopedLive("posts the audio to the OpenAI-compatible endpoint with the openai key and returns the text", () =>
    Effect.gen(function*() {
      const fake = yield* fakeOpenAI
      const lm = makeLanguageModel(
        settingsFor(fake, { transcription: { model: "whisper-1", baseUrl: Option.none() } })
      )
      expect(lm.transcribe).toBeDefined()
      const text = yield* lm.transcribe!({
        audio: Buffer.from("OggS voice"),
        name: "audio.ogg",
        mimeType: "audio/ogg"
      })
      expect(text).toBe(DEFAULT_TRANSCRIPT)
      const sent = fake.requests.at(-1)!
      expect(sent.path).toBe("/v1/audio/transcriptions")
      expect(sent.headers["authorization"]).toBe(`Bearer ${KEY}`)
      expect(sent.raw?.toString()).toContain("OggS voice")
      expect(sent.raw?.toString()).toContain("whisper-1")
      expect(makeLanguageModel(settingsFor(fake)).transcribe).toBeUndefined()
    }))

  it.effect("config: matrix.attachments defaults to images auto, transcription absent; set, it reaches the settings", () =>
    Effect.gen(function*() {
      const bare = Schema.decodeUnknownSync(CaraConfig)({ matrix: {} })
      expect(bare.matrix?.attachments).toEqual({ images: "auto" })
      expect(bare.matrix?.transcription).toBeUndefined()
      const set = Schema.decodeUnknownSync(CaraConfig)({
        matrix: { transcription: { baseUrl: "http://127.0.0.1:9/v1" } }
      })
      expect(set.matrix?.transcription).toEqual({
        provider: "openai",
        model: "whisper-1",
        baseUrl: "http://127.0.0.1:9/v1"
      })
      const settings = yield* agentSettingsFromConfig(set, () => Effect.die("no secrets here"), {})
      expect(settings.transcription).toEqual({ model: "whisper-1", baseUrl: Option.some("http://127.0.0.1:9/v1") })
      const none = yield* agentSettingsFromConfig(bare, () => Effect.die("no secrets here"), {})
      expect(none.transcription).toBeUndefined()
    }))
})
