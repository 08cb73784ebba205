import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiError from "@effect/platform/HttpApiError"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Cause, Context, Effect, Exit, Layer, Option, Schema } from "effect"
import { createServer } from "node:http"
import type { Socket } from "node:net"
import {
  BadGateway,
  BadGatewayKind,
  BadRequest,
  CaraApi,
  Channels,
  ControlStatus,
  DeviceList,
  DlqList,
  DlqPurgeResult,
  DlqReplayResult,
  DlqShow,
  Health,
  isApiError,
  NotFound,
  NotReady,
  PROMETHEUS_CONTENT_TYPE,
  Ready,
  SendTestResult,
  ServiceUnavailable,
  VerificationList,
  VerificationResult
} from "../domain/api.js"
import type { ChannelInfo } from "../domain/channel.js"
import type { DlqError, DlqRecordNotFound } from "../domain/dlq.js"
import { bindToHost } from "../domain/gateway.js"
import { verificationTarget, type VerificationUnavailable } from "../domain/verification.js"
import { Audit, type AuditShape } from "../services/Audit.js"
import { ChannelStatus } from "../services/ChannelStatus.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"
import { Dlq, type DlqSelector, type DlqShape } from "../services/Dlq.js"
import { EventBus } from "../services/EventBus.js"
import { MatrixControl, type MatrixControlError } from "../services/MatrixControl.js"
import { Metrics } from "../services/Metrics.js"
import { Verification, type VerificationShape } from "../services/Verification.js"
import { version } from "../version.js"
// Layer imports by design: the gateway is built from its parts: auth guard, /ws, channel status and metrics.
import { ChannelStatusLive } from "./ChannelStatusLive.js"
import {
  canonicalPath,
  errorResponse,
  GatewayAuthorizationLive,
  GatewayGuardLive,
  NON_CANONICAL_MESSAGE
} from "./GatewayAuth.js"
import { MetricsLive } from "./MetricsLive.js"
import { WebSocketLive } from "./WebSocketLive.js"

// Uptime is monotonic: a wall-clock step (NTP) must not make it jump or go negative.
const startedMono = performance.now()
const startedAt = new Date()
const uptimeSeconds = () => Math.floor((performance.now() - startedMono) / 1000)

const readyChannels = (all: ReadonlyArray<ChannelInfo>, now = Date.now()) =>
  all.map((c) => ({
    id: c.id,
    status: c.status,
    ...(c.extra === undefined ? {} : {
      lastSuccessfulSyncAgoSeconds: c.extra.lastSuccessfulSyncAt === null
        ? null
        : Math.max(0, Math.floor((now - c.extra.lastSuccessfulSyncAt) / 1000))
    })
  }))

const HealthLive = HttpApiBuilder.group(CaraApi, "health", (handlers) =>
  Effect.gen(function*() {
    const channels = yield* ChannelStatus
    const health = () => Effect.sync(() => new Health({ status: "ok", version, uptimeSeconds: uptimeSeconds() }))
    return handlers
      .handle("health", health)
      .handle("live", health)
      // Raw, because a 503 here carries `Retry-After` (process managers and load balancers read it).
      .handleRaw("ready", () =>
        Effect.gen(function*() {
          const all = yield* channels.get
          const failed = all.filter((c) => c.status === "error")
          if (failed.length === 0) {
            return HttpServerResponse.unsafeJson(
              Schema.encodeSync(Ready)(
                new Ready({ status: "ready", version, uptimeSeconds: uptimeSeconds(), channels: readyChannels(all) })
              )
            )
          }
          const body = new NotReady({
            status: "not_ready",
            version,
            uptimeSeconds: uptimeSeconds(),
            channels: readyChannels(all),
            reasons: failed.map((c) =>
              `channel ${c.id} is in error${c.extra?.lastErrorKind !== undefined ? ` (${c.extra.lastErrorKind})` : ""}`
            )
          })
          return HttpServerResponse.unsafeJson(Schema.encodeSync(NotReady)(body), {
            status: 503,
            headers: { "retry-after": "5" }
          })
        }))
  }))

