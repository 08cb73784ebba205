// The first-sync bookkeeping: "prepared" (the first sync, possibly from the saved sync data), the first
// sync from the server, and the terminal error that ends the runtime.
import { Context, Deferred, Effect, Layer, Ref } from "effect"
import * as sdk from "matrix-js-sdk"
import type { MatrixError } from "../../domain/matrix.js"

export interface MilestonesShape {
  /** The first sync is in (live events of a fresh store's first sync are history, never answered). */
  readonly prepared: Effect.Effect<boolean>
  /** Ends the runtime with `error` (a revoked token); the first call wins. */
  readonly stop: (error: MatrixError) => Effect.Effect<void>
  /** Registers the sync-state handlers that mark the milestones (after the features' own handlers). */
  readonly watch: (client: sdk.MatrixClient) => Effect.Effect<void>
  /** Waits for the first sync (or fails with the terminal error). */
  readonly firstSync: Effect.Effect<void, MatrixError>
  /** Waits for a sync answered by the homeserver, never the cached one (or fails with the terminal error). */
  readonly serverSync: Effect.Effect<void, MatrixError>
  /** Runs until the terminal error. */
  readonly terminal: Effect.Effect<never, MatrixError>
}

export class Milestones extends Context.Tag("cara/matrix/Milestones")<Milestones, MilestonesShape>() {}

const isProgress = (state: sdk.SyncState) => state === sdk.SyncState.Prepared || state === sdk.SyncState.Syncing

export const makeMilestones = Effect.gen(function*() {
  const prepared = yield* Ref.make(false)
  const first = yield* Deferred.make<void>()
  const server = yield* Deferred.make<void>()
  const terminal = yield* Deferred.make<never, MatrixError>()
  const untilTerminal = Deferred.await(terminal)
  let onFirst: ((state: sdk.SyncState) => void) | undefined
  let watched: sdk.MatrixClient | undefined

  const watch = (client: sdk.MatrixClient) =>
    Effect.sync(() => {
      watched = client
      onFirst = (state) => {
        if (!isProgress(state)) return
        Effect.runSync(Ref.set(prepared, true))
        Effect.runFork(Deferred.succeed(first, undefined))
      }
      client.on(sdk.ClientEvent.Sync, onFirst)
      // SYNCING is emitted only after a /sync response from the homeserver was processed (never from cache)
      const onServerSync = (state: sdk.SyncState) => {
        if (state !== sdk.SyncState.Syncing) return
        client.off(sdk.ClientEvent.Sync, onServerSync)
        Effect.runFork(Deferred.succeed(server, undefined))
      }
      client.on(sdk.ClientEvent.Sync, onServerSync)
    })

  return {
    prepared: Ref.get(prepared),
    stop: (error) => Effect.asVoid(Deferred.fail(terminal, error)),
    watch,
    firstSync: Effect.raceFirst(Deferred.await(first), untilTerminal).pipe(
      Effect.ensuring(Effect.sync(() => {
        if (watched !== undefined && onFirst !== undefined) watched.off(sdk.ClientEvent.Sync, onFirst)
      }))
    ),
    serverSync: Effect.raceFirst(Deferred.await(server), untilTerminal),
    terminal: untilTerminal
  } satisfies MilestonesShape
})

export const MilestonesLive = Layer.effect(Milestones, makeMilestones)
