import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Option, Redacted } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { agentForRoom, type ConfigFinding, defaultAgent } from "../../src/domain/config.js"
import { seal } from "../../src/domain/secrets.js"
import { type ConfigEnv, ConfigSecretsWith, loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { ConfigSecrets } from "../../src/services/ConfigSecrets.js"
import { tmpDir } from "../support/tmp.js"

const tempDir = () => Effect.sync(() => tmpDir("cara-config-"))

/** Writes `text` as `{dir}/carapace.json5` and loads it with `env` (CARAPACE_STATE_DIR = dir). */
const load = (text: string | undefined, env: ConfigEnv = {}, name = "carapace.json5") =>
  Effect.gen(function*() {
    const dir = yield* tempDir()
    if (text !== undefined) yield* Effect.promise(() => fs.writeFile(path.join(dir, name), text))
    const snapshot = yield* loadConfigSnapshot({ CARAPACE_STATE_DIR: dir, ...env }).pipe(
      Effect.provide(StateDirAt(dir))
    )
    return { dir, ...snapshot }
  })

const errors = (fs: ReadonlyArray<ConfigFinding>) => fs.filter((f) => f.severity === "error")
const warnings = (fs: ReadonlyArray<ConfigFinding>) => fs.filter((f) => f.severity === "warning")
const at = (fs: ReadonlyArray<ConfigFinding>, p: string) => fs.filter((f) => f.path === p)

const MATRIX_OK = `{
  matrix: {
    homeserverUrl: "https://matrix.example.com",
    userId: "@cara:example.com",
    password: "\${MATRIX_PASSWORD}",
  },
  agents: { default: { model: "anthropic:claude-sonnet-4-6" } },
  anthropic: { apiKey: "\${ANTHROPIC_API_KEY}" },
}`
const OK_ENV = { MATRIX_PASSWORD: "pw", ANTHROPIC_API_KEY: "sk-a", CARAPACE_CONFIG_PASSWORD: "cfgpw" }

describe("discovery and parsing", () => {
  it.effect("no file: defaults, no path, no findings", () =>
    Effect.gen(function*() {
      const s = yield* load(undefined)
      expect(Option.isNone(s.path)).toBe(true)
      expect(s.findings).toEqual([])
      expect(s.config.gateway).toEqual({ port: 18789, bind: "loopback", allowedHosts: [] })
      expect(s.config.matrix).toBeUndefined()
    }))

  it.effect("carapace.json5 wins over carapace.json; CARAPACE_CONFIG_PATH wins over both", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir()
      yield* Effect.promise(() => fs.writeFile(path.join(dir, "carapace.json"), `{"gateway": {"port": 1}}`))
      const viaJson = yield* loadConfigSnapshot({ CARAPACE_STATE_DIR: dir }).pipe(Effect.provide(StateDirAt(dir)))
      expect(viaJson.config.gateway.port).toBe(1)
      expect(Option.getOrThrow(viaJson.path)).toBe(path.join(dir, "carapace.json"))
      yield* Effect.promise(() => fs.writeFile(path.join(dir, "carapace.json5"), `{gateway: {port: 2}}`))
      const viaJson5 = yield* loadConfigSnapshot({ CARAPACE_STATE_DIR: dir }).pipe(Effect.provide(StateDirAt(dir)))
      expect(viaJson5.config.gateway.port).toBe(2)
      const other = path.join(dir, "elsewhere.json5")
      yield* Effect.promise(() => fs.writeFile(other, `{gateway: {port: 3}}`))
      const explicit = yield* loadConfigSnapshot({ CARAPACE_STATE_DIR: dir, CARAPACE_CONFIG_PATH: other }).pipe(
        Effect.provide(StateDirAt(dir))
      )
      expect(explicit.config.gateway.port).toBe(3)
      expect(Option.getOrThrow(explicit.path)).toBe(other)
    }))

  it.effect("JSON5 features: comments, trailing commas, unquoted keys, single quotes", () =>
    Effect.gen(function*() {
      const s = yield* load(`// top\n{ gateway: { port: 4000, bind: 'lan', /* c */ }, }`)
      expect(s.findings).toEqual([])
      expect(s.config.gateway).toEqual({ port: 4000, bind: "lan", allowedHosts: [] })
    }))
})

