import { Context, Effect, Layer, PubSub, type Queue, type Scope } from "effect"

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

export class EventBus extends Context.Tag("cara/EventBus")<EventBus, EventBusShape>() {
  static readonly Live = Layer.effect(
    EventBus,
    Effect.gen(function*() {
      const hub = yield* PubSub.sliding<GatewayEvent>(BACKLOG)
      return {
        publish: (event) => Effect.asVoid(PubSub.publish(hub, event)),
        subscribe: PubSub.subscribe(hub)
      } satisfies EventBusShape
    })
  )
}

/** Publishes `matrix.verification.requested|updated` with the reference's payload `{ verification, ts }`. */
export const publishVerification = (
  which: "requested" | "updated",
  verification: unknown
) =>
  Effect.flatMap(EventBus, (bus) =>
    bus.publish({ event: `matrix.verification.${which}`, payload: { verification, ts: Date.now() } })
  )
