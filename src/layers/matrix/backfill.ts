// Back-fill of limited timelines. A limited timeline (more events than the sync filter's limit arrived
// while the bot was away) resets the room's live timeline: the events between the last sync and the new
// timeline's start are fetched with /messages and offered oldest first, before the live events of that
// sync (which wait for it); all of it is tracked, so the sync token is not saved before they are claimed.
import { Context, Effect, Layer, Ref, Runtime, Schedule } from "effect"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as sdk from "matrix-js-sdk"
import { describeSdkError as describe } from "../../domain/sendError.js"
import { Ledger } from "../../services/Ledger.js"
import { CurrentMatrixSession } from "../../services/MatrixSync.js"
import { MatrixClient } from "./client.js"
import { MatrixEvents } from "./events.js"
import { Milestones } from "./startup.js"

/** Events per /messages page, and pages at most (per gap). */
const BACKFILL_PAGE = 100
const BACKFILL_MAX_PAGES = 50

export interface BackfillShape {
  /** The back-fill in progress for a room: its live events wait for it. */
  readonly gapOf: (roomId: string) => Promise<void> | undefined
  /**
   * A live event of `room`: when the room is new to the client in a sync resumed from a saved token (the bot
   * joined it after the sync state was last saved), its missed events are a gap too. matrix-js-sdk resets no
   * timeline for a brand-new room (it only sets the back-pagination token), so no `TimelineReset` says so.
   */
  readonly noteRoom: (room: sdk.Room) => void
}

export class Backfill extends Context.Tag("cara/matrix/Backfill")<Backfill, BackfillShape>() {}

/** Retries of one gap: 1, 2, 4, 8, 15, 30 s; a warning for each retry. */
const gapRetry = (roomId: string) =>
  Schedule.fromDelays("1 second", "2 seconds", "4 seconds", "8 seconds", "15 seconds", "30 seconds").pipe(
    Schedule.intersect(Schedule.identity<unknown>()),
    Schedule.onDecision(([, e], decision) =>
      ScheduleDecision.isContinue(decision)
        ? Effect.logWarning(`Matrix back-fill of ${roomId} failed (${describe(e)}); retrying`)
        : Effect.void
    )
  )

