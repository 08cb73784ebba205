import { Context, type Effect } from "effect"
import type { DlqError, DlqRecord } from "../domain/dlq.js"
import type { RoomFacts } from "../domain/inboundGate.js"
import type { EventId, InboundEvent, RoomId } from "../domain/matrix.js"

export type { RoomFacts } from "../domain/inboundGate.js"

/** An event by its id and room (ledger rows). */
export interface RoomEvent {
  readonly eventId: EventId
  readonly roomId: RoomId
}

/**
 * The inbound pipeline: gates (allowlist, msgtype, own messages, edits, size, invisible bodies, history,
 * group mentions), the durable exactly-once ledger (claim → agent → reply → commit) and the undecryptable
 * event register. Failures are counted in the channel status, never raised to the sync loop.
 */
export interface InboundShape {
  /**
   * One decrypted (or plain) room message from the sync loop. Returns once the event is gated and, when it
   * is to be answered, durably claimed; the answer itself runs in the background (one room at a time).
   */
  readonly offer: (event: InboundEvent, room: RoomFacts) => Effect.Effect<void>
  /**
   * DLQ replay of one record: answers it in the foreground (claim, agent, reply, commit) and succeeds once
   * that is durable, or at once when the ledger says it was already answered.
   */
  readonly redeliver: (record: DlqRecord) => Effect.Effect<void, DlqError>
  /** DLQ replay of an outbound record: sends its stored answer under the original transaction ids. */
  readonly resend: (record: DlqRecord) => Effect.Effect<void, DlqError>
  /** Answers whose send failed, retried while the homeserver is reachable (OutboundLive's makeReplyRetry). */
  readonly replies: {
    /** Starts the retry rounds; once, after the start-up resume of unfinished events. */
    readonly start: Effect.Effect<void>
    /** A successful sync: a round now. */
    readonly kick: Effect.Effect<void>
  }
  /** True when the event was already answered (committed in the ledger). */
  readonly isCommitted: (eventId: EventId) => Effect.Effect<boolean>
  /**
   * Events claimed but not committed (a crash interrupted them): the runtime re-fetches and re-offers them.
   * Ledger rows whose ids do not decode are left out (logged).
   */
  readonly unfinished: Effect.Effect<ReadonlyArray<RoomEvent>>
  /** Undecryptable events: remember one, forget one (decrypted or given up), list them (restart). */
  readonly utd: {
    readonly add: (eventId: EventId, roomId: RoomId) => Effect.Effect<void>
    readonly remove: (eventId: EventId) => Effect.Effect<boolean>
    readonly list: Effect.Effect<ReadonlyArray<RoomEvent>>
  }
}

export class Inbound extends Context.Tag("cara/Inbound")<Inbound, InboundShape>() {}

/**
 * What the inbound pipeline's pending replies need from the running client: its view of the homeserver
 * (a recent successful sync), and how to re-fetch and re-offer an event it does not hold.
 */
export interface InboundHooksShape {
  readonly reachable: Effect.Effect<boolean>
  readonly resume: (eventId: string, roomId: string) => Effect.Effect<void>
}

export class InboundHooks extends Context.Tag("cara/InboundHooks")<InboundHooks, InboundHooksShape>() {}
