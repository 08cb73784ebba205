// Reactions and redactions from the timeline (issue 20 §3, §4), after decryption like every message:
// a 👍/👎 from an allowed user on one of cara's answers is one `feedback` audit record (ids only), its
// redaction a `feedback-removed`; a redaction of a question by its sender or a room moderator means the
// question is not answered, and an answer already sent is redacted too (src/layers/redactions.ts).
import { Cause, Context, Effect, Layer } from "effect"
import * as sdk from "matrix-js-sdk"
import { allowsUser, normalizeAllowlist } from "../../domain/allowlist.js"
import { AUDIT_FEEDBACK, AUDIT_FEEDBACK_REMOVED } from "../../domain/audit.js"
import {
  DEFAULT_REDACT_LEVEL,
  feedbackOf,
  feedbackRecord,
  reactionOf,
  redactedEventId,
  redactionAuthority
} from "../../domain/relations.js"
import { describeSdkError as describe } from "../../domain/sendError.js"
import { Audit } from "../../services/Audit.js"
import { Ledger } from "../../services/Ledger.js"
import { CurrentMatrixSession, MatrixSettings } from "../../services/MatrixSync.js"
import { MatrixTransport } from "../../services/MatrixTransport.js"
// By design: the redaction of answers is the SDK-free part the inbound pipeline shares (src/layers/redactions.ts).
import { makeRedactions } from "../redactions.js"
import { MatrixClient } from "./client.js"

export interface MatrixRelationsShape {
  /** `m.reaction` and `m.room.redaction` go here (decrypted first when they came encrypted). */
  readonly accepts: (ev: sdk.MatrixEvent) => boolean
  readonly handle: (ev: sdk.MatrixEvent, room: sdk.Room) => Effect.Effect<void>
}

export class MatrixRelations extends Context.Tag("cara/matrix/Relations")<MatrixRelations, MatrixRelationsShape>() {}

const MESSAGE_TYPES: ReadonlySet<string> = new Set([sdk.EventType.RoomMessage, sdk.EventType.RoomMessageEncrypted])

/** A user's power level in the room, and the level the room asks for redacting others' events. */
const powerFacts = (room: sdk.Room, userId: string) => {
  const levels = room.currentState.getStateEvents(sdk.EventType.RoomPowerLevels, "")?.getContent() as
    | { redact?: unknown }
    | undefined
  return {
    redacterPowerLevel: room.currentState.getMember(userId)?.powerLevel ?? 0,
    redactLevel: typeof levels?.redact === "number" ? levels.redact : DEFAULT_REDACT_LEVEL
  }
}

const log = (message: string, ev: sdk.MatrixEvent) =>
  Effect.logDebug(message).pipe(
    Effect.annotateLogs({ service: "Inbound", eventId: ev.getId(), roomId: ev.getRoomId() })
  )

const makeRelations = Effect.gen(function*() {
  const m = yield* MatrixSettings
  const { client } = yield* MatrixClient
  const me = (yield* CurrentMatrixSession).userId
  const ledger = yield* Ledger
  const audit = yield* Audit
  const redactions = makeRedactions({ ledger, transport: yield* MatrixTransport, redactAnswers: m.redactAnswers })
  const allowlist = normalizeAllowlist(m.autoJoin)
  const scope = yield* Effect.scope

  /** The sender and type of the event a redaction names: from the timeline, else from the homeserver. */
  const targetFacts = (room: sdk.Room, eventId: string) => {
    const local = room.findEventById(eventId)
    if (local !== undefined) return Effect.succeed({ sender: local.getSender(), type: local.getType() })
    return Effect.tryPromise(() => client.fetchRoomEvent(room.roomId, eventId)).pipe(
      Effect.map((raw) => ({ sender: raw.sender as string | undefined, type: String(raw.type) })),
      Effect.catchAll((e) =>
        Effect.logDebug(`the redacted event could not be fetched: ${describe(e.error)}`).pipe(Effect.as(undefined))
      )
    )
  }

  const onReaction = (ev: sdk.MatrixEvent, room: sdk.Room) =>
    Effect.gen(function*() {
      const sender = ev.getSender()
      const id = ev.getId()
      if (sender === undefined || id === undefined || sender === me || !allowsUser(allowlist, sender)) return
      // matrix-js-sdk clients (Element Web) send reactions in the clear even in encrypted rooms, Element X
      // encrypts them: both count (a reaction carries no content, and its sender is the homeserver's word)
      const r = reactionOf(ev.getContent())
      const value = r === undefined ? undefined : feedbackOf(r.key)
      if (r === undefined || value === undefined) {
        return
      }
      const question = ledger.questionOf(r.targetEventId)
      if (question === undefined || (question.roomId !== "" && question.roomId !== room.roomId)) return
      if (ledger.feedback(id) !== undefined) return yield* log("feedback reaction already recorded", ev)
      const { kind: _kind, ...record } = feedbackRecord(value, {
        roomId: room.roomId,
        userId: sender,
        answerEventId: r.targetEventId,
        reactionEventId: id
      })
      yield* audit.append(AUDIT_FEEDBACK, { ...record, questionEventId: question.eventId })
      ledger.feedbackAdd(record, Date.now())
      yield* Effect.logInfo(`Matrix feedback recorded (${value})`).pipe(
        Effect.annotateLogs({ service: "Inbound", eventId: id, roomId: room.roomId })
      )
    })

  const onRedaction = (ev: sdk.MatrixEvent, room: sdk.Room) =>
    Effect.gen(function*() {
      const redacter = ev.getSender()
      const target = redactedEventId(ev.event)
      const id = ev.getId()
      if (redacter === undefined || target === undefined || id === undefined || redacter === me) return
      const counts = (eventSender: string) =>
        redactionAuthority({ redacter, eventSender, ...powerFacts(room, redacter) }) !== undefined
      const feedback = ledger.feedback(target)
      if (feedback !== undefined) {
        if (!counts(feedback.userId) || !ledger.feedbackRemoved(target, Date.now())) return
        const { removed: _removed, ...record } = feedback
        return yield* audit.append(AUDIT_FEEDBACK_REMOVED, { ...record, redactionEventId: id })
      }
      const facts = yield* targetFacts(room, target)
      if (facts?.sender === undefined || !MESSAGE_TYPES.has(facts.type) || facts.sender === me) return
      // a message from someone cara does not talk to was never answered: nothing to keep
      if (!allowsUser(allowlist, facts.sender)) return
      if (!counts(facts.sender)) return yield* log("redaction by neither the sender nor a moderator ignored", ev)
      // durable before the handler returns (the sync token is saved after it); the answer's redaction, with
      // its retries, runs in the background (a stop leaves it to the next start's sweep)
      yield* redactions.mark(target, room.roomId, id)
      yield* Effect.forkIn(redactions.settle(target), scope)
    })

  return {
    accepts: (ev) => ev.getType() === sdk.EventType.Reaction || ev.getType() === sdk.EventType.RoomRedaction,
    handle: (ev, room) =>
      (ev.getType() === sdk.EventType.Reaction ? onReaction(ev, room) : onRedaction(ev, room)).pipe(
        Effect.catchAllCause((c) =>
          Effect.logWarning(`Matrix ${ev.getType()} not handled: ${Cause.pretty(c).split("\n")[0] ?? "defect"}`).pipe(
            Effect.annotateLogs({ service: "Inbound", eventId: ev.getId() })
          )
        ),
        Effect.withSpan("MatrixRelations.handle")
      )
  } satisfies MatrixRelationsShape
})

export const MatrixRelationsLive = Layer.scoped(MatrixRelations, makeRelations)
