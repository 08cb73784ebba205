import { HttpServerRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Redacted, TestClock } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { ChannelStatusLive } from "../../src/layers/ChannelStatusLive.js"
import { ConfigSecretsWith } from "../../src/layers/ConfigSecretsLive.js"
import {
  type GatewayAuthSettings,
  makeGatewayGuard,
  resolveGatewayAuth,
  secretMatches
} from "../../src/layers/GatewayAuth.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { Metrics } from "../../src/services/Metrics.js"
import { tmpDir } from "../support/tmp.js"

const TOKEN = "tok-3b9e0f7d1c5a"

const withConfig = (text: string, env: Record<string, string> = {}) => {
  const dir = tmpDir("cara-auth-")
  fs.writeFileSync(path.join(dir, "carapace.json5"), text)
  return resolveGatewayAuth.pipe(
    Effect.provide(ConfigSecretsWith({ env: { CARAPACE_STATE_DIR: dir, ...env } }).pipe(Layer.provide(StateDirAt(dir))))
  )
}

describe("gateway auth configuration (startup)", () => {
  it.effect("a non-loopback bind without token auth is refused with the setting to change", () =>
    Effect.gen(function*() {
      const result = yield* Effect.either(withConfig(`{ gateway: { bind: "lan", auth: { mode: "none" } } }`))
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left.kind).toBe("gateway-auth-config")
        expect(result.left.message).toContain("gateway.auth.mode")
        expect(result.left.message).toContain("non-loopback")
      }
    }))

  it.effect("a non-loopback bind with a token is accepted in token mode", () =>
    Effect.gen(function*() {
      const settings = yield* withConfig(
        `{ gateway: { bind: "0.0.0.0", auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } } }`,
        { CARAPACE_GATEWAY_TOKEN: TOKEN }
      )
      expect(settings.mode).toBe("token")
      expect(Option.map(settings.secret, Redacted.value)).toEqual(Option.some(TOKEN))
    }))

  it.effect("token mode without a token is refused, and the refusal never contains a secret", () =>
    Effect.gen(function*() {
      const result = yield* Effect.either(withConfig(`{ gateway: { auth: { mode: "token", token: "  " } } }`))
      expect(Either.isLeft(result) && result.left.message).toContain("gateway.auth.token is empty or not set")
      expect(Either.isLeft(result) && result.left.message).not.toMatch(/"  "/)
    }))

  it.effect("without gateway.auth the daemon refuses to start and says how to set CARAPACE_GATEWAY_TOKEN", () =>
    Effect.gen(function*() {
      for (const text of [`{ gateway: { port: 18789 } }`, `{}`, `{ gateway: { auth: null } }`]) {
        const result = yield* Effect.either(withConfig(text))
        expect(Either.isLeft(result) && result.left.kind).toBe("gateway-auth-config")
        expect(Either.isLeft(result) && result.left.message).toContain("CARAPACE_GATEWAY_TOKEN")
      }
    }))

  it.effect("token mode (explicit or implied) with a token that resolves to empty or unset is refused", () =>
    Effect.gen(function*() {
      for (
        const [text, env] of [
          [`{ gateway: { auth: { token: "\${CARAPACE_GATEWAY_TOKEN}" } } }`, { CARAPACE_GATEWAY_TOKEN: "" }],
          [`{ gateway: { auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } } }`, {
            CARAPACE_GATEWAY_TOKEN: "   "
          }],
          [`{ gateway: { auth: { mode: "token" } } }`, {}],
          [`{ gateway: { auth: {} } }`, {}]
        ] as const
      ) {
        const result = yield* Effect.either(withConfig(text, env))
        expect(Either.isLeft(result) && result.left.kind).toBe("gateway-auth-config")
        expect(Either.isLeft(result) && result.left.message).toContain("CARAPACE_GATEWAY_TOKEN")
      }
    }))

  it.effect("auth is off only with an explicit mode \"none\" on loopback", () =>
    Effect.gen(function*() {
      const settings = yield* withConfig(`{ gateway: { port: 18789, auth: { mode: "none" } } }`)
      expect(settings.mode).toBe("none")
    }))
})

const guardWith = (settings: GatewayAuthSettings) =>
  makeGatewayGuard(settings).pipe(Effect.provide(MetricsLive.pipe(Layer.provideMerge(ChannelStatusLive))))

