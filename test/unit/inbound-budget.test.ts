// Issue 16 §6 and §10 below the homeserver: the token buckets (time injected), the inbound pipeline with its
// budget under the TestClock (model calls capped, one notice per refusal window, refill), the one notice to a
// device that is not cross-signed, and the counters in /metrics and `cara status`.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Schema, TestClock } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { renderStatus } from "../../src/cli/status.js"
import { Channels, Health } from "../../src/domain/api.js"
import { emptyMatrixExtra } from "../../src/domain/channel.js"
import { Matrix } from "../../src/domain/config.js"
import { type Bucket, fullBucket, judge, makeBudget, MAX_BUCKETS, refill } from "../../src/domain/inboundBudget.js"
import { EventId, type InboundEvent, RoomId, UserId } from "../../src/domain/matrix.js"
import { ChannelStatusWithMatrix } from "../../src/layers/ChannelStatusLive.js"
import { budgetSpec, makeInbound, NOT_CROSS_SIGNED_NOTICE, openLedger } from "../../src/layers/InboundLive.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"
import type { AgentShape } from "../../src/services/Agent.js"
import { ChannelStatus } from "../../src/services/ChannelStatus.js"
import { Metrics } from "../../src/services/Metrics.js"
import type { OutboundShape } from "../../src/services/Outbound.js"
import { tmpDir } from "../support/tmp.js"

// the services take branded ids: the fixtures' strings, checked once
const eid = EventId.make
const rid = RoomId.make
const uid = UserId.make

const spec = { room: { burst: 4, perMinute: 2 }, sender: { burst: 2, perMinute: 1 } }

describe("token buckets (pure, time injected)", () => {
  it("admits a burst, refuses without charging, and refills continuously up to the burst", () => {
    const s = { burst: 2, perMinute: 1 }
    let room: Bucket = fullBucket({ burst: 100, perMinute: 100 }, 0)
    let sender: Bucket = fullBucket(s, 0)
    const take = (now: number) => {
      const out = judge({ room: { burst: 100, perMinute: 100 }, sender: s }, room, sender, now)
      room = out.room
      sender = out.sender
      return out.verdict
    }
    expect(take(0)).toEqual({ _tag: "Admit" })
    expect(take(0)).toEqual({ _tag: "Admit" })
    expect(take(0)).toEqual({ _tag: "Refuse", scope: "sender", notice: true })
    // later refusals of the same window get no notice, and cost nothing
    expect(take(10_000)).toEqual({ _tag: "Refuse", scope: "sender", notice: false })
    expect(take(59_999)).toMatchObject({ _tag: "Refuse", notice: false })
    expect(take(60_000)).toEqual({ _tag: "Admit" })
    // a new window after an admitted message: its first refusal is announced again
    expect(take(60_000)).toEqual({ _tag: "Refuse", scope: "sender", notice: true })
    // never above the burst, however long the pause; a clock that went back refills nothing
    expect(refill(s, sender, 10 * 3_600_000).tokens).toBe(2)
    expect(refill(s, sender, 0).tokens).toBe(sender.tokens)
  })

  it("judges the room first and charges both buckets only when both admit", () => {
    const room = { ...fullBucket(spec.room, 0), tokens: 0 }
    const sender = fullBucket(spec.sender, 0)
    const out = judge(spec, room, sender, 0)
    expect(out.verdict).toEqual({ _tag: "Refuse", scope: "room", notice: true })
    expect(out.sender.tokens).toBe(2)
    const ok = judge(spec, fullBucket(spec.room, 0), sender, 0)
    expect([ok.room.tokens, ok.sender.tokens]).toEqual([3, 1])
  })

  it("keeps one sender bucket across rooms, and bounded memory for many keys", () => {
    const b = makeBudget(spec)
    expect(b.take("!a", "@s", 0)._tag).toBe("Admit")
    expect(b.take("!b", "@s", 0)._tag).toBe("Admit")
    expect(b.take("!c", "@s", 0)).toMatchObject({ _tag: "Refuse", scope: "sender" })
    for (let i = 0; i < MAX_BUCKETS + 50; i++) b.take(`!r${i}`, `@u${i}`, 1)
    expect(b.size().rooms).toBeLessThanOrEqual(MAX_BUCKETS)
    expect(b.size().senders).toBeLessThanOrEqual(MAX_BUCKETS)
  })
})