export const channelsView = (all: ReadonlyArray<ChannelInfo>) =>
  new Channels({ total: all.length, connected: all.filter((c) => c.status === "connected").length, channels: all })

const ControlLive = HttpApiBuilder.group(CaraApi, "control", (handlers) =>
  Effect.gen(function*() {
    const channels = yield* ChannelStatus
    return handlers
      .handle("channels", () => Effect.map(channels.get, channelsView))
      .handle("status", () =>
        Effect.map(channels.get, (all) =>
          new ControlStatus({
            ok: true,
            version,
            startedAt: startedAt.toISOString().replace(/\.\d{3}Z$/, "Z"),
            uptimeSeconds: uptimeSeconds(),
            connectedChannels: all.filter((c) => c.status === "connected").length,
            totalChannels: all.length,
            runtime: { name: "cara", version, platform: process.platform, arch: process.arch }
          })))
  }))

// Reference §9.5: these runtime failures are "try again later", reported as a failed delivery (200).
const TRANSIENT_SEND_KINDS = new Set(["send-failed", "command-queue-full", "sync-failed", "auth-probe"])
// ... and these mean no runtime can take the call at all (503 matrix-runtime-unavailable).
// A runtime that is not (yet) connected is "unavailable", as on every other Matrix endpoint (#17.7).
const UNAVAILABLE_KINDS = new Set([
  "matrix-runtime-unavailable",
  "not-connected",
  "auth",
  "auth-token-revoked",
  "auth-session-user-mismatch",
  "auth-session-device-mismatch",
  "auth-session-missing-device-id"
])

// Room versions before 12 have `!opaque:server`; from v12 on (MSC4291) a room id is `!` + a hash, no server.
const ROOM_ID = /^![^:\s]+(:\S+)?$/
const MAX_TEXT_BYTES = 4096
const MAX_SEND_TEST_BODY = 5120

const MatrixLive = HttpApiBuilder.group(CaraApi, "matrix", (handlers) =>
  Effect.gen(function*() {
    const matrix = yield* MatrixControl
    return handlers.handle("sendTest", ({ payload }) =>
      Effect.gen(function*() {
        const text = payload.text.trim()
        if (!ROOM_ID.test(payload.roomId)) {
          return yield* new BadRequest({
            kind: "invalid-room-id",
            message: "roomId must be a Matrix room id like !abc:example.com or !abc (room settings → Advanced)"
          })
        }
        if (text === "") {
          return yield* new BadRequest({ kind: "invalid-string", message: "text is required and must not be blank" })
        }
        if (Buffer.byteLength(text, "utf8") > MAX_TEXT_BYTES) {
          return yield* new BadRequest({
            kind: "invalid-length",
            message: `text must be at most ${MAX_TEXT_BYTES} bytes`
          })
        }
        return yield* matrix.sendTest(payload.roomId, text).pipe(
          Effect.map((eventId) =>
            eventId === ""
              ? new SendTestResult({
                ok: false,
                delivery: {
                  outcome: "failed",
                  error: "the homeserver returned no event id",
                  retryability: { kind: "terminal" },
                  conversationId: payload.roomId
                }
              })
              : new SendTestResult({
                ok: true,
                delivery: { outcome: "sent", messageId: eventId, conversationId: payload.roomId }
              })
          ),
          Effect.catchAll((e: MatrixControlError): Effect.Effect<SendTestResult, ServiceUnavailable | BadGateway> => {
            if (TRANSIENT_SEND_KINDS.has(e.kind)) {
              return Effect.succeed(
                new SendTestResult({
                  ok: false,
                  delivery: {
                    outcome: "failed",
                    error: e.message,
                    retryability: {
                      kind: "transient",
                      ...(e.retryAfterMs !== undefined ? { retryAfterMs: e.retryAfterMs } : {})
                    },
                    conversationId: payload.roomId,
                    kind: e.kind
                  }
                })
              )
            }
            if (UNAVAILABLE_KINDS.has(e.kind)) {
              return Effect.fail(
                new ServiceUnavailable({
                  kind: "matrix-runtime-unavailable",
                  message: e.kind === "matrix-runtime-unavailable"
                    ? e.message
                    : `Matrix runtime unavailable (${e.kind}); see GET /control/channels for the cause`,
                  retryAfterMs: 5000
                })
              )
            }
            // Kept as the runtime's own kind (room-not-found, unsupported-room, ...): more useful than a generic one.
            // (a kind the API does not list is a terminal send failure: src/domain/api.ts BadGatewayKind)
            return Effect.fail(
              new BadGateway({ kind: Schema.is(BadGatewayKind)(e.kind) ? e.kind : "send-terminal", message: e.message })
            )
          })
        )
      }))
  }))

