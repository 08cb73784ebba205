import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import JSON5 from "json5"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { newPasswordSource } from "../../src/cli/config.js"
import { open, seal } from "../../src/domain/secrets.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { checkConfig, renderCheck } from "../../src/programs/configCheck.js"
import { rekeyConfig } from "../../src/programs/configRekey.js"
import { tmpDir } from "../support/tmp.js"

const tempDir = () => Effect.sync(() => tmpDir("cara-cli-"))

describe("cara config check", () => {
  it.effect("prints every finding with its path, and the JSON form counts them", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir()
      yield* Effect.promise(() =>
        fs.writeFile(
          path.join(dir, "carapace.json5"),
          `{ matrix: { userId: "cara", homeserverUrl: "https://m.example.com", password: "p" }, extra: 1 }`
        )
      )
      const report = yield* checkConfig({ CARAPACE_STATE_DIR: dir, CARAPACE_CONFIG_PASSWORD: "x" }).pipe(
        Effect.provide(StateDirAt(dir))
      )
      expect(report.ok).toBe(false)
      const text = renderCheck(report, false)
      expect(text).toContain(`Config file: ${path.join(dir, "carapace.json5")}`)
      expect(text).toMatch(/^error {3}\.matrix\.userId: userId must be a Matrix user ID/m)
      expect(text).toMatch(/^warning \.extra: Unknown configuration key/m)
      expect(text).toMatch(/1 error\(s\), \d+ warning\(s\): the daemon will not start/)
      const json = JSON.parse(renderCheck(report, true)) as {
        ok: boolean
        errors: number
        findings: Array<{ path: string; severity: string }>
      }
      expect(json.ok).toBe(false)
      expect(json.errors).toBe(1)
      expect(json.findings).toContainEqual(expect.objectContaining({ path: ".matrix.userId", severity: "error" }))
      // The plaintext password is flagged, never printed.
      expect(text).not.toMatch(/"p"/)
    }))

  it.effect("a clean config reports OK", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir()
      yield* Effect.promise(() => fs.writeFile(path.join(dir, "carapace.json5"), `{ gateway: { port: 18789 } }`))
      const report = yield* checkConfig({ CARAPACE_STATE_DIR: dir }).pipe(Effect.provide(StateDirAt(dir)))
      expect(report.ok).toBe(true)
      expect(renderCheck(report, false)).toMatch(/OK \(0 warning\(s\)\)$/)
    }))
})

const sealedConfig = (token: string, key: string) =>
  `// operator's notes stay
{
  "matrix": {
    "homeserverUrl": "https://matrix.example.com",
    "userId": "@cara:example.com",
    "accessToken": "${token}", // sealed by the daemon
    "deviceId": "DEV",
    "storePassphrase": "\${MATRIX_STORE_PASSPHRASE}",
  },
  openai: { apiKey: '${key}' },
}
`

