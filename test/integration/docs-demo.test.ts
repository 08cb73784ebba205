// `npm run demo`: the parts that need no network. Which model it picks from the environment, the config it
// writes (decoded by the real loader), and the built-in test model it falls back to without a key.
// The full run (`npm run demo -- --once`) is test/integration/demo.test.ts.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  demoConfig,
  type DemoProvider,
  demoProvider,
  LOCAL_DEMO_PROVIDER,
  REAL_MODEL_HINT
} from "../../scripts/demo.js"
import { defaultAgent } from "../../src/domain/config.js"
import { loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"

describe("npm run demo", () => {
  it("picks the model from the environment, and the built-in local:echo without a key", () => {
    expect(demoProvider({})).toBe(LOCAL_DEMO_PROVIDER)
    expect(LOCAL_DEMO_PROVIDER).toMatchObject({ provider: "local", model: "echo" })
    for (const v of ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CARA_DEMO_OPENAI_BASE_URL", "CARA_DEMO_MODEL"]) {
      expect(REAL_MODEL_HINT).toContain(v)
    }
    expect(demoProvider({ ANTHROPIC_API_KEY: "  " })).toBe(LOCAL_DEMO_PROVIDER)
    expect(demoProvider({ ANTHROPIC_API_KEY: "sk-ant-1" })).toMatchObject({
      provider: "anthropic",
      model: "claude-sonnet-4-6",
      keyEnv: "ANTHROPIC_API_KEY"
    })
    expect(demoProvider({ OPENAI_API_KEY: "sk-1", CARA_DEMO_MODEL: "gpt-x" })).toMatchObject({
      provider: "openai",
      model: "gpt-x"
    })
    // An explicit OpenAI-compatible URL wins, and needs a model name.
    expect(demoProvider({ ANTHROPIC_API_KEY: "sk-ant-1", CARA_DEMO_OPENAI_BASE_URL: "http://127.0.0.1:11434/v1" }))
      .toMatch(/set CARA_DEMO_MODEL/)
    expect(demoProvider({ CARA_DEMO_OPENAI_BASE_URL: "not a url", CARA_DEMO_MODEL: "m" })).toMatch(/not a URL/)
    expect(demoProvider({ CARA_DEMO_OPENAI_BASE_URL: "http://127.0.0.1:11434/v1", CARA_DEMO_MODEL: "llama3.2" }))
      .toMatchObject({
        provider: "openai",
        model: "llama3.2",
        baseUrl: "http://127.0.0.1:11434/v1"
      })
  })

  it.effect("the config it writes loads cleanly, allows only the human and keeps the key out of the file", () =>
    Effect.gen(function*() {
      for (
        const env of [{}, { ANTHROPIC_API_KEY: "sk-ant-secret-1" }, {
          CARA_DEMO_OPENAI_BASE_URL: "http://127.0.0.1:11434/v1",
          CARA_DEMO_MODEL: "llama3.2",
          OPENAI_API_KEY: "sk-secret-2"
        }]
      ) {
        const provider = demoProvider(env) as DemoProvider
        const text = demoConfig({
          homeserverUrl: "http://127.0.0.1:8008",
          botUserId: "@bot:localhost",
          humanUserId: "@human:localhost",
          provider
        })
        if (provider.key !== undefined) expect(text).not.toContain(provider.key)
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cara-demo-"))
        fs.writeFileSync(path.join(dir, "carapace.json5"), text, { mode: 0o600 })
        const snap = yield* loadConfigSnapshot({
          ...env,
          CARAPACE_STATE_DIR: dir,
          CARAPACE_CONFIG_PASSWORD: "demo-test",
          CARAPACE_GATEWAY_TOKEN: "t".repeat(64),
          MATRIX_PASSWORD: "pw"
        }).pipe(Effect.provide(StateDirAt(dir)))
        expect(snap.findings.filter((f) => f.severity === "error")).toEqual([])
        expect(snap.config.matrix?.autoJoin.allowUsers).toEqual(["@human:localhost"])
        expect(snap.config.matrix?.encrypted).toBe(true)
        expect(Option.map(defaultAgent(snap.config), (a) => a.model)).toEqual(
          Option.some(`${provider.provider}:${provider.model}`)
        )
        if (provider.keyEnv !== undefined) expect(snap.secrets.get(`${provider.provider}.apiKey`)?.state).toBe("open")
        else expect(snap.findings).toEqual([])
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }))

  it("`npm run demo` with an unusable model setting exits 2 with the reason, before starting anything", () => {
    const run = spawnSync("npm", ["run", "--silent", "demo", "--", "--once"], {
      env: {
        PATH: process.env["PATH"] ?? "",
        HOME: process.env["HOME"] ?? os.tmpdir(),
        CARA_DEMO_OPENAI_BASE_URL: "not a url"
      },
      encoding: "utf8",
      timeout: 60_000
    })
    expect(run.status).toBe(2)
    expect(run.stderr).toContain("CARA_DEMO_OPENAI_BASE_URL is not a URL")
    expect(run.stdout).not.toContain("Synapse")
  })
})
