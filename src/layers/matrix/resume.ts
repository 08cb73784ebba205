// Resume at start: held undecryptable events are re-fetched (their key may have arrived meanwhile), and
// events claimed but not committed (a stop or crash interrupted their answer) are offered again.
import { Effect } from "effect"
import * as sdk from "matrix-js-sdk"
import { describeSdkError as describe } from "../../domain/sendError.js"
import { Inbound } from "../../services/Inbound.js"
import { MatrixClient } from "./client.js"
import { MatrixEvents } from "./events.js"

export const makeResume = Effect.gen(function*() {
  const { client } = yield* MatrixClient
  const events = yield* MatrixEvents
  const inbound = yield* Inbound

  const refetch = (roomId: string, eventId: string) =>
    Effect.tryPromise(async () => {
      const raw = await client.fetchRoomEvent(roomId, eventId)
      return client.getEventMapper()(raw)
    }).pipe(Effect.flatMap((ev) => Effect.promise(() => client.decryptEventIfNeeded(ev)).pipe(Effect.as(ev))))

  /** Re-fetches and re-offers one event (also the pending replies' way back to an answer after a restart). */
  const resumeEvent = (eventId: string, roomId: string) =>
    refetch(roomId, eventId).pipe(
      Effect.flatMap((ev: sdk.MatrixEvent) => {
        const room = client.getRoom(roomId)
        return room === null ? Effect.void : events.offer(ev, room)
      }),
      Effect.tap(() =>
        Effect.logInfo("resuming an answer interrupted by a stop or crash").pipe(Effect.annotateLogs({ eventId }))
      ),
      Effect.catchAll((e) => Effect.logWarning(`resuming ${eventId} failed: ${describe(e)}`))
    )

  const resumeHeld = Effect.gen(function*() {
    for (const { eventId, roomId } of yield* inbound.utd.list) {
      yield* events.utd.hold(eventId)
      yield* refetch(roomId, eventId).pipe(
        Effect.flatMap((ev) => {
          const room = client.getRoom(roomId)
          if (ev.isDecryptionFailure() || room === null) return Effect.void
          return events.utd.release(eventId).pipe(
            Effect.zipRight(inbound.utd.remove(eventId)),
            Effect.zipRight(events.offer(ev, room))
          )
        }),
        Effect.catchAll((e) => Effect.logWarning(`re-fetching held event ${eventId} failed: ${describe(e)}`))
      )
    }
    yield* events.utd.publish
  })

  const resumeUnfinished = Effect.flatMap(
    inbound.unfinished,
    (rows) => Effect.forEach(rows, ({ eventId, roomId }) => resumeEvent(eventId, roomId), { discard: true })
  )

  return { resumeEvent, resumeHeld, resumeUnfinished }
})
