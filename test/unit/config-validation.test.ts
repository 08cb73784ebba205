// The pure config checks (src/domain/configValidation.ts) and the load pipeline (configAnalysis.ts), run
// on values rather than files.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Redacted, Schema } from "effect"
import { CaraConfig } from "../../src/domain/config.js"
import { analyzeConfig } from "../../src/domain/configAnalysis.js"
import {
  homeserverUrlProblem,
  type SecretSlot,
  userIdProblem,
  validateConfig
} from "../../src/domain/configValidation.js"

const decode = Schema.decodeUnknownSync(CaraConfig)
const open = (v: string): SecretSlot => ({ state: "open", value: Redacted.make(v) })
const ctx = (raw: Record<string, unknown>, secrets: Record<string, SecretSlot> = {}) => ({
  raw,
  env: {},
  secrets: new Map(Object.entries(secrets)),
  storePassphraseFile: { state: "absent" } as const
})
const paths = (fs: ReadonlyArray<{ readonly path: string; readonly severity: string }>) =>
  fs.map((f) => `${f.severity}:${f.path}`)

describe("homeserverUrlProblem / userIdProblem", () => {
  it("accepts https and loopback http, refuses the rest with a reason", () => {
    expect(homeserverUrlProblem("https://matrix.example.com")).toBeUndefined()
    expect(homeserverUrlProblem("http://127.0.0.1:8008")).toBeUndefined()
    expect(homeserverUrlProblem("http://matrix.example.com")).toContain("plaintext http")
    expect(homeserverUrlProblem("https://u:p@example.com")).toContain("credentials")
    expect(homeserverUrlProblem("https://example.com/path")).toContain("path")
    expect(homeserverUrlProblem("https://exämple.com")).toContain("Punycode")
  })
  it("wants a canonical MXID", () => {
    expect(userIdProblem("@cara:example.com")).toBeUndefined()
    expect(userIdProblem("cara:example.com")).toContain("canonical form")
    expect(userIdProblem("@cara")).toContain("canonical form")
  })
})

describe("validateConfig", () => {
  it("an enabled channel without credentials, store key or model: one finding each, at its path", () => {
    const raw = { matrix: { enabled: true, homeserverUrl: "https://hs.example", userId: "@cara:hs.example" } }
    const findings = validateConfig(decode(raw), ctx(raw))
    expect(paths(findings)).toEqual([
      "error:.matrix.accessToken",
      "error:.matrix.encrypted",
      "warning:.agents.defaults.model"
    ])
  })

  it("a token without a device id, both credentials, unknown keys and bad autoJoin entries", () => {
    const raw = {
      extra: 1,
      matrix: {
        enabled: true,
        encrypted: false,
        homeserverUrl: "https://hs.example",
        userId: "@cara:hs.example",
        accessToken: { path: "matrix.accessToken", source: "config" },
        autoJoin: { allowUsers: ["@a:hs", "@a:hs", "nope"], allowServerNames: ["bad/name"] }
      },
      agents: { defaults: { model: "local:echo" } }
    }
    const findings = validateConfig(
      decode(raw),
      ctx(raw, { "matrix.accessToken": open("t"), "matrix.password": open("p") })
    )
    expect(paths(findings)).toEqual([
      "warning:.extra",
      "warning:.matrix.password",
      "error:.matrix.deviceId",
      "warning:.matrix.autoJoin.allowUsers",
      "warning:.matrix.autoJoin.allowUsers",
      "warning:.matrix.autoJoin.allowServerNames"
    ])
  })

  it("a sealed credential that cannot be opened says why", () => {
    const raw = {
      matrix: { enabled: true, encrypted: false, homeserverUrl: "https://hs.example", userId: "@cara:hs.example" }
    }
    const findings = validateConfig(decode(raw), ctx(raw, { "matrix.accessToken": { state: "locked" } }))
    expect(findings[0]!.message).toContain("CARAPACE_CONFIG_PASSWORD is not set")
  })

  it("agents: a bad model ref, an undefined room agent, a provider without a key", () => {
    const raw = {
      agents: { defaults: { model: "anthropic:claude" }, odd: { model: "nonsense" } },
      matrix: { enabled: false, rooms: { "!r:hs": { agent: "ghost" } } }
    }
    const findings = validateConfig(decode(raw), ctx(raw))
    expect(paths(findings)).toEqual([
      "error:.agents.odd.model",
      "error:.matrix.rooms.!r:hs.agent",
      "warning:.anthropic.apiKey"
    ])
  })
})

describe("analyzeConfig", () => {
  const analyze = (text: string | undefined, env: Record<string, string> = {}) =>
    analyzeConfig({
      text: Option.fromNullable(text),
      file: "cara.json5",
      env,
      storePassphraseFile: { state: "absent" }
    })

  it.effect("a syntax error stops the load with the defaults and names the position", () =>
    Effect.gen(function*() {
      const a = yield* analyze("{ gateway: ")
      expect(a.findings).toHaveLength(1)
      expect(a.findings[0]!.message).toContain("cara.json5:1:")
      expect(a.config).toEqual(decode({}))
    }))

  it.effect("${VAR} substitution, its escape, a missing variable and env fallbacks", () =>
    Effect.gen(function*() {
      const a = yield* analyze(`{ matrix: { homeserverUrl: "\${HS}", userId: "$\${LITERAL}" }, anthropic: {} }`, {
        HS: "https://hs.example",
        ANTHROPIC_API_KEY: "sk-env"
      })
      expect(a.config.matrix?.homeserverUrl).toBe("https://hs.example")
      expect(a.config.matrix?.userId).toBe("${LITERAL}")
      const slot = a.secrets.get("anthropic.apiKey")
      expect(slot?.state === "open" && Redacted.value(slot.value)).toBe("sk-env")
      const missing = yield* analyze(`{ matrix: { userId: "\${NOPE}" } }`)
      expect(missing.findings.some((f) => f.message.includes("Missing environment variable NOPE"))).toBe(true)
    }))

  it.effect("a plaintext secret is open and flagged; a sealed one without a password stays locked", () =>
    Effect.gen(function*() {
      const a = yield* analyze(`{ openai: { apiKey: "sk-plain" } }`)
      expect(a.secrets.get("openai.apiKey")?.state).toBe("open")
      expect(a.findings.some((f) => f.path === ".openai.apiKey" && f.message.includes("plaintext secret"))).toBe(true)
      const dup = yield* analyze(`{ gateway: { port: 1 }, gateway: { port: 2 } }`)
      expect(dup.findings.some((f) => f.message.includes("duplicate key gateway"))).toBe(true)
    }))
})
