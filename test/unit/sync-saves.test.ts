// The sync store's periodic save waits for news: an idle bot's token-only long polls write nothing; a
// response with data makes the next periodic save happen; a forced save (the clean stop) always writes.
import type { ISyncResponse } from "matrix-js-sdk"
import { describe, expect, it } from "vitest"
import { gateSyncSaves, type SaveableSyncStore, syncCarriesData } from "../../src/layers/matrix/syncSaves.js"

const tokenOnly = {
  next_batch: "s2",
  rooms: { join: {}, invite: {}, leave: {}, knock: {} },
  account_data: { events: [] },
  presence: { events: [] },
  to_device: { events: [] },
  device_lists: { changed: [], left: [] },
  device_one_time_keys_count: { signed_curve25519: 50 },
  "org.matrix.msc2732.device_unused_fallback_key_types": ["signed_curve25519"]
} as unknown as ISyncResponse

const withData = (patch: Record<string, unknown>) => ({ ...tokenOnly, ...patch }) as unknown as ISyncResponse

describe("syncCarriesData", () => {
  it("a token-only response (even with key counts) carries nothing; a bare one neither", () => {
    expect(syncCarriesData(tokenOnly)).toBe(false)
    expect(syncCarriesData({ next_batch: "s3" } as ISyncResponse)).toBe(false)
  })

  it("room updates, account data, presence, to-device, device lists and unknown fields are data", () => {
    for (
      const patch of [
        { rooms: { join: { "!r:x": { timeline: { events: [] } } } } },
        { rooms: { invite: { "!r:x": {} } } },
        { account_data: { events: [{ type: "m.push_rules", content: {} }] } },
        { presence: { events: [{ type: "m.presence", content: {} }] } },
        { to_device: { events: [{ type: "m.room_key_request", content: {} }] } },
        { device_lists: { changed: ["@a:x"], left: [] } },
        { device_lists: { changed: [], left: ["@a:x"] } },
        { "org.example.new_section": {} }
      ]
    ) expect(syncCarriesData(withData(patch)), JSON.stringify(patch)).toBe(true)
  })
})

/** A store like IndexedDBStore: wants a save when `due`, counts the real saves. */
const fakeStore = () => {
  const state = { due: true, saves: 0, data: 0 }
  const store: SaveableSyncStore = {
    setSyncData: async () => void state.data++,
    wantsSave: () => state.due,
    save: async function(this: SaveableSyncStore, force = false) {
      if (force || this.wantsSave()) state.saves++
    }
  }
  return { state, store }
}

describe("gateSyncSaves", () => {
  it("token-only syncs never make a periodic save; one with data does, once", async () => {
    const { state, store } = fakeStore()
    let drained = 0
    gateSyncSaves(store, async () => void drained++)
    for (let i = 0; i < 5; i++) {
      await store.setSyncData(tokenOnly)
      if (store.wantsSave()) await store.save()
    }
    expect(state.saves).toBe(0)
    expect(state.data).toBe(5) // every response still reaches the accumulator
    await store.setSyncData(withData({ to_device: { events: [{ type: "x", content: {} }] } }))
    expect(store.wantsSave()).toBe(true)
    await store.save()
    expect(state.saves).toBe(1)
    expect(drained).toBeGreaterThan(0)
    await store.setSyncData(tokenOnly)
    await store.save()
    expect(state.saves).toBe(1)
  })

  it("the store's own timing still rules: news does not save before it is due", async () => {
    const { state, store } = fakeStore()
    gateSyncSaves(store, async () => {})
    state.due = false
    await store.setSyncData(withData({ rooms: { join: { "!r:x": {} } } }))
    expect(store.wantsSave()).toBe(false)
    await store.save()
    expect(state.saves).toBe(0)
    state.due = true
    await store.save()
    expect(state.saves).toBe(1)
  })

  it("a forced save writes even with no news, and the returned save is the store's own", async () => {
    const { state, store } = fakeStore()
    const original = gateSyncSaves(store, async () => {})
    await store.save(true)
    expect(state.saves).toBe(1)
    await original(true)
    expect(state.saves).toBe(2)
  })
})
