// The built-in `local` provider (`local:echo`): deterministic, offline, selectable from the config.
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Option, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { type ChatRequest, emptyAgentSettings, parseModel, providerUsable } from "../../src/domain/agent.js"
import { parseModelRef } from "../../src/domain/config.js"
import { loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { makeLanguageModel } from "../../src/layers/LanguageModelLive.js"
import { echoAnswer } from "../../src/layers/LanguageModelLocal.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { tmpDir } from "../support/tmp.js"

const request = (messages: ChatRequest["messages"]): ChatRequest => ({
  model: { provider: "local", model: "echo" },
  system: "be brief",
  messages,
  maxTokens: 512
})

describe("local:echo", () => {
  it("parses as a model and needs no key; other local names are refused", () => {
    expect(parseModel("local:echo")).toEqual(Either.right({ provider: "local", model: "echo" }))
    expect(Either.getLeft(parseModel("local:gpt"))).toEqual(
      Option.some(expect.stringContaining("only the test model local:echo"))
    )
    expect(parseModelRef("local:echo")).toEqual(Option.some({ provider: "local", model: "echo" }))
    expect(providerUsable(emptyAgentSettings, "local")).toBe(true)
  })

  it.effect("answers with the newest user message, the same way every time, streamed in several deltas", () =>
    Effect.gen(function*() {
      // no keys, no base URLs: only the built-in provider can answer
      const lm = makeLanguageModel(emptyAgentSettings)
      const req = request([
        { role: "user", content: "first" },
        { role: "assistant", content: "echo: first" },
        { role: "user", content: "  hello there, bot " }
      ])
      const parts = Chunk.toReadonlyArray(yield* Stream.runCollect(lm.stream(req)))
      const deltas = parts.filter((p) => p._tag === "TextDelta")
      expect(deltas.length).toBeGreaterThan(1)
      expect(parts.at(-1)).toMatchObject({ _tag: "Finish", reason: "stop" })
      const done = yield* lm.complete(req)
      expect(done.text).toBe("echo: hello there, bot")
      expect(done.text).toBe(deltas.map((d) => (d._tag === "TextDelta" ? d.text : "")).join(""))
      expect((yield* lm.complete(req)).text).toBe(done.text)
      expect(done.usage.outputTokens).toBeGreaterThan(0)
    }))

  it("says so when there is nothing to echo", () => {
    expect(echoAnswer(request([{ role: "user", content: "   " }]))).toBe("echo: (an empty message)")
    expect(echoAnswer(request([]))).toBe("echo: (an empty message)")
  })

  it.effect("a config that selects it loads without findings (no key asked for)", () =>
    Effect.gen(function*() {
      const dir = tmpDir("cara-local-")
      fs.writeFileSync(path.join(dir, "carapace.json5"), `{ agents: { defaults: { model: "local:echo" } } }`, {
        mode: 0o600
      })
      const snap = yield* loadConfigSnapshot({ CARAPACE_STATE_DIR: dir }).pipe(Effect.provide(StateDirAt(dir)))
      expect(snap.findings).toEqual([])
    }))
})