/**
 * What the gateway answers from besides its own services: the DLQ, the verification registry and the audit
 * log. Each is an explicit requirement; the daemon provides all three (GatewayBackendsLive, from Dlq,
 * Verification and Audit), and a gateway without them (the gateway-only tests) says so with the
 * `…Unavailable` layers: its DLQ and verification endpoints then answer 503 and no audit line is written.
 */
export class GatewayDlq extends Context.Tag("cara/gateway/Dlq")<GatewayDlq, Option.Option<DlqShape>>() {}
export class GatewayVerification
  extends Context.Tag("cara/gateway/Verification")<GatewayVerification, Option.Option<VerificationShape>>()
{}
export class GatewayAudit extends Context.Tag("cara/gateway/Audit")<GatewayAudit, Option.Option<AuditShape>>() {}

export const GatewayDlqLive = Layer.effect(GatewayDlq, Effect.map(Dlq, Option.some))
export const GatewayVerificationLive = Layer.effect(GatewayVerification, Effect.map(Verification, Option.some))
export const GatewayAuditLive = Layer.effect(GatewayAudit, Effect.map(Audit, Option.some))
export const GatewayBackendsLive = Layer.mergeAll(GatewayDlqLive, GatewayVerificationLive, GatewayAuditLive)

export const GatewayDlqUnavailable = Layer.succeed(GatewayDlq, Option.none())
export const GatewayVerificationUnavailable = Layer.succeed(GatewayVerification, Option.none())
export const GatewayAuditUnavailable = Layer.succeed(GatewayAudit, Option.none())
export const GatewayBackendsUnavailable = Layer.mergeAll(
  GatewayDlqUnavailable,
  GatewayVerificationUnavailable,
  GatewayAuditUnavailable
)

// The DLQ endpoints answer `matrix-runtime-unavailable` when the gateway has no DLQ (GatewayDlqUnavailable).
const dlqUnavailable = (e: DlqError) => new ServiceUnavailable({ kind: e.kind, message: e.message })
const dlqLookup = (e: DlqError | DlqRecordNotFound): NotFound | ServiceUnavailable =>
  e._tag === "DlqRecordNotFound" ? new NotFound({ kind: e.kind, message: e.message }) : dlqUnavailable(e)
const dlqReplayFailure = (e: DlqError | DlqRecordNotFound): NotFound | BadGateway | ServiceUnavailable =>
  e._tag === "DlqError" && e.kind === "dlq-dispatch-failure"
    ? new BadGateway({ kind: e.kind, message: e.message })
    : dlqLookup(e)

