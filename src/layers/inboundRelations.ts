// What the inbound pipeline (InboundLive.ts) does about redactions and reactions around an answer, apart
// from it: a redacted question is committed unanswered; a redaction that arrives while the answer is being
// sent takes it back after the commit; an answer held by the pending replies finishes its lifecycle
// reactions when it is finally sent or dead-lettered.
import { Effect, Option } from "effect"
import type { InboundEvent, RoomId } from "../domain/matrix.js"
import type { OutboundShape } from "../services/Outbound.js"
// By design: the lifecycle reactions and the answer redaction it finishes are the neighbouring layer files.
import type { LifecycleReactions } from "./reactions.js"
import type { Redactions } from "./redactions.js"

export interface InboundRelationsDeps {
  readonly state: (eventId: string) => "claimed" | "committed" | undefined
  readonly commit: (eventId: string, ids: ReadonlyArray<string>) => Effect.Effect<void>
  /** Counts one question not answered because it was redacted. */
  readonly count: Effect.Effect<void>
  readonly redactions: Redactions | undefined
  readonly reactions: LifecycleReactions | undefined
}

interface HeldReactions {
  readonly roomId: RoomId
  readonly working: Option.Option<string>
  readonly failed: boolean
}

export const inboundRelations = ({ commit, count, reactions, redactions, state }: InboundRelationsDeps) => {
  // the 👀 of answers the pending replies hold (this run only: after a restart the resumed answer sets its own)
  const held = new Map<string, HeldReactions>()

  /**
   * Not answered: committed (never resumed) with what was already sent of the answer (`sentIds`, e.g. a
   * streamed first chunk: the settle below redacts it), counted, and its redaction row settled.
   */
  const notAnswered = (ev: InboundEvent, commitIt: boolean, counted: boolean, sentIds: ReadonlyArray<string> = []) =>
    Effect.gen(function*() {
      if (commitIt && state(ev.eventId) !== "committed") yield* commit(ev.eventId, sentIds)
      if (!counted) yield* count
      if (redactions !== undefined) yield* redactions.settle(ev.eventId)
      yield* Effect.logInfo("Matrix question not answered: it was redacted").pipe(
        Effect.annotateLogs({ eventId: ev.eventId, roomId: ev.roomId })
      )
    })

  return {
    /**
     * The gate saw it arrive redacted (backlog, or a resume after a restart; the gate counted it): committed
     * when it was claimed, so it is never resumed again.
     */
    arrivedRedacted: (ev: InboundEvent) => Effect.suspend(() => notAnswered(ev, state(ev.eventId) === "claimed", true)),
    /**
     * True (and handled) when a redaction of the question was recorded: the rest of the answer is not sent.
     * `sentIds`: the events of the answer already in the room (a streamed first chunk), redacted now.
     */
    redacted: (ev: InboundEvent, sentIds: ReadonlyArray<string> = []) =>
      redactions === undefined ? Effect.succeed(false) : Effect.flatMap(
        redactions.isRedacted(ev.eventId),
        (r) => (r ? Effect.as(notAnswered(ev, true, false, sentIds), true) : Effect.succeed(false))
      ),
    /** After the commit of an answer: a redaction that came while it was sent takes it back now. */
    committed: (eventId: string) => (redactions === undefined ? Effect.void : redactions.settle(eventId)),
    /** The answer went to the pending replies: its reactions wait for the send (or the DLQ). */
    held: (ev: InboundEvent, working: Option.Option<string>, failed: boolean) =>
      Effect.sync(() => {
        if (reactions !== undefined) held.set(ev.eventId, { roomId: ev.roomId, working, failed })
      }),
    /** A held answer is out (or in the DLQ, `dead`): 👀 removed, ❌ added on failure; a redaction settled. */
    heldDone: (eventId: string, dead: boolean) =>
      Effect.gen(function*() {
        if (redactions !== undefined) yield* redactions.settle(eventId)
        const h = held.get(eventId)
        held.delete(eventId)
        if (h !== undefined && reactions !== undefined) {
          yield* reactions.answered(h.roomId, eventId, h.working, dead || h.failed)
        }
      }),
    /** The send path of the pending replies: a held answer whose question was redacted meanwhile is not sent. */
    guard: (outbound: OutboundShape): OutboundShape =>
      redactions === undefined ? outbound : {
        ...outbound,
        reply: (r, o) =>
          Effect.flatMap(
            redactions.isRedacted(r.inReplyTo),
            (red) => (red ? Effect.succeed([]) : outbound.reply(r, o))
          )
      }
  }
}

export type InboundRelations = ReturnType<typeof inboundRelations>
