import { Context, type Effect } from "effect"
import type { EventId, MatrixError, RoomId } from "../domain/matrix.js"

/** One agent answer to post into a room. */
export interface OutboundReply {
  readonly roomId: RoomId
  readonly text: string
  /** The inbound event this answers: the reply relation and the base of every chunk's transaction id. */
  readonly inReplyTo: EventId
  /** The thread root, when the inbound message was in a thread (the answer stays in it). */
  readonly threadId?: EventId
}

export interface ReplyOptions {
  /** Attempts per chunk (default: the layer's `matrix.outbound.sendAttempts`). */
  readonly attempts?: number
  /** Called after every failed attempt (the ledger counts them, so a pending reply shows in the status). */
  readonly onFailedAttempt?: (detail: string) => Effect.Effect<void>
}

/**
 * The Matrix send path: one queue per room (answers keep their order), a stable transaction id per
 * chunk derived from the inbound event id (a retry, also after a crash, is deduplicated by the
 * homeserver), `M_LIMIT_EXCEEDED` / 5xx / network retries, Markdown rendered to sanitized HTML,
 * long answers split at paragraph boundaries; typing notifications and read receipts.
 */
export interface OutboundShape {
  /** Posts an answer; resolves with the event ids of its chunks, in order. */
  readonly reply: (reply: OutboundReply, options?: ReplyOptions) => Effect.Effect<ReadonlyArray<EventId>, MatrixError>
  /** The control API's probe message (`cara verify --matrix-to`): one plain message, its event id. */
  readonly sendTest: (roomId: RoomId, text: string) => Effect.Effect<EventId, MatrixError>
  /** Shows "typing…" while `effect` runs (refreshed), then clears it; typing failures never fail `effect`. */
  readonly whileTyping: <A, E, R>(roomId: RoomId, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Marks an event read (best effort). */
  readonly readReceipt: (roomId: RoomId, eventId: EventId) => Effect.Effect<void>
}

export class Outbound extends Context.Tag("cara/Outbound")<Outbound, OutboundShape>() {}