const req = (url: string, options: { remote?: string; headers?: Record<string, string>; method?: string } = {}) => {
  const base = HttpServerRequest.fromWeb(
    new Request(`http://127.0.0.1:18789${url}`, { method: options.method ?? "GET" })
  )
  // fetch's Request hides Host; the guard reads it, so the test sets every header on the server-side view.
  return base.modify({
    remoteAddress: options.remote ?? "127.0.0.1",
    headers: { host: "127.0.0.1:18789", ...(options.headers ?? {}) } as never
  })
}

const tokenMode: GatewayAuthSettings = { mode: "token", secret: Option.some(Redacted.make(TOKEN)) }
const bearer = { authorization: `Bearer ${TOKEN}` }

describe("gateway guard", () => {
  it("compares secrets in constant time over digests, whatever their lengths", () => {
    expect(secretMatches(TOKEN, Redacted.make(TOKEN))).toBe(true)
    expect(secretMatches(`${TOKEN}x`, Redacted.make(TOKEN))).toBe(false)
    expect(secretMatches("", Redacted.make(TOKEN))).toBe(false)
    expect(secretMatches(TOKEN.toUpperCase(), Redacted.make(TOKEN))).toBe(false)
  })

  it.effect("token mode: a loopback client still needs the bearer; Bearer scheme is case-insensitive", () =>
    Effect.gen(function*() {
      const guard = yield* guardWith(tokenMode)
      const none = yield* Effect.flip(guard.authorize(req("/control/channels")))
      expect(none._tag).toBe("Unauthorized")
      yield* guard.authorize(req("/control/channels", { headers: bearer }))
      yield* guard.authorize(req("/control/channels", { headers: { authorization: `bearer ${TOKEN}` } }))
      const basic = yield* Effect.flip(
        guard.authorize(req("/control/channels", { headers: { authorization: `Basic ${TOKEN}` } }))
      )
      expect(basic.kind).toBe("unauthorized")
    }))

  it.effect("non-loopback clients are rate limited per IP (send-test: burst 10), loopback is exempt", () =>
    Effect.gen(function*() {
      const guard = yield* makeGatewayGuard(tokenMode)
      const send = (remote: string) =>
        guard.authorize(req("/control/matrix/send-test", { remote, method: "POST", headers: bearer }))
      for (let i = 0; i < 10; i++) yield* send("192.0.2.7")
      const limited = yield* Effect.flip(send("192.0.2.7"))
      expect(limited._tag).toBe("TooManyRequests")
      expect(limited.kind).toBe("rate-limited")
      expect(limited.retryAfterMs).toBeGreaterThan(0)
      // Another address has its own bucket; loopback has none.
      yield* send("192.0.2.8")
      for (let i = 0; i < 50; i++) yield* send("127.0.0.1")
      // The bucket refills at 5/s.
      yield* TestClock.adjust("1 second")
      yield* send("192.0.2.7")
      const metrics = yield* Metrics
      expect(yield* metrics.render).toContain("carapace_gateway_rate_limited_total 1\n")
    }).pipe(Effect.provide(MetricsLive.pipe(Layer.provideMerge(ChannelStatusLive)))))

  it.effect("a loopback peer behind a proxy (X-Forwarded-For) is not treated as local", () =>
    Effect.gen(function*() {
      const guard = yield* guardWith({ mode: "none", secret: Option.none() })
      yield* guard.authorize(req("/control/channels"))
      const proxied = yield* Effect.flip(
        guard.authorize(req("/control/channels", { headers: { "x-forwarded-for": "203.0.113.9" } }))
      )
      expect(proxied.kind).toBe("non-local-client")
      const remote = yield* Effect.flip(guard.authorize(req("/control/channels", { remote: "198.51.100.2" })))
      expect(remote._tag).toBe("Forbidden")
    }))

  it.effect("credential-like query parameters are refused before anything else", () =>
    Effect.gen(function*() {
      const guard = yield* guardWith(tokenMode)
      for (const name of ["token", "access_token", "Authorization"]) {
        const e = yield* Effect.flip(guard.authorize(req(`/control/channels?${name}=abc`, { headers: bearer })))
        expect(e.kind).toBe("token-in-query")
        expect(e.message).not.toContain("abc")
      }
      yield* guard.authorize(req("/control/channels?verbose=1", { headers: bearer }))
    }))
})
