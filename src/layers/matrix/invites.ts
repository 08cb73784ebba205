// Invites: auto-join from allowed inviters, fail closed. A declined invite is left once (it then disappears
// from sync); kicks and bans are never undone because the bot only ever joins on an invite.
import { Duration, Effect, Ref, Runtime, Schedule } from "effect"
import * as sdk from "matrix-js-sdk"
import { allowsUser, normalizeAllowlist } from "../../domain/allowlist.js"
import { classifySendError, describeSdkError as describe, type SendFailure } from "../../domain/sendError.js"
import { ChannelStatus } from "../../services/ChannelStatus.js"
import { CurrentMatrixSession, MatrixSettings } from "../../services/MatrixSync.js"
import { MatrixClient } from "./client.js"

/** Join attempts for one invite (rate limits and server errors), about ten minutes in all with the backoff. */
const JOIN_ATTEMPTS = 25

/** The wait after failed join attempt `n + 1`: the server's Retry-After, else 1 s doubling up to 30 s. */
const joinDelayMs = (f: SendFailure, n: number) =>
  (f._tag === "Transient" ? f.retryAfterMs : undefined) ?? Math.min(30_000, 1_000 * 2 ** n)

/** A rate-limited or unreachable homeserver delays the join; it does not lose the invite. */
const joinRetry = (roomId: string) =>
  Schedule.identity<SendFailure>().pipe(
    Schedule.intersect(Schedule.recurs(JOIN_ATTEMPTS - 1)),
    Schedule.addDelay(([f, n]) => Duration.millis(joinDelayMs(f, n))),
    Schedule.tapOutput(([f, n]) =>
      Effect.logInfo(`joining ${roomId} failed (${f.detail}); retrying in ${joinDelayMs(f, n)} ms`)
    )
  )

type DropCounter = "peerDropAllowlistRejectionTotal" | "peerDropEncryptedRoomTotal"

/** Registers the membership handlers; returns the join of the invites pending at start (after the first sync). */
export const watchInvites = Effect.gen(function*() {
  const h = yield* MatrixClient
  const { client } = h
  const m = yield* MatrixSettings
  const status = yield* ChannelStatus
  const me = (yield* CurrentMatrixSession).userId
  const allowlist = normalizeAllowlist(m.autoJoin)
  const runtime = yield* Effect.runtime<never>()
  const fork = Runtime.runFork(runtime)
  const declined = yield* Ref.make<ReadonlySet<string>>(new Set())

  const join = (room: sdk.Room, inviter: string) =>
    Effect.tryPromise({ try: () => client.joinRoom(room.roomId), catch: classifySendError }).pipe(
      Effect.retry({ schedule: joinRetry(room.roomId), while: (f) => f._tag === "Transient" }),
      Effect.matchEffect({
        onSuccess: () =>
          Effect.logInfo("auto-joined Matrix room invite").pipe(Effect.annotateLogs({ roomId: room.roomId, inviter })),
        onFailure: (f) =>
          Effect.logWarning(
            `joining ${room.roomId} failed (${f.detail}${
              f._tag === "Terminal" ? "" : `, after ${JOIN_ATTEMPTS} attempts`
            }); the invite stays pending and is retried at the next start`
          )
      })
    )

  const decline = (room: sdk.Room, inviter: string | undefined, why: string, counter: DropCounter) =>
    Effect.gen(function*() {
      yield* Ref.update(declined, (s) => new Set(s).add(room.roomId))
      yield* status.updateMatrix((x) => ({ ...x, [counter]: x[counter] + 1 }))
      yield* Effect.logInfo(`Matrix invite rejected: ${why}`).pipe(
        Effect.annotateLogs({ roomId: room.roomId, inviter: inviter ?? "unknown" })
      )
      yield* Effect.tryPromise(() => client.leave(room.roomId)).pipe(
        Effect.catchAll((e) => Effect.logWarning(`declining the invite failed: ${describe(e)}`))
      )
    })

  const handleInvite = (room: sdk.Room) =>
    Effect.gen(function*() {
      if ((yield* Ref.get(declined)).has(room.roomId)) return
      const inviter = room.currentState.getMember(me)?.events.member?.getSender()
      if (inviter === undefined) {
        return yield* decline(
          room,
          inviter,
          "homeserver did not provide an inviter identity",
          "peerDropAllowlistRejectionTotal"
        )
      }
      if (!allowsUser(allowlist, inviter)) {
        return yield* decline(
          room,
          inviter,
          "inviter not in matrix.autoJoin allowlist",
          "peerDropAllowlistRejectionTotal"
        )
      }
      if (!m.encrypted && room.hasEncryptionStateEvent()) {
        return yield* decline(
          room,
          inviter,
          "room is encrypted and matrix.encrypted=false",
          "peerDropEncryptedRoomTotal"
        )
      }
      yield* join(room, inviter)
    })

  client.on(sdk.RoomEvent.MyMembership, (room, membership) => {
    try {
      if (membership === sdk.KnownMembership.Invite) h.track(Runtime.runPromise(runtime)(handleInvite(room)))
    } catch (e) {
      fork(Effect.logError(`Matrix membership handler failed: ${describe(e)}`))
    }
  })

  client.on(sdk.RoomStateEvent.Events, (ev) => {
    if (m.encrypted || ev.getType() !== sdk.EventType.RoomEncryption) return
    // only rooms the bot is in: an invite's stripped state is judged (and counted) by handleInvite
    if (client.getRoom(ev.getRoomId())?.getMyMembership() !== sdk.KnownMembership.Join) return
    fork(
      status.updateMatrix((x) => ({
        ...x,
        peerDropEncryptedRoomTotal: x.peerDropEncryptedRoomTotal + 1,
        unsupportedInboundCount: x.unsupportedInboundCount + 1
      })).pipe(
        Effect.zipRight(
          Effect.logWarning("Matrix room became encrypted while matrix.encrypted=false; it is unsupported")
        )
      )
    )
  })

  return Effect.suspend(() =>
    Effect.forEach(
      client.getRooms(),
      (room) => (room.getMyMembership() === sdk.KnownMembership.Invite ? handleInvite(room) : Effect.void),
      { discard: true }
    )
  )
})
