// Edits in (issue 20 point 3): an `m.replace` of a question is answered only when it is a valid edit per the
// spec (src/domain/relations.ts editValidity: same room, sender and type; the original no state event and no
// edit itself). The original is looked up in the room's timeline, else fetched (and decrypted) once.
import { Effect, Option, Schema } from "effect"
import * as sdk from "matrix-js-sdk"
import { EventId, type InboundEvent } from "../../domain/matrix.js"
import { editValidity, type EventFacts } from "../../domain/relations.js"

const factsOf = (ev: sdk.MatrixEvent): EventFacts => ({
  eventId: ev.getId() ?? "",
  roomId: ev.getRoomId() ?? "",
  sender: ev.getSender() ?? "",
  type: ev.getType(),
  isState: ev.isState(),
  relType: (ev.getWireContent()["m.relates_to"] as { rel_type?: unknown } | undefined)?.rel_type === "m.replace"
    ? "m.replace"
    : undefined
})

/** The original event of an edit: in the room's timeline, or fetched and decrypted. */
const originalOf = (client: sdk.MatrixClient, room: sdk.Room, targetId: string) =>
  Effect.gen(function*() {
    const local = room.findEventById(targetId)
    if (local !== undefined) return local
    const ev = yield* Effect.tryPromise(async () =>
      client.getEventMapper()(await client.fetchRoomEvent(room.roomId, targetId))
    )
    yield* Effect.promise(() => client.decryptEventIfNeeded(ev))
    return ev
  })

/**
 * The inbound record of an edit with `replaces` set when the edit is valid (then the gates treat it as a
 * message with the new text); unchanged otherwise (the gate ignores it as an edit). Not an edit: unchanged.
 */
export const checkEdit = (
  client: sdk.MatrixClient,
  room: sdk.Room,
  ev: sdk.MatrixEvent,
  inbound: InboundEvent
): Effect.Effect<InboundEvent> =>
  Effect.gen(function*() {
    if (inbound.relType !== "m.replace") return inbound
    const rel = ev.getWireContent()["m.relates_to"] as { event_id?: unknown } | undefined
    const targetId = typeof rel?.event_id === "string" ? rel.event_id : ev.getRelation()?.event_id
    const target = Schema.decodeUnknownOption(EventId)(targetId)
    if (targetId === undefined || Option.isNone(target)) return inbound
    const original = yield* originalOf(client, room, targetId).pipe(Effect.option)
    if (original._tag === "None") {
      yield* Effect.logWarning("Matrix edit ignored: its original event could not be fetched").pipe(
        Effect.annotateLogs({ eventId: inbound.eventId })
      )
      return inbound
    }
    const verdict = editValidity(factsOf(original.value), factsOf(ev))
    if (verdict !== "valid") {
      yield* Effect.logWarning(`Matrix edit ignored: not a valid replacement (${verdict})`).pipe(
        Effect.annotateLogs({ eventId: inbound.eventId })
      )
      return inbound
    }
    return { ...inbound, replaces: target.value }
  })
