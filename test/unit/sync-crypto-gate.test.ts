import { describe, expect, it } from "vitest"
import {
  countsKey,
  decideSyncCrypto,
  initialSyncCryptoGate,
  SYNC_CRYPTO_MAX_SKIP_MS,
  type SyncCryptoChanges
} from "../../src/domain/syncCryptoGate.js"

const idle: SyncCryptoChanges = {
  toDeviceEvents: [],
  oneTimeKeysCounts: { signed_curve25519: 50 },
  unusedFallbackKeys: ["signed_curve25519"]
}

describe("sync crypto gate", () => {
  it("the first sync is always processed", () => {
    expect(decideSyncCrypto(initialSyncCryptoGate, idle, 1_000).process).toBe(true)
  })

  it("an idle sync with the same counts is skipped, and state is kept", () => {
    const first = decideSyncCrypto(initialSyncCryptoGate, idle, 1_000)
    const second = decideSyncCrypto(first.state, { ...idle, oneTimeKeysCounts: { signed_curve25519: 50 } }, 31_000)
    expect(second.process).toBe(false)
    expect(second.state).toEqual(first.state)
  })

  it("to-device events, device-list changes and changed counts are processed", () => {
    const { state } = decideSyncCrypto(initialSyncCryptoGate, idle, 1_000)
    expect(decideSyncCrypto(state, { ...idle, toDeviceEvents: [{ type: "m.room.encrypted" }] }, 2_000).process).toBe(
      true
    )
    expect(decideSyncCrypto(state, { ...idle, deviceLists: { changed: ["@a:x"] } }, 2_000).process).toBe(true)
    expect(decideSyncCrypto(state, { ...idle, deviceLists: { left: ["@a:x"] } }, 2_000).process).toBe(true)
    expect(decideSyncCrypto(state, { ...idle, oneTimeKeysCounts: { signed_curve25519: 49 } }, 2_000).process).toBe(true)
    expect(decideSyncCrypto(state, { ...idle, unusedFallbackKeys: [] }, 2_000).process).toBe(true)
    // absent counts mean "none on the server" in sync v2: a change from 50
    expect(decideSyncCrypto(state, { toDeviceEvents: [] }, 2_000).process).toBe(true)
  })

  it("passes one idle sync through every maxSkipMs", () => {
    const { state } = decideSyncCrypto(initialSyncCryptoGate, idle, 1_000)
    expect(decideSyncCrypto(state, idle, 1_000 + SYNC_CRYPTO_MAX_SKIP_MS - 1).process).toBe(false)
    const due = decideSyncCrypto(state, idle, 1_000 + SYNC_CRYPTO_MAX_SKIP_MS)
    expect(due.process).toBe(true)
    expect(due.state.lastProcessedAt).toBe(1_000 + SYNC_CRYPTO_MAX_SKIP_MS)
  })

  it("the order of the server's keys does not matter", () => {
    expect(countsKey({ toDeviceEvents: [], oneTimeKeysCounts: { a: 1, b: 2 }, unusedFallbackKeys: ["y", "x"] })).toBe(
      countsKey({ toDeviceEvents: [], oneTimeKeysCounts: { b: 2, a: 1 }, unusedFallbackKeys: ["x", "y"] })
    )
  })
})
