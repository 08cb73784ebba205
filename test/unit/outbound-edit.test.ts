// Outbound.edit (issue 20): the replacement of one of the bot's events, through the room's queue, retried
// like a chunk under the caller's transaction id; and the reply variants that finish a streamed answer.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import { EventId, RoomId } from "../../src/domain/matrix.js"
import { finalEditTxnId, replyTxnId } from "../../src/domain/streaming.js"
import { makeOutbound, type MatrixTransport } from "../../src/layers/OutboundLive.js"

const eid = EventId.make
const ROOM = RoomId.make("!room:x")
const Q = eid("$question:x")

interface Sent {
  readonly threadId: string | null
  readonly content: Record<string, unknown>
  readonly txnId: string
}

const fake = (failures: Array<unknown> = []) => {
  const sent: Array<Sent> = []
  const transport: MatrixTransport = {
    send: async (_roomId, threadId, content, txnId) => {
      const f = failures.shift()
      if (f !== undefined) throw f
      sent.push({ threadId, content, txnId })
      return eid(`$ev-${txnId}`)
    },
    typing: async () => {},
    receipt: async () => {},
    room: (roomId) => (roomId === ROOM ? { encrypted: true } : undefined)
  }
  return { sent, transport }
}

const rateLimited = (ms: number) =>
  Object.assign(new Error("Too Many Requests"), {
    httpStatus: 429,
    errcode: "M_LIMIT_EXCEEDED",
    data: { errcode: "M_LIMIT_EXCEEDED", retry_after_ms: ms }
  })

describe("Outbound.edit", () => {
  it.effect("sends an m.replace of the event with the rendered text and resolves with the edit's id", () =>
    Effect.gen(function*() {
      const { sent, transport } = fake()
      const outbound = yield* makeOutbound(transport, { encrypted: true, baseDelayMs: 1 })
      const id = yield* outbound.edit({ roomId: ROOM, eventId: eid("$reply:x"), text: "**new** text", txnId: "t-1" })
      expect(id).toBe("$ev-t-1")
      expect(sent).toHaveLength(1)
      const c = sent[0]!.content
      expect(sent[0]!.txnId).toBe("t-1")
      expect(sent[0]!.threadId).toBeNull()
      expect(c["m.relates_to"]).toEqual({ rel_type: "m.replace", event_id: "$reply:x" })
      expect(c["body"]).toBe("* **new** text")
      expect(c["m.new_content"]).toMatchObject({
        msgtype: "m.notice",
        body: "**new** text",
        format: "org.matrix.custom.html",
        formatted_body: "<p><strong>new</strong> text</p>"
      })
      expect((c["m.new_content"] as Record<string, unknown>)["m.relates_to"]).toBeUndefined()
    }))

  it.effect("keeps the thread of the edited event for the local echo", () =>
    Effect.gen(function*() {
      const { sent, transport } = fake()
      const outbound = yield* makeOutbound(transport, { encrypted: true, baseDelayMs: 1 })
      yield* outbound.edit({ roomId: ROOM, eventId: eid("$r"), text: "x", txnId: "t", threadId: eid("$root") })
      expect(sent[0]!.threadId).toBe("$root")
      expect(sent[0]!.content["m.relates_to"]).toEqual({ rel_type: "m.replace", event_id: "$r" })
    }))

  it.effect("retries a 429 after retry_after_ms with the same transaction id", () =>
    Effect.gen(function*() {
      const failures: Array<unknown> = [rateLimited(5_000)]
      const { sent, transport } = fake(failures)
      const outbound = yield* makeOutbound(transport, { encrypted: true, baseDelayMs: 1 })
      const fiber = yield* Effect.fork(outbound.edit({ roomId: ROOM, eventId: eid("$r"), text: "x", txnId: "t-9" }))
      yield* Effect.promise(() => new Promise((r) => setImmediate(r))).pipe(Effect.repeatN(5))
      expect(sent).toHaveLength(0)
      yield* TestClock.adjust("4 seconds")
      expect(sent).toHaveLength(0)
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(fiber)).toBe("$ev-t-9")
      expect(sent.map((s) => s.txnId)).toEqual(["t-9"])
    }))

  it.effect("with one attempt, a 429 fails with its retry_after_ms (the stream driver backs off)", () =>
    Effect.gen(function*() {
      const { transport } = fake([rateLimited(2_500)])
      const outbound = yield* makeOutbound(transport, { encrypted: true, baseDelayMs: 1 })
      const e = yield* Effect.flip(
        outbound.edit({ roomId: ROOM, eventId: eid("$r"), text: "x", txnId: "t" }, { attempts: 1 })
      )
      expect(e.kind).toBe("send-failed")
      expect(e.retryAfterMs).toBe(2_500)
    }))

  it.effect("refuses a room the bot is not in", () =>
    Effect.gen(function*() {
      const { sent, transport } = fake()
      const outbound = yield* makeOutbound(transport, { encrypted: true })
      const e = yield* Effect.flip(
        outbound.edit({ roomId: RoomId.make("!other:x"), eventId: eid("$r"), text: "x", txnId: "t" })
      )
      expect(e.kind).toBe("room-not-found")
      expect(sent).toHaveLength(0)
    }))
})

