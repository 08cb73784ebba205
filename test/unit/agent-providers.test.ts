import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Exit, Fiber, Option, Redacted, Stream, TestClock } from "effect"
import * as net from "node:net"
import {
  AgentError,
  type AgentSettings,
  type ChatRequest,
  emptyAgentSettings,
  type ProviderName,
  type StreamPart,
  userReply
} from "../../src/domain/agent.js"
import { makeLanguageModel } from "../../src/layers/LanguageModelLive.js"
import { fakeAnthropic, type FakeLlmServer, fakeOpenAI } from "../support/fake-llm.js"

const KEY = "test-key-0123456789"

const settingsFor = (fake: FakeLlmServer, overrides: Partial<AgentSettings> = {}): AgentSettings => ({
  ...emptyAgentSettings,
  [fake.flavor]: { apiKey: Option.some(Redacted.make(KEY)), baseUrl: Option.some(fake.baseUrl) },
  retry: {
    initialDelay: Duration.millis(5),
    maxDelay: Duration.millis(20),
    budget: Duration.seconds(30),
    maxAttempts: 4
  },
  requestTimeout: Duration.seconds(20),
  ...overrides
})

const request = (provider: ProviderName): ChatRequest => ({
  model: { provider, model: provider === "anthropic" ? "claude-test" : "gpt-test" },
  system: "You are Cara.",
  messages: [
    { role: "user", content: "first question" },
    { role: "assistant", content: "first answer" },
    { role: "user", content: "second question" }
  ],
  maxTokens: 256
})

const collect = (s: Stream.Stream<StreamPart, AgentError>) => Stream.runCollect(s).pipe(Effect.map(Chunk.toArray))
const deltas = (parts: ReadonlyArray<StreamPart>) => parts.flatMap((p) => (p._tag === "TextDelta" ? [p.text] : []))
const failureOf = <A>(exit: Exit.Exit<A, AgentError>): AgentError => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const e = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  if (!(e instanceof AgentError)) throw new Error(`expected an AgentError, got ${String(exit.cause)}`)
  return e
}

/** Real time passes while the SDK talks to the fake; the TestClock only governs our own sleeps. */
const waitForSleep = Effect.gen(function*() {
  for (let i = 0; i < 2000; i++) {
    const sleeps = yield* TestClock.sleeps()
    if (Chunk.isNonEmpty(sleeps)) return Chunk.toArray(sleeps)
    yield* Effect.promise(() => new Promise((r) => setTimeout(r, 5)))
  }
  return yield* Effect.dieMessage("no retry sleep was scheduled")
})

const servers = [
  { name: "anthropic", start: fakeAnthropic },
  { name: "openai", start: fakeOpenAI }
] as const

