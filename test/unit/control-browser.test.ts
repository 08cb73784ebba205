// Issue #16.3: requests a browser page can make are refused even with auth off, and each rule is a class
// (every spelling, every state-changing method), not one request.
import { HttpServerRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Redacted } from "effect"
import { ChannelStatusLive } from "../../src/layers/ChannelStatusLive.js"
import {
  canonicalPath,
  type GatewayAuthSettings,
  hostAllowed,
  isJsonContentType,
  makeGatewayGuard
} from "../../src/layers/GatewayAuth.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"

const TOKEN = "tok-browser-5e1a"
const none: GatewayAuthSettings = { mode: "none", secret: Option.none() }
const token: GatewayAuthSettings = { mode: "token", secret: Option.some(Redacted.make(TOKEN)) }

const guardWith = (settings: GatewayAuthSettings) =>
  makeGatewayGuard(settings).pipe(Effect.provide(MetricsLive.pipe(Layer.provideMerge(ChannelStatusLive))))

const req = (url: string, options: { headers?: Record<string, string>; method?: string } = {}) =>
  HttpServerRequest.fromWeb(new Request(`http://127.0.0.1:18789/`, { method: options.method ?? "GET" })).modify({
    url,
    remoteAddress: "127.0.0.1",
    headers: { host: "127.0.0.1:18789", ...(options.headers ?? {}) } as never
  })

describe("canonicalPath", () => {
  it("keeps canonical paths and ids", () => {
    expect(canonicalPath("/control/channels")).toBe("/control/channels")
    expect(canonicalPath("/control/channels?verbose=1")).toBe("/control/channels")
    expect(canonicalPath("/control/matrix/verifications/mvr_AbC123/accept")).toBe(
      "/control/matrix/verifications/mvr_AbC123/accept"
    )
    expect(canonicalPath("/control/matrix/verifications/%24evt%3Aex.org/accept")).toBeDefined()
    expect(canonicalPath("/ws")).toBe("/ws")
  })

  it("refuses every other spelling of a route", () => {
    for (
      const p of [
        "/CONTROL/channels",
        "/Control/channels",
        "/control/Channels",
        "/control/MATRIX/send-test",
        "/%63ontrol/channels",
        "/control/%63hannels",
        "/control%2Fchannels",
        "/control/%2e/channels",
        "//control/channels",
        "/control//channels",
        "/control/./channels",
        "/control/../control/channels",
        "/control/matrix/../matrix/send-test",
        "/control\\channels",
        "/control/%zz",
        "/%57s",
        "/WS"
      ]
    ) {
      expect(canonicalPath(p), p).toBeUndefined()
    }
  })
})

describe("hostAllowed (DNS rebinding)", () => {
  it("accepts loopback names and addresses with the bound port, and configured names", () => {
    for (const h of ["127.0.0.1:18789", "localhost:18789", "LOCALHOST:18789", "[::1]:18789", "127.0.0.2:18789"]) {
      expect(hostAllowed(h, [], 18789), h).toBe(true)
    }
    expect(hostAllowed("cara.internal:18789", ["cara.internal"], 18789)).toBe(true)
  })

  it("refuses other names, other ports, look-alikes and a missing Host", () => {
    for (
      const h of [
        undefined,
        "",
        "evil.example:18789",
        "127.attacker.example:18789",
        "localhost.evil.example:18789",
        "127.0.0.1:80",
        "localhost",
        "127.0.0.1:18789@evil"
      ]
    ) {
      expect(hostAllowed(h, [], 18789), String(h)).toBe(false)
    }
    expect(hostAllowed("cara.internal:18789", [], 18789)).toBe(false)
  })
})

describe("isJsonContentType", () => {
  it("accepts application/json only", () => {
    expect(isJsonContentType("application/json")).toBe(true)
    expect(isJsonContentType("Application/JSON; charset=utf-8")).toBe(true)
    for (
      const t of [
        undefined,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "text/plain; application/json"
      ]
    ) {
      expect(isJsonContentType(t), String(t)).toBe(false)
    }
  })
})

describe("the guard refuses browser-borne requests in every auth mode", () => {
  for (const [label, settings] of [["mode none", none], ["mode token", token]] as const) {
    const auth = settings.mode === "token" ? { authorization: `Bearer ${TOKEN}` } : {}
    it.effect(`${label}: rebound Host, non-JSON bodies, cross-site Origin, /ws from a page`, () =>
      Effect.gen(function*() {
        const guard = yield* guardWith(settings)
        // baseline: the CLI's request passes
        yield* guard.authorize(
          req("/control/matrix/send-test", {
            method: "POST",
            headers: { ...auth, "content-type": "application/json", "content-length": "2" }
          })
        )
        yield* guard.authorize(req("/ws", { headers: auth }))

        const rebound = yield* Effect.flip(
          guard.authorize(req("/control/channels", { headers: { ...auth, host: "evil.example:18789" } }))
        )
        expect(rebound.kind).toBe("host-not-allowed")

        for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
          for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b"]) {
            const e = yield* Effect.flip(
              guard.authorize(
                req("/control/matrix/dlq/purge", {
                  method,
                  headers: { ...auth, "content-type": type, "content-length": "5" }
                })
              )
            )
            expect(e.kind, `${method} ${type}`).toBe("unsupported-media-type")
          }
          const noType = yield* Effect.flip(
            guard.authorize(req("/control/matrix/dlq/purge", { method, headers: { ...auth, "content-length": "5" } }))
          )
          expect(noType.kind).toBe("unsupported-media-type")
          const cross = yield* Effect.flip(guard.authorize(req("/control/matrix/dlq/purge", {
            method,
            headers: {
              ...auth,
              "content-type": "application/json",
              "content-length": "2",
              origin: "https://evil.example"
            }
          })))
          expect(cross.kind).toBe("csrf-origin-mismatch")
        }
        for (const origin of ["https://evil.example", "http://127.0.0.1:18789", "null"]) {
          const ws = yield* Effect.flip(guard.authorize(req("/ws", { headers: { ...auth, origin } })))
          expect(ws.kind, origin).toBe("csrf-origin-mismatch")
        }
        const odd = yield* Effect.flip(guard.authorize(req("/CONTROL/channels", { headers: auth })))
        expect(odd.kind).toBe("non-canonical-path")
      }))
  }

  it.effect("mode token: /ws without the token gets no upgrade", () =>
    Effect.gen(function*() {
      const guard = yield* guardWith(token)
      const e = yield* Effect.flip(guard.authorize(req("/ws")))
      expect(e.kind).toBe("unauthorized")
    }))
})
