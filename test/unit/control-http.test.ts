import { FetchHttpClient, HttpApiClient, HttpClient, HttpClientRequest, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Either, Layer, Option, Redacted, Ref, Schema } from "effect"
import * as fs from "node:fs"
import { createServer } from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { CaraApi, Channels, Health, NotReady, Ready, SendTestResult } from "../../src/domain/api.js"
import { ChannelStatusLive } from "../../src/layers/ChannelStatusLive.js"
import { ControlHttpApp, GatewayBackendsUnavailable } from "../../src/layers/ControlHttpLive.js"
import { GatewayGuardWith } from "../../src/layers/GatewayAuth.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"
import { ChannelStatus } from "../../src/services/ChannelStatus.js"
import { EventBus, publishVerification } from "../../src/services/EventBus.js"
import { MatrixControl, MatrixControlError } from "../../src/services/MatrixControl.js"
import { Metrics } from "../../src/services/Metrics.js"

// `ws` (the WebSocket library under @effect/platform-node) ships no typings: the little used here is typed locally.
interface WsClient {
  on(event: "message", cb: (data: Buffer) => void): void
  on(event: "unexpected-response", cb: (req: unknown, res: { statusCode?: number }) => void): void
  on(event: "open" | "error", cb: () => void): void
  close(): void
  terminate(): void
}
const wsModule = "ws"
const WebSocket = ((await import(wsModule)) as {
  default: new(url: string, options?: { headers?: Record<string, string> }) => WsClient
}).default

const TOKEN = "gw-token-7f3a9c1e5b2d4f6a8c0e2b4d6f8a0c2e"
const ROOM = "!probe:example.org"

// The fake runtime's behaviour is chosen per test through this ref.
class SendBehaviour extends Effect.Service<SendBehaviour>()("test/SendBehaviour", {
  effect: Ref.make<(room: string) => Effect.Effect<string, MatrixControlError>>(() => Effect.succeed("$event1"))
}) {}

const FakeMatrix = Layer.effect(
  MatrixControl,
  Effect.map(SendBehaviour, (ref) => ({ sendTest: (room: string) => Effect.flatMap(Ref.get(ref), (f) => f(room)) }))
)

// Every body the server sends is kept, so a final test can scan them all for secrets.
const seen: Array<string> = []

const Server = ControlHttpApp.pipe(
  Layer.provide([
    FakeMatrix,
    GatewayBackendsUnavailable,
    GatewayGuardWith({ mode: "token", secret: Option.some(Redacted.make(TOKEN)) })
  ]),
  Layer.provideMerge(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port: 0 })),
  Layer.provideMerge(Layer.mergeAll(EventBus.Live.pipe(Layer.provideMerge(MetricsLive)), SendBehaviour.Default)),
  Layer.provideMerge(ChannelStatusLive)
)

const baseUrl = Effect.map(HttpServer.HttpServer, (s) => HttpServer.formatAddress(s.address))

interface Raw {
  readonly status: number
  readonly headers: Headers
  readonly text: string
  readonly json: () => any
}

const raw = (path: string, init: RequestInit & { readonly token?: string | null } = {}) =>
  Effect.flatMap(baseUrl, (url) =>
    Effect.promise(async (): Promise<Raw> => {
      const headers = new Headers(init.headers)
      const token = init.token === undefined ? TOKEN : init.token
      if (token !== null) headers.set("authorization", `Bearer ${token}`)
      const response = await fetch(`${url}${path}`, { ...init, headers })
      const text = await response.text()
      seen.push(text)
      return { status: response.status, headers: response.headers, text, json: () => JSON.parse(text) }
    }))

const postJson = (path: string, body: unknown, extra: RequestInit & { readonly token?: string | null } = {}) =>
  raw(path, {
    ...extra,
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json", ...(extra.headers as Record<string, string> | undefined) }
  })

const setSend = (f: (room: string) => Effect.Effect<string, MatrixControlError>) =>
  Effect.flatMap(SendBehaviour, (ref) => Ref.set(ref, f))

const PROTECTED: ReadonlyArray<readonly [string, string]> = [
  ["GET", "/control/channels"],
  ["GET", "/control/status"],
  ["POST", "/control/matrix/send-test"],
  ["GET", "/ws"]
]

const request = (method: string, path: string, token: string | null, query = "") =>
  method === "POST"
    ? postJson(`${path}${query}`, { roomId: ROOM, text: "hi" }, { token })
    : raw(`${path}${query}`, { token })