const DlqGroupLive = HttpApiBuilder.group(CaraApi, "dlq", (handlers) =>
  Effect.gen(function*() {
    const found = yield* GatewayDlq
    const withDlq = <A, E>(f: (dlq: DlqShape) => Effect.Effect<A, E>) =>
      Option.match(found, {
        onNone: () =>
          Effect.fail(
            new ServiceUnavailable({
              kind: "matrix-runtime-unavailable",
              message:
                "Matrix runtime unavailable: matrix is not enabled or has not started. Check matrix.enabled and the daemon log, then retry.",
              retryAfterMs: 5000
            })
          ),
        onSome: f
      })
    const selector = (
      p: { readonly id?: string | undefined; readonly all?: boolean | undefined }
    ): Effect.Effect<DlqSelector, BadRequest> =>
      p.all === true && p.id === undefined
        ? Effect.succeed({ _tag: "All" })
        : p.all !== true && p.id !== undefined && /^[0-9a-f]{16}$/.test(p.id)
        ? Effect.succeed({ _tag: "One", id: p.id })
        : Effect.fail(
          new BadRequest({
            kind: "invalid-request",
            message: "give either an id (16 hex characters, from `cara matrix dlq list`) or all: true"
          })
        )
    return handlers
      .handle("list", () =>
        withDlq((d) =>
          d.list.pipe(
            Effect.map((l) => new DlqList({ ok: true, records: l.records, undecodable: l.undecodable })),
            Effect.mapError(dlqUnavailable)
          )
        ))
      .handle("show", ({ path, urlParams }) =>
        withDlq((d) =>
          d.show(path.id, urlParams.reveal === "true").pipe(
            Effect.map((record) => new DlqShow({ ok: true, record })),
            Effect.mapError(dlqLookup)
          )
        ))
      .handle("replay", ({ payload }) =>
        Effect.flatMap(selector(payload), (sel) =>
          withDlq((d) =>
            d.replay(sel).pipe(
              Effect.map((report) => new DlqReplayResult({ ok: true, report })),
              Effect.mapError(dlqReplayFailure)
            )
          )))
      .handle("purge", ({ payload }) =>
        Effect.flatMap(selector(payload), (sel) =>
          withDlq((d) =>
            d.purge(sel).pipe(
              Effect.map((purged) => new DlqPurgeResult({ ok: true, purged })),
              Effect.mapError(dlqLookup)
            )
          )))
  }))

// Verification (reference §6): a gateway without the registry (GatewayVerificationUnavailable) answers 503.
const unavailable = (e?: VerificationUnavailable) =>
  new ServiceUnavailable({
    kind: e?.kind ?? "matrix-runtime-unavailable",
    message: e?.message ??
      "Matrix runtime unavailable: matrix is not enabled or has not started. Check matrix.enabled and the daemon log, then retry.",
    retryAfterMs: e?.retryAfterMs ?? 5000
  })

const VerificationGroupLive = HttpApiBuilder.group(CaraApi, "verification", (handlers) =>
  Effect.gen(function*() {
    const registry = yield* GatewayVerification
    // runs an action on the registry; the registry's own 503 joins the gateway's ServiceUnavailable
    const use = <A, E extends { readonly _tag: string }>(
      f: (v: VerificationShape) => Effect.Effect<A, E>
    ): Effect.Effect<A, Exclude<E, VerificationUnavailable> | ServiceUnavailable> =>
      Option.match(registry, {
        onNone: () => Effect.fail(unavailable()),
        onSome: (v) =>
          Effect.mapError(f(v), (e) =>
            e._tag === "VerificationUnavailable"
              ? unavailable(e as unknown as VerificationUnavailable)
              : e as Exclude<E, VerificationUnavailable>)
      })
    const result = (v: VerificationResult["verification"]) => new VerificationResult({ ok: true, verification: v })
    // reference §6.6: every start/accept/confirm/cancel leaves `matrix_verification_action` in audit.jsonl
    const auditLog = yield* GatewayAudit
    const audited = <E extends { readonly _tag: string }>(
      action: "start" | "accept" | "confirm" | "cancel",
      flowId: string | undefined,
      extra: Record<string, unknown>,
      run: Effect.Effect<VerificationResult, E>
    ) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const actor = Option.getOrElse(request.remoteAddress, () => "unknown")
        const exit = yield* Effect.exit(run)
        const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
        const data = {
          action,
          flow_id: Exit.isSuccess(exit) ? exit.value.verification.flowId : (flowId ?? null),
          outcome: Exit.isSuccess(exit) ? "ok" : "err",
          ...(Option.isSome(failure)
            ? { error_kind: (failure.value as { kind?: unknown }).kind ?? failure.value._tag }
            : {}),
          actor,
          remote_ip: actor,
          ...extra
        }
        yield* Effect.logWarning("matrix_verification_action").pipe(
          Effect.annotateLogs({ audit_event: "matrix_verification_action", ...data })
        )
        if (Option.isSome(auditLog)) {
          yield* auditLog.value.append("matrix_verification_action", data).pipe(
            Effect.catchAll((e) => Effect.logError(`writing the verification audit line failed: ${e.message}`))
          )
        }
        return yield* exit
      })
    const start = (
      { payload }: { readonly payload: { readonly userId: string; readonly deviceId?: string | undefined } }
    ) =>
      audited(
        "start",
        undefined,
        {},
        Effect.map(
          use((v) =>
            Effect.flatMap(verificationTarget(payload.userId, payload.deviceId), (t) => v.start(t.userId, t.deviceId))
          ),
          result
        )
      )
    return handlers
      .handle("list", () =>
        use((v) => Effect.map(v.list, (flows) => new VerificationList({ ok: true, verifications: flows }))))
      .handle("start", start)
      .handle("verify", start)
      .handle("accept", ({ path }) =>
        audited(
          "accept",
          path.flowId,
          {},
          Effect.map(
            use((v) =>
              v.accept(path.flowId)
            ),
            result
          )
        ))
      .handle("confirm", ({ path, payload }) =>
        audited(
          "confirm",
          path.flowId,
          { matches: payload.match },
          Effect.map(use((v) => v.confirm(path.flowId, payload.match)), result)
        ))
      .handle("cancel", ({ path }) =>
        audited(
          "cancel",
          path.flowId,
          {},
          Effect.map(use((v) => v.cancel(path.flowId)), result)
        ))
      .handle("devices", () => Effect.map(use((v) => v.devices), (devices) => new DeviceList({ ok: true, devices })))
  }))

