// Which /sync responses the Rust crypto must see. matrix-js-sdk hands every sync's to-device events, device-list
// changes, one-time-key counts and fallback-key types to the OlmMachine in one `processSyncChanges` call, and the
// machine saves its account after each call whether anything changed or not: on an idle daemon that is two
// account writes a minute (docs/benchmarks.md, "Bytes per commit"). A sync that carries no to-device event, no
// device-list change and the same key counts as the last one the machine saw changes nothing in it, so the
// gateway skips it; it still passes one through at least every `maxSkipMs`, for what the machine does on its
// own clock (fallback-key rotation).

export interface SyncCryptoChanges {
  readonly toDeviceEvents: ReadonlyArray<unknown>
  readonly deviceLists?: { readonly changed?: ReadonlyArray<string>; readonly left?: ReadonlyArray<string> } | undefined
  readonly oneTimeKeysCounts?: Readonly<Record<string, number>> | undefined
  readonly unusedFallbackKeys?: ReadonlyArray<string> | undefined
}

export interface SyncCryptoGateState {
  /** the key counts of the last sync the machine processed; undefined before the first */
  readonly lastCounts: string | undefined
  readonly lastProcessedAt: number
}

/** Ten minutes: far inside the Rust crypto's fallback-key rotation period (a week or more). */
export const SYNC_CRYPTO_MAX_SKIP_MS = 10 * 60_000

export const initialSyncCryptoGate: SyncCryptoGateState = { lastCounts: undefined, lastProcessedAt: 0 }

/** The key counts in a canonical form (the order of the server's JSON keys does not matter). */
export const countsKey = (changes: SyncCryptoChanges): string => {
  const counts = Object.entries(changes.oneTimeKeysCounts ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  const fallback = changes.unusedFallbackKeys === undefined ? null : [...changes.unusedFallbackKeys].sort()
  return JSON.stringify([counts, fallback])
}

const isEmpty = (list: ReadonlyArray<unknown> | undefined) => list === undefined || list.length === 0

/** Whether the machine must process this sync; the state to keep either way. */
export const decideSyncCrypto = (
  state: SyncCryptoGateState,
  changes: SyncCryptoChanges,
  now: number,
  maxSkipMs: number = SYNC_CRYPTO_MAX_SKIP_MS
): { readonly process: boolean; readonly state: SyncCryptoGateState } => {
  const counts = countsKey(changes)
  const nothingNew = changes.toDeviceEvents.length === 0 &&
    isEmpty(changes.deviceLists?.changed) &&
    isEmpty(changes.deviceLists?.left) &&
    counts === state.lastCounts
  if (nothingNew && now - state.lastProcessedAt < maxSkipMs) return { process: false, state }
  return { process: true, state: { lastCounts: counts, lastProcessedAt: now } }
}
