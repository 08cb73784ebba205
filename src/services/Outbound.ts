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
  /**
   * The answer was streamed (src/layers/streamReply.ts) and this reply event of chunk 0 is in the room: the
   * send is the final `m.replace` edit of it with chunk 0 of `text`, then chunks 1.. as further replies.
   */
  readonly streamedReply?: EventId
  /**
   * A previous run may have streamed this answer without recording it (a resumed event, a re-send): chunk 0
   * is sent under its derived transaction id (the homeserver returns the earlier event if there was one),
   * then always the final edit of it, then the rest. The room ends with one complete answer either way.
   */
  readonly mayHaveStreamed?: boolean
}

/** A replacement of the content of one of the bot's own events (`m.replace`). */
export interface OutboundEdit {
  readonly roomId: RoomId
  /** The bot's event whose content is replaced. */
  readonly eventId: EventId
  /** The new text (Markdown, rendered like an answer; one event's worth). */
  readonly text: string
  /** Stable, caller-given: a retry (also after a restart) is deduplicated by the homeserver. */
  readonly txnId: string
  /** The thread the edited event is in (the local echo stays in it). */
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
  /**
   * Replaces the content of one of the bot's events with rendered `text` (through the room's queue, retried
   * like a chunk under `edit.txnId`); resolves with the edit's event id.
   */
  readonly edit: (edit: OutboundEdit, options?: ReplyOptions) => Effect.Effect<EventId, MatrixError>
  /** The control API's probe message (`cara verify --matrix-to`): one plain message, its event id. */
  readonly sendTest: (roomId: RoomId, text: string) => Effect.Effect<EventId, MatrixError>
  /** Shows "typing…" while `effect` runs (refreshed), then clears it; typing failures never fail `effect`. */
  readonly whileTyping: <A, E, R>(roomId: RoomId, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Marks an event read (best effort, in the background; a newer event of the room supersedes a queued one). */
  readonly readReceipt: (roomId: RoomId, eventId: EventId) => Effect.Effect<void>
}

export class Outbound extends Context.Tag("cara/Outbound")<Outbound, OutboundShape>() {}