const MetricsGroupLive = HttpApiBuilder.group(CaraApi, "metrics", (handlers) =>
  Effect.gen(function*() {
    const metrics = yield* Metrics
    return handlers.handleRaw("metrics", () =>
      Effect.map(metrics.render, (text) => HttpServerResponse.text(text, { contentType: PROMETHEUS_CONTENT_TYPE })))
  }))

/**
 * API-wide: request-shape failures become the common error body without echoing the input (it may hold a
 * secret sent by mistake); errors with `retryAfterMs` get their `Retry-After` header; body sizes are capped.
 */
const ErrorShapingLive = HttpApiBuilder.middleware(CaraApi, (app) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    // One spelling per route, before routing and before any guard: `/CONTROL/`, `//control`, `/%63ontrol`,
    // `/control/./` would otherwise risk reaching a handler past a prefix check (issue #16.3).
    if (canonicalPath(request.url) === undefined) {
      return errorResponse(new NotFound({ kind: "not-found", message: NON_CANONICAL_MESSAGE }))
    }
    const sendTest = request.url.startsWith("/control/matrix/send-test")
    const limit = sendTest ? MAX_SEND_TEST_BODY : 64 * 1024
    const declared = Number(request.headers["content-length"] ?? "0")
    if (declared > limit) {
      return errorResponse(new BadRequest({ kind: "body-too-large", message: `request body exceeds ${limit} bytes` }))
    }
    return yield* (app as unknown as Effect.Effect<HttpServerResponse.HttpServerResponse, unknown>).pipe(
      HttpIncomingMessage.withMaxBodySize(Option.some(limit)),
      Effect.catchAll((e) => {
        if (e instanceof HttpApiError.HttpApiDecodeError) {
          const where = [...new Set(e.issues.map((i) => i.path.join(".")).filter((p) => p !== ""))]
          return Effect.succeed(errorResponse(
            new BadRequest({
              kind: "invalid-request",
              message: `the request does not match the expected shape${
                where.length > 0 ? ` (check: ${where.join(", ")})` : ""
              }`
            })
          ))
        }
        if (isApiError(e)) return Effect.succeed(errorResponse(e))
        // A body that is not JSON at all fails in the platform's parser (RequestError / ParseError), which
        // would otherwise answer an empty 400: give it the documented envelope like every other refusal.
        const tag = (e as { readonly _tag?: unknown } | null)?._tag
        if (tag === "RequestError" || tag === "ParseError") {
          return Effect.succeed(errorResponse(
            new BadRequest({
              kind: "invalid-json",
              message: "the request body is not valid JSON: send a JSON object with Content-Type: application/json"
            })
          ))
        }
        return Effect.fail(e)
      }),
      // The platform parses a JSON body with `Effect.orDie(request.json)`, so a body that is not JSON arrives
      // here as a defect (a RequestError), not as a failure.
      Effect.catchAllDefect((d) =>
        (d as { readonly _tag?: unknown } | null)?._tag === "RequestError"
          ? Effect.succeed(errorResponse(
            new BadRequest({
              kind: "invalid-json",
              message: "the request body is not valid JSON: send a JSON object with Content-Type: application/json"
            })
          ))
          : Effect.die(d)
      )
    )
  }) as Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>)

