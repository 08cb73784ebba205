// Sync health: the sync-state handler (progress, sticky failures, terminal auth errors), the room survey,
// and the watchdog (a stalled sync is nudged; one failing for the give-up threshold is stamped).
import { Context, Duration, Effect, Layer, Ref, Runtime, Schedule } from "effect"
import * as sdk from "matrix-js-sdk"
import { MATRIX_CHANNEL_ID as CHANNEL_ID, tokenRevoked } from "../../domain/matrix.js"
import { describeSdkError as describe, errcodeOf, isTokenRejection } from "../../domain/sendError.js"
import {
  giveUpMessage,
  initialSyncHealth,
  isReachable,
  SYNC_WATCHDOG_MS,
  syncFailed,
  syncGiveUpMs,
  type SyncHealth,
  syncSucceeded,
  watchdogCheck
} from "../../domain/syncHealth.js"
import { ChannelStatus } from "../../services/ChannelStatus.js"
import { Inbound } from "../../services/Inbound.js"
import { MatrixSettings } from "../../services/MatrixSync.js"
import { Metrics } from "../../services/Metrics.js"
import { MatrixClient } from "./client.js"
import { MatrixEvents } from "./events.js"
import { Milestones } from "./startup.js"

/** How often the watchdog looks at the sync. */
const SYNC_CHECK = Duration.seconds(5)

/** The runtime's sync health (domain/syncHealth.ts), from its start; shared by the handler, watchdog and replies. */
export interface SyncHealthStateShape {
  readonly ref: Ref.Ref<SyncHealth>
  readonly startedAt: number
  /** A recent successful sync: the homeserver is reachable. */
  readonly reachable: Effect.Effect<boolean>
}

export class SyncHealthState extends Context.Tag("cara/matrix/SyncHealth")<SyncHealthState, SyncHealthStateShape>() {}

export const SyncHealthStateLive = Layer.effect(
  SyncHealthState,
  Effect.gen(function*() {
    const startedAt = Date.now()
    const ref = yield* Ref.make(initialSyncHealth(startedAt))
    return { ref, startedAt, reachable: Effect.map(Ref.get(ref), (h) => isReachable(h, Date.now())) }
  })
)

/** The joined / encrypted / unsupported rooms and the held events, into the channel status. */
export const survey = Effect.gen(function*() {
  const { client } = yield* MatrixClient
  const m = yield* MatrixSettings
  const status = yield* ChannelStatus
  const undecryptable = yield* (yield* MatrixEvents).utd.count
  const health = yield* Ref.get((yield* SyncHealthState).ref)
  yield* status.updateMatrix((x) => {
    const joined = client.getRooms().filter((r) => r.getMyMembership() === sdk.KnownMembership.Join)
    const encrypted = joined.filter((r) => r.hasEncryptionStateEvent())
    const unsupported = m.encrypted ? [] : encrypted.map((r) => r.roomId)
    return {
      ...x,
      joinedRoomCount: joined.length,
      encryptedRoomCount: encrypted.length,
      unencryptedRoomCount: joined.length - encrypted.length,
      unsupportedRoomCount: unsupported.length,
      unsupportedRooms: unsupported.slice(0, 100),
      undecryptableEventCount: undecryptable,
      lastSuccessfulSyncAt: health.lastServerSync ?? null
    }
  })
})

/**
 * Registers the sync-state and logout handlers. `afterSync` runs after every successful sync once the
 * first sync is in (the DLQ replay).
 */