describe("config: matrix.inboundBudget and matrix.requireCrossSignedSenders", () => {
  const decode = Schema.decodeUnknownEither(Matrix)
  it("defaults to the documented budget and to not requiring cross-signed senders", () => {
    const m = Either.getOrThrow(decode({}))
    expect(budgetSpec(m.inboundBudget)).toEqual({
      room: { burst: 20, perMinute: 20 },
      sender: { burst: 10, perMinute: 10 }
    })
    expect(m.requireCrossSignedSenders).toBe(false)
    const custom = Either.getOrThrow(decode({ inboundBudget: { senderBurst: 3 }, requireCrossSignedSenders: true }))
    expect(budgetSpec(custom.inboundBudget).sender).toEqual({ burst: 3, perMinute: 10 })
    expect(custom.requireCrossSignedSenders).toBe(true)
  })
  it("refuses a budget that would stop every answer or is not a whole number", () => {
    expect(Either.isLeft(decode({ inboundBudget: { roomBurst: 0 } }))).toBe(true)
    expect(Either.isLeft(decode({ inboundBudget: { senderPerMinute: 1.5 } }))).toBe(true)
    expect(Either.isLeft(decode({ requireCrossSignedSenders: "yes" }))).toBe(true)
  })
})

// ---------------------------------------------------------------------------------------------------------
// The pipeline

const BOT = "@bot:example.org"
const ALICE = uid("@alice:example.org")
const BOB = uid("@bob:example.org")
const room = { memberCount: 3, encrypted: true, botJoinedAt: 1, botDisplayName: "bot" }
let n = 0
const event = (over: Partial<InboundEvent> = {}): InboundEvent => ({
  eventId: eid(`$e${++n}:example.org`),
  roomId: rid("!group:example.org"),
  sender: ALICE,
  ts: 5,
  msgtype: "m.text",
  body: "a question",
  encrypted: true,
  senderDeviceCrossSigned: true,
  ...over
})

const setup = (requireCrossSignedSenders = false) =>
  Effect.gen(function*() {
    const root = tmpDir("cara-budget-")
    const state = { agentCalls: 0, sent: [] as Array<{ inReplyTo: string; text: string }> }
    const agent = {
      reply: () => Effect.sync(() => (state.agentCalls++, { _tag: "Reset" as const, text: "an answer" }))
    } as unknown as AgentShape
    const outbound: OutboundShape = {
      reply: (r) =>
        Effect.sync(
          () => (state.sent.push({ inReplyTo: r.inReplyTo, text: r.text }), [eid(`$reply-${state.sent.length}`)])
        ),
      edit: () => Effect.die("no edits here"),
      sendTest: () => Effect.succeed(eid("$x")),
      whileTyping: (_roomId, effect) => effect,
      readReceipt: () => Effect.void
    }
    const ledger = openLedger(path.join(root, "ledger.sqlite"))
    yield* Effect.addFinalizer(() => Effect.sync(() => ledger.close()))
    const inbound = yield* makeInbound({
      gate: {
        botUserId: BOT,
        allowlist: { allowUsers: [ALICE, BOB], allowServerNames: [] },
        encryptedMode: true,
        groupMessages: "all",
        requireCrossSignedSenders
      },
      ledger,
      agent,
      outbound,
      status: yield* ChannelStatus,
      budget: spec
    })
    const settle = Effect.repeatN(Effect.yieldNow(), 200)
    const extra = Effect.map(Effect.flatMap(ChannelStatus, (s) => s.get), (all) =>
      all.find((c) => c.id === "matrix")!.extra!)
    return { inbound, state, settle, extra }
  })

const infra = MetricsLive.pipe(Layer.provideMerge(ChannelStatusWithMatrix))

