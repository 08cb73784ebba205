import { Context, type Effect, type Option, type Scope } from "effect"
import type { DlqDetail, DlqError, DlqRecord, DlqRecordNotFound, DlqReplayReport, DlqSummary } from "../domain/dlq.js"

/**
 * What replay hands a record to: the Matrix runtime registers one for as long as it runs. `dispatch` must
 * return only once the event's handling is durable (answered and committed in the inbound ledger, or
 * already committed earlier), so a record is removed only after that.
 */
export interface DlqDispatcher {
  /** The allowlist as it is now (it may have changed since the record was written). */
  readonly allowed: (senderId: string) => boolean
  readonly dispatch: (record: DlqRecord) => Effect.Effect<void, DlqError>
  /**
   * An outbound record (an answer that could not be sent): sends `record.text` as the reply to
   * `record.eventId` under the same transaction ids as the first try, so a send that did reach the
   * homeserver is not posted twice; returns once it is sent.
   */
  readonly resend: (record: DlqRecord) => Effect.Effect<void, DlqError>
  /** Called after a record is appended: the runtime schedules a round at `nextRetryAt`. */
  readonly wake?: Effect.Effect<void>
}

export interface DlqListing {
  readonly records: ReadonlyArray<DlqSummary>
  readonly undecodable: number
}

export type DlqSelector = { readonly _tag: "One"; readonly id: string } | { readonly _tag: "All" }

/**
 * The dead-letter queue `{state_dir}/matrix/inbound_dlq.jsonl` (reference §7.6): encrypted records of events
 * whose durable handling failed (inbound) and of answers that could not be sent (outbound, our addition),
 * replayed after successful syncs, inspectable and purgeable by the operator. Counters go to ChannelStatus (`extra.inboundDlq*`) and Metrics.
 */
export interface DlqShape {
  /**
   * Appends one record (fsync'd). A failure also sets the channel's durability error (channel `error`)
   * until a later append or replay succeeds.
   */
  readonly append: (record: DlqRecord) => Effect.Effect<void, DlqError>
  /** Decodable records, oldest first, and how many lines cannot be decoded now (kept or to be quarantined). */
  readonly list: Effect.Effect<DlqListing, DlqError>
  readonly show: (id: string, reveal: boolean) => Effect.Effect<DlqDetail, DlqError | DlqRecordNotFound>
  /** Operator replay: ignores the backoff. Needs a registered dispatcher (`matrix-runtime-unavailable` otherwise). */
  readonly replay: (selector: DlqSelector) => Effect.Effect<DlqReplayReport, DlqError | DlqRecordNotFound>
  /** Automatic replay after a successful sync: only records whose backoff has expired. */
  readonly replayDue: Effect.Effect<DlqReplayReport, DlqError>
  /**
   * When the earliest record held back by its backoff is due again (epoch ms), if any: the runtime replays
   * then too, so a retry does not wait for the next sync (up to the long poll's 30 s in a quiet room).
   */
  readonly nextRetryAt: Effect.Effect<Option.Option<number>>
  readonly purge: (selector: DlqSelector) => Effect.Effect<number, DlqError | DlqRecordNotFound>
  /** Exact number of non-empty lines in the live file. */
  readonly count: Effect.Effect<number, DlqError>
  /** Registers the dispatcher for the life of the scope. */
  readonly register: (dispatcher: DlqDispatcher) => Effect.Effect<void, never, Scope.Scope>
}

export class Dlq extends Context.Tag("cara/Dlq")<Dlq, DlqShape>() {}