const ApiLive = HttpApiBuilder.api(CaraApi).pipe(
  Layer.provide([HealthLive, ControlLive, MatrixLive, DlqGroupLive, VerificationGroupLive, MetricsGroupLive]),
  Layer.provide(ErrorShapingLive)
)

export interface ListenOptions {
  readonly host: string
  readonly port: number
}

// The one line an operator (or a process manager's health probe) waits for.
const ReadyLog = Layer.effectDiscard(
  HttpServer.addressWith((address) =>
    Effect.logInfo(`cara ${version} ready: gateway listening on ${HttpServer.formatAddress(address)}`)
  )
)

/** The control API and `/ws` on whatever HttpServer is provided (tests bring their own on port 0). */
export const ControlHttpApp = Layer.mergeAll(
  HttpApiBuilder.serve().pipe(Layer.provide(ApiLive), Layer.provide(WebSocketLive)),
  ReadyLog
).pipe(Layer.provide(GatewayAuthorizationLive))

/**
 * Serves the control API and `/ws` on `host:port`; the socket is released when the layer's scope closes.
 * Needs ChannelStatus, EventBus, Metrics, MatrixControl, GatewayGuard and the gateway backends (GatewayDlq,
 * GatewayVerification, GatewayAudit).
 */
export const ControlHttpLive = (options: ListenOptions) =>
  ControlHttpApp.pipe(
    Layer.provide(listenerDroppingConnections(options))
  )

/**
 * The Node listener, with every TCP connection it accepted destroyed when its scope closes. `server.close()`
 * waits for open connections, and an upgraded WebSocket, a half-sent body or a keep-alive client that never
 * reads would otherwise hold SIGTERM (and the port and `.matrix-rekey.lock`) forever (issue #16.4). The
 * finalizer is in a layer built on top of the server, so it runs before the server's own close.
 */
const listenerDroppingConnections = (options: ListenOptions) => {
  const sockets = new Set<Socket>()
  const make = () => {
    const server = createServer()
    server.on("connection", (socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
    })
    return server
  }
  const dropAll = Layer.scopedDiscard(Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const socket of sockets) socket.destroy()
    })
  ))
  return Layer.provideMerge(dropAll, NodeHttpServer.layer(make, { host: options.host, port: options.port }))
}

/** The gateway placed where the config says, with auth from `gateway.auth` (a refused setup fails startup). */
export const ControlHttpFromConfig = Layer.unwrapEffect(
  Effect.map(
    ConfigSecrets,
    ({ config }) => ControlHttpLive({ host: bindToHost(config.gateway.bind) ?? "127.0.0.1", port: config.gateway.port })
  )
).pipe(Layer.provide(GatewayGuardLive), Layer.provide(GatewayBackendsLive))

/**
 * The shared services the gateway reads and the channels write: the status registry, the event bus and
 * the metrics registry. Provide once at the top of the daemon so MatrixSync and the gateway see the same ones.
 */
export const GatewayServicesLive = EventBus.Live.pipe(
  Layer.provideMerge(MetricsLive),
  Layer.provideMerge(ChannelStatusLive)
)
