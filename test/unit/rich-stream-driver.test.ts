// The streaming driver (src/layers/streamReply.ts) over the real Outbound, a fake transport and a turn the
// test feeds on the TestClock: the first chunk, throttled edits, 429 back-off, the final edit, a failure
// after deltas, and a fast model that is exactly one reply (as without streaming).
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, Queue, Schema, Stream, TestClock } from "effect"
import { Matrix } from "../../src/domain/config.js"
import { EventId, RoomId } from "../../src/domain/matrix.js"
import { DEFAULT_STREAM_SETTINGS, editTxnId, finalEditTxnId, replyTxnId } from "../../src/domain/streaming.js"
import { makeOutbound, type MatrixTransport } from "../../src/layers/OutboundLive.js"
import { answerTurn, type StreamingMode } from "../../src/layers/streamReply.js"
import type { AgentShape, TurnEvent, TurnOutcome } from "../../src/services/Agent.js"
import type { OutboundReply } from "../../src/services/Outbound.js"
import { SessionStoreError } from "../../src/services/Sessions.js"

const eid = EventId.make
const ROOM = RoomId.make("!room:x")
const Q = eid("$question:x")
const RUN = "run1"

const settle = Effect.promise(() => new Promise<void>((r) => setImmediate(r))).pipe(Effect.repeatN(20))

const completed = (text: string): TurnOutcome => ({
  _tag: "Completed",
  text,
  agent: "default",
  model: "fake",
  usage: { inputTokens: undefined, outputTokens: undefined },
  replayed: false
})

interface Sent {
  readonly at: number
  readonly txnId: string
  readonly content: Record<string, unknown>
}

const newBody = (s: Sent) => (s.content["m.new_content"] as Record<string, unknown> | undefined)?.["body"]
const isEdit = (s: Sent) =>
  (s.content["m.relates_to"] as Record<string, unknown> | undefined)?.["rel_type"] === "m.replace"

/** The world: the test's virtual time `t`, what went out (and typing), a turn fed through `feed`. */
const world = (opts: { mode?: StreamingMode; streamedBefore?: boolean; fail?: (txnId: string) => unknown } = {}) =>
  Effect.gen(function*() {
    const st = { t: 0, sent: [] as Array<Sent>, log: [] as Array<string>, marked: [] as Array<string>, turns: 0 }
    const transport: MatrixTransport = {
      send: async (_roomId, _threadId, content, txnId) => {
        const f = opts.fail?.(txnId)
        if (f !== undefined) throw f
        st.sent.push({ at: st.t, txnId, content })
        st.log.push(isEdit({ at: 0, txnId, content }) ? "edit" : "reply")
        return eid(`$ev-${txnId}`)
      },
      typing: async (_roomId, on) => void st.log.push(on ? "typing-on" : "typing-off"),
      receipt: async () => {},
      room: () => ({ encrypted: true })
    }
    const outbound = yield* makeOutbound(transport, { encrypted: true, baseDelayMs: 1 })
    const feed = yield* Queue.unbounded<TurnEvent>()
    const agent = {
      turn: () => {
        st.turns++
        return Stream.fromQueue(feed).pipe(Stream.takeUntil((e) => e._tag !== "Delta"))
      },
      reply: () => Effect.flatMap(Queue.takeAll(feed), (c) => Effect.succeed([...c].at(-1) as TurnOutcome))
    } as unknown as AgentShape
    const answer = answerTurn({
      agent,
      outbound,
      mode: opts.mode ?? "edits",
      run: RUN,
      markStreamed: (id) => Effect.sync(() => (st.marked.push(id), true)),
      streamedBefore: () => Effect.succeed(opts.streamedBefore ?? false)
    })
    const toReply = (text: string, streamed: object): OutboundReply => ({
      roomId: ROOM,
      text,
      inReplyTo: Q,
      ...streamed
    })
    const start = Effect.fork(answer({
      input: { roomId: ROOM, eventId: Q, senderId: "@a:x", text: "q", isGroup: false },
      toReply,
      send: (r) => Effect.orDie(outbound.reply(r))
    }))
    /** Lets `ms` pass on the clock (and the fibers run). */
    const pass = (ms: number) =>
      Effect.gen(function*() {
        yield* settle
        st.t += ms
        yield* TestClock.adjust(ms)
        yield* settle
      })
    const say = (...events: ReadonlyArray<TurnEvent>) => Effect.asVoid(Queue.offerAll(feed, events))
    return { st, start, pass, say }
  })

describe("matrix.streaming", () => {
  it("defaults to edits; off turns streaming off", () => {
    const decode = Schema.decodeUnknownSync(Matrix)
    expect(decode({}).streaming).toBe("edits")
    expect(decode({ streaming: null }).streaming).toBe("edits")
    expect(decode({ streaming: "off" }).streaming).toBe("off")
    expect(() => decode({ streaming: "tokens" })).toThrow()
  })
})

