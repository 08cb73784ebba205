/**
 * Sync health, pure: what the Matrix runtime concludes from the SDK's sync states and from the watchdog's
 * look at the clock (reference §7.1). The runtime holds one `SyncHealth` in a `Ref` and performs the
 * effects (status, metrics, logs) each transition asks for.
 */

/** No successful sync for this long (since the last one, or the runtime's start): `sync-loop-give-up`. */
export const SYNC_GIVE_UP_MS = 24 * 3_600_000
/** A sync that makes no progress for this long is nudged and reported. */
export const SYNC_WATCHDOG_MS = 120_000
/** A sync this recent means the homeserver is reachable (the long poll returns at least every 30 s). */
export const REACHABLE_WITHIN_MS = 90_000
/** Consecutive failed syncs after which the channel shows `error` (until the next success). */
export const STICKY_FAILURES = 3

/**
 * TEST ONLY. `CARA_TEST_SYNC_GIVE_UP_MS` shortens the 24 h give-up threshold so that a real-Synapse test can
 * watch the stamp come and go during a short outage. Read here and nowhere else; never set it in production.
 */
export const syncGiveUpMs = (env: NodeJS.ProcessEnv): number => {
  const v = Number(env["CARA_TEST_SYNC_GIVE_UP_MS"])
  return Number.isInteger(v) && v > 0 ? v : SYNC_GIVE_UP_MS
}

/** Reference §7.1: no successful sync for more than the threshold, counted from the last success (or start). */
export const shouldGiveUp = (now: number, baseline: number, giveUpMs: number): boolean => now - baseline > giveUpMs

const describeSpan = (
  ms: number
) => (ms >= 3_600_000 ? `${Math.round(ms / 3_600_000)} h` : `${Math.round(ms / 1000)} s`)

/**
 * The reference's text says the daemon slows to one retry per hour and must be restarted; cara does neither
 * (see docs/channels.md, "Sync health"): it keeps its cheap reachability probe and clears the stamp by itself.
 */
export const giveUpMessage = (giveUpMs: number) =>
  `Matrix sync has been unable to complete a successful sync for over ${
    describeSpan(giveUpMs)
  }; cara keeps retrying and clears this on the next successful sync. Investigate homeserver reachability (DNS, network, account state).`

export interface SyncHealth {
  /** When the homeserver last answered a /sync (not the cached one replayed at start). */
  readonly lastServerSync: number | undefined
  /** Whether the latest sync attempt worked. */
  readonly healthy: boolean
  /** `sync-loop-give-up` is stamped (cleared by the next sync from the server). */
  readonly givenUp: boolean
  readonly errorStreak: number
  /** The last sync that made progress (from cache or server): the watchdog's reference. */
  readonly lastProgress: number
  /** The end of the last /sync round trip; unset after a failure (the next cycle would include the backoff). */
  readonly lastCycleEnd: number | undefined
}

export const initialSyncHealth = (now: number): SyncHealth => ({
  lastServerSync: undefined,
  healthy: false,
  givenUp: false,
  errorStreak: 0,
  lastProgress: now,
  lastCycleEnd: undefined
})

/** The homeserver answered a sync lately: a send failure now is the message's own. */
export const isReachable = (h: SyncHealth, now: number): boolean =>
  h.healthy && h.lastServerSync !== undefined && now - h.lastServerSync < REACHABLE_WITHIN_MS

export interface SyncSuccess {
  readonly health: SyncHealth
  /** One /sync round trip (long poll included), for the cycle histogram; only between two SYNCINGs. */
  readonly cycleSeconds: number | undefined
  /** The channel was in a sticky `error` (failures or give-up): it is `connected` again. */
  readonly recovered: boolean
  /** The give-up stamp was cleared by this sync. */
  readonly clearedGiveUp: boolean
}

/**
 * A sync that made progress (PREPARED or SYNCING). `consecutive`: SYNCING after SYNCING (a full cycle);
 * `fromServer`: not the cached sync data replayed at start.
 */
export const syncSucceeded = (h: SyncHealth, now: number, fromServer: boolean, consecutive: boolean): SyncSuccess => {
  const cycleSeconds = consecutive && h.lastCycleEnd !== undefined ? (now - h.lastCycleEnd) / 1000 : undefined
  const clearedGiveUp = fromServer && h.givenUp
  return {
    health: {
      lastServerSync: fromServer ? now : h.lastServerSync,
      healthy: fromServer ? true : h.healthy,
      givenUp: clearedGiveUp ? false : h.givenUp,
      errorStreak: 0,
      lastProgress: now,
      lastCycleEnd: fromServer ? now : h.lastCycleEnd
    },
    cycleSeconds,
    recovered: h.errorStreak >= STICKY_FAILURES || clearedGiveUp,
    clearedGiveUp
  }
}

/**
 * A failed sync: `error` is the SDK's ERROR state (counted), otherwise RECONNECTING (only unhealthy).
 * `becameSticky`: this failure is the one that puts the channel in `error`.
 */
export const syncFailed = (
  h: SyncHealth,
  error: boolean
): { readonly health: SyncHealth; readonly becameSticky: boolean } => {
  const errorStreak = error ? h.errorStreak + 1 : h.errorStreak
  return {
    health: { ...h, healthy: false, lastCycleEnd: undefined, errorStreak },
    becameSticky: error && errorStreak === STICKY_FAILURES && !h.givenUp
  }
}

export interface WatchdogVerdict {
  readonly health: SyncHealth
  /** No progress for `SYNC_WATCHDOG_MS`: nudge the sync (and report it unless given up). */
  readonly stalled: boolean
  /** Failing for longer than the give-up threshold: stamp `sync-loop-give-up`. */
  readonly giveUp: boolean
}

/** The watchdog's look: a long poll in flight is not a failure, only a failing sync gives up. */
export const watchdogCheck = (h: SyncHealth, now: number, startedAt: number, giveUpMs: number): WatchdogVerdict => {
  const stalled = now - h.lastProgress > SYNC_WATCHDOG_MS
  const afterStall: SyncHealth = stalled
    ? { ...h, errorStreak: Math.max(h.errorStreak, STICKY_FAILURES), healthy: false }
    : h
  const giveUp = !afterStall.givenUp && !afterStall.healthy &&
    shouldGiveUp(now, afterStall.lastServerSync ?? startedAt, giveUpMs)
  return { health: giveUp ? { ...afterStall, givenUp: true } : afterStall, stalled, giveUp }
}
