import { Effect } from "effect"
import type { EventId, InboundEvent } from "../domain/matrix.js"

// ---------------------------------------------------------------------------------------------------------
// Edits of questions (issue 20 point 3), in the inbound pipeline
//
// A valid edit (events.ts sets `replaces`) is an inbound event of its own: claimed and committed in the ledger
// under its own id, so a redelivered edit does nothing. What it does depends on the question it replaces:
// - answered (committed with a reply): a new turn with the new text, stored under the edit's id, whose answer
//   EDITS cara's reply (final-edit transaction id derived from the edit's id: a retry or restart edits once);
// - claimed but its answer has not started (waiting for the room): the answer uses the newest text, and the
//   edit is committed after it, without an answer of its own;
// - being answered: the edit waits for the room lock, then edits the reply as above;
// - unknown to the ledger (history, or a message that was never for cara): ignored.

export interface EditLedger {
  readonly state: (eventId: string) => "claimed" | "committed" | undefined
  readonly replyIds: (eventId: string) => ReadonlyArray<string> | undefined
  readonly commit: (eventId: string, replyIds: ReadonlyArray<string>, now: number) => void
}

export const makeEdits = (ledger: EditLedger, inProgress: Set<string>) => {
  const started = new Set<string>()
  const folded = new Map<string, { readonly body: string; readonly editIds: ReadonlyArray<string> }>()

  return {
    /** The question of an edit is one cara knows (answered, or being answered); other edits are ignored. */
    known: (ev: InboundEvent) =>
      Effect.suspend(() =>
        ev.replaces === undefined || inProgress.has(ev.replaces) || ledger.state(ev.replaces) !== undefined
          ? Effect.succeed(true)
          : Effect.as(
            Effect.logDebug("Matrix edit of a message cara never answered: ignored").pipe(
              Effect.annotateLogs({ eventId: ev.eventId })
            ),
            false
          )
      ),
    /** An edit of a question still waiting for its turn: folded into it (true), or to be answered (false). */
    fold: (ev: InboundEvent) =>
      Effect.sync(() => {
        const target = ev.replaces
        if (target === undefined || !inProgress.has(target) || started.has(target)) return false
        const prev = folded.get(target)
        folded.set(target, { body: ev.body, editIds: [...(prev?.editIds ?? []), ev.eventId] })
        inProgress.add(ev.eventId)
        return true
      }),
    /** At the start of an answer (room lock held): the question with its newest text, the edits folded in. */
    begin: (ev: InboundEvent) =>
      Effect.sync(() => {
        started.add(ev.eventId)
        const f = folded.get(ev.eventId)
        folded.delete(ev.eventId)
        return { current: f === undefined ? ev : { ...ev, body: f.body }, editIds: f?.editIds ?? [] }
      }),
    /** After the answer: folded edits are committed once their question is (else resumed at the next start). */
    end: (eventId: string, editIds: ReadonlyArray<string>) =>
      Effect.sync(() => {
        const done = ledger.state(eventId) === "committed"
        for (const id of editIds) {
          inProgress.delete(id)
          if (done) ledger.commit(id, [], Date.now())
        }
      }),
    /** Called with the question's removal from `inProgress` (in the same step: no edit folds in between). */
    forget: (eventId: string): void => {
      started.delete(eventId)
    },
    /** The reply an edit's answer replaces: the answered question's first reply, if there is one. */
    replyOf: (ev: InboundEvent) =>
      Effect.sync((): EventId | undefined => {
        if (ev.replaces === undefined || ledger.state(ev.replaces) !== "committed") return undefined
        return ledger.replyIds(ev.replaces)?.[0] as EventId | undefined
      })
  }
}

export type Edits = ReturnType<typeof makeEdits>

/**
 * One answer with the edits taken into account (call it with the room lock held): the question with its
 * newest text, and for an edit of an answered question the reply to edit.
 */
export const withEdits = <E>(
  edits: Edits,
  answer: (ev: InboundEvent, isGroup: boolean, editing?: EventId) => Effect.Effect<void, E>
) =>
(ev: InboundEvent, isGroup: boolean): Effect.Effect<void, E> =>
  Effect.flatMap(
    edits.begin(ev),
    ({ current, editIds }) =>
      Effect.flatMap(edits.replyOf(current), (editing) => answer(current, isGroup, editing)).pipe(
        Effect.ensuring(edits.end(ev.eventId, editIds))
      )
  )
