// Redactions and feedback in the pipeline (issue 20 §3, §4, and the held-reply reactions): the ledger's new
// tables (also on a ledger from before them), the answer redaction with its bounded retry and restart sweep,
// and the inbound pipeline over fakes: a question redacted before, while and after it is answered.
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Schema, TestClock } from "effect"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { Matrix } from "../../src/domain/config.js"
import { EventId, type InboundEvent, MatrixError, RoomId, UserId } from "../../src/domain/matrix.js"
import { reactionContent, reactionTxnId, unreactTxnId } from "../../src/domain/reactions.js"
import { DEFAULT_REDACT_LEVEL, redactAnswerTxnId, redactionAuthority } from "../../src/domain/relations.js"
import { ChannelStatusWithMatrix } from "../../src/layers/ChannelStatusLive.js"
import { makeInbound, openLedger } from "../../src/layers/InboundLive.js"
import { inboundRelations } from "../../src/layers/inboundRelations.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"
import { lifecycleReactions } from "../../src/layers/reactions.js"
import { makeRedactions } from "../../src/layers/redactions.js"
import type { AgentShape } from "../../src/services/Agent.js"
import { ChannelStatus } from "../../src/services/ChannelStatus.js"
import type { DlqShape } from "../../src/services/Dlq.js"
import type { MatrixTransportShape } from "../../src/services/MatrixTransport.js"
import { Metrics } from "../../src/services/Metrics.js"
import type { OutboundShape } from "../../src/services/Outbound.js"
import { tmpDir } from "../support/tmp.js"

const eid = EventId.make
const rid = RoomId.make
const ROOM = rid("!dm:example.org")
const ALICE = UserId.make("@alice:example.org")
const BOT = "@bot:example.org"
const room = { memberCount: 2, encrypted: true, botJoinedAt: 1, botDisplayName: "bot" }
let n = 0
const event = (over: Partial<InboundEvent> = {}): InboundEvent => ({
  eventId: eid(`$q${++n}:example.org`),
  roomId: ROOM,
  sender: ALICE,
  ts: 5,
  msgtype: "m.text",
  body: "a question",
  encrypted: true,
  ...over
})

const ledgerIn = (prefix: string) => openLedger(path.join(tmpDir(prefix), "ledger.sqlite"))

describe("redaction authority", () => {
  it("counts the sender's own redaction and a moderator's, nobody else's", () => {
    const base = { redacter: "@a:x", eventSender: "@a:x", redacterPowerLevel: 0, redactLevel: DEFAULT_REDACT_LEVEL }
    expect(redactionAuthority(base)).toBe("sender")
    expect(redactionAuthority({ ...base, redacter: "@mod:x", redacterPowerLevel: 50 })).toBe("moderator")
    expect(redactionAuthority({ ...base, redacter: "@m:x", redacterPowerLevel: 49 })).toBeUndefined()
    expect(redactionAuthority({ ...base, redacter: "@m:x", redacterPowerLevel: 10, redactLevel: 10 })).toBe("moderator")
  })

  it("matrix.redactAnswers defaults to true", () => {
    const decode = Schema.decodeUnknownSync(Matrix)
    expect(decode({}).redactAnswers).toBe(true)
    expect(decode({ redactAnswers: false }).redactAnswers).toBe(false)
    expect(decode({ redactAnswers: null }).redactAnswers).toBe(true)
  })
})

