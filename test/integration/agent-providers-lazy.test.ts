// The daemon loads a provider's SDK only when that provider is configured (issue 19 §1: load only what the
// daemon uses). Checked in a fresh Node process on the built layer, with a resolve hook recording every module.
import { describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import * as path from "node:path"

const dist = path.resolve("dist/src")

const loadedSdks = (configured: { anthropic: boolean; openai: boolean }) => {
  const code = `
import { registerHooks } from "node:module"
const seen = []
registerHooks({ resolve(s, c, next) { const r = next(s, c); seen.push(r.url); return r } })
const { Effect, Layer, Option, Redacted } = await import("effect")
const { LanguageModelLive } = await import(${JSON.stringify(`${dist}/layers/LanguageModelLive.js`)})
const { AgentSettingsTag } = await import(${JSON.stringify(`${dist}/services/Agent.js`)})
const { emptyAgentSettings } = await import(${JSON.stringify(`${dist}/domain/agent.js`)})
const key = (on) => (on ? { ...emptyAgentSettings.anthropic, apiKey: Option.some(Redacted.make("test-key")) } : emptyAgentSettings.anthropic)
const settings = { ...emptyAgentSettings, anthropic: key(${configured.anthropic}), openai: key(${configured.openai}) }
const model = await Effect.runPromise(Effect.scoped(Effect.map(Layer.build(LanguageModelLive.pipe(Layer.provide(Layer.succeed(AgentSettingsTag, settings)))), () => "built")))
process.stdout.write(JSON.stringify({ model, anthropic: seen.some((u) => u.includes("/node_modules/@anthropic-ai/sdk/")), openai: seen.some((u) => u.includes("/node_modules/openai/")) }))
`
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], { encoding: "utf8", timeout: 60_000 })
  if (r.status !== 0) throw new Error(r.stderr)
  return JSON.parse(r.stdout) as { model: string; anthropic: boolean; openai: boolean }
}

describe("provider SDKs load only when configured", () => {
  it("anthropic only: the OpenAI SDK is never loaded", () => {
    expect(loadedSdks({ anthropic: true, openai: false })).toEqual({ model: "built", anthropic: true, openai: false })
  }, 60_000)

  it("openai only: the Anthropic SDK is never loaded", () => {
    expect(loadedSdks({ anthropic: false, openai: true })).toEqual({ model: "built", anthropic: false, openai: true })
  }, 60_000)

  it("no provider: neither SDK is loaded", () => {
    expect(loadedSdks({ anthropic: false, openai: false })).toEqual({ model: "built", anthropic: false, openai: false })
  }, 60_000)
})