describe("inbound pipeline with the budget (TestClock)", () => {
  it.scoped("a flooding sender reaches the model `burst` times, gets one notice, and is answered again after the refill", () =>
    Effect.gen(function*() {
      const { extra, inbound, settle, state } = yield* setup()
      for (let i = 0; i < 6; i++) yield* inbound.offer(event(), room)
      yield* settle
      expect(state.agentCalls).toBe(2)
      const notices = state.sent.filter((s) => s.text !== "an answer")
      expect(notices).toHaveLength(1)
      expect(notices[0]!.text).toMatch(/faster than I answer/)
      expect(yield* extra).toMatchObject({
        inboundBudgetRefusedSenderTotal: 4,
        inboundBudgetNoticeTotal: 1,
        inboundBudgetRefusedRoomTotal: 0
      })

      // another sender in the same room still has its own budget; the room's is shared
      yield* inbound.offer(event({ sender: BOB }), room)
      yield* inbound.offer(event({ sender: BOB }), room)
      yield* inbound.offer(event({ sender: BOB }), room)
      yield* settle
      expect(state.agentCalls).toBe(4)
      expect((yield* extra).inboundBudgetRefusedRoomTotal).toBe(1)
      expect(state.sent.filter((s) => s.text !== "an answer").map((s) => s.text)[1]).toMatch(
        /Too many messages in this room/
      )

      // one minute later the sender's bucket holds one token again (and the room's two)
      yield* TestClock.adjust("60 seconds")
      yield* inbound.offer(event(), room)
      yield* inbound.offer(event(), room)
      yield* settle
      expect(state.agentCalls).toBe(5)
      // the refusal after the refill opens a new window: announced once more (alice's, room's, alice's again)
      expect(state.sent.filter((s) => s.text !== "an answer")).toHaveLength(3)

      const metrics = yield* Effect.flatMap(Metrics, (m) => m.render)
      expect(metrics).toContain("carapace_matrix_inbound_refused_total{reason=\"budget_sender\"} 5")
      expect(metrics).toContain("carapace_matrix_inbound_refused_total{reason=\"budget_room\"} 1")
      expect(metrics).toContain("carapace_matrix_inbound_budget_notices_total 3")
    }).pipe(Effect.provide(infra), Effect.provide(TestClock.defaultTestClock)))

  it.scoped("an already-answered redelivery and an ignored m.notice cost no budget", () =>
    Effect.gen(function*() {
      const { inbound, settle, state } = yield* setup()
      const once = event()
      yield* inbound.offer(once, room)
      yield* settle
      for (let i = 0; i < 5; i++) yield* inbound.offer(once, room)
      for (let i = 0; i < 5; i++) yield* inbound.offer(event({ msgtype: "m.notice", sender: BOB }), room)
      yield* inbound.offer(event(), room)
      yield* settle
      expect(state.agentCalls).toBe(2)
      expect(state.sent.every((s) => s.text === "an answer")).toBe(true)
    }).pipe(Effect.provide(infra)))

  it.scoped("requireCrossSignedSenders: a device not cross-signed gets exactly one notice per room and is never answered", () =>
    Effect.gen(function*() {
      const { extra, inbound, settle, state } = yield* setup(true)
      yield* inbound.offer(event({ senderDeviceCrossSigned: false }), room)
      yield* inbound.offer(event({ senderDeviceCrossSigned: false }), room)
      // not checked (absent) fails closed, the same as unsigned
      const { senderDeviceCrossSigned: _, ...unchecked } = event()
      yield* inbound.offer(unchecked, room)
      yield* settle
      expect(state.agentCalls).toBe(0)
      expect(state.sent).toEqual([{ inReplyTo: expect.any(String), text: NOT_CROSS_SIGNED_NOTICE }])
      expect((yield* extra).peerDropNotCrossSignedTotal).toBe(3)
      yield* inbound.offer(event({ senderDeviceCrossSigned: false, roomId: rid("!other:example.org") }), room)
      yield* inbound.offer(event(), room)
      yield* settle
      expect(state.sent.filter((s) => s.text === NOT_CROSS_SIGNED_NOTICE)).toHaveLength(2)
      expect(state.agentCalls).toBe(1)
      const metrics = yield* Effect.flatMap(Metrics, (m) => m.render)
      expect(metrics).toContain("carapace_matrix_inbound_refused_total{reason=\"not_cross_signed\"} 4")
    }).pipe(Effect.provide(infra)))
})

describe("cara status", () => {
  it("shows the refusal counters", () => {
    const text = renderStatus({
      address: "127.0.0.1:18789",
      health: new Health({ status: "ok", version: "0.1.0", uptimeSeconds: 5 }),
      controlStatus: Option.none(),
      controlProblem: Option.none(),
      channels: Option.some(
        new Channels({
          total: 1,
          connected: 1,
          channels: [{
            id: "matrix",
            name: "Matrix",
            status: "connected",
            lastConnectedAt: null,
            lastError: null,
            statusChangedAt: new Date(0).toISOString(),
            extra: {
              ...emptyMatrixExtra,
              inboundBudgetRefusedRoomTotal: 3,
              inboundBudgetRefusedSenderTotal: 4,
              inboundBudgetNoticeTotal: 2,
              peerDropUnencryptedInEncryptedRoomTotal: 5,
              peerDropNotCrossSignedTotal: 6
            }
          }]
        })
      )
    })
    expect(text).toContain(
      "Inbound refused: 3 over the room budget, 4 over the sender budget (2 notices), 5 unencrypted in an encrypted room, 6 from devices not cross-signed"
    )
  })
})