describe("the ledger's redaction and feedback tables", () => {
  it("maps reply ids to their question, records a redaction and a feedback reaction once", () => {
    const ledger = ledgerIn("cara-rel-ledger-")
    ledger.claim("$q", "!r", 1)
    ledger.commit("$q", ["$a1", "$a2"], 2)
    expect(ledger.questionOf("$a2")).toEqual({ eventId: "$q", roomId: "!r" })
    expect(ledger.questionOf("$q")).toBeUndefined()
    expect(ledger.replyIds("$q")).toEqual(["$a1", "$a2"])
    expect(ledger.replyIds("$unknown")).toBeUndefined()

    expect(ledger.redactedAdd("$q", "!r", "$red", 3)).toBe(true)
    expect(ledger.redactedAdd("$q", "!r", "$red2", 4)).toBe(false)
    expect(ledger.redacted("$q")).toEqual({ roomId: "!r", done: false })
    expect(ledger.redactedOpen()).toEqual([{ eventId: "$q", roomId: "!r" }])
    ledger.redactedDone("$q")
    expect(ledger.redactedOpen()).toEqual([])

    const f = { reactionEventId: "$re", answerEventId: "$a1", roomId: "!r", userId: "@a:x", value: "negative" as const }
    expect(ledger.feedbackAdd(f, 5)).toBe(true)
    expect(ledger.feedbackAdd(f, 6)).toBe(false)
    expect(ledger.feedback("$re")).toEqual({ ...f, removed: false })
    expect(ledger.feedbackRemoved("$re", 7)).toBe(true)
    expect(ledger.feedbackRemoved("$re", 8)).toBe(false)
    expect(ledger.feedback("$re")?.removed).toBe(true)
    ledger.close()
  })

  it("a ledger from before the tables gains them, with its committed reply ids mapped", () => {
    const file = path.join(tmpDir("cara-rel-old-"), "ledger.sqlite")
    const db = new DatabaseSync(file)
    db.exec(
      "CREATE TABLE inbound (event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, state TEXT NOT NULL, " +
        "claimed_at INTEGER NOT NULL, committed_at INTEGER, reply_ids TEXT);" +
        "INSERT INTO inbound VALUES ('$old', '!r', 'committed', 1, 2, '[\"$ans\"]');" +
        "INSERT INTO inbound VALUES ('$claimed', '!r', 'claimed', 1, NULL, NULL);" +
        "INSERT INTO inbound VALUES ('$torn', '!r', 'committed', 1, 2, 'not json');"
    )
    db.close()
    const ledger = openLedger(file)
    expect(ledger.questionOf("$ans")).toEqual({ eventId: "$old", roomId: "!r" })
    expect(ledger.replyIds("$torn")).toEqual([])
    expect(ledger.state("$claimed")).toBe("claimed")
    ledger.close()
    // opening again changes nothing
    const again = openLedger(file)
    expect(again.questionOf("$ans")?.eventId).toBe("$old")
    again.close()
  })
})

const fakeRedactTransport = (failFirst = 0) => {
  const calls: Array<{ roomId: string; eventId: string; txnId: string }> = []
  let failures = failFirst
  const transport: Pick<MatrixTransportShape, "redact"> = {
    redact: async (roomId, eventId, txnId) => {
      calls.push({ roomId, eventId, txnId })
      if (failures-- > 0) throw new Error("fetch failed")
    }
  }
  return { transport, calls }
}

describe("answer redaction", () => {
  it.live("redacts every answer event under its derived txn id, once, and only for a committed question", () =>
    Effect.gen(function*() {
      const ledger = ledgerIn("cara-rel-redact-")
      const { calls, transport } = fakeRedactTransport(1)
      const r = makeRedactions({ ledger, transport, redactAnswers: true, baseDelay: "1 millis" })
      ledger.claim("$q:x", ROOM, 1)
      yield* r.record("$q:x", ROOM, "$red:x")
      // claimed: the answering's check owns it
      expect(calls).toEqual([])
      expect(yield* r.isRedacted("$q:x")).toBe(true)
      ledger.commit("$q:x", ["$a1:x", "$a2:x"], 2)
      yield* r.settle("$q:x")
      // the first attempt failed and was retried with the same txn id
      expect(calls.map((c) => c.eventId)).toEqual(["$a1:x", "$a1:x", "$a2:x"])
      expect(calls[0]!.txnId).toBe(redactAnswerTxnId("$a1:x"))
      expect(calls[1]!.txnId).toBe(redactAnswerTxnId("$a1:x"))
      expect(ledger.redacted("$q:x")?.done).toBe(true)
      yield* r.settle("$q:x")
      yield* r.record("$q:x", ROOM, "$red:x")
      expect(calls).toHaveLength(3)
      ledger.close()
    }))

  it.live("a redaction that keeps failing stays open and the sweep of the next start finishes it", () =>
    Effect.gen(function*() {
      const file = path.join(tmpDir("cara-rel-sweep-"), "ledger.sqlite")
      const ledger = openLedger(file)
      ledger.claim("$q:x", ROOM, 1)
      ledger.commit("$q:x", ["$a:x"], 2)
      const down = fakeRedactTransport(100)
      yield* makeRedactions({
        ledger,
        transport: down.transport,
        redactAnswers: true,
        attempts: 3,
        baseDelay: "1 millis"
      })
        .record("$q:x", ROOM, "$red:x")
      expect(down.calls).toHaveLength(3)
      expect(ledger.redacted("$q:x")?.done).toBe(false)
      ledger.close()
      // the restart
      const reopened = openLedger(file)
      const up = fakeRedactTransport()
      yield* makeRedactions({ ledger: reopened, transport: up.transport, redactAnswers: true }).sweep
      expect(up.calls.map((c) => c.eventId)).toEqual(["$a:x"])
      expect(reopened.redactedOpen()).toEqual([])
      reopened.close()
    }))

  it.live("matrix.redactAnswers false: the question is marked done and the answer stays", () =>
    Effect.gen(function*() {
      const ledger = ledgerIn("cara-rel-off-")
      const { calls, transport } = fakeRedactTransport()
      ledger.claim("$q:x", ROOM, 1)
      ledger.commit("$q:x", ["$a:x"], 2)
      yield* makeRedactions({ ledger, transport, redactAnswers: false }).record("$q:x", ROOM, "$red:x")
      expect(calls).toEqual([])
      expect(ledger.redacted("$q:x")?.done).toBe(true)
      ledger.close()
    }))
})