layer(Server)("control API (in-process, fakes behind the tags)", (it) => {
  it.effect("GET /health needs no credential and decodes as Health", () =>
    Effect.gen(function*() {
      const r = yield* raw("/health", { token: null })
      expect(r.status).toBe(200)
      const health = Schema.decodeUnknownSync(Health)(r.json())
      expect(health.status).toBe("ok")
      expect((yield* raw("/health/live", { token: null })).status).toBe(200)
    }))

  for (const [method, path] of PROTECTED) {
    it.effect(`${method} ${path}: missing, wrong and query-string tokens are refused with the error body`, () =>
      Effect.gen(function*() {
        const missing = yield* request(method, path, null)
        expect(missing.status).toBe(401)
        expect(missing.json()).toEqual({
          ok: false,
          error: { kind: "unauthorized", message: expect.stringContaining("Authorization: Bearer") }
        })

        const wrong = yield* request(method, path, `${TOKEN}x`)
        expect(wrong.status).toBe(401)
        expect(wrong.json().error.kind).toBe("unauthorized")

        // Even the right token is refused in the URL (and a correct header does not rescue it).
        const inQuery = yield* request(method, path, TOKEN, `?token=${TOKEN}`)
        expect(inQuery.status).toBe(401)
        expect(inQuery.json().error.kind).toBe("token-in-query")
      }))
  }

  it.effect("GET /control/channels returns the registry with Matrix metadata under the reference's names", () =>
    Effect.gen(function*() {
      const channels = yield* ChannelStatus
      yield* channels.setState("matrix", "connected")
      yield* channels.updateMatrix((x) => ({
        ...x,
        joinedRoomCount: 3,
        encryptedRoomCount: 2,
        unencryptedRoomCount: 1,
        pendingVerificationCount: 1,
        lastSuccessfulSyncAt: 1700000000000,
        deviceId: "DEVICEX"
      }))
      const r = yield* raw("/control/channels")
      expect(r.status).toBe(200)
      const body = Schema.decodeUnknownSync(Channels)(r.json())
      expect(body.total).toBe(1)
      expect(body.connected).toBe(1)
      const m = body.channels[0]!
      expect(m).toMatchObject({ id: "matrix", name: "Matrix", status: "connected", lastError: null })
      expect(m.extra).toMatchObject({
        joinedRoomCount: 3,
        encryptedRoomCount: 2,
        unencryptedRoomCount: 1,
        unsupportedRoomCount: 0,
        pendingVerificationCount: 1,
        lastSuccessfulSyncAt: 1700000000000,
        inboundDispatchFailureTotal: 0,
        inboundDlqAppendFailureTotal: 0,
        deviceId: "DEVICEX"
      })
      expect(m.extra?.lastErrorKind).toBeUndefined()
    }))

  it.effect("GET /health/ready is 200 while connected and 503 with Retry-After while a channel is in error", () =>
    Effect.gen(function*() {
      const channels = yield* ChannelStatus
      yield* channels.setState("matrix", "connected")
      yield* channels.updateMatrix((x) => ({ ...x, lastSuccessfulSyncAt: null }))
      const first = Schema.decodeUnknownSync(Ready)((yield* raw("/health/ready", { token: null })).json())
      expect(first.channels.find((c) => c.id === "matrix")?.lastSuccessfulSyncAgoSeconds).toBeNull()
      yield* channels.updateMatrix((x) => ({ ...x, lastSuccessfulSyncAt: Date.now() - 42_000 }))
      const ok = yield* raw("/health/ready", { token: null })
      expect(ok.status).toBe(200)
      const ready = Schema.decodeUnknownSync(Ready)(ok.json())
      expect(ready.status).toBe("ready")
      // how long ago the last successful sync was (a slow run may see a second or two more)
      expect(ready.channels.find((c) => c.id === "matrix")?.lastSuccessfulSyncAgoSeconds).toBeGreaterThanOrEqual(42)
      expect(ready.channels.find((c) => c.id === "matrix")?.lastSuccessfulSyncAgoSeconds).toBeLessThan(100)

      yield* channels.setState("matrix", "error", {
        message: "Matrix store rekey interrupted: re-run cara matrix rekey-store --new",
        kind: "interrupted-rekey"
      })
      const bad = yield* raw("/health/ready", { token: null })
      expect(bad.status).toBe(503)
      expect(bad.headers.get("retry-after")).toBe("5")
      const body = Schema.decodeUnknownSync(NotReady)(bad.json())
      expect(body.status).toBe("not_ready")
      expect(body.reasons[0]).toContain("interrupted-rekey")

      // The authenticated view carries the cause and the typed kind.
      const view = Schema.decodeUnknownSync(Channels)((yield* raw("/control/channels")).json())
      expect(view.channels[0]?.lastError).toContain("rekey interrupted")
      expect(view.channels[0]?.extra?.lastErrorKind).toBe("interrupted-rekey")
      yield* channels.setState("matrix", "connected")
      expect((yield* raw("/health/ready", { token: null })).status).toBe(200)
    }))

  it.effect("the derived HttpApiClient decodes responses and surfaces typed errors", () =>
    Effect.gen(function*() {
      const url = yield* baseUrl
      const authed = yield* HttpApiClient.make(CaraApi, {
        baseUrl: url,
        transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(TOKEN))
      })
      const status = yield* authed.control.status()
      expect(status.ok).toBe(true)
      expect(status.runtime.name).toBe("cara")
      yield* setSend(() => Effect.succeed("$sent:example.org"))
      const sent = yield* authed.matrix.sendTest({ payload: { roomId: ROOM, text: "  ping  " } })
      expect(sent).toEqual(
        new SendTestResult({
          ok: true,
          delivery: { outcome: "sent", messageId: "$sent:example.org", conversationId: ROOM }
        })
      )

      const anonymous = yield* HttpApiClient.make(CaraApi, { baseUrl: url })
      const refused = yield* Effect.either(anonymous.control.channels())
      expect(Either.isLeft(refused) && refused.left._tag).toBe("Unauthorized")
    }).pipe(Effect.provide(FetchHttpClient.layer)))

  it.effect("send-test maps runtime failures: transient → 200 failed, not connected/unavailable → 503 + Retry-After, other → 502", () =>
    Effect.gen(function*() {
      let seenRoom = ""
      yield* setSend((room) => {
        seenRoom = room
        return Effect.fail(
          new MatrixControlError({
            kind: "not-connected",
            message: "Matrix runtime is not connected",
            retryAfterMs: 5000
          })
        )
      })
      // #17.7: a runtime that is not running is 503 matrix-runtime-unavailable, like every other Matrix endpoint.
      const notConnected = yield* postJson("/control/matrix/send-test", {
        roomId: ROOM,
        text: "ping",
        extra: "tolerated"
      })
      expect(seenRoom).toBe(ROOM)
      expect(notConnected.status).toBe(503)
      expect(notConnected.json().error.kind).toBe("matrix-runtime-unavailable")

      yield* setSend(() =>
        Effect.fail(
          new MatrixControlError({ kind: "send-failed", message: "the homeserver answered 500", retryAfterMs: 5000 })
        )
      )
      const transient = yield* postJson("/control/matrix/send-test", { roomId: ROOM, text: "ping" })
      expect(transient.status).toBe(200)
      expect(transient.json()).toEqual({
        ok: false,
        delivery: {
          outcome: "failed",
          error: "the homeserver answered 500",
          retryability: { kind: "transient", retryAfterMs: 5000 },
          conversationId: ROOM,
          kind: "send-failed"
        }
      })

      yield* setSend(() =>
        Effect.fail(
          new MatrixControlError({
            kind: "matrix-runtime-unavailable",
            message: "Matrix runtime unavailable",
            retryAfterMs: 5000
          })
        )
      )
      const unavailable = yield* postJson("/control/matrix/send-test", { roomId: ROOM, text: "ping" })
      expect(unavailable.status).toBe(503)
      expect(unavailable.headers.get("retry-after")).toBe("5")
      expect(unavailable.json()).toEqual({
        ok: false,
        error: { kind: "matrix-runtime-unavailable", message: "Matrix runtime unavailable", retryAfterMs: 5000 }
      })

      yield* setSend(() =>
        Effect.fail(
          new MatrixControlError({ kind: "room-not-found", message: "the bot is not in that room; invite it first" })
        )
      )
      const notFound = yield* postJson("/control/matrix/send-test", { roomId: ROOM, text: "ping" })
      expect(notFound.status).toBe(502)
      expect(notFound.json().error.kind).toBe("room-not-found")
      expect(notFound.headers.get("retry-after")).toBeNull()

      yield* setSend(() => Effect.succeed(""))
      const noId = yield* postJson("/control/matrix/send-test", { roomId: ROOM, text: "ping" })
      expect(noId.json()).toMatchObject({
        ok: false,
        delivery: { outcome: "failed", retryability: { kind: "terminal" } }
      })
    }))

  it.effect("send-test validates its input before the runtime is consulted", () =>
    Effect.gen(function*() {
      let calls = 0
      yield* setSend(() => Effect.sync(() => (calls++, "$x")))
      const badRoom = yield* postJson("/control/matrix/send-test", { roomId: "#alias:example.org", text: "ping" })
      expect(badRoom.status).toBe(400)
      expect(badRoom.json().error.kind).toBe("invalid-room-id")
      const blank = yield* postJson("/control/matrix/send-test", { roomId: ROOM, text: "   " })
      expect(blank.json().error.kind).toBe("invalid-string")
      const long = yield* postJson("/control/matrix/send-test", { roomId: ROOM, text: "é".repeat(2049) })
      expect(long.json().error.kind).toBe("invalid-length")
      const shape = yield* postJson("/control/matrix/send-test", { roomId: 42, text: TOKEN })
      expect(shape.status).toBe(400)
      expect(shape.json().error).toEqual({ kind: "invalid-request", message: expect.stringContaining("roomId") })
      const huge = yield* postJson("/control/matrix/send-test", { roomId: ROOM, text: "x".repeat(6000) })
      expect(huge.status).toBe(400)
      expect(huge.json().error.kind).toBe("body-too-large")
      expect(calls).toBe(0)
    }))

  it.effect("a state-changing control request from another browser origin is refused (CSRF origin rule)", () =>
    Effect.gen(function*() {
      yield* setSend(() => Effect.succeed("$ok"))
      const cross = yield* postJson("/control/matrix/send-test", { roomId: ROOM, text: "ping" }, {
        headers: { origin: "https://evil.example" }
      })
      expect(cross.status).toBe(403)
      expect(cross.json().error.kind).toBe("csrf-origin-mismatch")
      const url = new URL(yield* baseUrl)
      const same = yield* postJson("/control/matrix/send-test", { roomId: ROOM, text: "ping" }, {
        headers: { origin: `http://${url.host}` }
      })
      expect(same.status).toBe(200)
    }))

  it.effect("over HTTP: other spellings of a route 404, non-JSON bodies 415, malformed JSON gets the error envelope", () =>
    Effect.gen(function*() {
      // (fetch folds `.` and `..` segments itself; canonicalPath's unit test covers those spellings)
      for (const p of ["/CONTROL/channels", "/%63ontrol/channels", "//control/channels", "/control//channels"]) {
        const r = yield* raw(p)
        expect(r.status, p).toBe(404)
        expect(r.json().error.kind, p).toBe("not-found")
      }
      const form = yield* raw("/control/matrix/send-test", {
        method: "POST",
        body: "roomId=x&text=y",
        headers: { "content-type": "application/x-www-form-urlencoded" }
      })
      expect(form.status).toBe(415)
      expect(form.json().error.kind).toBe("unsupported-media-type")
      const plain = yield* raw("/control/matrix/send-test", {
        method: "POST",
        body: "{}",
        headers: { "content-type": "text/plain" }
      })
      expect(plain.status).toBe(415)
      for (const body of ["{", "not json", "[1,", "\u0000"]) {
        const bad = yield* raw("/control/matrix/send-test", {
          method: "POST",
          body,
          headers: { "content-type": "application/json" }
        })
        expect([bad.status, bad.text], body).toEqual([400, expect.stringContaining("\"ok\":false")])
        expect(bad.json().ok, body).toBe(false)
        expect(typeof bad.json().error.kind, body).toBe("string")
      }
    }))

  it.effect("GET /metrics is Prometheus text with the reference's metric names and live values", () =>
    Effect.gen(function*() {
      const channels = yield* ChannelStatus
      const metrics = yield* Metrics
      yield* channels.setState("matrix", "connected")
      yield* channels.updateMatrix((x) => ({
        ...x,
        pendingVerificationCount: 4,
        inboundDlqRecordCount: 2,
        outboundPendingCount: 3,
        outboundPendingOldestAt: Date.now() - 600_000,
        lastSuccessfulSyncAt: Date.now() - 5_000
      }))
      yield* metrics.increment("carapace_matrix_sync_failures_total", { class: "transient" }, 3)
      yield* metrics.observe("carapace_matrix_sync_cycle_seconds", 29.5)
      yield* metrics.observe("carapace_matrix_outbound_send_duration_seconds", 0.3)
      const r = yield* raw("/metrics", { token: null })
      expect(r.status).toBe(200)
      expect(r.headers.get("content-type")).toContain("text/plain; version=0.0.4")
      expect(r.text).toContain(
        "# TYPE carapace_matrix_pending_verifications gauge\ncarapace_matrix_pending_verifications 4\n"
      )
      expect(r.text).toContain("carapace_matrix_dlq_records 2\n")
      expect(r.text).toContain("carapace_matrix_sync_failures_total{class=\"transient\"} 3\n")
      expect(r.text).toContain("carapace_matrix_outbound_send_duration_seconds_bucket{le=\"0.25\"} 0\n")
      expect(r.text).toContain("carapace_matrix_outbound_send_duration_seconds_bucket{le=\"0.5\"} 1\n")
      expect(r.text).toContain("carapace_matrix_outbound_send_duration_seconds_count 1\n")
      expect(r.text).toContain("carapace_channel_up{channel=\"matrix\"} 1\n")
      expect(r.text).toContain("# TYPE carapace_matrix_unsupported_inbound_total counter")
      expect(r.text).toContain("carapace_matrix_outbound_pending_replies 3\n")
      const oldest = Number(/^carapace_matrix_outbound_pending_oldest_age_seconds (\S+)$/m.exec(r.text)?.[1])
      expect(oldest).toBeGreaterThanOrEqual(600)
      expect(oldest).toBeLessThan(700)
      expect(Number(/^carapace_matrix_last_successful_sync_age_seconds (\S+)$/m.exec(r.text)?.[1]))
        .toBeGreaterThanOrEqual(5)
      expect(r.text).toContain("carapace_matrix_sync_cycle_seconds_bucket{le=\"10\"} 0\n")
      expect(r.text).toContain("carapace_matrix_sync_cycle_seconds_bucket{le=\"30\"} 1\n")
      expect(r.text).toContain("carapace_matrix_verification_rate_limit_drops_total 0\n")
      // Every sample line is `name{labels} value`.
      for (const line of r.text.trim().split("\n").filter((l) => !l.startsWith("#"))) {
        expect(line).toMatch(/^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+Inf]+$/)
      }
    }))

  it.effect("GET /ws refuses a client without the token and streams status and verification events to one with it", () =>
    Effect.gen(function*() {
      const url = (yield* baseUrl).replace("http", "ws") + "/ws"
      const refusedStatus = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const ws = new WebSocket(url)
          ws.on("unexpected-response", (_req, res) => {
            resolve(res.statusCode ?? 0)
            ws.terminate()
          })
          ws.on("open", () => resolve(101))
          ws.on("error", () => undefined)
        })
      )
      expect(refusedStatus).toBe(401)

      const channels = yield* ChannelStatus
      yield* channels.setState("matrix", "connected")
      const frames: Array<any> = []
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${TOKEN}` } })
      ws.on("message", (data) => frames.push(JSON.parse(String(data))))
      const waitFor = (pred: (f: any) => boolean) =>
        Effect.promise(() =>
          new Promise<any>((resolve) => {
            const poll = () => {
              const hit = frames.find(pred)
              if (hit !== undefined) resolve(hit)
              else setTimeout(poll, 10)
            }
            poll()
          })
        )
      const hello = yield* waitFor((f) => f.type === "hello")
      expect(hello.events).toContain("matrix.verification.requested")
      const first = yield* waitFor((f) => f.event === "channel.status")
      expect(first.seq).toBe(1)
      expect(first.payload.channels[0]).toMatchObject({ id: "matrix", status: "connected" })

      yield* channels.setState("matrix", "error", { message: "sync failed", kind: "sync-failed" })
      const changed = yield* waitFor((f) => f.event === "channel.status" && f.payload.channels[0]?.status === "error")
      expect(changed.payload.channels[0].extra.lastErrorKind).toBe("sync-failed")

      yield* publishVerification("requested", { flowId: "flow-1", state: "requested" })
      const requested = yield* waitFor((f) => f.event === "matrix.verification.requested")
      expect(requested.payload.verification).toEqual({ flowId: "flow-1", state: "requested" })
      expect(typeof requested.payload.ts).toBe("number")
      yield* publishVerification("updated", { flowId: "flow-1", state: "ready" })
      const updated = yield* waitFor((f) => f.event === "matrix.verification.updated")
      expect(updated.seq).toBeGreaterThan(requested.seq)
      ws.close()
      yield* channels.setState("matrix", "connected")
      for (const f of frames) seen.push(JSON.stringify(f))
    }))

  it.effect("no response body ever contained the gateway token", () =>
    Effect.sync(() => {
      expect(seen.length).toBeGreaterThan(20)
      for (const body of seen) expect(body).not.toContain(TOKEN)
    }))
})
