import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Redacted } from "effect"
import JSON5 from "json5"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { downgradeViolations, open, seal } from "../../src/domain/secrets.js"
import { type ConfigEnv, ConfigSecretsWith } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { ConfigSecrets } from "../../src/services/ConfigSecrets.js"
import { SEED_CONFIG } from "../support/seed-config.js"
import { tmpDir } from "../support/tmp.js"

const setup = (text: string | undefined, env: ConfigEnv) =>
  Effect.gen(function*() {
    const dir = yield* Effect.sync(() => tmpDir("cara-wb-"))
    const file = path.join(dir, "carapace.json5")
    if (text !== undefined) yield* Effect.promise(() => fs.writeFile(file, text, { mode: 0o644 }))
    const layer = ConfigSecretsWith({ env: { CARAPACE_STATE_DIR: dir, ...env }, failOnErrors: false }).pipe(
      Layer.provide(StateDirAt(dir))
    )
    const service = yield* ConfigSecrets.pipe(Effect.provide(layer))
    const read = () => Effect.promise(() => fs.readFile(file, "utf8"))
    return { dir, file, service, read }
  })

const SEED_ENV = {
  CARAPACE_GATEWAY_TOKEN: "gw",
  MATRIX_PASSWORD: "matrix-pw",
  ANTHROPIC_API_KEY: "sk-ant",
  CARAPACE_CONFIG_PASSWORD: "config-pw"
}

describe("write-back on the seed config", () => {
  it.effect("token write-back seals the token, sets the device, keeps every other byte; then password removal", () =>
    Effect.gen(function*() {
      const { file, service, read } = yield* setup(SEED_CONFIG, SEED_ENV)
      expect(service.findings.filter((f) => f.severity === "error")).toEqual([])

      yield* service.setMatrixAccessToken(Redacted.make("syt_new_token"), "NEWDEVICE")
      const after = yield* read()
      const parsed = JSON5.parse(after) as { matrix: Record<string, string> }
      expect(parsed.matrix["deviceId"]).toBe("NEWDEVICE")
      const sealed = parsed.matrix["accessToken"]!
      expect(sealed).toMatch(/^enc:v2:/)
      expect(after).not.toContain("syt_new_token")
      expect(yield* open("config-pw", sealed)).toBe("syt_new_token")
      // Exactly two lines were added (a comma joins the old last member); the rest is untouched.
      const before = SEED_CONFIG.split("\n")
      const now = after.split("\n")
      expect(now.length).toBe(before.length + 2)
      for (const line of before.filter((l) => !l.includes("allowServerNames") && l !== "    }")) {
        expect(now).toContain(line)
      }
      expect(after).toContain("// First login only. The daemon removes the persisted password after")
      expect(after).toContain("\"password\": \"${MATRIX_PASSWORD}\"")
      expect(after).toContain("\"token\": \"${CARAPACE_GATEWAY_TOKEN}\"")
      expect((yield* Effect.promise(() => fs.stat(file))).mode & 0o777).toBe(0o600)
      // The service hands out the new token.
      expect(Redacted.value(yield* service.secret("matrix.accessToken"))).toBe("syt_new_token")

      yield* service.removeMatrixPassword()
      const final = yield* read()
      expect(final).not.toContain("\"password\"")
      expect(final).toContain("// First login only.")
      expect(final.split("\n").length).toBe(now.length - 1)
      // Idempotent: removing again changes nothing.
      yield* service.removeMatrixPassword()
      expect(yield* read()).toBe(final)
      // MATRIX_PASSWORD is still exported, so the password remains available from the env.
      expect(Redacted.value(yield* service.secret("matrix.password"))).toBe("matrix-pw")
    }))

  it.effect("the same token again reuses the ciphertext (no churn)", () =>
    Effect.gen(function*() {
      const { service, read } = yield* setup(SEED_CONFIG, SEED_ENV)
      yield* service.setMatrixAccessToken(Redacted.make("tok"), "DEV")
      const first = yield* read()
      yield* service.setMatrixAccessToken(Redacted.make("tok"), "DEV")
      expect(yield* read()).toBe(first)
    }))

  it.effect("without CARAPACE_CONFIG_PASSWORD the token is never written", () =>
    Effect.gen(function*() {
      const { CARAPACE_CONFIG_PASSWORD: _, ...env } = SEED_ENV
      const { service, read } = yield* setup(SEED_CONFIG, env)
      const e = yield* Effect.flip(service.setMatrixAccessToken(Redacted.make("tok"), "DEV"))
      expect(e.kind).toBe("config-password-missing")
      expect(e.message).toMatch(/CARAPACE_CONFIG_PASSWORD is required/)
      expect(e.message).not.toContain("tok\"")
      expect(yield* read()).toBe(SEED_CONFIG)
    }))

  it.effect("a file changed on disk since it was loaded is re-read and the edit re-applied", () =>
    Effect.gen(function*() {
      const { file, service, read } = yield* setup(SEED_CONFIG, SEED_ENV)
      const edited = SEED_CONFIG.replace("\"port\": 18789,", "\"port\": 18790, // changed by the operator")
      yield* Effect.promise(() => fs.writeFile(file, edited))
      yield* service.setMatrixAccessToken(Redacted.make("tok"), "DEV")
      const after = yield* read()
      expect(after).toContain("\"port\": 18790, // changed by the operator")
      expect((JSON5.parse(after) as { matrix: { deviceId: string } }).matrix.deviceId).toBe("DEV")
    }))

  it.effect("an unparseable file is never overwritten", () =>
    Effect.gen(function*() {
      const { file, service, read } = yield* setup(SEED_CONFIG, SEED_ENV)
      yield* Effect.promise(() => fs.writeFile(file, "{ broken"))
      const e = yield* Effect.flip(service.setMatrixAccessToken(Redacted.make("tok"), "DEV"))
      expect(e.kind).toBe("config-write-refused")
      expect(e.message).toMatch(/failed to parse/)
      expect(yield* read()).toBe("{ broken")
    }))

  it.effect("no file yet: the token write-back creates one at the discovered path", () =>
    Effect.gen(function*() {
      const { service, read } = yield* setup(undefined, {
        CARAPACE_CONFIG_PASSWORD: "config-pw",
        MATRIX_HOMESERVER_URL: "https://m.example.com",
        MATRIX_USER_ID: "@cara:example.com"
      })
      yield* service.setMatrixAccessToken(Redacted.make("tok"), "DEV")
      const parsed = JSON5.parse(yield* read()) as { matrix: { accessToken: string; deviceId: string } }
      expect(parsed.matrix.deviceId).toBe("DEV")
      expect(yield* open("config-pw", parsed.matrix.accessToken)).toBe("tok")
    }))
})

