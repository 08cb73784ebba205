// Replies that cannot be sent (issue 17, point 2): the pending-reply retrier over a fake transport, with the
// test clock. An outage of any length costs no round and no DLQ entry; the reply goes out once the homeserver
// is reachable again, under its original transaction ids; a reply that keeps failing while the homeserver is
// reachable goes to the DLQ after the cap, one the homeserver refuses at once; rows a restart left without
// their text are resumed. Also: the ledger's pending rows, the verification broadcast limit, the give-up rule.
import { describe, expect, it } from "@effect/vitest"
import { type Duration, Effect, Option, TestClock } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { EventId, MatrixError, RoomId } from "../../src/domain/matrix.js"
import { makeKeyedBuckets, VERIFICATION_BROADCAST_LIMIT } from "../../src/domain/rateLimit.js"
import { openLedger } from "../../src/layers/InboundLive.js"
import { giveUpMessage, shouldGiveUp, SYNC_GIVE_UP_MS } from "../../src/layers/MatrixSyncLive.js"
import {
  type HeldReply,
  makeOutbound,
  makeReplyRetry,
  type MatrixTransport,
  type ReplyRetryOptions,
  txnIdFor
} from "../../src/layers/OutboundLive.js"
import type { OutboundReply } from "../../src/services/Outbound.js"
import { tmpDir } from "../support/tmp.js"

// the services take branded ids: the fixtures' strings, checked once
const eid = EventId.make
const rid = RoomId.make

const ROOM = rid("!joined:x")
const reply: OutboundReply = { roomId: ROOM, text: "the answer", inReplyTo: eid("$question:x") }
const held: HeldReply = { reply, senderId: "@alice:x", isGroup: false }

/** Lets fibers blocked on the fake transport's promises run (no time passes on the test clock). */
const settle = Effect.promise(() => new Promise<void>((r) => setImmediate(r))).pipe(Effect.repeatN(20))

const world = (options: Partial<ReplyRetryOptions> = {}) =>
  Effect.gen(function*() {
    const state = {
      up: false,
      /** errors the transport throws, in order; when empty it fails while `up` is false, else it accepts */
      failures: [] as Array<unknown>,
      alwaysFail: undefined as unknown,
      sends: [] as Array<string>,
      sent: [] as Array<{ eventId: string; ids: ReadonlyArray<string> }>,
      dead: [] as Array<HeldReply>,
      deadFails: false,
      attempts: [] as Array<string>,
      rows: [] as Array<{ eventId: string; roomId: string }>,
      resumed: [] as Array<string>
    }
    const transport: MatrixTransport = {
      send: async (_roomId, _threadId, _content, txnId) => {
        state.sends.push(txnId)
        const f = state.failures.shift()
        if (typeof f === "function") f()
        if (f !== undefined) throw f
        if (state.alwaysFail !== undefined) throw state.alwaysFail
        if (!state.up) throw new TypeError("fetch failed")
        return eid(`$sent-${txnId}`)
      },
      typing: async () => {},
      receipt: async () => {},
      room: (roomId) => (roomId === ROOM ? { encrypted: true } : undefined)
    }
    const outbound = yield* makeOutbound(transport, { encrypted: true, baseDelayMs: 1, maxAttempts: 1 })
    const retry = yield* makeReplyRetry({
      outbound,
      reachable: Effect.sync(() => state.up),
      attemptFailed: (_r, d) => Effect.sync(() => void state.attempts.push(d)),
      // a commit takes the ledger row with it
      sent: (eventId, ids) =>
        Effect.sync(() => {
          state.sent.push({ eventId, ids })
          state.rows = state.rows.filter((r) => r.eventId !== eventId)
        }),
      deadLetter: Option.some((h) => (state.deadFails ? Effect.fail({ message: "DLQ full" }) : Effect.sync(() =>
        void state.dead.push(h)
      ))),
      pendingRows: Effect.sync(() => state.rows),
      resume: (eventId) => Effect.sync(() => void state.resumed.push(eventId))
    }, {
      deadLetterAfterRounds: 3,
      roundBaseDelayMs: 10_000,
      roundMaxDelayMs: 60_000,
      attemptsPerRound: 1,
      tickMs: 1_000,
      ...options
    })
    yield* retry.start
    /** The first try, as the inbound pipeline makes it, then the hand-over. */
    const firstTry = (r: OutboundReply = reply) =>
      Effect.gen(function*() {
        const err = yield* Effect.flip(outbound.reply(r))
        yield* retry.hold({ ...held, reply: r }, err)
        return err
      })
    const advance = (d: Duration.DurationInput, times = 1) =>
      Effect.gen(function*() {
        for (let i = 0; i < times; i++) {
          yield* TestClock.adjust(d)
          yield* settle
        }
      })
    return { state, retry, firstTry, advance }
  })

