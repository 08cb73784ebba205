// `/help` and `/model` are answered by the Agent itself: no model call, nothing in the room's history.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Option, Redacted } from "effect"
import { type AgentProfile, type AgentSettings, emptyAgentSettings } from "../../src/domain/agent.js"
import { COMMANDS, helpReply, modelReply } from "../../src/domain/commands.js"
import type { TurnInput } from "../../src/services/Agent.js"
import { Sessions } from "../../src/services/Sessions.js"
import { events, reply, withAgent } from "../support/agent.js"
import { fakeAnthropic, type FakeLlmServer } from "../support/fake-llm.js"
import { scopedTmpDir } from "../support/tmp.js"

const tempDir = scopedTmpDir("cara-agent-cmd-")

const profile = (name: string, model: string): AgentProfile => ({
  name,
  model: { provider: "anthropic", model },
  systemPrompt: `You are ${name}.`,
  historyBudget: 10_000,
  maxTokens: 512
})

const settingsWith = (ant: FakeLlmServer, extra: Partial<AgentSettings> = {}): AgentSettings => ({
  ...emptyAgentSettings,
  anthropic: { apiKey: Option.some(Redacted.make("ant-key-test")), baseUrl: Option.some(ant.baseUrl) },
  defaultAgent: Option.some(profile("default", "claude-test")),
  retry: {
    initialDelay: Duration.millis(2),
    maxDelay: Duration.millis(5),
    budget: Duration.seconds(5),
    maxAttempts: 1
  },
  ...extra
})

let counter = 0
const msg = (text: string, roomId = "!dm:hs"): TurnInput => ({
  roomId,
  eventId: `$cmd${++counter}`,
  senderId: "@alice:hs",
  senderName: "Alice",
  text,
  isGroup: false
})

describe("Agent chat commands", () => {
  it.scopedLive("/help lists every command without calling the model or touching the history", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const ant = yield* fakeAnthropic
      yield* withAgent(
        dir,
        settingsWith(ant),
        Effect.gen(function*() {
          yield* reply(msg("remember 42"))
          expect(ant.requests).toHaveLength(1)
          const out = yield* events(msg("  /HELP "))
          expect(out).toEqual([{ _tag: "Command", text: helpReply() }])
          for (const c of COMMANDS) expect(helpReply()).toContain(c.name)
          expect(ant.requests).toHaveLength(1)
          const kept = yield* Effect.flatMap(Sessions, (s) => s.history("!dm:hs", 100))
          expect(kept.map((m) => m.content)).toEqual(["remember 42", expect.any(String)])
          // the next turn's history carries no trace of the command
          yield* reply(msg("what number?"))
          const sent = ant.requests.at(-1)!.body.messages.map((m: { content: string }) => m.content)
          expect(sent).not.toContain("/help")
          expect(sent).toContain("remember 42")
        })
      )
    }))

  it.scopedLive("/model names the model in use for the room, per agent", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const ant = yield* fakeAnthropic
      const coder = profile("coder", "claude-coder")
      const settings = settingsWith(ant, {
        agents: new Map([["coder", coder]]),
        roomAgents: new Map([["!dev:hs", "coder"]])
      })
      yield* withAgent(
        dir,
        settings,
        Effect.gen(function*() {
          const here = yield* reply(msg("/model"))
          expect(here).toEqual({ _tag: "Command", text: modelReply("anthropic:claude-test", "default") })
          expect(here.text).toContain("`anthropic:claude-test`")
          const dev = yield* reply(msg("/model", "!dev:hs"))
          expect(dev.text).toContain("`anthropic:claude-coder`")
          expect(dev.text).toContain("\"coder\"")
          expect(ant.requests).toHaveLength(0)
        })
      )
    }))

  it.scopedLive("/model with no model configured says what to set; /help still answers", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const ant = yield* fakeAnthropic
      yield* withAgent(
        dir,
        settingsWith(ant, { defaultAgent: Option.none() }),
        Effect.gen(function*() {
          expect(yield* reply(msg("/model"))).toEqual({ _tag: "Command", text: modelReply(undefined, undefined) })
          expect((yield* reply(msg("/help")))._tag).toBe("Command")
          expect(ant.requests).toHaveLength(0)
        })
      )
    }))

  it.scopedLive("look-alikes are ordinary messages for the model", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const ant = yield* fakeAnthropic
      yield* withAgent(
        dir,
        settingsWith(ant),
        Effect.gen(function*() {
          expect((yield* reply(msg("/helpful tips?")))._tag).toBe("Completed")
          expect((yield* reply(msg("/models are fun")))._tag).toBe("Completed")
          expect((yield* reply(msg("what does /help do?")))._tag).toBe("Completed")
          expect(ant.requests).toHaveLength(3)
        })
      )
    }))

  it.scopedLive("in a group, a command after a mention of the bot is still a command", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const ant = yield* fakeAnthropic
      const group = (text: string): TurnInput => ({ ...msg(text, "!grp:hs"), isGroup: true, botUserId: "@cara:hs" })
      yield* withAgent(
        dir,
        settingsWith(ant),
        Effect.gen(function*() {
          expect(yield* reply(group("cara: /help"))).toEqual({ _tag: "Command", text: helpReply() })
          expect((yield* reply(group("@cara:hs /model")))._tag).toBe("Command")
          expect(ant.requests).toHaveLength(0)
          yield* reply(group("cara: remember 7"))
          yield* reply(group("@cara:hs /new what now?"))
          const sent = ant.requests.at(-1)!.body.messages
          expect(sent).toHaveLength(1)
          expect(JSON.stringify(sent[0])).toContain("what now?")
          expect(JSON.stringify(sent)).not.toContain("remember 7")
          // someone else's name is not the bot's: an ordinary message
          expect((yield* reply(group("bob: /help")))._tag).toBe("Completed")
        })
      )
    }))
})