describe("setSealedSecret", () => {
  it.effect("seals at a secret path, writes placeholders as they are, refuses malformed ones and non-secret paths", () =>
    Effect.gen(function*() {
      const { service, read } = yield* setup(`{\n  // providers\n  openai: { baseUrl: "http://127.0.0.1:1" },\n}\n`, {
        CARAPACE_CONFIG_PASSWORD: "pw",
        ANTHROPIC_API_KEY: "sk-env"
      })
      yield* service.setSealedSecret("openai.apiKey", Redacted.make("sk-123"))
      const text = yield* read()
      expect(text).toContain("// providers")
      const key = (JSON5.parse(text) as { openai: { apiKey: string } }).openai.apiKey
      expect(yield* open("pw", key)).toBe("sk-123")

      yield* service.setSealedSecret("anthropic.apiKey", Redacted.make("${ANTHROPIC_API_KEY}"))
      expect((JSON5.parse(yield* read()) as { anthropic: { apiKey: string } }).anthropic.apiKey).toBe(
        "${ANTHROPIC_API_KEY}"
      )

      const malformed = yield* Effect.flip(
        service.setSealedSecret("anthropic.apiKey", Redacted.make("${anthropic_api_key"))
      )
      expect(malformed.message).toMatch(/malformed env placeholder at anthropic.apiKey/)
      // A write that would leave the config with a new error is refused.
      const missingVar = yield* Effect.flip(service.setSealedSecret("openai.apiKey", Redacted.make("${NOT_EXPORTED}")))
      expect(missingVar.kind).toBe("config-write-refused")
      expect(missingVar.message).toMatch(/Missing environment variable NOT_EXPORTED/)
      const notSecret = yield* Effect.flip(service.setSealedSecret("matrix.userId", Redacted.make("@a:b")))
      expect(notSecret.message).toMatch(/not a secret path/)
    }))
})

describe("downgrade guard", () => {
  it.effect("refuses plaintext over a sealed value, and any change to it without the password", () =>
    Effect.gen(function*() {
      const a = yield* seal("pw", "x", { memory: 64, passes: 1, parallelism: 1 })
      const b = yield* seal("pw", "y", { memory: 64, passes: 1, parallelism: 1 })
      const before = { matrix: { accessToken: a, password: a } }
      expect(downgradeViolations(before, { matrix: { accessToken: "plain", password: a } }, true)).toEqual([
        "matrix.accessToken"
      ])
      expect(downgradeViolations(before, { matrix: { accessToken: b, password: a } }, true)).toEqual([])
      expect(downgradeViolations(before, { matrix: { accessToken: b, password: a } }, false)).toEqual([
        "matrix.accessToken"
      ])
      expect(downgradeViolations(before, { matrix: { accessToken: a } }, false)).toEqual([])
      expect(downgradeViolations(before, { matrix: { accessToken: 5, password: a } }, true)).toEqual([
        "matrix.accessToken"
      ])
      expect(downgradeViolations(before, { matrix: { accessToken: "${T}", password: a } }, true)).toEqual([])
      expect(downgradeViolations(before, { matrix: { accessToken: "${T}", password: a } }, false)).toEqual([
        "matrix.accessToken"
      ])
    }))

  it.effect("a sealed-set without the password is refused before anything is written", () =>
    Effect.gen(function*() {
      const sealed = yield* seal("pw", "old")
      const text = `{ openai: { apiKey: "${sealed}" } }`
      const { service, read } = yield* setup(text, {})
      const e = yield* Effect.flip(service.setSealedSecret("openai.apiKey", Redacted.make("new")))
      expect(e.kind).toBe("config-password-missing")
      expect(yield* read()).toBe(text)
      expect(Option.isSome(service.path)).toBe(true)
    }))
})