describe("a question redacted after part of its answer went out (a streamed first chunk)", () => {
  it.live("commits the sent events with the question and redacts them", () =>
    Effect.gen(function*() {
      const ledger = ledgerIn("cara-rel-stream-")
      const { calls, transport } = fakeRedactTransport()
      const redactions = makeRedactions({ ledger, transport, redactAnswers: true })
      let counted = 0
      const relations = inboundRelations({
        state: (id) => ledger.state(id),
        commit: (id, ids) => Effect.sync(() => ledger.commit(id, ids, 2)),
        count: Effect.sync(() => void counted++),
        redactions,
        reactions: undefined
      })
      const q = event()
      ledger.claim(q.eventId, q.roomId, 1)
      expect(yield* relations.redacted(q, ["$chunk:x"])).toBe(false)
      yield* redactions.record(q.eventId, q.roomId, "$red:x")
      expect(calls).toEqual([])
      expect(yield* relations.redacted(q, ["$chunk:x"])).toBe(true)
      expect(ledger.replyIds(q.eventId)).toEqual(["$chunk:x"])
      expect(calls.map((c) => c.eventId)).toEqual(["$chunk:x"])
      expect(counted).toBe(1)
      expect(ledger.redacted(q.eventId)?.done).toBe(true)
      ledger.close()
    }))
})

// ---------------------------------------------------------------------------------------------------------
// The pipeline

interface PipelineOptions {
  /** The agent waits for this before it answers. */
  readonly gate?: Deferred.Deferred<void>
  /** The first `failSends` sends fail (send-failed): the answer goes to the pending replies. */
  readonly failSends?: number
  readonly reactions?: boolean
}

const pipeline = (o: PipelineOptions = {}) =>
  Effect.gen(function*() {
    const ledger = ledgerIn("cara-rel-pipe-")
    yield* Effect.addFinalizer(() => Effect.sync(() => ledger.close()))
    const state = { agentCalls: 0, sent: [] as Array<string>, dead: [] as Array<string>, failSends: o.failSends ?? 0 }
    const agent = {
      reply: () =>
        Effect.gen(function*() {
          state.agentCalls++
          if (o.gate !== undefined) yield* Deferred.await(o.gate)
          return { _tag: "Reset" as const, text: "an answer" }
        })
    } as unknown as AgentShape
    const outbound: OutboundShape = {
      reply: (r, ro) =>
        Effect.suspend(() => {
          if (state.failSends > 0) {
            state.failSends--
            return Effect.zipRight(
              ro?.onFailedAttempt?.("send-failed: down") ?? Effect.void,
              Effect.fail(new MatrixError({ kind: "send-failed", message: "down" }))
            )
          }
          state.sent.push(r.inReplyTo)
          return Effect.succeed([eid(`$answer-${state.sent.length}:x`)])
        }),
      edit: () => Effect.die("no edits here"),
      sendTest: () => Effect.succeed(eid("$x")),
      whileTyping: (_roomId, effect) => effect,
      readReceipt: () => Effect.void
    }
    const redacts = fakeRedactTransport()
    const reacts: Array<{ op: string; arg: unknown; txnId: string }> = []
    const transport: MatrixTransportShape = {
      send: async () => eid("$m"),
      typing: async () => {},
      receipt: async () => {},
      room: () => ({ encrypted: true }),
      react: async (_roomId, content, txnId) => {
        reacts.push({ op: "react", arg: content, txnId })
        return `$reaction-${reacts.length}`
      },
      redact: async (roomId, eventId, txnId) => {
        reacts.push({ op: "redact", arg: eventId, txnId })
        await redacts.transport.redact!(roomId, eventId, txnId)
      }
    }
    const redactions = makeRedactions({ ledger, transport, redactAnswers: true })
    const inbound = yield* makeInbound({
      gate: {
        botUserId: BOT,
        allowlist: { allowUsers: [ALICE], allowServerNames: [] },
        encryptedMode: true,
        groupMessages: "all"
      },
      ledger,
      agent,
      outbound,
      status: yield* ChannelStatus,
      // only the outbound append is used: a held answer that keeps failing goes there
      dlq: {
        append: (r: { eventId: string }) => Effect.sync(() => void state.dead.push(r.eventId))
      } as unknown as DlqShape,
      redactions,
      ...(o.reactions === true ? { reactions: lifecycleReactions(transport) } : {}),
      replies: {
        reachable: Effect.succeed(true),
        resume: () => Effect.void,
        options: { deadLetterAfterRounds: 5, roundBaseDelayMs: 1_000, tickMs: 1_000 }
      }
    })
    const settle = Effect.promise(() => new Promise<void>((r) => setImmediate(r))).pipe(Effect.repeatN(30))
    const extra = Effect.map(Effect.flatMap(ChannelStatus, (s) => s.get), (all) =>
      all.find((c) => c.id === "matrix")!.extra!)
    return { inbound, ledger, redactions, state, settle, extra, redacts: redacts.calls, reacts }
  })

