import { Clock, Context, Effect, Layer, PubSub, type Queue, type Scope } from "effect"
import { makeKeyedBuckets, VERIFICATION_BROADCAST_LIMIT } from "../domain/rateLimit.js"
import { Metrics } from "./Metrics.js"

/**
 * Gateway events broadcast to WebSocket clients (`GET /ws`). Channel status changes are streamed from the
 * ChannelStatus registry directly; everything else (verification flows today) is published here.
 */
export type GatewayEventName = "matrix.verification.requested" | "matrix.verification.updated" | (string & {})

export interface GatewayEvent {
  readonly event: GatewayEventName
  /** JSON-serialisable; never key material or tokens. */
  readonly payload: unknown
}

export interface EventBusShape {
  readonly publish: (event: GatewayEvent) => Effect.Effect<void>
  /** A subscription for the life of the scope (one per WebSocket connection). */
  readonly subscribe: Effect.Effect<Queue.Dequeue<GatewayEvent>, never, Scope.Scope>
}

// Per-subscriber backlog: a stalled client loses its oldest events instead of growing the daemon's memory.
const BACKLOG = 1024

/**
 * The rate-limit key of a verification event (reference §6.5): the peer, and its device or else the flow;
 * `undefined` for any other event (not limited).
 */
const verificationKey = (event: GatewayEvent): { peer: string; key: string } | undefined => {
  if (!event.event.startsWith("matrix.verification.")) return undefined
  const v = (event.payload as { verification?: { userId?: unknown; deviceId?: unknown; flowId?: unknown } } | undefined)
    ?.verification
  if (typeof v?.userId !== "string") return undefined
  const which = typeof v.deviceId === "string" ? `device:${v.deviceId}` : `flow:${String(v.flowId)}`
  return { peer: v.userId, key: `${v.userId}\u0000${which}` }
}

export class EventBus extends Context.Tag("cara/EventBus")<EventBus, EventBusShape>() {
  /**
   * Verification events are rate-limited per peer device (a peer flooding requests cannot flood `/ws`); the
   * drops are counted in Metrics.
   */
  static readonly Live = Layer.effect(
    EventBus,
    Effect.gen(function*() {
      const hub = yield* PubSub.sliding<GatewayEvent>(BACKLOG)
      const metrics = yield* Metrics
      const buckets = makeKeyedBuckets(VERIFICATION_BROADCAST_LIMIT)
      const publish = (event: GatewayEvent) =>
        Effect.gen(function*() {
          const k = verificationKey(event)
          if (k !== undefined && !buckets.take(k.peer, k.key, yield* Clock.currentTimeMillis)) {
            yield* metrics.increment("carapace_matrix_verification_rate_limit_drops_total")
            return yield* Effect.logDebug(`verification event not broadcast (rate limit): ${event.event}`)
          }
          yield* PubSub.publish(hub, event)
        })
      return { publish, subscribe: PubSub.subscribe(hub) } satisfies EventBusShape
    })
  )
}

/** Publishes `matrix.verification.requested|updated` with the reference's payload `{ verification, ts }`. */
export const publishVerification = (
  which: "requested" | "updated",
  verification: unknown
) =>
  Effect.flatMap(
    EventBus,
    (bus) => bus.publish({ event: `matrix.verification.${which}`, payload: { verification, ts: Date.now() } })
  )
