import { Context } from "effect"

export type LedgerState = "claimed" | "committed"

/** An answer whose send failed at least once and that is not sent yet (`outbound_pending`). */
export interface PendingReplyRow {
  readonly eventId: string
  readonly roomId: string
  readonly firstFailedAt: number
  readonly attempts: number
  readonly lastError: string
}

/** A feedback reaction as the ledger keeps it (ids and polarity only, like its audit record). */
export interface FeedbackRow {
  readonly reactionEventId: string
  readonly answerEventId: string
  readonly roomId: string
  readonly userId: string
  readonly value: "positive" | "negative"
  readonly removed: boolean
}

/** Redactions and feedback (src/layers/relationsLedger.ts): tables of the same ledger. */
export interface RelationsLedgerShape {
  /** The question (and its room) one of cara's reply events answers (any committed answer's ids). */
  readonly questionOf: (replyId: string) => { readonly eventId: string; readonly roomId: string } | undefined
  /** The reply ids of a committed question; undefined when it is not committed. */
  readonly replyIds: (eventId: string) => ReadonlyArray<string> | undefined
  /** Records that `eventId` was redacted (by a redaction that counts); false when it already was. */
  readonly redactedAdd: (eventId: string, roomId: string, redactionId: string, now: number) => boolean
  /** `done`: the question's answer, if any, is redacted too (or there was none to redact). */
  readonly redacted: (eventId: string) => { readonly roomId: string; readonly done: boolean } | undefined
  readonly redactedDone: (eventId: string) => void
  /** Redacted questions that were answered and whose answer is not redacted yet (a restart finishes them). */
  readonly redactedOpen: () => Array<{ eventId: string; roomId: string }>
  /** Records a feedback reaction; false when this reaction event was recorded before. */
  readonly feedbackAdd: (f: Omit<FeedbackRow, "removed">, now: number) => boolean
  readonly feedback: (reactionId: string) => FeedbackRow | undefined
  /** The feedback reaction was redacted; false when it was already removed (or never recorded). */
  readonly feedbackRemoved: (reactionId: string, now: number) => boolean
}

export interface LedgerShape extends RelationsLedgerShape {
  readonly state: (eventId: string) => LedgerState | undefined
  /** Idempotent: a second claim of the same event changes nothing. */
  readonly claim: (eventId: string, roomId: string, now: number) => void
  readonly commit: (eventId: string, replyIds: ReadonlyArray<string>, now: number) => void
  readonly unfinished: () => Array<{ eventId: string; roomId: string }>
  readonly utdAdd: (eventId: string, roomId: string, now: number) => void
  readonly utdRemove: (eventId: string) => boolean
  readonly utdList: () => Array<{ eventId: string; roomId: string }>
  /** One more failed send attempt of the answer to `eventId` (the row is created by the first). */
  readonly pendingFailed: (eventId: string, roomId: string, error: string, now: number) => void
  /** Oldest first. A row goes with the event's commit (sent, or in the DLQ). */
  readonly pending: () => Array<PendingReplyRow>
  /** Records that the answer to `eventId` started streaming into the room (before its first chunk is sent). */
  readonly streamedAdd: (eventId: string, now: number) => void
  /** Whether the answer to `eventId` may have been streamed (a resumed or re-sent answer finishes it with an edit). */
  readonly streamed: (eventId: string) => boolean
  readonly close: () => void
}

/**
 * The inbound ledger (`{state_dir}/matrix/inbound-ledger.sqlite`): claims, commits, held undecryptable
 * events and pending replies, open for the life of the Matrix runtime (LedgerLive in InboundLive.ts).
 */
export class Ledger extends Context.Tag("cara/Ledger")<Ledger, LedgerShape>() {}
