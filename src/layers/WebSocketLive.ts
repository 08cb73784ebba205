import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect, Stream } from "effect"
import { BadRequest, WS_PROTOCOL_VERSION, type WsFrame } from "../domain/api.js"
import type { ChannelInfo } from "../domain/channel.js"
import { ChannelStatus } from "../services/ChannelStatus.js"
import { EventBus, type GatewayEvent } from "../services/EventBus.js"
import { Metrics } from "../services/Metrics.js"
import { version } from "../version.js"
// Layer imports by design: /ws is part of the gateway and shares its auth guard.
import { errorResponse, GatewayGuard } from "./GatewayAuth.js"

/** Events a client can receive; `channel.status` carries the same shape as `GET /control/channels` plus `ts`. */
export const WS_EVENTS = ["channel.status", "matrix.verification.requested", "matrix.verification.updated"] as const

export const channelStatusEvent = (all: ReadonlyArray<ChannelInfo>): GatewayEvent => ({
  event: "channel.status",
  payload: {
    total: all.length,
    connected: all.filter((c) => c.status === "connected").length,
    channels: all,
    ts: Date.now()
  }
})

/**
 * The handshake headers RFC 6455 §4.2.1 requires, checked here: the ws library answers a bad one by
 * destroying the socket without ever completing the platform's upgrade, which left that request's fiber
 * waiting and SIGTERM hanging (issue #16.4).
 */
export const checkHandshake = (headers: Readonly<Record<string, string | undefined>>): BadRequest | undefined => {
  const key = headers["sec-websocket-key"]?.trim()
  if (key === undefined || !/^[A-Za-z0-9+/]{22}==$/.test(key)) {
    return new BadRequest({
      kind: "websocket-handshake-invalid",
      message: "Sec-WebSocket-Key is missing or not 16 base64-encoded bytes"
    })
  }
  if (headers["sec-websocket-version"]?.trim() !== "13") {
    return new BadRequest({ kind: "websocket-handshake-invalid", message: "Sec-WebSocket-Version must be 13" })
  }
  return undefined
}

/**
 * `GET /ws`: authenticated like the control routes (bearer header, checked before the upgrade, so a
 * refused client gets the HTTP error body). The server pushes a `hello` frame, the current channel status,
 * then every status change and every EventBus event, numbered by `seq`. Client messages are read and ignored.
 */
export const WebSocketLive = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function*() {
    const guard = yield* GatewayGuard
    const channels = yield* ChannelStatus
    const bus = yield* EventBus
    const metrics = yield* Metrics

    const session = (request: HttpServerRequest.HttpServerRequest) =>
      Effect.scoped(
        Effect.gen(function*() {
          // Bounded: a handshake the ws library aborts would otherwise leave this fiber waiting for good.
          const socket = yield* request.upgrade.pipe(Effect.timeout("10 seconds"))
          const write = yield* socket.writer
          const events = yield* bus.subscribe
          yield* Effect.acquireRelease(
            metrics.increment("carapace_gateway_ws_connections"),
            () => metrics.increment("carapace_gateway_ws_connections", {}, -1)
          )
          const send = (frame: WsFrame) => write(JSON.stringify(frame))
          let seq = 0
          // Forked: the socket only accepts writes once `runRaw` below is reading.
          yield* send({ type: "hello", protocol: WS_PROTOCOL_VERSION, version, events: [...WS_EVENTS] }).pipe(
            Effect.zipRight(
              Stream.merge(Stream.map(channels.changes, channelStatusEvent), Stream.fromQueue(events)).pipe(
                Stream.runForEach((e) => send({ type: "event", event: e.event, payload: e.payload, seq: ++seq }))
              )
            ),
            Effect.forkScoped
          )
          // Ends when the client goes away; a non-normal close is not a daemon error.
          yield* socket.runRaw(() => Effect.void).pipe(Effect.catchAll(() => Effect.void))
        })
      )

    yield* router.get(
      "/ws",
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const refused = yield* Effect.flip(guard.authorize(request)).pipe(Effect.option)
        if (refused._tag === "Some") return errorResponse(refused.value)
        if (request.headers["upgrade"]?.toLowerCase() !== "websocket") {
          return errorResponse(
            new BadRequest({ kind: "websocket-upgrade-required", message: "GET /ws needs a WebSocket upgrade request" })
          )
        }
        const handshake = checkHandshake(request.headers)
        if (handshake !== undefined) return errorResponse(handshake)
        yield* session(request).pipe(Effect.catchAll((e) => Effect.logDebug(`websocket session ended: ${e._tag}`)))
        return HttpServerResponse.empty()
      })
    )
  })
)
