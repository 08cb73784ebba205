// Edits in (issue 20 point 3), below the homeserver: the gate lets only checked edits through; in the inbound
// pipeline (real ledger, fake agent and send path) an edit of an answered question is a new turn whose answer
// edits cara's reply, once (a redelivered edit does nothing); an edit of a question still waiting for its
// turn is folded into it; an edit while the question is being answered waits and then edits the reply.
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Layer } from "effect"
import * as path from "node:path"
import { gateInbound } from "../../src/domain/inboundGate.js"
import { EventId, type InboundEvent, RoomId, UserId } from "../../src/domain/matrix.js"
import { ChannelStatusWithMatrix } from "../../src/layers/ChannelStatusLive.js"
import { makeInbound, openLedger } from "../../src/layers/InboundLive.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"
import type { AgentShape, TurnInput } from "../../src/services/Agent.js"
import { ChannelStatus } from "../../src/services/ChannelStatus.js"
import type { OutboundReply, OutboundShape } from "../../src/services/Outbound.js"
import { tmpDir } from "../support/tmp.js"

const eid = EventId.make
const BOT = "@bot:example.org"
const ALICE = UserId.make("@alice:example.org")
const ROOM = RoomId.make("!dm:example.org")
const room = { memberCount: 2, encrypted: true, botJoinedAt: 1, botDisplayName: "bot" }
let n = 0
const question = (body: string, over: Partial<InboundEvent> = {}): InboundEvent => ({
  eventId: eid(`$q${++n}:example.org`),
  roomId: ROOM,
  sender: ALICE,
  ts: 5,
  msgtype: "m.text",
  body,
  encrypted: true,
  ...over
})
const editOf = (target: InboundEvent, body: string): InboundEvent =>
  question(body, { relType: "m.replace", replaces: target.eventId })

const gate = {
  botUserId: BOT,
  allowlist: { allowUsers: [ALICE], allowServerNames: [] },
  encryptedMode: true,
  groupMessages: "mention" as const
}

describe("the gate and edits", () => {
  it("an unchecked m.replace is ignored as an edit; a checked one passes like a message, gates included", () => {
    const q = question("first")
    expect(gateInbound(gate, question("x", { relType: "m.replace" }), room)).toEqual({ _tag: "Ignore", reason: "edit" })
    expect(gateInbound(gate, editOf(q, "second"), room)._tag).toBe("Dispatch")
    expect(gateInbound(gate, { ...editOf(q, "second"), sender: UserId.make("@eve:example.org") }, room)).toMatchObject({
      _tag: "Drop",
      reason: "allowlist"
    })
    // (m.image is answered since issue 20.2; m.video is still not)
    expect(gateInbound(gate, { ...editOf(q, "x"), msgtype: "m.video" }, room)).toMatchObject({ reason: "msgtype" })
  })
})

describe("the ledger's streaming and reply records", () => {
  it("keeps the streamed mark and a committed event's reply ids across a reopen", () => {
    const file = path.join(tmpDir("cara-ledger-"), "ledger.sqlite")
    const a = openLedger(file)
    a.claim("$q:x", "!r:x", 1)
    expect(a.streamed("$q:x")).toBe(false)
    a.streamedAdd("$q:x", 2)
    a.streamedAdd("$q:x", 3)
    expect(a.replyIds("$q:x")).toBeUndefined()
    a.commit("$q:x", ["$a:x", "$b:x"], 4)
    a.close()
    const b = openLedger(file)
    expect(b.streamed("$q:x")).toBe(true)
    expect(b.streamed("$other:x")).toBe(false)
    expect(b.replyIds("$q:x")).toEqual(["$a:x", "$b:x"])
    b.close()
  })
})

const setup = Effect.gen(function*() {
  const root = tmpDir("cara-edits-")
  const st = {
    turns: [] as Array<TurnInput>,
    sent: [] as Array<OutboundReply>,
    hold: undefined as Deferred.Deferred<void> | undefined
  }
  const agent = {
    reply: (input: TurnInput) =>
      Effect.gen(function*() {
        st.turns.push(input)
        if (st.hold !== undefined) yield* Deferred.await(st.hold)
        return { _tag: "Reset" as const, text: `answer to: ${input.text}` }
      })
  } as unknown as AgentShape
  const outbound: OutboundShape = {
    reply: (r) =>
      Effect.sync(() => {
        st.sent.push(r)
        return [r.streamedReply ?? eid(`$reply-${st.sent.length}:example.org`)]
      }),
    edit: () => Effect.die("not used"),
    sendTest: () => Effect.succeed(eid("$x")),
    whileTyping: (_roomId, effect) => effect,
    readReceipt: () => Effect.void
  }
  const ledger = openLedger(path.join(root, "ledger.sqlite"))
  yield* Effect.addFinalizer(() => Effect.sync(() => ledger.close()))
  const inbound = yield* makeInbound({ gate, ledger, agent, outbound, status: yield* ChannelStatus })
  const settle = Effect.repeatN(Effect.yieldNow(), 200)
  return { inbound, ledger, settle, st }
})

