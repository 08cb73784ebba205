import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Exit, Option, Redacted } from "effect"
import { Schema } from "effect"
import fc from "fast-check"
import {
  backoffDelay,
  type ChatMessage,
  classifyFailure,
  defaultRetrySettings,
  emptyAgentSettings,
  mergeConsecutive,
  messageCost,
  parseModel,
  parseRetryAfter,
  type ProviderFailure,
  resolveAgent,
  scrubSecrets,
  trimHistory,
  userReply
} from "../../src/domain/agent.js"
import { CaraConfig, SecretRef } from "../../src/domain/config.js"
import { agentSettingsFromConfig, configurationProblems } from "../../src/layers/AgentLive.js"

describe("parseModel", () => {
  it("splits provider:model at the first colon only", () => {
    expect(parseModel("anthropic:claude-sonnet-4-6")).toEqual(
      Either.right({ provider: "anthropic", model: "claude-sonnet-4-6" })
    )
    expect(parseModel(" openai:llama3.1:8b ")).toEqual(Either.right({ provider: "openai", model: "llama3.1:8b" }))
  })

  it("rejects a bare model, an unknown provider and an empty model with a hint", () => {
    const bare = parseModel("claude-sonnet-4-6")
    expect(Either.isLeft(bare) && bare.left).toContain("anthropic:claude-sonnet-4-6")
    const unknown = parseModel("google:gemini")
    expect(Either.isLeft(unknown) && unknown.left).toContain("unknown provider \"google\"")
    expect(Either.isLeft(parseModel("openai:"))).toBe(true)
  })
})

const message = fc.record({
  role: fc.constantFrom<"user" | "assistant">("user", "assistant"),
  content: fc.string({ maxLength: 60 }),
  // A unique tag so "same element" is checkable after trimming.
  tag: fc.nat()
})

describe("trimHistory", () => {
  it.prop("keeps a contiguous, in-order suffix that contains the newest user message and starts with a user", [
    fc.array(message, { maxLength: 40 }).map((ms) => ms.map((m, i) => ({ ...m, tag: i }))),
    fc.integer({ min: 0, max: 800 })
  ], ([messages, budget]) => {
    const kept = trimHistory(messages, budget)
    const lastUser = messages.map((m) => m.role).lastIndexOf("user")
    if (lastUser < 0) {
      expect(kept).toEqual([])
      return
    }
    // Suffix: same elements, same order, nothing skipped in between.
    const start = messages.length - kept.length
    expect(kept).toEqual(messages.slice(start))
    // The newest user message is always kept.
    expect(kept.some((m) => m.tag === messages[lastUser]!.tag)).toBe(true)
    expect(kept[0]!.role).toBe("user")
    // Anything beyond the mandatory tail fits the budget.
    const mandatory = messages.slice(lastUser).reduce((n, m) => n + messageCost(m), 0)
    const total = kept.reduce((n, m) => n + messageCost(m), 0)
    expect(total <= Math.max(budget, mandatory)).toBe(true)
  })

  it("drops the oldest messages first", () => {
    const ms: Array<ChatMessage> = [
      { role: "user", content: "a".repeat(100) },
      { role: "assistant", content: "b".repeat(100) },
      { role: "user", content: "c".repeat(10) },
      { role: "assistant", content: "d".repeat(10) },
      { role: "user", content: "e".repeat(10) }
    ]
    expect(trimHistory(ms, 60).map((m) => m.content[0])).toEqual(["c", "d", "e"])
    expect(trimHistory(ms, 10_000)).toEqual(ms)
    // Over budget on its own: the newest user message survives alone.
    expect(trimHistory(ms, 1).map((m) => m.content[0])).toEqual(["e"])
  })
})

describe("mergeConsecutive", () => {
  it("joins same-role neighbours and keeps order", () => {
    expect(mergeConsecutive([
      { role: "user", content: "one" },
      { role: "user", content: "two" },
      { role: "assistant", content: "three" }
    ])).toEqual([{ role: "user", content: "one\n\ntwo" }, { role: "assistant", content: "three" }])
  })
})

describe("retry timing", () => {
  it("reads retry-after-ms, retry-after seconds and retry-after dates", () => {
    const headers = (h: Record<string, string>) => (n: string) => h[n]
    expect(parseRetryAfter(headers({ "retry-after-ms": "1500", "retry-after": "9" }), 0)).toBe(1500)
    expect(parseRetryAfter(headers({ "retry-after": "2" }), 0)).toBe(2000)
    const now = Date.parse("2026-01-01T00:00:00Z")
    expect(parseRetryAfter(headers({ "retry-after": "Thu, 01 Jan 2026 00:00:07 GMT" }), now)).toBe(7000)
    expect(parseRetryAfter(headers({ "retry-after": "soon" }), 0)).toBeUndefined()
    expect(parseRetryAfter(headers({}), 0)).toBeUndefined()
  })

  it("backs off exponentially up to the cap", () => {
    const retry = { ...defaultRetrySettings, initialDelay: Duration.millis(100), maxDelay: Duration.millis(500) }
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(retry, n, 0))).toEqual([100, 200, 400, 500, 500])
    expect(backoffDelay(retry, 1, 0.999)).toBeLessThanOrEqual(125)
  })
})

const failure = (f: Partial<ProviderFailure>): ProviderFailure => ({
  provider: "anthropic",
  model: "claude-x",
  status: undefined,
  errorType: undefined,
  errorCode: undefined,
  detail: undefined,
  retryAfterMs: undefined,
  connection: false,
  ...f
})

