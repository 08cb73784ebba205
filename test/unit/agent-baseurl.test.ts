// ANTHROPIC_BASE_URL / OPENAI_BASE_URL: honoured when the config sets no base URL; the config wins.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Redacted, Schema } from "effect"
import { providerUsable, resolveBaseUrl } from "../../src/domain/agent.js"
import { CaraConfig, type SecretRef } from "../../src/domain/config.js"
import { agentSettingsFromConfig } from "../../src/layers/AgentLive.js"
import { makeLanguageModel } from "../../src/layers/LanguageModelLive.js"
import { fakeAnthropic, fakeOpenAI } from "../support/fake-llm.js"

const decodeConfig = Schema.decodeUnknownSync(CaraConfig)
const noSecrets = (_: SecretRef) => Effect.succeed(Redacted.make("unused"))

describe("provider base URLs from the environment", () => {
  it("config wins, then the env variable, then the public API; blank counts as unset", () => {
    expect(resolveBaseUrl("https://config.example/v1", "https://env.example/v1")).toEqual(
      Option.some("https://config.example/v1")
    )
    expect(resolveBaseUrl(undefined, " https://env.example/v1 ")).toEqual(Option.some("https://env.example/v1"))
    expect(resolveBaseUrl("  ", "https://env.example/v1")).toEqual(Option.some("https://env.example/v1"))
    expect(resolveBaseUrl(undefined, "")).toEqual(Option.none())
    expect(resolveBaseUrl(undefined, undefined)).toEqual(Option.none())
  })

  it.effect("agent settings take each provider's own variable, and only when the config is silent", () =>
    Effect.gen(function*() {
      const env = { ANTHROPIC_BASE_URL: "https://a.env.example", OPENAI_BASE_URL: "http://127.0.0.1:11434/v1" }
      const fromEnv = yield* agentSettingsFromConfig(decodeConfig({}), noSecrets, env)
      expect(fromEnv.anthropic.baseUrl).toEqual(Option.some("https://a.env.example"))
      expect(fromEnv.openai.baseUrl).toEqual(Option.some("http://127.0.0.1:11434/v1"))
      // a keyless OpenAI-compatible server named by OPENAI_BASE_URL is usable, as with openai.baseUrl
      expect(providerUsable(fromEnv, "openai")).toBe(true)
      const configured = yield* agentSettingsFromConfig(
        decodeConfig({
          anthropic: { baseUrl: "https://a.config.example" },
          openai: { baseUrl: "https://o.config.example/v1" }
        }),
        noSecrets,
        env
      )
      expect(configured.anthropic.baseUrl).toEqual(Option.some("https://a.config.example"))
      expect(configured.openai.baseUrl).toEqual(Option.some("https://o.config.example/v1"))
      const none = yield* agentSettingsFromConfig(decodeConfig({}), noSecrets, {})
      expect(Option.isNone(none.anthropic.baseUrl) && Option.isNone(none.openai.baseUrl)).toBe(true)
    }))

  for (
    const [name, start, envName, model] of [
      ["anthropic", fakeAnthropic, "ANTHROPIC_BASE_URL", "anthropic:claude-test"],
      ["openai", fakeOpenAI, "OPENAI_BASE_URL", "openai:gpt-test"]
    ] as const
  ) {
    it.scopedLive(`${name}: a request goes to ${envName} when the config has no baseUrl`, () =>
      Effect.gen(function*() {
        const fake = yield* start
        const keyEnv = name === "anthropic" ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY"
        const settings = yield* agentSettingsFromConfig(
          decodeConfig({ agents: { defaults: { model } } }),
          noSecrets,
          { [keyEnv]: "sk-test", [envName]: fake.baseUrl }
        )
        const lm = makeLanguageModel(settings)
        const [provider, m] = model.split(":") as ["anthropic" | "openai", string]
        const done = yield* lm.complete({
          model: { provider, model: m },
          system: undefined,
          messages: [{ role: "user", content: "hi" }],
          maxTokens: 16
        })
        expect(done.text.length).toBeGreaterThan(0)
        expect(fake.requests).toHaveLength(1)
      }))
  }
})