describe("bad inputs, each with its expected error", () => {
  const cases: ReadonlyArray<{ name: string; text: string; env?: ConfigEnv; path: string; message: RegExp }> = [
    {
      name: "syntax error",
      text: `{\n  gateway: {\n    port: 18789\n    bind: "x"\n  }\n}`,
      path: ".",
      message: /carapace\.json5:4:5: JSON5 syntax error/
    },
    { name: "top level not an object", text: `[1, 2]`, path: ".", message: /JSON5 object at the top level/ },
    {
      name: "missing variable",
      text: `{ anthropic: { apiKey: "\${NOPE_KEY}" } }`,
      path: ".anthropic.apiKey",
      message: /Missing environment variable NOPE_KEY.*\.anthropic\.apiKey/
    },
    {
      name: "unsupported envelope",
      text: `{ openai: { apiKey: "enc:v1:abc:def" } }`,
      path: ".openai.apiKey",
      message: /unsupported encrypted config secret envelope enc:v1 at \.openai\.apiKey/
    },
    {
      name: "malformed enc:v2",
      text: `{ openai: { apiKey: "enc:v2:abc" } }`,
      path: ".openai.apiKey",
      message: /malformed/
    },
    {
      name: "enc:v2 at a non-secret path",
      text: `{ gateway: { bind: "enc:v2:abc" } }`,
      path: ".gateway.bind",
      message: /not a secret path/
    },
    {
      name: "non-string at a secret path",
      text: `{ matrix: { enabled: false, password: 42 } }`,
      path: ".matrix.password",
      message: /must be a string/
    },
    {
      name: "wrong type",
      text: `{ matrix: { enabled: "false" } }`,
      path: ".matrix.enabled",
      message: /^\.matrix\.enabled: expected true or false, got a string$/
    },
    {
      name: "port out of range",
      text: `{ gateway: { port: 70000 } }`,
      path: ".gateway.port",
      message: /between 0 and 65535/
    },
    { name: "bad bind", text: `{ gateway: { bind: "everywhere" } }`, path: ".gateway.bind", message: /loopback/ },
    { name: "$include", text: `{ $include: "other.json5" }`, path: ".$include", message: /not supported/ }
  ]
  for (const c of cases) {
    it.effect(c.name, () =>
      Effect.gen(function*() {
        const s = yield* load(c.text, c.env)
        const found = at(errors(s.findings), c.path)
        expect(found.map((f) => f.message).join("\n")).toMatch(c.message)
      }))
  }

  it.effect("oversize file (more than 4 MiB)", () =>
    Effect.gen(function*() {
      const s = yield* load(`{"a": "${"x".repeat(4 * 1024 * 1024)}"}`)
      expect(errors(s.findings)[0]?.message).toMatch(/larger than 4 MiB/)
    }))

  it.effect("the daemon layer refuses to start on errors, naming them", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir()
      yield* Effect.promise(() =>
        fs.writeFile(path.join(dir, "carapace.json5"), `{ matrix: { userId: "cara", homeserverUrl: "ftp://x" } }`)
      )
      const exit = yield* Effect.exit(
        ConfigSecrets.pipe(
          Effect.provide(ConfigSecretsWith({ env: { CARAPACE_STATE_DIR: dir } })),
          Effect.provide(StateDirAt(dir))
        )
      )
      expect(Exit.isFailure(exit)).toBe(true)
      const text = JSON.stringify(exit)
      expect(text).toContain("ConfigLoadError")
      expect(text).toContain(".matrix.userId")
      expect(text).toContain(".matrix.homeserverUrl")
    }))
})

