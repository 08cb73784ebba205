// The timeline and decryption handlers: live events to the inbound pipeline (after a back-fill of their
// room), and held undecryptable events once their key arrives.
import { Effect, Option, Runtime, Schema } from "effect"
import * as sdk from "matrix-js-sdk"
import { EventId } from "../../domain/matrix.js"
import { describeSdkError as describe } from "../../domain/sendError.js"
import { Inbound } from "../../services/Inbound.js"
import { CurrentMatrixSession } from "../../services/MatrixSync.js"
import { Backfill } from "./backfill.js"
import { MatrixClient } from "./client.js"
import { MatrixEvents } from "./events.js"
import { Milestones } from "./startup.js"

/** Registers the handlers on the client (removed with the client: see client.ts). */
export const watchTimeline = Effect.gen(function*() {
  const h = yield* MatrixClient
  const { client } = h
  const events = yield* MatrixEvents
  const backfill = yield* Backfill
  const inbound = yield* Inbound
  const milestones = yield* Milestones
  const me = (yield* CurrentMatrixSession).userId
  const runtime = yield* Effect.runtime<never>()
  const run = Runtime.runPromise(runtime)
  const fork = Runtime.runFork(runtime)

  client.on(sdk.RoomEvent.Timeline, (ev, room, toStartOfTimeline, removed, data) => {
    try {
      if (toStartOfTimeline === true || removed || room === undefined) return
      // replays from the cached sync data are not new; interrupted answers are resumed from the ledger
      if (data?.liveEvent !== true) return
      // the first sync of a fresh store delivers history only
      if (h.freshStore && !Effect.runSync(milestones.prepared)) return
      backfill.noteRoom(room)
      if (ev.getSender() === me) return
      const gap = backfill.gapOf(room.roomId)
      h.track(gap === undefined ? run(events.handle(ev, room)) : gap.then(() => run(events.handle(ev, room))))
    } catch (e) {
      fork(Effect.logError(`Matrix timeline handler failed: ${describe(e)}`))
    }
  })

  client.on(sdk.MatrixEventEvent.Decrypted, (ev) => {
    try {
      const decoded = Schema.decodeUnknownOption(EventId)(ev.getId())
      if (Option.isNone(decoded) || ev.isDecryptionFailure()) return
      const id = decoded.value
      if (!Effect.runSync(events.utd.release(id))) return
      const room = client.getRoom(ev.getRoomId())
      h.track(run(
        inbound.utd.remove(id).pipe(
          Effect.zipRight(events.utd.publish),
          Effect.zipRight(
            Effect.logInfo("Matrix event decrypted after its key arrived").pipe(Effect.annotateLogs({ eventId: id }))
          ),
          Effect.zipRight(room ? events.offer(ev, room) : Effect.void)
        )
      ))
    } catch (e) {
      fork(Effect.logError(`Matrix decryption handler failed: ${describe(e)}`))
    }
  })
})
