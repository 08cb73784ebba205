// Lifecycle reactions (matrix.reactions): the pure content and transaction ids, and the best-effort
// sequence over a fake transport.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Schema } from "effect"
import { Matrix } from "../../src/domain/config.js"
import { EventId, type RoomId } from "../../src/domain/matrix.js"
import {
  FAILED_REACTION,
  reactionContent,
  reactionTxnId,
  unreactTxnId,
  WORKING_REACTION
} from "../../src/domain/reactions.js"
import { lifecycleReactions } from "../../src/layers/reactions.js"
import type { MatrixTransportShape } from "../../src/services/MatrixTransport.js"

/** A test room id (the brand is what the runtime gives after its checked decode). */
const ROOM = "!r" as RoomId

const fakeTransport = (fail: { react?: boolean; redact?: boolean } = {}) => {
  const calls: Array<{ op: string; roomId: string; arg: unknown; txnId: string }> = []
  const transport: MatrixTransportShape = {
    send: async () => EventId.make("$m"),
    typing: async () => {},
    receipt: async () => {},
    room: () => ({ encrypted: true }),
    react: async (roomId, content, txnId) => {
      calls.push({ op: "react", roomId, arg: content, txnId })
      if (fail.react) throw new Error("M_FORBIDDEN")
      return `$r${calls.length}`
    },
    redact: async (roomId, eventId, txnId) => {
      calls.push({ op: "redact", roomId, arg: eventId, txnId })
      if (fail.redact) throw new Error("M_FORBIDDEN")
    }
  }
  return { transport, calls }
}

describe("lifecycle reactions", () => {
  it("reaction content is an m.annotation; transaction ids are derived and distinct", () => {
    expect(reactionContent("$q", "👀")).toEqual({
      "m.relates_to": { rel_type: "m.annotation", event_id: "$q", key: "👀" }
    })
    expect(reactionTxnId("$q", "👀")).toBe(reactionTxnId("$q", "👀"))
    expect(reactionTxnId("$q", "👀")).not.toBe(reactionTxnId("$q", "❌"))
    expect(reactionTxnId("$q", "👀")).not.toBe(reactionTxnId("$other", "👀"))
    expect(unreactTxnId("$q", "👀")).not.toBe(reactionTxnId("$q", "👀"))
    expect(reactionTxnId("$q/with?odd#chars", "👀")).toMatch(/^[\w-]+$/)
  })

  it("matrix.reactions defaults to false", () => {
    const decode = Schema.decodeUnknownSync(Matrix)
    expect(decode({}).reactions).toBe(false)
    expect(decode({ reactions: true }).reactions).toBe(true)
    expect(decode({ reactions: null }).reactions).toBe(false)
  })

  it.effect("👀 while working, redacted when answered; ❌ added on failure", () =>
    Effect.gen(function*() {
      const { calls, transport } = fakeTransport()
      const r = lifecycleReactions(transport)!
      const working = yield* r.working(ROOM, "$q")
      expect(working).toEqual(Option.some("$r1"))
      yield* r.answered(ROOM, "$q", working, false)
      expect(calls).toEqual([
        { op: "react", roomId: "!r", arg: reactionContent("$q", WORKING_REACTION), txnId: reactionTxnId("$q", "👀") },
        { op: "redact", roomId: "!r", arg: "$r1", txnId: unreactTxnId("$q", "👀") }
      ])
      const w2 = yield* r.working(ROOM, "$q2")
      yield* r.answered(ROOM, "$q2", w2, true)
      expect(calls.slice(2).map((c) => c.op)).toEqual(["react", "redact", "react"])
      expect(calls.at(-1)!.arg).toEqual(reactionContent("$q2", FAILED_REACTION))
    }))

  it.effect("a reaction that cannot be sent or removed never fails the answer", () =>
    Effect.gen(function*() {
      const { calls, transport } = fakeTransport({ react: true, redact: true })
      const r = lifecycleReactions(transport)!
      const working = yield* r.working(ROOM, "$q")
      expect(working).toEqual(Option.none())
      yield* r.answered(ROOM, "$q", working, true)
      // no redaction of a reaction that never was; ❌ was tried
      expect(calls.map((c) => c.op)).toEqual(["react", "react"])
      const redactFails = fakeTransport({ redact: true })
      const r2 = lifecycleReactions(redactFails.transport)!
      yield* r2.answered(ROOM, "$q", Option.some("$x"), false)
      expect(redactFails.calls.map((c) => c.op)).toEqual(["redact"])
    }))

  it("a transport without reactions gives none", () => {
    const { transport } = fakeTransport()
    const { react: _r, redact: _d, ...plain } = transport
    expect(lifecycleReactions(plain)).toBeUndefined()
  })
})