describe("classifyFailure and userReply", () => {
  it("maps statuses and body types to stable kinds", () => {
    expect(classifyFailure(failure({ status: 401 })).kind).toBe("agent-auth")
    expect(classifyFailure(failure({ status: 404 })).kind).toBe("agent-model-not-found")
    expect(classifyFailure(failure({ status: 429, retryAfterMs: 3000 }))).toMatchObject({
      kind: "agent-rate-limited",
      retryAfterMs: 3000
    })
    expect(classifyFailure(failure({ provider: "openai", status: 429, errorCode: "insufficient_quota" })).kind).toBe(
      "agent-quota"
    )
    expect(classifyFailure(failure({ status: 529 })).kind).toBe("agent-unavailable")
    expect(classifyFailure(failure({ errorType: "overloaded_error" })).kind).toBe("agent-unavailable")
    expect(classifyFailure(failure({ connection: true })).kind).toBe("agent-unavailable")
    expect(classifyFailure(failure({ status: 400 })).kind).toBe("agent-invalid-request")
  })

  it("gives short user replies that say what to do", () => {
    expect(userReply(classifyFailure(failure({ status: 401 })))).toContain("ANTHROPIC_API_KEY")
    expect(userReply(classifyFailure(failure({ status: 429, retryAfterMs: 2500 })))).toContain("about 3 seconds")
    expect(userReply(classifyFailure(failure({ status: 404 })))).toContain("claude-x")
  })

  it("scrubs keys from provider text", () => {
    const text = scrubSecrets("Incorrect API key provided: sk-proj-abc123456789. Also secret-value-42", [
      "secret-value-42"
    ])
    expect(text).not.toContain("sk-proj-abc123456789")
    expect(text).not.toContain("secret-value-42")
    expect(text).toContain("[REDACTED]")
  })
})

const decodeConfig = Schema.decodeUnknownSync(CaraConfig)
const secrets = (values: Record<string, string>) => (ref: SecretRef) =>
  Effect.succeed(Redacted.make(values[ref.path] ?? "missing"))

describe("agentSettingsFromConfig", () => {
  it.effect("accepts the seed's agents.default, reads keys, room overrides and named agents", () =>
    Effect.gen(function*() {
      const config = decodeConfig({
        anthropic: { apiKey: { path: "anthropic.apiKey", source: "config" } },
        openai: { baseUrl: "http://127.0.0.1:11434/v1" },
        agents: {
          default: { model: "anthropic:claude-sonnet-4-6", systemPrompt: "Be brief." },
          coder: { model: "openai:qwen2.5-coder" }
        },
        matrix: { rooms: { "!dev:hs": { agent: "coder" } } }
      })
      const settings = yield* agentSettingsFromConfig(config, secrets({ "anthropic.apiKey": "sk-ant-test" }), {})
      expect(Option.map(settings.anthropic.apiKey, Redacted.value)).toEqual(Option.some("sk-ant-test"))
      expect(Option.isNone(settings.openai.apiKey)).toBe(true)
      const dev = Option.getOrThrow(resolveAgent(settings, "!dev:hs"))
      expect(dev).toMatchObject({ name: "coder", model: { provider: "openai", model: "qwen2.5-coder" } })
      // Inherited from the default agent.
      expect(dev.systemPrompt).toBe("Be brief.")
      expect(Option.getOrThrow(resolveAgent(settings, "!other:hs")).name).toBe("default")
      // A compatible server without a key is usable; nothing to warn about.
      expect(configurationProblems(settings)).toEqual([])
    }))

  it.effect("falls back to the env key and reports a missing model without failing", () =>
    Effect.gen(function*() {
      const settings = yield* agentSettingsFromConfig(decodeConfig({}), secrets({}), { OPENAI_API_KEY: "sk-env" })
      expect(Option.map(settings.openai.apiKey, Redacted.value)).toEqual(Option.some("sk-env"))
      expect(configurationProblems(settings).map((p) => p.kind)).toEqual(["agent-not-configured"])
      const noKey = yield* agentSettingsFromConfig(
        decodeConfig({ agents: { defaults: { model: "anthropic:claude-sonnet-4-6" } } }),
        secrets({}),
        {}
      )
      const problems = configurationProblems(noKey)
      expect(problems).toHaveLength(1)
      expect(problems[0]!.message).toContain("ANTHROPIC_API_KEY")
    }))

  it.effect("rejects a malformed model string and a room naming an undefined agent", () =>
    Effect.gen(function*() {
      const bad = yield* Effect.exit(
        agentSettingsFromConfig(decodeConfig({ agents: { defaults: { model: "claude-sonnet-4-6" } } }), secrets({}), {})
      )
      expect(Exit.isFailure(bad) && JSON.stringify(bad.cause)).toContain("agents.defaults.model")
      const room = yield* Effect.exit(
        agentSettingsFromConfig(
          decodeConfig({
            agents: { defaults: { model: "openai:gpt-4o" } },
            matrix: { rooms: { "!r:hs": { agent: "nope" } } }
          }),
          secrets({}),
          {}
        )
      )
      expect(Exit.isFailure(room) && JSON.stringify(room.cause)).toContain("matrix.rooms.!r:hs.agent")
    }))

  it("has no default agent in the empty settings", () => {
    expect(Option.isNone(resolveAgent(emptyAgentSettings, "!x:hs"))).toBe(true)
  })
})
