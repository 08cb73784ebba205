// Outbound.whileTyping and readReceipt: typing shows only for an answer that takes longer than TYPING_DELAY,
// is refreshed while it lasts, and is switched off once the answer is out; a quick answer sends no typing at
// all. Read receipts go out in the background, one at a time per room, the newest queued one next.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, TestClock } from "effect"
import { EventId, RoomId } from "../../src/domain/matrix.js"
import { makeOutbound, type MatrixTransport, TYPING_DELAY } from "../../src/layers/OutboundLive.js"

const ROOM = RoomId.make("!room:x")

const fake = () => {
  const typing: Array<{ on: boolean; at: number }> = []
  let now = 0
  const transport: MatrixTransport = {
    send: async (_roomId, _threadId, _content, txnId) => EventId.make(`$ev-${txnId}`),
    typing: async (_roomId, on) => void typing.push({ on, at: now }),
    receipt: async () => {},
    room: () => ({ encrypted: true })
  }
  return { typing, transport, setNow: (ms: number) => (now = ms) }
}

/** Lets the forked typing fiber run after each clock step. */
const step = (ms: number) => Effect.zipRight(TestClock.adjust(Duration.millis(ms)), Effect.yieldNow())

describe("Outbound.whileTyping", () => {
  it.effect("a quick answer sends no typing notification at all", () =>
    Effect.gen(function*() {
      const { transport, typing } = fake()
      const outbound = yield* makeOutbound(transport, { encrypted: true })
      const value = yield* outbound.whileTyping(ROOM, Effect.as(Effect.sleep(Duration.millis(50)), 42)).pipe(
        Effect.fork,
        Effect.tap(() => step(50)),
        Effect.flatMap(Fiber.join)
      )
      expect(value).toBe(42)
      for (let i = 0; i < 10; i++) yield* step(1_000)
      expect(typing).toEqual([])
    }))

  it.effect("a slow answer: typing from TYPING_DELAY on, refreshed, and off once the answer is out", () =>
    Effect.gen(function*() {
      const { setNow, transport, typing } = fake()
      const outbound = yield* makeOutbound(transport, { encrypted: true })
      const fiber = yield* Effect.fork(outbound.whileTyping(ROOM, Effect.sleep(Duration.seconds(45))))
      const delay = Duration.toMillis(TYPING_DELAY)
      let t = 0
      const advance = (ms: number) => Effect.zipRight(Effect.sync(() => setNow(t += ms)), step(ms))
      yield* advance(delay - 1)
      expect(typing).toEqual([])
      yield* advance(1)
      expect(typing).toEqual([{ on: true, at: delay }])
      // refreshed every 20 s while the answer takes
      while (t < 45_000) yield* advance(1_000)
      yield* Fiber.join(fiber)
      yield* step(0)
      expect(typing.filter((x) => x.on).length).toBeGreaterThanOrEqual(2)
      expect(typing.at(-1)?.on).toBe(false)
      expect(typing.filter((x) => !x.on)).toHaveLength(1)
    }))
})

describe("Outbound.readReceipt", () => {
  it.effect("returns before the receipt is out; one at a time per room, the newest queued one next", () =>
    Effect.gen(function*() {
      const sent: Array<string> = []
      const release: Array<() => void> = []
      const transport: MatrixTransport = {
        send: async (_roomId, _threadId, _content, txnId) => EventId.make(`$ev-${txnId}`),
        typing: async () => {},
        receipt: (roomId, eventId) =>
          new Promise<void>((resolve) => {
            sent.push(`${roomId} ${eventId}`)
            release.push(resolve)
          }),
        room: () => ({ encrypted: true })
      }
      const outbound = yield* makeOutbound(transport, { encrypted: true })
      const other = RoomId.make("!other:x")
      const settle = Effect.promise(() => new Promise<void>((r) => setImmediate(r))).pipe(Effect.repeatN(5))
      yield* outbound.readReceipt(ROOM, EventId.make("$1"))
      yield* settle
      // the first is on its way (its promise is still open) and did not hold up the caller
      expect(sent).toEqual(["!room:x $1"])
      yield* outbound.readReceipt(ROOM, EventId.make("$2"))
      yield* outbound.readReceipt(ROOM, EventId.make("$3"))
      yield* outbound.readReceipt(other, EventId.make("$a"))
      yield* settle
      // another room does not wait; this room's next receipt waits for the first
      expect(sent).toEqual(["!room:x $1", "!other:x $a"])
      release.shift()!()
      yield* settle
      // $2 is superseded by $3
      expect(sent).toEqual(["!room:x $1", "!other:x $a", "!room:x $3"])
      for (const r of release.splice(0)) r()
      yield* settle
      yield* outbound.readReceipt(ROOM, EventId.make("$4"))
      yield* settle
      expect(sent.at(-1)).toBe("!room:x $4")
    }))
})