const infra = MetricsLive.pipe(Layer.provideMerge(ChannelStatusWithMatrix))

describe("edits in the inbound pipeline", () => {
  it.scoped("an answered question edited: a new turn under the edit's id whose answer edits the reply; once", () =>
    Effect.gen(function*() {
      const { inbound, ledger, settle, st } = yield* setup
      const q = question("what is 2+2")
      yield* inbound.offer(q, room)
      yield* settle
      expect(st.sent).toHaveLength(1)
      const firstReply = eid("$reply-1:example.org")

      const e = editOf(q, "what is 3+3")
      yield* inbound.offer(e, room)
      yield* settle
      expect(st.turns.map((t) => [t.eventId, t.text])).toEqual([[q.eventId, "what is 2+2"], [e.eventId, "what is 3+3"]])
      expect(st.sent).toHaveLength(2)
      expect(st.sent[1]).toMatchObject({
        text: "answer to: what is 3+3",
        inReplyTo: e.eventId,
        streamedReply: firstReply
      })
      expect(ledger.state(e.eventId)).toBe("committed")

      // redelivered: nothing
      yield* inbound.offer(e, room)
      yield* settle
      expect(st.turns).toHaveLength(2)
      expect(st.sent).toHaveLength(2)
    }).pipe(Effect.provide(infra)))

  it.scoped("an edit of a question waiting for its turn: the answer uses the newest text, the edit gets none", () =>
    Effect.gen(function*() {
      const { inbound, ledger, settle, st } = yield* setup
      st.hold = yield* Deferred.make<void>()
      const busy = question("a slow one")
      yield* inbound.offer(busy, room)
      yield* settle
      const q = question("tpyo")
      yield* inbound.offer(q, room)
      yield* settle
      const e = editOf(q, "typo fixed")
      yield* inbound.offer(e, room)
      yield* settle
      expect(st.turns).toHaveLength(1)
      yield* Deferred.succeed(st.hold, undefined)
      yield* settle
      expect(st.turns.map((t) => t.text)).toEqual(["a slow one", "typo fixed"])
      expect(st.sent.map((r) => r.text)).toEqual(["answer to: a slow one", "answer to: typo fixed"])
      expect(st.sent[1]!.inReplyTo).toBe(q.eventId)
      expect(ledger.state(q.eventId)).toBe("committed")
      expect(ledger.state(e.eventId)).toBe("committed")
      yield* inbound.offer(e, room)
      yield* settle
      expect(st.sent).toHaveLength(2)
    }).pipe(Effect.provide(infra)))

  it.scoped("an edit while the question is being answered waits for it, then edits the reply", () =>
    Effect.gen(function*() {
      const { inbound, settle, st } = yield* setup
      st.hold = yield* Deferred.make<void>()
      const q = question("first text")
      yield* inbound.offer(q, room)
      yield* settle
      expect(st.turns).toHaveLength(1)
      const e = editOf(q, "second text")
      yield* inbound.offer(e, room)
      yield* settle
      expect(st.turns).toHaveLength(1)
      const hold = st.hold
      st.hold = undefined
      yield* Deferred.succeed(hold, undefined)
      yield* settle
      expect(st.turns.map((t) => t.text)).toEqual(["first text", "second text"])
      expect(st.sent).toHaveLength(2)
      expect(st.sent[1]).toMatchObject({ inReplyTo: e.eventId, streamedReply: eid("$reply-1:example.org") })
    }).pipe(Effect.provide(infra)))

  it.scoped("an edit of a message cara never saw is ignored", () =>
    Effect.gen(function*() {
      const { inbound, ledger, settle, st } = yield* setup
      const e = editOf(question("never offered"), "edited")
      yield* inbound.offer(e, room)
      yield* settle
      expect(st.turns).toHaveLength(0)
      expect(ledger.state(e.eventId)).toBeUndefined()
    }).pipe(Effect.provide(infra)))
})
