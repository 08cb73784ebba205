// Redacted questions (issue 20 §3) over the ledger and the transport, without the SDK: a redacted question is
// not answered, and when its answer already went out, cara redacts the answer too (`matrix.redactAnswers`).
// The ledger's `redacted` table makes it durable and once-only: a restart finishes an interrupted one.
import { Duration, Effect, Option, Schedule, Schema } from "effect"
import { RoomId } from "../domain/matrix.js"
import { redactAnswerTxnId } from "../domain/relations.js"
import type { RelationsLedgerShape } from "../services/Ledger.js"
import type { MatrixTransportShape } from "../services/MatrixTransport.js"

export interface Redactions {
  /** The question was redacted (by a redaction that counts): it is not answered. */
  readonly isRedacted: (eventId: string) => Effect.Effect<boolean>
  /** Records a redaction that counts, durably (once); true when it is new. */
  readonly mark: (eventId: string, roomId: string, redactionId: string) => Effect.Effect<boolean>
  /** `mark`, then takes back what cara already sent for the question (`settle`). */
  readonly record: (eventId: string, roomId: string, redactionId: string) => Effect.Effect<void>
  /**
   * Finishes a redacted question once it is committed: its answer's events are redacted (when configured)
   * and the row is marked done. Nothing for a question that is not redacted, or not committed yet.
   */
  readonly settle: (eventId: string) => Effect.Effect<void>
  /** At start: the redacted questions whose answer a stop left unredacted. */
  readonly sweep: Effect.Effect<void>
}

export interface RedactionDeps {
  readonly ledger: RelationsLedgerShape
  readonly transport: Pick<MatrixTransportShape, "redact">
  /** `matrix.redactAnswers` */
  readonly redactAnswers: boolean
  /** Attempts per answer event (a bounded retry; what is left is retried at the next start). */
  readonly attempts?: number
  readonly baseDelay?: Duration.DurationInput
}

const decodeRoom = Schema.decodeUnknownOption(RoomId)

const log = (message: string, eventId: string) =>
  Effect.logInfo(message).pipe(Effect.annotateLogs({ service: "Inbound", eventId }))

/** Ledger calls: a failing one is logged and counts as "nothing to do" (the next start tries again). */
const ledgerCall = <A>(what: string, f: () => A, fallback: A) =>
  Effect.try(f).pipe(
    Effect.catchAll((e) =>
      Effect.logWarning(`inbound ledger (${what}) failed: ${String(e.error)}`).pipe(Effect.as(fallback))
    )
  )

export const makeRedactions = (deps: RedactionDeps): Redactions => {
  const { ledger, redactAnswers, transport } = deps
  const retry = Schedule.exponential(deps.baseDelay ?? "500 millis").pipe(
    Schedule.intersect(Schedule.recurs(Math.max(0, (deps.attempts ?? 4) - 1)))
  )

  /** Redacts one of cara's answer events under its derived transaction id; false when it could not. */
  const redactOne = (roomId: RoomId, answerId: string) => {
    const redact = transport.redact
    if (redact === undefined) return Effect.succeed(false)
    return Effect.tryPromise(() => redact(roomId, answerId, redactAnswerTxnId(answerId))).pipe(
      Effect.retry(retry),
      Effect.as(true),
      Effect.catchAll((e) =>
        Effect.logWarning(`redacting an answer failed; retried at the next start: ${String(e.error)}`).pipe(
          Effect.annotateLogs({ service: "Inbound", eventId: answerId }),
          Effect.as(false)
        )
      )
    )
  }

  const settle = (eventId: string) =>
    Effect.gen(function*() {
      const row = yield* ledgerCall("redacted", () => ledger.redacted(eventId), undefined)
      if (row === undefined || row.done) return
      const ids = yield* ledgerCall("reply ids", () => ledger.replyIds(eventId), undefined)
      // claimed (being answered): the answer's check before the send sees the row, then settles it
      if (ids === undefined) return
      const room = decodeRoom(row.roomId)
      if (redactAnswers && ids.length > 0 && Option.isSome(room)) {
        for (const id of ids) {
          if (!(yield* redactOne(room.value, id))) return
        }
        yield* log(`Matrix answer redacted: its question was redacted (${ids.length} event(s))`, eventId)
      }
      yield* ledgerCall("redacted done", () => ledger.redactedDone(eventId), undefined)
    })

  const mark = (eventId: string, roomId: string, redactionId: string) =>
    ledgerCall("redacted add", () => ledger.redactedAdd(eventId, roomId, redactionId, Date.now()), false).pipe(
      Effect.tap((added) => (added ? log("Matrix question redacted; it is not answered", eventId) : Effect.void))
    )

  return {
    isRedacted: (eventId) => ledgerCall("redacted", () => ledger.redacted(eventId) !== undefined, false),
    mark,
    record: (eventId, roomId, redactionId) => Effect.zipRight(mark(eventId, roomId, redactionId), settle(eventId)),
    settle,
    sweep: Effect.flatMap(
      ledgerCall("redacted open", () => ledger.redactedOpen(), []),
      (rows) => Effect.forEach(rows, (r) => settle(r.eventId), { discard: true })
    )
  }
}