const infra = MetricsLive.pipe(Layer.provideMerge(ChannelStatusWithMatrix))

describe("the start-up resume's unfinished events", () => {
  it.scoped("leaves out events this process is answering or has queued; a crash's leftovers stay in", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const { inbound, ledger, settle, state } = yield* pipeline({ gate })
      const leftover = event()
      ledger.claim(leftover.eventId, leftover.roomId, 1)
      const answering = event()
      const queued = event()
      yield* inbound.offer(answering, room)
      yield* inbound.offer(queued, room)
      yield* settle
      // both are claimed in the ledger; only the one no fiber of this process owns is offered again
      expect(ledger.unfinished().map((r) => r.eventId)).toEqual([leftover.eventId, answering.eventId, queued.eventId])
      expect((yield* inbound.unfinished).map((r) => r.eventId)).toEqual([leftover.eventId])
      yield* Deferred.succeed(gate, undefined)
      yield* settle
      expect(state.sent).toEqual([answering.eventId, queued.eventId])
      expect((yield* inbound.unfinished).map((r) => r.eventId)).toEqual([leftover.eventId])
    }).pipe(Effect.provide(infra)))
})

describe("redacted questions in the pipeline", () => {
  it.scoped("redacted while the model works: no answer is sent, the question is committed and counted", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const { extra, inbound, ledger, redactions, settle, state } = yield* pipeline({ gate })
      const q = event()
      yield* inbound.offer(q, room)
      yield* settle
      expect(state.agentCalls).toBe(1)
      yield* redactions.record(q.eventId, q.roomId, "$red:x")
      yield* Deferred.succeed(gate, undefined)
      yield* settle
      expect(state.sent).toEqual([])
      expect(ledger.state(q.eventId)).toBe("committed")
      expect(ledger.redacted(q.eventId)?.done).toBe(true)
      expect((yield* extra).inboundRedactedTotal).toBe(1)
      // redelivered (a resume, a DLQ replay): still nothing
      yield* inbound.offer(q, room)
      yield* settle
      expect(state.sent).toEqual([])
      const metrics = yield* Effect.flatMap(Metrics, (m) => m.render)
      expect(metrics).toContain("carapace_matrix_inbound_refused_total{reason=\"redacted\"} 1")
    }).pipe(Effect.provide(infra)))

  it.scoped("redacted before it was offered (the redaction was handled first): never reaches the model", () =>
    Effect.gen(function*() {
      const { extra, inbound, ledger, redactions, settle, state } = yield* pipeline()
      const q = event()
      yield* redactions.record(q.eventId, q.roomId, "$red:x")
      yield* inbound.offer(q, room)
      yield* settle
      expect(state.agentCalls).toBe(0)
      expect(ledger.state(q.eventId)).toBe("committed")
      expect((yield* extra).inboundRedactedTotal).toBe(1)
    }).pipe(Effect.provide(infra)))

  it.scoped("arrives redacted (backlog): dropped and counted; a claimed one (resume) is committed", () =>
    Effect.gen(function*() {
      const { extra, inbound, ledger, settle, state } = yield* pipeline()
      const backlog = event({ redacted: true, body: "", msgtype: undefined })
      yield* inbound.offer(backlog, room)
      const resumed = event({ redacted: true, body: "" })
      ledger.claim(resumed.eventId, resumed.roomId, 1)
      yield* inbound.offer(resumed, room)
      yield* settle
      expect(state.agentCalls).toBe(0)
      expect(ledger.state(backlog.eventId)).toBeUndefined()
      expect(ledger.state(resumed.eventId)).toBe("committed")
      expect(ledger.unfinished()).toEqual([])
      expect((yield* extra).inboundRedactedTotal).toBe(2)
      // a stranger's redacted message is a stranger's message
      yield* inbound.offer(event({ redacted: true, body: "", sender: UserId.make("@eve:example.org") }), room)
      expect(yield* extra).toMatchObject({ inboundRedactedTotal: 2, peerDropAllowlistRejectionTotal: 1 })
    }).pipe(Effect.provide(infra)))

  it.scoped("redacted after the answer went out: cara's answer is redacted", () =>
    Effect.gen(function*() {
      const { inbound, ledger, redactions, redacts, settle, state } = yield* pipeline()
      const q = event()
      yield* inbound.offer(q, room)
      yield* settle
      expect(state.sent).toEqual([q.eventId])
      yield* redactions.record(q.eventId, q.roomId, "$red:x")
      expect(redacts.map((c) => c.eventId)).toEqual(["$answer-1:x"])
      expect(ledger.redacted(q.eventId)?.done).toBe(true)
    }).pipe(Effect.provide(infra)))

  it.scoped("a held answer whose question is redacted meanwhile is not sent by the pending replies", () =>
    Effect.gen(function*() {
      const { inbound, ledger, redactions, settle, state } = yield* pipeline({ failSends: 1 })
      yield* inbound.replies.start
      const q = event()
      yield* inbound.offer(q, room)
      yield* settle
      expect(ledger.pending().map((r) => r.eventId)).toEqual([q.eventId])
      yield* redactions.record(q.eventId, q.roomId, "$red:x")
      yield* TestClock.adjust("10 seconds")
      yield* settle
      expect(state.sent).toEqual([])
      expect(ledger.state(q.eventId)).toBe("committed")
      expect(ledger.pending()).toEqual([])
      expect(ledger.redacted(q.eventId)?.done).toBe(true)
    }).pipe(Effect.provide(infra)))
})

