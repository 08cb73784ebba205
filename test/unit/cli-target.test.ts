// A command that talks to the daemon opens only the gateway credential of the config (each sealed value costs
// one Argon2id derivation), and none when CARAPACE_GATEWAY_TOKEN gives it.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { resolveTarget } from "../../src/cli/client.js"
import { seal } from "../../src/domain/secrets.js"
import { loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { tmpDir } from "../support/tmp.js"

const root = tmpDir("cara-target-")

const writeConfig = (password: string) =>
  Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(root, "c-"))
    const token = yield* seal(password, "gw-token-sealed-0123456789")
    const access = yield* seal(password, "syt_sealed_access_token")
    fs.writeFileSync(
      path.join(dir, "carapace.json5"),
      `{ gateway: { port: 18999, auth: { mode: "token", token: "${token}" } },
         matrix: { homeserverUrl: "https://m.example.com", userId: "@a:example.com", accessToken: "${access}", deviceId: "D" } }`,
      { mode: 0o600 }
    )
    return dir
  })

describe("the CLI's gateway target", () => {
  it.effect("opens the sealed gateway token and leaves every other sealed value locked (not derived)", () =>
    Effect.gen(function*() {
      const dir = yield* writeConfig("pw")
      const env = { CARAPACE_CONFIG_PATH: path.join(dir, "carapace.json5"), CARAPACE_CONFIG_PASSWORD: "pw" }
      const t = yield* resolveTarget({ host: Option.none(), port: Option.none() }, env)
      expect(t.port).toBe(18999)
      expect(Option.map(t.token, Redacted.value)).toEqual(Option.some("gw-token-sealed-0123456789"))

      const s = yield* loadConfigSnapshot(env, undefined, (p) => p === "gateway.auth.token").pipe(
        Effect.provide(StateDirAt(dir))
      )
      expect(s.secrets.get("matrix.accessToken")).toEqual({ state: "locked" })
      expect(s.secrets.get("gateway.auth.token")?.state).toBe("open")
    }))

  it.effect("with CARAPACE_GATEWAY_TOKEN set, opens nothing (a wrong config password changes nothing)", () =>
    Effect.gen(function*() {
      const dir = yield* writeConfig("pw")
      const t = yield* resolveTarget({ host: Option.none(), port: Option.none() }, {
        CARAPACE_CONFIG_PATH: path.join(dir, "carapace.json5"),
        CARAPACE_CONFIG_PASSWORD: "not-the-password",
        CARAPACE_GATEWAY_TOKEN: "from-env"
      })
      expect(Option.map(t.token, Redacted.value)).toEqual(Option.some("from-env"))
      expect(Option.map(t.config, (c) => c.gateway.port)).toEqual(Option.some(18999))
    }))
})