describe("${VAR} substitution", () => {
  it.effect("mixed strings, the $$ escape, and lowercase names left alone", () =>
    Effect.gen(function*() {
      const s = yield* load(
        `{ matrix: { enabled: false, userId: "@\${LOCAL}-x:\${SERVER}", deviceId: "$\${NOT_A_VAR}", homeserverUrl: "\${lower}" } }`,
        { LOCAL: "cara", SERVER: "example.com" }
      )
      expect(s.findings).toEqual([])
      expect(s.config.matrix?.userId).toBe("@cara-x:example.com")
      expect(s.config.matrix?.deviceId).toBe("${NOT_A_VAR}")
      expect(s.config.matrix?.homeserverUrl).toBe("${lower}")
    }))

  it.effect("every missing variable is reported at once", () =>
    Effect.gen(function*() {
      const s = yield* load(`{ anthropic: { apiKey: "\${A_KEY}" }, openai: { apiKey: "\${B_KEY}" } }`)
      expect(errors(s.findings).map((f) => f.path).sort()).toEqual([".anthropic.apiKey", ".openai.apiKey"])
    }))
})

describe("validation", () => {
  it.effect("the seed-style config is valid; agents.default is read as the default agent", () =>
    Effect.gen(function*() {
      const s = yield* load(MATRIX_OK, OK_ENV)
      expect(errors(s.findings)).toEqual([])
      expect(Option.getOrThrow(defaultAgent(s.config)).model).toBe("anthropic:claude-sonnet-4-6")
      expect(Option.getOrThrow(agentForRoom(s.config, "!any:example.com")).model).toBe("anthropic:claude-sonnet-4-6")
      expect(s.config.matrix?.encrypted).toBe(true)
      expect(s.config.matrix?.autoJoin).toEqual({ allowUsers: [], allowServerNames: [] })
    }))

  it.effect("matrix errors: non-canonical userId, http to a remote host, no credential, token without device", () =>
    Effect.gen(function*() {
      const s = yield* load(
        `{ matrix: { homeserverUrl: "http://matrix.example.com", userId: "cara:example.com" } }`,
        { CARAPACE_CONFIG_PASSWORD: "x" }
      )
      expect(at(errors(s.findings), ".matrix.userId")[0]?.message).toMatch(/canonical form/)
      expect(at(errors(s.findings), ".matrix.homeserverUrl")[0]?.message).toMatch(/use https/)
      expect(at(errors(s.findings), ".matrix.accessToken")[0]?.message).toMatch(
        /accessToken or matrix.password is required/
      )
      const t = yield* load(
        `{ matrix: { homeserverUrl: "http://127.0.0.1:8008", userId: "@cara:localhost:8008", accessToken: "\${T}" } }`,
        { T: "tok", CARAPACE_CONFIG_PASSWORD: "x" }
      )
      expect(errors(t.findings).map((f) => f.path)).toEqual([".matrix.deviceId"])
    }))

  const urls: ReadonlyArray<[string, RegExp]> = [
    ["https://user:pw@matrix.example.com", /user:password/],
    ["https://matrix.example.com/_matrix", /must not have a path/],
    ["https://matrix.example.com/?x=1", /query/],
    ["https://matrix.example.com/#frag", /fragment/],
    ["https://mätrix.example.com", /Punycode/],
    ["ftp://matrix.example.com", /https/],
    ["not a url", /not a valid URL/]
  ]
  for (const [url, message] of urls) {
    it.effect(`homeserverUrl ${url}`, () =>
      Effect.gen(function*() {
        const s = yield* load(
          `{ matrix: { homeserverUrl: ${JSON.stringify(url)}, userId: "@a:b", password: "\${P}" } }`,
          { P: "p", CARAPACE_CONFIG_PASSWORD: "x" }
        )
        expect(at(errors(s.findings), ".matrix.homeserverUrl")[0]?.message).toMatch(message)
      }))
  }

  it.effect("warnings: encrypted=false with a store passphrase, no agent model, unknown key, duplicate allowlist entry", () =>
    Effect.gen(function*() {
      const s = yield* load(
        `{ matrix: { homeserverUrl: "https://m.example.com", userId: "@a:example.com", password: "\${P}", encrypted: false,
           storePassphrase: "\${SP}", autoJoin: { allowUsers: ["@x:y", "@x:y", "nope"], allowServerNames: ["a/b"] } },
           surprise: 1 }`,
        { P: "p", SP: "s" }
      )
      expect(errors(s.findings)).toEqual([])
      const w = warnings(s.findings)
      expect(at(w, ".matrix.storePassphrase")[0]?.message).toMatch(/encrypted=false/)
      expect(at(w, ".agents.defaults.model")[0]?.message).toMatch(/cannot be answered/)
      expect(at(w, ".surprise")[0]?.message).toMatch(/Unknown configuration key/)
      expect(at(w, ".matrix.autoJoin.allowUsers").map((f) => f.message).join()).toMatch(
        /duplicate entry "@x:y".*"nope"/
      )
      expect(at(w, ".matrix.autoJoin.allowServerNames")[0]?.message).toMatch(/never match/)
    }))

  it.effect("encrypted without any store key source is an error; a store_passphrase file counts", () =>
    Effect.gen(function*() {
      const text =
        `{ matrix: { homeserverUrl: "https://m.example.com", userId: "@a:example.com", password: "\${P}" }, agents: { defaults: { model: "openai:gpt-5" } } }`
      const s = yield* load(text, { P: "p" })
      expect(at(errors(s.findings), ".matrix.encrypted")[0]?.message).toMatch(/requires matrix.storePassphrase/)
      yield* Effect.promise(async () => {
        await fs.mkdir(path.join(s.dir, "matrix"), { recursive: true })
        await fs.writeFile(path.join(s.dir, "matrix", "store_passphrase"), "abc\n")
        await fs.writeFile(path.join(s.dir, "carapace.json5"), text)
      })
      const again = yield* loadConfigSnapshot({ CARAPACE_STATE_DIR: s.dir, P: "p" }).pipe(
        Effect.provide(StateDirAt(s.dir))
      )
      expect(errors(again.findings)).toEqual([])
    }))

  it.effect("agents: bad model string and unknown room agent are errors; both spellings differing is a warning", () =>
    Effect.gen(function*() {
      const s = yield* load(
        `{ agents: { default: { model: "claude" }, defaults: { model: "openai:gpt-5" }, helper: { model: "anthropic:x", systemPrompt: "be brief" } },
           matrix: { enabled: false, rooms: { "!r:x": { agent: "ghost" }, "!h:x": { agent: "helper" } } } }`
      )
      expect(at(errors(s.findings), ".agents.default.model")[0]?.message).toMatch(/provider:model/)
      expect(at(errors(s.findings), ".matrix.rooms.!r:x.agent")[0]?.message).toMatch(/ghost/)
      expect(at(warnings(s.findings), ".agents.default")[0]?.message).toMatch(/agents.defaults is used/)
      const helper = Option.getOrThrow(agentForRoom(s.config, "!h:x"))
      expect(helper).toEqual({ model: "anthropic:x", systemPrompt: "be brief" })
    }))
})