describe("pending replies", () => {
  it.scoped("an outage of any length costs no round and no DLQ entry; back up, the reply goes out once under its first transaction id", () =>
    Effect.gen(function*() {
      const { advance, firstTry, retry, state } = yield* world({ tickMs: 3_600_000 })
      expect((yield* firstTry()).kind).toBe("send-failed")
      expect(yield* retry.held).toBe(1)
      // a week without the homeserver, a round due every hour: nothing is tried, nothing counts
      yield* advance("1 hour", 24 * 7)
      expect(state.sends).toHaveLength(1)
      expect(state.dead).toEqual([])
      state.up = true
      yield* advance("1 hour")
      expect(state.sent).toEqual([{ eventId: reply.inReplyTo, ids: [`$sent-${txnIdFor(reply.inReplyTo, 0)}`] }])
      expect(state.sends).toEqual([txnIdFor(reply.inReplyTo, 0), txnIdFor(reply.inReplyTo, 0)])
      expect(yield* retry.held).toBe(0)
      // and never again
      yield* advance("1 hour", 3)
      expect(state.sends).toHaveLength(2)
      expect(state.sent).toHaveLength(1)
    }))

  it.scoped("a kick after a successful sync sends at once; the homeserver leaving mid-round costs nothing", () =>
    Effect.gen(function*() {
      const { advance, firstTry, retry, state } = yield* world({ tickMs: 3_600_000 })
      yield* firstTry()
      state.up = true
      yield* retry.kick
      yield* settle
      expect(state.sent.map((s) => s.eventId)).toEqual([reply.inReplyTo])
      // a second reply: the homeserver goes away during its round; that round does not count, and the
      // first kick once it is back sends the reply at once (no backoff was earned)
      const second: OutboundReply = { ...reply, inReplyTo: eid("$second:x") }
      state.up = false
      yield* firstTry(second)
      yield* advance("1 hour")
      state.up = true
      state.failures.push(() => (state.up = false))
      yield* retry.kick
      yield* settle
      expect(state.sent).toHaveLength(1)
      state.up = true
      yield* retry.kick
      yield* settle
      expect(state.sent.map((s) => s.eventId)).toEqual([reply.inReplyTo, second.inReplyTo])
      expect(state.dead).toEqual([])
    }))

  it.scoped("a reply that keeps failing while the homeserver is reachable goes to the DLQ after the cap, and is not sent again", () =>
    Effect.gen(function*() {
      const { advance, firstTry, retry, state } = yield* world()
      state.up = true
      state.alwaysFail = { errcode: "M_UNKNOWN", httpStatus: 502 }
      yield* firstTry()
      // rounds 10 s, 20 s, 40 s apart (cap 3 rounds)
      yield* advance("5 seconds", 30)
      expect(state.dead.map((h) => h.reply)).toEqual([reply])
      expect(state.dead[0]!.senderId).toBe("@alice:x")
      expect(state.sends).toHaveLength(4)
      expect(new Set(state.sends)).toEqual(new Set([txnIdFor(reply.inReplyTo, 0)]))
      expect(state.attempts.length).toBeGreaterThanOrEqual(3)
      expect(yield* retry.held).toBe(0)
      yield* advance("1 minute", 10)
      expect(state.sends).toHaveLength(4)
      expect(state.sent).toEqual([])
    }))

  it.scoped("a refusal (send-terminal) goes to the DLQ at once; a DLQ that cannot take it leaves the reply held and retried", () =>
    Effect.gen(function*() {
      const { advance, firstTry, retry, state } = yield* world()
      state.up = true
      state.deadFails = true
      state.failures.push({ errcode: "M_FORBIDDEN", httpStatus: 403 })
      expect((yield* firstTry()).kind).toBe("send-terminal")
      expect(state.dead).toEqual([])
      expect(yield* retry.held).toBe(1)
      // the next round finds the room open again and sends it
      yield* advance("10 seconds", 2)
      expect(state.sent.map((s) => s.eventId)).toEqual([reply.inReplyTo])
      expect(yield* retry.held).toBe(0)
      state.deadFails = false
      state.failures.push({ errcode: "M_FORBIDDEN", httpStatus: 403 })
      const other: OutboundReply = { ...reply, inReplyTo: eid("$other:x") }
      yield* firstTry(other)
      expect(state.dead.map((h) => h.reply.inReplyTo)).toEqual([other.inReplyTo])
      // a revoked token is not a dead letter: the row stays for the next start
      state.failures.push({ errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 })
      expect((yield* firstTry({ ...reply, inReplyTo: eid("$revoked:x") })).kind).toBe("auth-token-revoked")
      expect(state.dead).toHaveLength(1)
      expect(yield* retry.held).toBe(0)
    }))

  it.scoped("pending rows this process does not hold (a restart lost their text) are resumed, with backoff, only while reachable", () =>
    Effect.gen(function*() {
      const { advance, retry, state } = yield* world()
      state.rows = [{ eventId: "$orphan:x", roomId: ROOM }]
      yield* advance("1 second", 5)
      expect(state.resumed).toEqual([])
      state.up = true
      yield* advance("1 second")
      expect(state.resumed).toEqual(["$orphan:x"])
      yield* advance("1 second", 5)
      expect(state.resumed).toHaveLength(1)
      yield* advance("10 seconds")
      expect(state.resumed).toHaveLength(2)
      // once the resumed answer fails again it is held here, and no longer resumed
      yield* retry.hold(
        { ...held, reply: { ...reply, inReplyTo: eid("$orphan:x") } },
        new MatrixError({ kind: "send-failed", message: "x" })
      )
      yield* advance("1 minute", 3)
      expect(state.resumed).toHaveLength(2)
    }))
})