describe("Outbound.reply finishing a streamed answer", () => {
  const long = Array.from({ length: 3000 }, (_, i) => `Sentence number ${i}.`).join(" ")

  it.effect("a plain reply is unchanged: the chunks only, no edit", () =>
    Effect.gen(function*() {
      const { sent, transport } = fake()
      const outbound = yield* makeOutbound(transport, { encrypted: true })
      const ids = yield* outbound.reply({ roomId: ROOM, text: long, inReplyTo: Q })
      expect(ids.length).toBeGreaterThan(1)
      expect(sent.map((s) => s.txnId)).toEqual(ids.map((_, i) => replyTxnId(Q, i)))
    }))

  it.effect("streamedReply: the final edit of the shown reply with chunk 0, then chunks 1.. as replies", () =>
    Effect.gen(function*() {
      const { sent, transport } = fake()
      const outbound = yield* makeOutbound(transport, { encrypted: true })
      const ids = yield* outbound.reply({ roomId: ROOM, text: long, inReplyTo: Q, streamedReply: eid("$shown") })
      expect(sent[0]!.txnId).toBe(finalEditTxnId(Q))
      expect(sent[0]!.content["m.relates_to"]).toEqual({ rel_type: "m.replace", event_id: "$shown" })
      expect(sent.slice(1).map((s) => s.txnId)).toEqual(sent.slice(1).map((_, i) => replyTxnId(Q, i + 1)))
      expect(ids[0]).toBe("$shown")
      expect(ids).toHaveLength(sent.length)
      for (const s of sent.slice(1)) expect(s.content["m.relates_to"]).toEqual({ "m.in_reply_to": { event_id: Q } })
    }))

  it.effect("mayHaveStreamed: chunk 0 under its derived id, the final edit of that event, then the rest", () =>
    Effect.gen(function*() {
      const { sent, transport } = fake()
      const outbound = yield* makeOutbound(transport, { encrypted: true })
      const ids = yield* outbound.reply({ roomId: ROOM, text: "short answer", inReplyTo: Q, mayHaveStreamed: true })
      expect(sent.map((s) => s.txnId)).toEqual([replyTxnId(Q, 0), finalEditTxnId(Q)])
      expect(sent[1]!.content["m.relates_to"]).toEqual({ rel_type: "m.replace", event_id: `$ev-${replyTxnId(Q, 0)}` })
      expect((sent[1]!.content["m.new_content"] as Record<string, unknown>)["body"]).toBe("short answer")
      expect(ids).toEqual([`$ev-${replyTxnId(Q, 0)}`])
    }))
})
