// The pure parts of `cara setup` and homeserver discovery, and discovery over a local http server that
// publishes a .well-known document (the real Synapse publishes none; test/integration/setup.test.ts).
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { exportLines, renderSetupConfig, type SetupAnswers } from "../../src/domain/setup.js"
import {
  isLoopbackName,
  parseWellKnown,
  resolveHomeserverUrl,
  serverNameOf,
  wellKnownUrl
} from "../../src/domain/wellKnown.js"
import { loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { tmpDir } from "../support/tmp.js"

describe("homeserver discovery (pure)", () => {
  it("takes the server name from a user id, https unless loopback", () => {
    expect(serverNameOf("@cara:example.org")).toBe("example.org")
    expect(serverNameOf("@cara:127.0.0.1:8008")).toBe("127.0.0.1:8008")
    expect(serverNameOf("cara:example.org")).toBeUndefined()
    expect(serverNameOf("@cara")).toBeUndefined()
    expect(wellKnownUrl("example.org")).toBe("https://example.org/.well-known/matrix/client")
    expect(wellKnownUrl("localhost:8008")).toBe("http://localhost:8008/.well-known/matrix/client")
    expect(isLoopbackName("127.0.0.1:1")).toBe(true)
    expect(isLoopbackName("evil-localhost.example")).toBe(false)
  })

  it("reads m.homeserver.base_url, refusing plain http for a real host", () => {
    expect(parseWellKnown({ "m.homeserver": { base_url: "https://matrix.example.org/" } }, "example.org")).toEqual({
      baseUrl: "https://matrix.example.org"
    })
    expect(parseWellKnown({ "m.homeserver": { base_url: "http://matrix.example.org" } }, "example.org")).toHaveProperty(
      "problem"
    )
    expect(parseWellKnown({}, "example.org")).toEqual({ problem: "it has no m.homeserver.base_url" })
    expect(parseWellKnown({ "m.homeserver": { base_url: "not a url" } }, "example.org")).toHaveProperty("problem")
  })
})

/** A loopback server: `.well-known` pointing at itself (or not), and `/_matrix/client/versions`. */
const server = (wellKnown: (self: string) => unknown) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ srv: http.Server; base: string }>((resolve) => {
        const srv = http.createServer((req, res) => {
          const self = `http://127.0.0.1:${(srv.address() as { port: number }).port}`
          const body = req.url === "/.well-known/matrix/client"
            ? wellKnown(self)
            : req.url === "/_matrix/client/versions"
            ? { versions: ["v1.11"] }
            : undefined
          res.writeHead(body === undefined ? 404 : 200, { "content-type": "application/json" }).end(
            JSON.stringify(body ?? {})
          )
        })
        srv.listen(
          0,
          "127.0.0.1",
          () => resolve({ srv, base: `http://127.0.0.1:${(srv.address() as { port: number }).port}` })
        )
      })
    ),
    ({ srv }) => Effect.promise(() => new Promise<void>((r) => srv.close(() => r())))
  )

describe("resolveHomeserverUrl", () => {
  it.scopedLive("follows .well-known to a base URL that answers the client API", () =>
    Effect.gen(function*() {
      const { base } = yield* server((self) => ({ "m.homeserver": { base_url: `${self}/` } }))
      const host = new URL(base).host
      expect(yield* resolveHomeserverUrl(`@bot:${host}`)).toBe(base)
    }))

  it.scopedLive("fails with what to do when neither .well-known nor the server name leads to a homeserver", () =>
    Effect.gen(function*() {
      const { base } = yield* server(() => ({ "m.homeserver": { base_url: "http://127.0.0.1:1" } }))
      const exit = yield* Effect.exit(resolveHomeserverUrl(`@bot:${new URL(base).host}`))
      expect(Exit.isFailure(exit)).toBe(true)
      expect(JSON.stringify(exit)).toContain("homeserver-discovery-failed")
      expect(JSON.stringify(exit)).toContain("--homeserver")
    }))
})

const answers: SetupAnswers = {
  homeserverUrl: "https://matrix.example.org",
  homeserverSource: "discovered",
  userId: "@cara:example.org",
  allowUsers: ["@you:example.org"],
  allowServers: [],
  provider: "openai",
  model: "gpt-4o-mini"
}

describe("the config cara setup writes", () => {
  it.effect("is commented, loads without errors once the variables are set, and holds only ${VAR} secrets", () =>
    Effect.gen(function*() {
      const text = renderSetupConfig(answers, "2026-01-01T00:00:00.000Z")
      expect(text).toMatch(/^\/\/ /)
      expect(text).toContain("apiKey: \"${OPENAI_API_KEY}\"")
      const dir = tmpDir("cara-setup-")
      fs.writeFileSync(path.join(dir, "carapace.json5"), text, { mode: 0o600 })
      const snap = yield* loadConfigSnapshot({
        CARAPACE_STATE_DIR: dir,
        CARAPACE_CONFIG_PASSWORD: "pw",
        CARAPACE_GATEWAY_TOKEN: "t".repeat(64),
        MATRIX_PASSWORD: "secret-pw",
        OPENAI_API_KEY: "sk-test"
      }).pipe(Effect.provide(StateDirAt(dir)))
      expect(snap.findings).toEqual([])
      expect(snap.config.matrix?.userId).toBe("@cara:example.org")
      expect(snap.config.agents["default"]?.model).toBe("openai:gpt-4o-mini")
    }))

  it("lists as exports only the variables the environment lacks", () => {
    expect(exportLines(answers, {}).map((l) => l.split("=")[0])).toEqual([
      "export CARAPACE_CONFIG_PASSWORD",
      "export CARAPACE_GATEWAY_TOKEN",
      "export MATRIX_PASSWORD",
      "export OPENAI_API_KEY"
    ])
    expect(
      exportLines({ ...answers, provider: "local", model: "echo" }, {
        CARAPACE_CONFIG_PASSWORD: "x",
        MATRIX_PASSWORD: "y"
      })
    ).toEqual([
      expect.stringMatching(/^export CARAPACE_GATEWAY_TOKEN=/)
    ])
  })
})