describe("the streaming driver", () => {
  it.effect("a fast model (complete before the first chunk is due) is exactly one reply, no edit", () =>
    Effect.gen(function*() {
      const { pass, say, st, start } = yield* world()
      yield* say({ _tag: "Delta", text: "Hello there. " }, { _tag: "Delta", text: "All done." })
      const fiber = yield* start
      yield* pass(10)
      yield* say(completed("Hello there. All done."))
      yield* pass(1_000)
      const { ids, outcome } = yield* Fiber.join(fiber)
      expect(outcome._tag).toBe("Completed")
      expect(st.sent.map((s) => s.txnId)).toEqual([replyTxnId(Q, 0)])
      expect(st.sent[0]!.content["body"]).toBe("Hello there. All done.")
      // sent when the turn ended (t = 10 ms), not after the whole 250 ms settle window
      expect(st.sent[0]!.at).toBe(10)
      expect(ids).toEqual([`$ev-${replyTxnId(Q, 0)}`])
      expect(st.marked).toEqual([])
    }))

  it.effect("first chunk at a sentence, throttled edits with growth, the final edit with the full formatted body", () =>
    Effect.gen(function*() {
      const { pass, say, st, start } = yield* world()
      const fiber = yield* start
      yield* say({ _tag: "Delta", text: "Start. " })
      yield* pass(250)
      expect(st.sent.map((s) => s.txnId)).toEqual([replyTxnId(Q, 0)])
      expect(st.sent[0]!.content["body"]).toBe("Start.")
      expect(st.marked).toEqual([Q])
      let full = "Start. "
      for (let i = 0; i < 40; i++) {
        full += "**word** "
        yield* say({ _tag: "Delta", text: "**word** " })
        yield* pass(100)
      }
      yield* say(completed(full))
      yield* pass(10)
      const { ids } = yield* Fiber.join(fiber)
      const edits = st.sent.filter(isEdit)
      const intermediate = edits.slice(0, -1)
      expect(intermediate.length).toBeGreaterThanOrEqual(2)
      expect(intermediate.map((s) => s.txnId)).toEqual(intermediate.map((_, i) => editTxnId(Q, RUN, i + 1)))
      const times = st.sent.slice(0, -1).map((s) => s.at)
      for (let i = 1; i < times.length; i++) {
        expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(DEFAULT_STREAM_SETTINGS.editIntervalMs)
      }
      const shown = st.sent.slice(0, -1).map((s) => (isEdit(s) ? String(newBody(s)) : String(s.content["body"])))
      for (let i = 2; i < shown.length; i++) {
        expect(shown[i]!.length - shown[i - 1]!.length).toBeGreaterThanOrEqual(DEFAULT_STREAM_SETTINGS.minGrowthChars)
      }
      const final = st.sent.at(-1)!
      expect(final.txnId).toBe(finalEditTxnId(Q))
      expect(final.content["m.relates_to"]).toEqual({ rel_type: "m.replace", event_id: `$ev-${replyTxnId(Q, 0)}` })
      expect(newBody(final)).toBe(full.trim())
      expect((final.content["m.new_content"] as Record<string, unknown>)["formatted_body"]).toContain(
        "<strong>word</strong>"
      )
      expect(ids).toEqual([`$ev-${replyTxnId(Q, 0)}`])
      // typing stays on until the final edit is out
      expect(st.log.indexOf("typing-off")).toBeGreaterThan(st.log.lastIndexOf("edit"))
    }))

  it.effect("a 429 on an edit: nothing more before retry_after_ms, then edits go on", () =>
    Effect.gen(function*() {
      let limited = false
      const fail = (txnId: string) => {
        if (!limited && txnId === editTxnId(Q, RUN, 1)) {
          limited = true
          return Object.assign(new Error("Too Many Requests"), {
            httpStatus: 429,
            errcode: "M_LIMIT_EXCEEDED",
            data: { errcode: "M_LIMIT_EXCEEDED", retry_after_ms: 4_000 }
          })
        }
        return undefined
      }
      const { pass, say, st, start } = yield* world({ fail })
      const fiber = yield* start
      yield* say({ _tag: "Delta", text: "First sentence. " })
      yield* pass(250)
      yield* say({ _tag: "Delta", text: "x".repeat(100) })
      yield* pass(1_000) // the edit is due at 1250 and refused
      expect(limited).toBe(true)
      expect(st.sent).toHaveLength(1)
      yield* pass(3_000)
      expect(st.sent).toHaveLength(1)
      yield* pass(1_000)
      expect(st.sent).toHaveLength(2)
      expect(st.sent[1]!.txnId).toBe(editTxnId(Q, RUN, 1))
      expect(st.sent[1]!.at).toBeGreaterThanOrEqual(1_250 + 4_000)
      yield* say(completed("First sentence. " + "x".repeat(100)))
      yield* pass(10)
      yield* Fiber.join(fiber)
      expect(st.sent.at(-1)!.txnId).toBe(finalEditTxnId(Q))
    }))

  it.effect("a failed model after deltas were shown: the final edit shows the failure text", () =>
    Effect.gen(function*() {
      const { pass, say, st, start } = yield* world()
      const fiber = yield* start
      yield* say({ _tag: "Delta", text: "Partial answer. " })
      yield* pass(250)
      expect(st.sent).toHaveLength(1)
      yield* say({ _tag: "Failed", text: "The model is unavailable right now.", error: undefined as never })
      yield* pass(10)
      const { outcome } = yield* Fiber.join(fiber)
      expect(outcome._tag).toBe("Failed")
      expect(st.sent).toHaveLength(2)
      expect(st.sent[1]!.txnId).toBe(finalEditTxnId(Q))
      expect(newBody(st.sent[1]!)).toBe("The model is unavailable right now.")
    }))

  it.effect("no sentence: the first chunk 1 s after the first text (plus the settle wait)", () =>
    Effect.gen(function*() {
      const { pass, say, st, start } = yield* world()
      const fiber = yield* start
      yield* say({ _tag: "Delta", text: "no stop yet" })
      yield* pass(900)
      expect(st.sent).toHaveLength(0)
      yield* pass(100)
      expect(st.sent).toHaveLength(0)
      yield* pass(250)
      expect(st.sent.map((s) => s.content["body"])).toEqual(["no stop yet"])
      yield* say(completed("no stop yet, now done"))
      yield* pass(10)
      yield* Fiber.join(fiber)
      expect(newBody(st.sent.at(-1)!)).toBe("no stop yet, now done")
    }))

  it.effect("an event a previous run may have streamed: chunk 0 under its id, then the final edit", () =>
    Effect.gen(function*() {
      const { pass, say, st, start } = yield* world({ streamedBefore: true })
      yield* say(completed("The stored answer."))
      const fiber = yield* start
      yield* pass(10)
      yield* Fiber.join(fiber)
      expect(st.sent.map((s) => s.txnId)).toEqual([replyTxnId(Q, 0), finalEditTxnId(Q)])
      expect(newBody(st.sent[1]!)).toBe("The stored answer.")
    }))

  it.effect("a first chunk the homeserver refuses stops the preview; the end re-sends it under its id, then edits", () =>
    Effect.gen(function*() {
      const refused = Object.assign(new Error("Forbidden"), {
        httpStatus: 403,
        errcode: "M_FORBIDDEN",
        data: { errcode: "M_FORBIDDEN" }
      })
      let refusedOnce = false
      const fail = (txnId: string) => {
        if (refusedOnce || txnId !== replyTxnId(Q, 0)) return undefined
        refusedOnce = true
        return refused
      }
      const { pass, say, st, start } = yield* world({ fail })
      const fiber = yield* start
      yield* say({ _tag: "Delta", text: "Hello. " })
      yield* pass(250)
      expect(refusedOnce).toBe(true)
      yield* say({ _tag: "Delta", text: "x".repeat(200) })
      yield* pass(5_000)
      expect(st.sent).toHaveLength(0)
      yield* say(completed("Hello. " + "x".repeat(200)))
      yield* pass(10)
      yield* Fiber.join(fiber)
      expect(st.sent.map((s) => s.txnId)).toEqual([replyTxnId(Q, 0), finalEditTxnId(Q)])
    }))

  it.effect("a history store failure after deltas fails the answer (it goes to the DLQ, not answered twice)", () =>
    Effect.gen(function*() {
      const { st } = yield* world()
      const outbound = yield* makeOutbound({
        send: async (_r, _t, content, txnId) => (st.sent.push({ at: 0, txnId, content }), eid(`$ev-${txnId}`)),
        typing: async () => {},
        receipt: async () => {},
        room: () => ({ encrypted: true })
      }, { encrypted: true })
      const agent = {
        turn: () =>
          Stream.concat(
            Stream.make({ _tag: "Delta" as const, text: "Shown. " }),
            Stream.fail(new SessionStoreError({ kind: "agent-history-io", message: "disk full" }))
          )
      } as unknown as AgentShape
      const answer = answerTurn({
        agent,
        outbound,
        mode: "edits",
        run: RUN,
        settleMs: 0,
        markStreamed: () => Effect.succeed(true),
        streamedBefore: () => Effect.succeed(false)
      })
      const error = yield* Effect.flip(answer({
        input: { roomId: ROOM, eventId: Q, senderId: "@a:x", text: "q", isGroup: false },
        toReply: (text, streamed) => ({ roomId: ROOM, text, inReplyTo: Q, ...streamed }),
        send: () => Effect.die("no final send after a store failure")
      }))
      expect(error._tag).toBe("SessionStoreError")
    }))

  it.effect("matrix.streaming off: the drained reply, one event, the turn's stream is not used", () =>
    Effect.gen(function*() {
      const { pass, say, st, start } = yield* world({ mode: "off" })
      yield* say({ _tag: "Delta", text: "Long. " }, completed("Long. Answer."))
      const fiber = yield* start
      yield* pass(10)
      const { ids } = yield* Fiber.join(fiber)
      expect(st.turns).toBe(0)
      expect(st.sent.map((s) => s.txnId)).toEqual([replyTxnId(Q, 0)])
      expect(Option.fromNullable(ids).pipe(Option.map((x) => x.length))).toEqual(Option.some(1))
    }))
})