export const watchSync = (afterSync: Effect.Effect<void>) =>
  Effect.gen(function*() {
    const { client } = yield* MatrixClient
    const { ref } = yield* SyncHealthState
    const status = yield* ChannelStatus
    const metrics = yield* Metrics
    const milestones = yield* Milestones
    const inbound = yield* Inbound
    const ctx = yield* Effect.context<MatrixClient | MatrixSettings | ChannelStatus | MatrixEvents | SyncHealthState>()
    const runtime = yield* Effect.runtime<never>()
    const fork = Runtime.runFork(runtime)

    const progressed = (state: sdk.SyncState, prev: sdk.SyncState | null, fromServer: boolean) =>
      Effect.gen(function*() {
        const now = Date.now()
        const consecutive = state === sdk.SyncState.Syncing && prev === sdk.SyncState.Syncing
        const r = yield* Ref.modify(ref, (h) => {
          const r = syncSucceeded(h, now, fromServer, consecutive)
          return [r, r.health]
        })
        // one /sync round trip, long-poll included; the first after an error would include the backoff
        if (r.cycleSeconds !== undefined) fork(metrics.observe("carapace_matrix_sync_cycle_seconds", r.cycleSeconds))
        if (r.clearedGiveUp) fork(Effect.logInfo("Matrix sync succeeded again; sync-loop-give-up cleared"))
        fork(
          Effect.provide(survey, ctx).pipe(
            Effect.zipRight(r.recovered ? status.setState(CHANNEL_ID, "connected") : Effect.void)
          )
        )
        if (yield* milestones.prepared) yield* afterSync
        if (fromServer) fork(inbound.replies.kick)
      })

    const failed = (state: sdk.SyncState, err: unknown) =>
      Effect.gen(function*() {
        const code = errcodeOf(err)
        if (isTokenRejection(code)) {
          yield* Ref.update(ref, (h) => syncFailed(h, false).health)
          fork(milestones.stop(tokenRevoked(code!)))
          return
        }
        const isError = state === sdk.SyncState.Error
        const r = yield* Ref.modify(ref, (h) => {
          const r = syncFailed(h, isError)
          return [r, r.health]
        })
        if (!isError) return
        fork(metrics.increment("carapace_matrix_sync_failures_total", { class: "transient" }))
        if (r.becameSticky) {
          fork(
            status.setState(CHANNEL_ID, "error", {
              kind: "sync-failed",
              message: `Matrix sync failed: ${describe(err)}`
            })
          )
        }
      })

    client.on(sdk.ClientEvent.Sync, (state, prev, data) => {
      try {
        if (state === sdk.SyncState.Prepared || state === sdk.SyncState.Syncing) {
          Runtime.runSync(runtime)(progressed(state, prev, data?.fromCache !== true))
        } else if (state === sdk.SyncState.Error || state === sdk.SyncState.Reconnecting) {
          Runtime.runSync(runtime)(failed(state, data?.error))
        }
      } catch (e) {
        fork(Effect.logError(`Matrix sync-state handler failed: ${describe(e)}`))
      }
    })
    client.on(sdk.HttpApiEvent.SessionLoggedOut, (err) => {
      fork(milestones.stop(tokenRevoked(errcodeOf(err) ?? "M_UNKNOWN_TOKEN")))
    })
  })

/**
 * The watchdog, from the first sync on (a homeserver that is down at start must be reported too): a sync
 * that makes no progress for 120 s is nudged and reported; one that has failed for the give-up threshold
 * since the last success (or the start) is stamped `sync-loop-give-up` (cleared by the next success).
 */
export const watchdog = (env: NodeJS.ProcessEnv) =>
  Effect.gen(function*() {
    const { client } = yield* MatrixClient
    const { ref, startedAt } = yield* SyncHealthState
    const status = yield* ChannelStatus
    const metrics = yield* Metrics
    const giveUpMs = syncGiveUpMs(env)
    const check = Effect.gen(function*() {
      const now = Date.now()
      const [v, wasGivenUp] = yield* Ref.modify(ref, (h) => {
        const v = watchdogCheck(h, now, startedAt, giveUpMs)
        return [[v, h.givenUp] as const, v.health]
      })
      if (v.stalled) {
        yield* Effect.logWarning("Matrix sync made no progress for 120 s; retrying now")
        if (!wasGivenUp) {
          yield* status.setState(CHANNEL_ID, "error", {
            kind: "sync-failed",
            message: "Matrix sync failed: no progress for 120 s"
          })
        }
        yield* metrics.observe("carapace_matrix_sync_cycle_seconds", SYNC_WATCHDOG_MS / 1000)
        client.retryImmediately()
      }
      if (v.giveUp) {
        const message = giveUpMessage(giveUpMs)
        yield* Effect.logError(message).pipe(Effect.annotateLogs({ kind: "sync-loop-give-up" }))
        yield* status.setState(CHANNEL_ID, "error", { kind: "sync-loop-give-up", message })
      }
    })
    yield* Effect.forkScoped(check.pipe(Effect.repeat(Schedule.spaced(SYNC_CHECK))))
  })