describe("lifecycle reactions of a held answer", () => {
  it.scoped("👀 is removed when the pending replies finally send the answer", () =>
    Effect.gen(function*() {
      const { inbound, ledger, reacts, settle, state } = yield* pipeline({ failSends: 1, reactions: true })
      yield* inbound.replies.start
      const q = event()
      yield* inbound.offer(q, room)
      yield* settle
      expect(reacts.map((r) => r.op)).toEqual(["react"])
      yield* TestClock.adjust("10 seconds")
      yield* settle
      expect(state.sent).toEqual([q.eventId])
      expect(ledger.state(q.eventId)).toBe("committed")
      expect(reacts).toEqual([
        { op: "react", arg: reactionContent(q.eventId, "👀"), txnId: reactionTxnId(q.eventId, "👀") },
        { op: "redact", arg: "$reaction-1", txnId: unreactTxnId(q.eventId, "👀") }
      ])
    }).pipe(Effect.provide(infra)))

  it.scoped("👀 is removed and ❌ added when the held answer goes to the DLQ", () =>
    Effect.gen(function*() {
      const { inbound, ledger, reacts, settle, state } = yield* pipeline({ failSends: 1_000, reactions: true })
      yield* inbound.replies.start
      const q = event()
      yield* inbound.offer(q, room)
      yield* settle
      for (let i = 0; i < 8; i++) {
        yield* TestClock.adjust("10 seconds")
        yield* settle
      }
      expect(state.dead).toEqual([q.eventId])
      expect(ledger.pending()).toEqual([])
      expect(ledger.state(q.eventId)).toBe("committed")
      expect(reacts.map((r) => r.op)).toEqual(["react", "redact", "react"])
      expect(reacts.at(-1)!.arg).toEqual(reactionContent(q.eventId, "❌"))
    }).pipe(Effect.provide(infra)))
})