const makeBackfill = Effect.gen(function*() {
  const h = yield* MatrixClient
  const { client } = h
  const events = yield* MatrixEvents
  const ledger = yield* Ledger
  const milestones = yield* Milestones
  const me = (yield* CurrentMatrixSession).userId
  const runtime = yield* Effect.runtime<never>()
  const run = Runtime.runPromise(runtime)
  const since = yield* Ref.make(h.savedSyncToken)
  // one promise chain per room (the SDK's handlers are synchronous; the chain orders the gaps of a room)
  const gaps = new Map<string, Promise<void>>()

  /**
   * Pages /messages backwards from the gap's start until the point of the previous sync (`to`), an event
   * the ledger already knows, or the bot's own join; returns the events oldest first.
   */
  const collectGap = async (room: sdk.Room, from: string, to: string | null): Promise<Array<sdk.MatrixEvent>> => {
    const raws: Array<sdk.IEvent> = []
    let token: string | undefined = from
    pages: for (let page = 0; page < BACKFILL_MAX_PAGES && token !== undefined; page++) {
      const res: { chunk?: Array<sdk.IEvent>; end?: string } = await client.http.authedRequest(
        sdk.Method.Get,
        `/rooms/${encodeURIComponent(room.roomId)}/messages`,
        { from: token, dir: "b", limit: String(BACKFILL_PAGE), ...(to === null ? {} : { to }) }
      )
      const chunk = res.chunk ?? []
      for (const raw of chunk) {
        if (
          raw.type === sdk.EventType.RoomMember && raw.state_key === me &&
          (raw.content as { membership?: unknown })?.membership === "join"
        ) break pages
        if (raw.event_id !== undefined && ledger.state(raw.event_id) !== undefined) break pages
        raws.push(raw)
      }
      if (chunk.length === 0 || res.end === undefined || res.end === token) break
      token = res.end
    }
    const mapper = client.getEventMapper()
    return raws.reverse().filter((raw) => raw.sender !== me).map((raw) => mapper(raw))
  }

  const fillGap = (room: sdk.Room, from: string) =>
    Effect.gen(function*() {
      const to = yield* Ref.get(since)
      const attempt = Effect.gen(function*() {
        if (yield* h.stopping) return
        const missed = yield* Effect.tryPromise({ try: () => collectGap(room, from, to), catch: (e) => e })
        if (room.getMyMembership() !== sdk.KnownMembership.Join) return
        if (missed.length > 0) {
          yield* Effect.logInfo("Matrix back-fill: offering events missed by a limited sync").pipe(
            Effect.annotateLogs({ roomId: room.roomId, events: missed.length })
          )
        }
        for (const ev of missed) {
          if (yield* h.stopping) return
          yield* events.handle(ev, room)
        }
      })
      yield* attempt.pipe(
        Effect.retry({ schedule: gapRetry(room.roomId), while: () => Effect.map(h.stopping, (s) => !s) }),
        Effect.catchAll((e) =>
          Effect.logError(
            `Matrix back-fill of ${room.roomId} failed; events sent while the bot was away may be unanswered: ${
              describe(e)
            }`
          )
        )
      )
    })

  /** Starts (after any earlier one of the room) the back-fill of the gap before the live timeline. */
  const startGap = (room: sdk.Room) => {
    // a room the bot auto-joined after a restart is reset by the sync that carries the join before the SDK
    // has applied it: the membership still reads "invite" here (checked again before anything is offered)
    const membership = room.getMyMembership()
    if (membership !== sdk.KnownMembership.Join && membership !== sdk.KnownMembership.Invite) return
    const from = room.getLiveTimeline().getPaginationToken(sdk.Direction.Backward)
    if (from === null) return
    if (membership === sdk.KnownMembership.Invite) {
      Runtime.runFork(runtime)(
        Effect.logInfo("Matrix back-fill: a limited sync that carries the bot's join").pipe(
          Effect.annotateLogs({ roomId: room.roomId })
        )
      )
    }
    const before = gaps.get(room.roomId) ?? Promise.resolve()
    const p: Promise<void> = before.then(() => run(fillGap(room, from))).finally(() => {
      if (gaps.get(room.roomId) === p) gaps.delete(room.roomId)
    })
    gaps.set(room.roomId, p)
    h.track(p)
  }

  client.on(sdk.RoomEvent.TimelineReset, (room, timelineSet) => {
    try {
      if (room === undefined || timelineSet !== room.getUnfilteredTimelineSet()) return
      if (h.freshStore && !Effect.runSync(milestones.prepared)) return
      startGap(room)
    } catch (e) {
      Runtime.runFork(runtime)(Effect.logError(`Matrix timeline-reset handler failed: ${describe(e)}`))
    }
  })

  // A brand-new room's live events arrive before the SDK stores the room (client.getRoom is still null then);
  // the first of them starts the gap, and every live event of the room waits for it like after a reset.
  const newRooms = new Set<string>()
  const noteRoom = (room: sdk.Room) => {
    if (h.freshStore || newRooms.has(room.roomId) || client.getRoom(room.roomId) !== null) return
    newRooms.add(room.roomId)
    Runtime.runFork(runtime)(
      Effect.logInfo("Matrix back-fill: a room joined since the last saved sync state").pipe(
        Effect.annotateLogs({ roomId: room.roomId })
      )
    )
    startGap(room)
  }
  client.on(sdk.ClientEvent.Sync, (_state, _prev, data) => {
    if (data?.nextSyncToken !== undefined) Effect.runSync(Ref.set(since, data.nextSyncToken))
  })

  return { gapOf: (roomId) => gaps.get(roomId), noteRoom } satisfies BackfillShape
})

export const BackfillLive = Layer.effect(Backfill, makeBackfill)