describe("cara config rekey", () => {
  const setup = (old = "old-pw") =>
    Effect.gen(function*() {
      const dir = yield* tempDir()
      const token = yield* seal(old, "syt_token")
      const key = yield* seal(old, "sk-openai")
      const file = path.join(dir, "carapace.json5")
      const text = sealedConfig(token, key)
      yield* Effect.promise(() => fs.writeFile(file, text))
      return { dir, file, text }
    })

  it.effect("re-seals every enc:v2 value to the new password, keeping comments and quoting", () =>
    Effect.gen(function*() {
      const { dir, file, text } = yield* setup()
      const result = yield* rekeyConfig({
        env: { CARAPACE_STATE_DIR: dir, CARAPACE_CONFIG_PASSWORD: "old-pw" },
        newPassword: Effect.succeed("new-pw")
      }).pipe(Effect.provide(StateDirAt(dir)))
      expect(result.resealed).toEqual(["matrix.accessToken", "openai.apiKey"])
      const after = yield* Effect.promise(() => fs.readFile(file, "utf8"))
      expect(after).not.toBe(text)
      expect(after).toContain("// operator's notes stay")
      expect(after).toContain("// sealed by the daemon")
      expect(after).toContain("\"storePassphrase\": \"${MATRIX_STORE_PASSPHRASE}\"")
      expect(after).toMatch(/openai: \{ apiKey: 'enc:v2:[^']+' \}/)
      expect(after.split("\n").length).toBe(text.split("\n").length)
      const parsed = JSON5.parse(after) as { matrix: { accessToken: string }; openai: { apiKey: string } }
      expect(yield* open("new-pw", parsed.matrix.accessToken)).toBe("syt_token")
      expect(yield* open("new-pw", parsed.openai.apiKey)).toBe("sk-openai")
      const oldOpens = yield* Effect.either(open("old-pw", parsed.openai.apiKey))
      expect(oldOpens._tag).toBe("Left")
      expect((yield* Effect.promise(() => fs.stat(file))).mode & 0o777).toBe(0o600)
    }))

  const refusals: ReadonlyArray<{ name: string; env: Record<string, string>; kind: string; message: RegExp }> = [
    {
      name: "no current password",
      env: {},
      kind: "config-rekey-password-missing",
      message: /CARAPACE_CONFIG_PASSWORD must be set/
    },
    {
      name: "wrong current password",
      env: { CARAPACE_CONFIG_PASSWORD: "nope" },
      kind: "config-rekey-wrong-password",
      message: /does not open the sealed values at matrix\.accessToken, openai\.apiKey/
    }
  ]
  for (const r of refusals) {
    it.effect(`refuses with ${r.name}, leaving the file unchanged`, () =>
      Effect.gen(function*() {
        const { dir, file, text } = yield* setup()
        const e = yield* Effect.flip(
          rekeyConfig({ env: { CARAPACE_STATE_DIR: dir, ...r.env }, newPassword: Effect.succeed("new-pw") }).pipe(
            Effect.provide(StateDirAt(dir))
          )
        )
        expect(e.kind).toBe(r.kind)
        expect(e.message).toMatch(r.message)
        expect(yield* Effect.promise(() => fs.readFile(file, "utf8"))).toBe(text)
      }))
  }

  it.effect("refuses while the Matrix store key is derived from the config password", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir()
      const token = yield* seal("old-pw", "t")
      const file = path.join(dir, "carapace.json5")
      const text = `{ matrix: { userId: "@a:b", accessToken: "${token}", deviceId: "D" } }`
      yield* Effect.promise(async () => {
        await fs.writeFile(file, text)
        await fs.mkdir(path.join(dir, "matrix"))
        await fs.writeFile(path.join(dir, "matrix", "crypto.sqlite"), "x")
      })
      const run = rekeyConfig({
        env: { CARAPACE_STATE_DIR: dir, CARAPACE_CONFIG_PASSWORD: "old-pw" },
        newPassword: Effect.succeed("new-pw")
      }).pipe(Effect.provide(StateDirAt(dir)))
      const e = yield* Effect.flip(run)
      expect(e.kind).toBe("config-rekey-store-key-derived")
      expect(e.message).toMatch(/cara matrix rekey-store --new/)
      expect(yield* Effect.promise(() => fs.readFile(file, "utf8"))).toBe(text)
      // Once the store key is pinned, the rekey goes ahead.
      yield* Effect.promise(() => fs.writeFile(path.join(dir, "matrix", "store_passphrase"), "a".repeat(64) + "\n"))
      expect((yield* run).resealed).toEqual(["matrix.accessToken"])
    }))

  it.effect("the same password again, or an empty one, is refused", () =>
    Effect.gen(function*() {
      const { dir } = yield* setup()
      for (const pw of ["old-pw", ""]) {
        const e = yield* Effect.flip(
          rekeyConfig({
            env: { CARAPACE_STATE_DIR: dir, CARAPACE_CONFIG_PASSWORD: "old-pw" },
            newPassword: Effect.succeed(pw)
          }).pipe(
            Effect.provide(StateDirAt(dir))
          )
        )
        expect(e.kind).toBe("config-rekey-new-password")
      }
    }))

  it.effect("where the new password comes from: the named env variable, else a TTY, else a refusal", () =>
    Effect.gen(function*() {
      expect(yield* newPasswordSource({ NEW_PW: "n" }, Option.some("NEW_PW"), false)).toBe("n")
      const unset = yield* Effect.flip(newPasswordSource({}, Option.some("NEW_PW"), true))
      expect(unset.message).toMatch(/NEW_PW is not set or empty/)
      const noTty = yield* Effect.flip(newPasswordSource({}, Option.none(), false))
      expect(noTty.message).toMatch(/no terminal.*--new-password-env NAME/)
    }))

  it.effect("a file without sealed values needs no password at all", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir()
      yield* Effect.promise(() => fs.writeFile(path.join(dir, "carapace.json5"), `{ gateway: {} }`))
      const r = yield* rekeyConfig({
        env: { CARAPACE_STATE_DIR: dir },
        newPassword: Effect.die("must not be asked")
      }).pipe(Effect.provide(StateDirAt(dir)))
      expect(r.resealed).toEqual([])
    }))
})
