// The pure modules the Matrix runtime is built on: sync health, SDK error helpers, transaction ids,
// mention detection.
import { describe, expect, it } from "@effect/vitest"
import { mentionsBot } from "../../src/domain/inboundGate.js"
import { EventId, type InboundEvent, RoomId, UserId } from "../../src/domain/matrix.js"
import { describeSdkError, errcodeOf, isTokenRejection } from "../../src/domain/sendError.js"
import {
  initialSyncHealth,
  isReachable,
  REACHABLE_WITHIN_MS,
  STICKY_FAILURES,
  SYNC_GIVE_UP_MS,
  SYNC_WATCHDOG_MS,
  syncFailed,
  syncGiveUpMs,
  syncSucceeded,
  watchdogCheck
} from "../../src/domain/syncHealth.js"
import { testTxnId, txnIdFor } from "../../src/domain/txnId.js"

// the services take branded ids: the fixtures' strings, checked once
const eid = EventId.make
const rid = RoomId.make
const uid = UserId.make

describe("sync health", () => {
  it("a sync from the server makes the homeserver reachable; a cached one does not", () => {
    const h0 = initialSyncHealth(0)
    const cached = syncSucceeded(h0, 10, false, false).health
    expect(isReachable(cached, 20)).toBe(false)
    const live = syncSucceeded(cached, 30, true, false).health
    expect(isReachable(live, 40)).toBe(true)
    expect(isReachable(live, 30 + REACHABLE_WITHIN_MS)).toBe(false)
  })

  it("measures a cycle only between two consecutive syncs and not across a failure", () => {
    const a = syncSucceeded(initialSyncHealth(0), 1_000, true, false)
    expect(a.cycleSeconds).toBeUndefined()
    const b = syncSucceeded(a.health, 3_500, true, true)
    expect(b.cycleSeconds).toBe(2.5)
    const failed = syncFailed(b.health, true).health
    expect(syncSucceeded(failed, 9_000, true, true).cycleSeconds).toBeUndefined()
  })

  it("the third consecutive error is sticky; the next success recovers", () => {
    let h = initialSyncHealth(0)
    const sticky: Array<boolean> = []
    for (let i = 0; i < STICKY_FAILURES + 1; i++) {
      const r = syncFailed(h, true)
      sticky.push(r.becameSticky)
      h = r.health
    }
    expect(sticky).toEqual([false, false, true, false])
    // RECONNECTING is unhealthy but not counted
    expect(syncFailed(initialSyncHealth(0), false).health.errorStreak).toBe(0)
    const back = syncSucceeded(h, 100, true, false)
    expect(back.recovered).toBe(true)
    expect(back.health.errorStreak).toBe(0)
  })

  it("the watchdog nudges a stalled sync and gives up after the threshold, cleared by a server sync", () => {
    const giveUp = 10_000
    const h0 = initialSyncHealth(0)
    const quiet = watchdogCheck(h0, SYNC_WATCHDOG_MS, 0, SYNC_GIVE_UP_MS)
    expect(quiet.stalled).toBe(false)
    const stalled = watchdogCheck(h0, SYNC_WATCHDOG_MS + 1, 0, giveUp)
    expect(stalled.stalled).toBe(true)
    expect(stalled.health.errorStreak).toBe(STICKY_FAILURES)
    expect(stalled.giveUp).toBe(true)
    expect(stalled.health.givenUp).toBe(true)
    // stamped once
    expect(watchdogCheck(stalled.health, SYNC_WATCHDOG_MS + 2, 0, giveUp).giveUp).toBe(false)
    // a cached sync does not clear it, a server sync does
    expect(syncSucceeded(stalled.health, 200_000, false, false).clearedGiveUp).toBe(false)
    const cleared = syncSucceeded(stalled.health, 200_000, true, false)
    expect(cleared.clearedGiveUp).toBe(true)
    expect(cleared.recovered).toBe(true)
    expect(cleared.health.givenUp).toBe(false)
  })

  it("a healthy long poll is never given up", () => {
    const h = syncSucceeded(initialSyncHealth(0), 1, true, false).health
    expect(watchdogCheck(h, 60_000, 0, 1_000).giveUp).toBe(false)
  })

  it("the give-up threshold can be shortened only by the test variable", () => {
    expect(syncGiveUpMs({})).toBe(SYNC_GIVE_UP_MS)
    expect(syncGiveUpMs({ CARA_TEST_SYNC_GIVE_UP_MS: "8000" })).toBe(8000)
    expect(syncGiveUpMs({ CARA_TEST_SYNC_GIVE_UP_MS: "-1" })).toBe(SYNC_GIVE_UP_MS)
  })
})

describe("SDK errors", () => {
  it("describes by errcode and status, never with a URL", () => {
    expect(describeSdkError({ errcode: "M_FORBIDDEN", httpStatus: 403 })).toBe("M_FORBIDDEN (HTTP 403)")
    expect(describeSdkError(Object.assign(new Error("x"), { name: "ConnectionError" }))).toBe("ConnectionError")
    expect(describeSdkError(new Error("fetch https://hs.example/_matrix/x failed"))).toBe("fetch [URL] failed")
  })

  it("token rejections", () => {
    expect(errcodeOf({ errcode: "M_UNKNOWN_TOKEN" })).toBe("M_UNKNOWN_TOKEN")
    expect(errcodeOf(undefined)).toBeUndefined()
    expect(isTokenRejection("M_UNKNOWN_TOKEN")).toBe(true)
    expect(isTokenRejection("M_FORBIDDEN")).toBe(true)
    expect(isTokenRejection("M_LIMIT_EXCEEDED")).toBe(false)
    expect(isTokenRejection(undefined)).toBe(false)
  })
})

describe("transaction ids", () => {
  it("answers derive theirs from the event; probes are unique", () => {
    expect(txnIdFor("$a", 0)).toBe(txnIdFor("$a", 0))
    expect(txnIdFor("$a", 0)).not.toBe(txnIdFor("$a", 1))
    expect(txnIdFor("$a", 0)).toMatch(/^cara-r1-[0-9a-f]{40}-0$/)
    expect(testTxnId()).not.toBe(testTxnId())
    expect(testTxnId()).toMatch(/^cara-test-/)
  })
})

describe("mention detection", () => {
  const ev = (body: string, mentioned?: Array<string>): InboundEvent => ({
    eventId: eid("$e"),
    roomId: rid("!r:x"),
    sender: uid("@alice:x"),
    ts: 0,
    msgtype: "m.text",
    body,
    encrypted: false,
    ...(mentioned === undefined ? {} : { mentionedUserIds: mentioned })
  })
  it("m.mentions, the MXID, or the display name as a whole word", () => {
    expect(mentionsBot(ev("hi", ["@bot:x"]), "@bot:x", undefined)).toBe(true)
    expect(mentionsBot(ev("hi @bot:x"), "@bot:x", undefined)).toBe(true)
    expect(mentionsBot(ev("Carabot, help"), "@bot:x", "Carabot")).toBe(true)
    expect(mentionsBot(ev("carabots are fine"), "@bot:x", "Carabot")).toBe(false)
    expect(mentionsBot(ev("hello"), "@bot:x", "  ")).toBe(false)
  })
})
