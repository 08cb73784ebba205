// When the sync store writes its sync accumulator. matrix-js-sdk's IndexedDBStore saves the whole accumulator
// (every room's state and timeline tail: ~230 KB for 20 rooms) at most every 5 minutes, whenever a sync came in
// since: an idle bot, whose only news is the long poll's next token, wrote that every 5 minutes (~47 KB/min,
// bench/matrix-idle with BENCH_IDLE_TRACE_STORES=1). Here the periodic save waits until a response has carried
// something the accumulator keeps. A token that is not saved costs nothing: the next start syncs from the last
// saved token and the homeserver has nothing new for it in between, except what made the store want a save.
// The forced save at a clean stop still writes the newest token.
import type { ISyncResponse } from "matrix-js-sdk"

const nonEmpty = (xs: unknown): boolean => Array.isArray(xs) && xs.length > 0
const hasKeys = (o: unknown): boolean =>
  typeof o === "object" && o !== null && Object.values(o).some((v) => typeof v === "object" && v !== null)

/**
 * Whether a /sync response holds anything beyond its `next_batch` (and the one-time-key counts, which the
 * accumulator does not keep): room updates, account data, presence, to-device events or device-list changes.
 * Anything it does not recognise counts as data.
 */
export const syncCarriesData = (r: Partial<ISyncResponse> | undefined): boolean => {
  if (r === undefined || r === null || typeof r !== "object") return true
  const known = new Set([
    "next_batch",
    "rooms",
    "account_data",
    "presence",
    "to_device",
    "device_lists",
    "device_one_time_keys_count",
    "device_unused_fallback_key_types",
    "org.matrix.msc2732.device_unused_fallback_key_types"
  ])
  if (Object.keys(r).some((k) => !known.has(k))) return true
  const rooms = r.rooms as Record<string, unknown> | undefined
  if (rooms !== undefined && Object.values(rooms).some(hasKeys)) return true
  if (nonEmpty(r.account_data?.events) || nonEmpty(r.presence?.events) || nonEmpty(r.to_device?.events)) return true
  const lists = r.device_lists as { changed?: unknown; left?: unknown } | undefined
  return nonEmpty(lists?.changed) || nonEmpty(lists?.left)
}

/** The part of IndexedDBStore this gate replaces. */
export interface SaveableSyncStore {
  setSyncData: (syncData: ISyncResponse) => Promise<void>
  wantsSave: () => boolean
  save: (force?: boolean) => Promise<void>
}

/**
 * Patches `store` so that it wants a periodic save only once a response with data came in since the last
 * save, and so that every save first waits for `drain` (the event handlers still running). Returns the
 * unpatched save (for the forced save at the release).
 */
export const gateSyncSaves = (store: SaveableSyncStore, drain: () => Promise<void>) => {
  let unsaved = false
  const setSyncData = store.setSyncData.bind(store)
  const wantsSave = store.wantsSave.bind(store)
  const save = store.save.bind(store)
  store.setSyncData = (data) => {
    if (syncCarriesData(data)) unsaved = true
    return setSyncData(data)
  }
  store.wantsSave = () => unsaved && wantsSave()
  store.save = async (force = false) => {
    await drain()
    if (!force && !store.wantsSave()) return
    // a response that comes in while this save runs marks the store unsaved again
    unsaved = false
    return save(true)
  }
  return save
}