describe("the ledger's pending replies", () => {
  it("counts failed attempts per event, keeps the first failure time, survives a reopen, and goes with the commit", () => {
    const dir = tmpDir("cara-pending-")
    const file = path.join(dir, "ledger.sqlite")
    const a = openLedger(file)
    a.claim("$1", "!r", 1)
    a.claim("$2", "!r", 2)
    a.pendingFailed("$1", "!r", "send-failed: TypeError", 10)
    a.pendingFailed("$1", "!r", "send-failed: M_UNKNOWN (HTTP 502)", 20)
    a.pendingFailed("$2", "!r", "send-failed: TypeError", 15)
    a.close()
    const b = openLedger(file)
    expect(b.pending()).toEqual([
      { eventId: "$1", roomId: "!r", firstFailedAt: 10, attempts: 2, lastError: "send-failed: M_UNKNOWN (HTTP 502)" },
      { eventId: "$2", roomId: "!r", firstFailedAt: 15, attempts: 1, lastError: "send-failed: TypeError" }
    ])
    b.commit("$1", ["$reply"], 30)
    expect(b.pending().map((r) => r.eventId)).toEqual(["$2"])
    expect(b.state("$1")).toBe("committed")
    expect(b.unfinished().map((r) => r.eventId)).toEqual(["$2"])
    b.close()
    expect(fs.statSync(file).mode & 0o777).toBe(0o600)
  })
})

describe("sync give-up", () => {
  it("is due only after the threshold since the last success (or the start), and says it recovers by itself", () => {
    expect(shouldGiveUp(1_000 + SYNC_GIVE_UP_MS, 1_000, SYNC_GIVE_UP_MS)).toBe(false)
    expect(shouldGiveUp(1_001 + SYNC_GIVE_UP_MS, 1_000, SYNC_GIVE_UP_MS)).toBe(true)
    expect(giveUpMessage(SYNC_GIVE_UP_MS)).toContain("for over 24 h")
    expect(giveUpMessage(SYNC_GIVE_UP_MS)).toContain("clears this on the next successful sync")
  })
})

describe("verification broadcast limit", () => {
  it("allows a burst of 16 per peer device, refills 16 per minute, and one peer cannot evict another's buckets", () => {
    const b = makeKeyedBuckets(VERIFICATION_BROADCAST_LIMIT)
    const takes = (peer: string, key: string, n: number, now: number) =>
      Array.from({ length: n }, () => b.take(peer, key, now)).filter(Boolean).length
    expect(takes("@a:x", "@a:x/D1", 20, 0)).toBe(16)
    expect(b.take("@a:x", "@a:x/D2", 0)).toBe(true)
    // 8 tokens back after 30 s; 3 left after taking 5, and 8 more after another 30 s
    expect(takes("@a:x", "@a:x/D1", 5, 30_000)).toBe(5)
    expect(takes("@a:x", "@a:x/D1", 20, 60_000)).toBe(11)
    // a peer inventing device ids keeps at most 64 buckets; the other peer's bucket stays (and stays empty)
    expect(takes("@b:x", "@b:x/D", 16, 0)).toBe(16)
    for (let i = 0; i < 1_000; i++) b.take("@a:x", `@a:x/flood-${i}`, 60_000)
    expect(b.size()).toBeLessThanOrEqual(65)
    expect(b.take("@b:x", "@b:x/D", 0)).toBe(false)
  })
})