for (const { name, start } of servers) {
  const provider = name as ProviderName
  describe(`${name} through the official SDK`, () => {
    it.scopedLive("sends the system prompt and the history in order, and streams deltas in order", () =>
      Effect.gen(function*() {
        const fake = yield* start
        fake.enqueue({ type: "text", chunks: ["Hel", "lo", ", ", "world", "!"] })
        const lm = makeLanguageModel(settingsFor(fake))
        const parts = yield* collect(lm.stream(request(provider)))
        expect(deltas(parts)).toEqual(["Hel", "lo", ", ", "world", "!"])
        expect(parts.at(-1)?._tag).toBe("Finish")

        expect(fake.requests).toHaveLength(1)
        const sent = fake.requests[0]!
        expect(sent.body.stream).toBe(true)
        expect(sent.body.model).toBe(request(provider).model.model)
        if (provider === "anthropic") {
          // SDK 1.x sends the key as a bearer token; older ones used x-api-key.
          expect(sent.headers["x-api-key"] ?? sent.headers["authorization"]?.replace(/^Bearer /, "")).toBe(KEY)
          expect(sent.headers["anthropic-version"]).toBeDefined()
          expect(sent.body.system).toBe("You are Cara.")
          expect(sent.body.max_tokens).toBe(256)
          expect(sent.body.messages).toEqual([
            { role: "user", content: "first question" },
            { role: "assistant", content: "first answer" },
            { role: "user", content: "second question" }
          ])
        } else {
          expect(sent.headers["authorization"]).toBe(`Bearer ${KEY}`)
          expect(sent.body.messages).toEqual([
            { role: "system", content: "You are Cara." },
            { role: "user", content: "first question" },
            { role: "assistant", content: "first answer" },
            { role: "user", content: "second question" }
          ])
        }
      }))

    it.scopedLive("a consumer that stops early aborts the HTTP request", () =>
      Effect.gen(function*() {
        const fake = yield* start
        fake.enqueue({ type: "stall", chunks: ["first"] })
        const lm = makeLanguageModel(settingsFor(fake))
        const head = yield* Stream.runHead(lm.stream(request(provider)))
        expect(head).toEqual(Option.some({ _tag: "TextDelta", text: "first" }))
        // Resolves only when the server sees the connection closed; a leak would hang here.
        yield* Effect.promise(() => fake.waitForAbort()).pipe(
          Effect.timeoutFail({
            duration: Duration.seconds(20),
            onTimeout: () => new Error("the request was not aborted")
          })
        )
      }))

    it.scoped("retries a 429 after exactly the retry-after the provider asked for, then succeeds", () =>
      Effect.gen(function*() {
        const fake = yield* start
        fake.enqueue(
          {
            type: "error",
            status: 429,
            errorType: "rate_limit_error",
            message: "slow down",
            headers: { "retry-after": "2" }
          },
          { type: "text", chunks: ["after", " waiting"] }
        )
        const lm = makeLanguageModel(settingsFor(fake))
        const fiber = yield* Effect.fork(lm.complete(request(provider)))
        yield* Effect.promise(() => fake.waitForRequests(1))
        const [wakeAt] = yield* waitForSleep
        expect(wakeAt).toBe(2000)
        yield* TestClock.adjust(Duration.millis(1999))
        expect(fake.requests).toHaveLength(1)
        yield* TestClock.adjust(Duration.millis(1))
        const done = yield* Fiber.join(fiber)
        expect(done.text).toBe("after waiting")
        expect(fake.requests).toHaveLength(2)
      }))

    it.scopedLive("401 fails at once with agent-auth and a bad-key reply that never shows the key", () =>
      Effect.gen(function*() {
        const fake = yield* start
        fake.enqueue({
          type: "error",
          status: 401,
          errorType: provider === "anthropic" ? "authentication_error" : "invalid_request_error",
          code: "invalid_api_key",
          message: `Incorrect API key provided: ${KEY}`
        })
        const lm = makeLanguageModel(settingsFor(fake))
        const error = failureOf(yield* Effect.exit(lm.complete(request(provider))))
        expect(error.kind).toBe("agent-auth")
        expect(error.status).toBe(401)
        expect(fake.requests).toHaveLength(1)
        expect(error.message).not.toContain(KEY)
        const reply = userReply(error)
        expect(reply).toContain("rejected the API key")
        expect(reply).toContain(provider === "anthropic" ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY")
      }))

    it.scopedLive("404 gives agent-model-not-found naming the model", () =>
      Effect.gen(function*() {
        const fake = yield* start
        fake.enqueue({
          type: "error",
          status: 404,
          errorType: provider === "anthropic" ? "not_found_error" : "invalid_request_error",
          code: "model_not_found",
          message: "model: nope"
        })
        const error = failureOf(yield* Effect.exit(makeLanguageModel(settingsFor(fake)).complete(request(provider))))
        expect(error.kind).toBe("agent-model-not-found")
        expect(userReply(error)).toContain(request(provider).model.model)
      }))

    it.scopedLive("5xx is retried up to maxAttempts, then reported as agent-unavailable", () =>
      Effect.gen(function*() {
        const fake = yield* start
        const down = { type: "error", status: 503, errorType: "api_error", message: "down" } as const
        fake.enqueue(down, down, down, down, down)
        const error = failureOf(yield* Effect.exit(makeLanguageModel(settingsFor(fake)).complete(request(provider))))
        expect(error.kind).toBe("agent-unavailable")
        expect(error.message).toContain("gave up after 4 attempts")
        expect(fake.requests).toHaveLength(4)
      }))

    it.scopedLive("a retry-after beyond the budget is not waited for", () =>
      Effect.gen(function*() {
        const fake = yield* start
        fake.enqueue({
          type: "error",
          status: 429,
          errorType: "rate_limit_error",
          message: "later",
          headers: { "retry-after": "120" }
        })
        const error = failureOf(yield* Effect.exit(makeLanguageModel(settingsFor(fake)).complete(request(provider))))
        expect(error).toMatchObject({ kind: "agent-rate-limited", retryAfterMs: 120_000 })
        expect(userReply(error)).toContain("about 120 seconds")
        expect(fake.requests).toHaveLength(1)
      }))

    it.scopedLive("an error event before any delta is retried; after a delta it is not", () =>
      Effect.gen(function*() {
        const fake = yield* start
        fake.enqueue(
          { type: "stream-error", chunks: [], errorType: "overloaded_error", message: "busy" },
          { type: "text", chunks: ["fine"] }
        )
        const lm = makeLanguageModel(settingsFor(fake))
        expect((yield* lm.complete(request(provider))).text).toBe("fine")
        expect(fake.requests).toHaveLength(2)

        fake.enqueue({
          type: "stream-error",
          chunks: ["partial ", "answer"],
          errorType: "overloaded_error",
          message: "busy"
        })
        const seen: Array<string> = []
        const exit = yield* Effect.exit(
          Stream.runForEach(lm.stream(request(provider)), (p) =>
            Effect.sync(() => {
              if (p._tag === "TextDelta") seen.push(p.text)
            }))
        )
        expect(seen).toEqual(["partial ", "answer"])
        expect(failureOf(exit).kind).toBe("agent-unavailable")
        expect(fake.requests).toHaveLength(3)
      }))
  })
}

describe("routing", () => {
  it.effect("a provider without a key fails with agent-not-configured and makes no request", () =>
    Effect.gen(function*() {
      const lm = makeLanguageModel(emptyAgentSettings)
      const error = failureOf(yield* Effect.exit(lm.complete(request("anthropic"))))
      expect(error.kind).toBe("agent-not-configured")
      expect(userReply(error)).toContain("ANTHROPIC_API_KEY")
    }))

  it.scopedLive("an OpenAI-compatible base URL works without a key and gets max_tokens", () =>
    Effect.gen(function*() {
      const fake = yield* fakeOpenAI
      const lm = makeLanguageModel({
        ...emptyAgentSettings,
        openai: { apiKey: Option.none(), baseUrl: Option.some(fake.baseUrl) }
      })
      const done = yield* lm.complete({ ...request("openai"), model: { provider: "openai", model: "llama3.1:8b" } })
      expect(done.text).toBe("Hello from the fake model.")
      const sent = fake.requests[0]!
      expect(sent.body.model).toBe("llama3.1:8b")
      expect(sent.body.max_tokens).toBe(256)
      expect(sent.body.max_completion_tokens).toBeUndefined()
      expect(sent.headers["authorization"]).toBe("Bearer no-key")
    }))

  it.scopedLive("a refused connection is agent-unavailable after the retries", () =>
    Effect.gen(function*() {
      // A port that was just free: nothing listens there.
      const port = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const s = net.createServer().listen(0, "127.0.0.1", () => {
            const p = (s.address() as net.AddressInfo).port
            s.close(() => resolve(p))
          })
        })
      )
      const lm = makeLanguageModel({
        ...emptyAgentSettings,
        anthropic: { apiKey: Option.some(Redacted.make(KEY)), baseUrl: Option.some(`http://127.0.0.1:${port}`) },
        retry: {
          initialDelay: Duration.millis(1),
          maxDelay: Duration.millis(2),
          budget: Duration.seconds(30),
          maxAttempts: 2
        }
      })
      const error = failureOf(yield* Effect.exit(lm.complete(request("anthropic"))))
      expect(error.kind).toBe("agent-unavailable")
      expect(userReply(error)).toContain("not responding")
    }))
})