describe("env fallbacks and secrets", () => {
  it.effect("MATRIX_* fill absent keys only; the config wins and a conflict is a warning", () =>
    Effect.gen(function*() {
      const s = yield* load(`{ matrix: { userId: "@cfg:example.com" } }`, {
        MATRIX_HOMESERVER_URL: "https://env.example.com",
        MATRIX_USER_ID: "@env:example.com",
        MATRIX_ACCESS_TOKEN: "env-token",
        MATRIX_DEVICE_ID: "ENVDEV",
        MATRIX_STORE_PASSPHRASE: "sp"
      })
      expect(errors(s.findings)).toEqual([])
      expect(s.config.matrix?.homeserverUrl).toBe("https://env.example.com")
      expect(s.config.matrix?.userId).toBe("@cfg:example.com")
      expect(s.config.matrix?.deviceId).toBe("ENVDEV")
      expect(s.config.matrix?.accessToken).toMatchObject({
        path: "matrix.accessToken",
        source: "env",
        env: "MATRIX_ACCESS_TOKEN"
      })
      expect(at(warnings(s.findings), ".matrix.userId")[0]?.message).toMatch(
        /MATRIX_USER_ID is also set; the config field takes precedence/
      )
      const slot = s.secrets.get("matrix.accessToken")
      expect(slot?.state === "open" && Redacted.value(slot.value)).toBe("env-token")
    }))

  it.effect("a ${MATRIX_X} placeholder counts as the config value and is not a conflict", () =>
    Effect.gen(function*() {
      const s = yield* load(MATRIX_OK, OK_ENV)
      expect(at(warnings(s.findings), ".matrix.password")).toEqual([])
      expect(s.config.anthropic?.apiKey).toMatchObject({ path: "anthropic.apiKey", source: "config" })
    }))

  it.scoped("sealed values: open with the password, locked without it, and a wrong password names the path", () =>
    Effect.gen(function*() {
      const sealedToken = yield* seal("right", "syt_secret_token")
      const text = `{
        // sealed by an earlier write-back
        matrix: { homeserverUrl: "https://m.example.com", userId: "@a:example.com", accessToken: "${sealedToken}", deviceId: "D" },
        agents: { defaults: { model: "openai:gpt-5" } },
        openai: { apiKey: "\${OPENAI_API_KEY}" },
      }`
      const service = (env: ConfigEnv) =>
        Effect.gen(function*() {
          const dir = yield* tempDir()
          yield* Effect.promise(() => fs.writeFile(path.join(dir, "carapace.json5"), text))
          return yield* ConfigSecrets.pipe(
            Effect.provide(
              ConfigSecretsWith({
                env: { CARAPACE_STATE_DIR: dir, OPENAI_API_KEY: "sk-o", ...env },
                failOnErrors: false
              })
            ),
            Effect.provide(StateDirAt(dir))
          )
        })

      const good = yield* service({ CARAPACE_CONFIG_PASSWORD: "right" })
      expect(errors(good.findings)).toEqual([])
      const token = yield* good.secret(good.config.matrix!.accessToken!)
      expect(Redacted.value(token)).toBe("syt_secret_token")
      expect(String(token)).not.toContain("syt_secret_token")
      expect(Redacted.value(yield* good.secret("openai.apiKey"))).toBe("sk-o")
      expect(Option.isNone(yield* good.secretOption("matrix.password"))).toBe(true)

      const locked = yield* service({})
      const lockedErr = yield* Effect.flip(locked.secret("matrix.accessToken"))
      expect(lockedErr.kind).toBe("config-secret-locked")
      expect(lockedErr.message).toMatch(/matrix\.accessToken.*CARAPACE_CONFIG_PASSWORD/)
      expect(at(errors(locked.findings), ".matrix.accessToken")[0]?.message).toMatch(
        /CARAPACE_CONFIG_PASSWORD is not set/
      )

      const wrong = yield* service({ CARAPACE_CONFIG_PASSWORD: "wrong" })
      const wrongErr = yield* Effect.flip(wrong.secret("matrix.accessToken"))
      expect(wrongErr.kind).toBe("config-secret-wrong-password")
      expect(wrongErr.message).toMatch(/does not open the sealed matrix\.accessToken/)
      expect(at(errors(wrong.findings), ".matrix.accessToken")[0]?.message).toMatch(/does not open/)
      // Secrets never leak into findings.
      expect(JSON.stringify([good.findings, wrong.findings, locked.findings])).not.toMatch(/syt_secret_token|sk-o/)
    }))
})
