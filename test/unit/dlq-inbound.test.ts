// The inbound pipeline and the DLQ together (fakes for the agent and the Matrix send path, the real ledger
// and DLQ on disk): a failed session write goes to the DLQ once; replay answers it in the foreground exactly
// once; a failing replay keeps the record without appending it again.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { decodeLine, dlqKeyFromBytes, recordId } from "../../src/domain/dlq.js"
import { EventId, type InboundEvent, RoomId, UserId } from "../../src/domain/matrix.js"
import { AuditLive } from "../../src/layers/AuditLive.js"
import { ChannelStatusWithMatrix } from "../../src/layers/ChannelStatusLive.js"
import { makeDlq } from "../../src/layers/DlqLive.js"
import { makeInbound, openLedger } from "../../src/layers/InboundLive.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import type { AgentShape } from "../../src/services/Agent.js"
import { ChannelStatus } from "../../src/services/ChannelStatus.js"
import { Dlq } from "../../src/services/Dlq.js"
import { Metrics } from "../../src/services/Metrics.js"
import type { OutboundShape } from "../../src/services/Outbound.js"
import { SessionStoreError } from "../../src/services/Sessions.js"
import { StateDir } from "../../src/services/StateDir.js"
import { tmpDir } from "../support/tmp.js"

// the services take branded ids: the fixtures' strings, checked once
const eid = EventId.make
const rid = RoomId.make
const uid = UserId.make

const KEY = dlqKeyFromBytes(Buffer.alloc(32, 3))
const BOT = "@bot:example.org"
const ALICE = uid("@alice:example.org")

const event: InboundEvent = {
  eventId: eid("$one:example.org"),
  roomId: rid("!dm:example.org"),
  sender: ALICE,
  ts: 5,
  msgtype: "m.text",
  body: "please answer",
  encrypted: true
}
const room = { memberCount: 2, encrypted: true, botJoinedAt: 1, botDisplayName: "bot" }

const setup = (root: string) =>
  Effect.gen(function*() {
    const state = { failing: true, agentCalls: 0, replies: [] as Array<string> }
    const agent = {
      reply: (input: { readonly eventId: string }) =>
        Effect.suspend(() => {
          state.agentCalls++
          return state.failing
            ? Effect.fail(new SessionStoreError({ kind: "agent-history-io", message: "disk full" }))
            : Effect.succeed({ _tag: "Reset" as const, text: `answer to ${input.eventId}` })
        })
    } as unknown as AgentShape
    const outbound: OutboundShape = {
      reply: (r) => Effect.sync(() => (state.replies.push(r.inReplyTo), [eid(`$reply-${state.replies.length}`)])),
      edit: () => Effect.die("no edits here"),
      sendTest: () => Effect.succeed(eid("$x")),
      whileTyping: (_roomId, effect) => effect,
      readReceipt: () => Effect.void
    }
    const ledger = openLedger(path.join(root, "ledger.sqlite"))
    yield* Effect.addFinalizer(() => Effect.sync(() => ledger.close()))
    const dlq = yield* Dlq
    const inbound = yield* makeInbound({
      gate: {
        botUserId: BOT,
        allowlist: { allowUsers: [ALICE], allowServerNames: [] },
        encryptedMode: true,
        groupMessages: "mention"
      },
      ledger,
      agent,
      outbound,
      status: yield* ChannelStatus,
      dlq
    })
    return { state, ledger, dlq, inbound }
  })

const layerAt = (root: string) => {
  const infra = Layer.mergeAll(MetricsLive, AuditLive).pipe(
    Layer.provideMerge(ChannelStatusWithMatrix),
    Layer.provideMerge(Layer.effect(StateDir, makeStateDir(root)))
  )
  return Layer.effect(Dlq, makeDlq({ key: Effect.succeed(Option.some(KEY)) })).pipe(Layer.provideMerge(infra))
}

const tempRoot = () => tmpDir("cara-dlq-inbound-")

const waitUntil = <R>(check: Effect.Effect<boolean, unknown, R>) =>
  Effect.gen(function*() {
    // generous: a busy machine may take long, a broken pipeline never gets there
    for (let i = 0; i < 3000; i++) {
      if (yield* check) return
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 5)))
    }
    return yield* Effect.dieMessage("condition not reached")
  })

describe("Inbound + DLQ", () => {
  it.scopedLive("a failed session write goes to the DLQ once; a failing replay keeps it; a good replay answers exactly once", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const { dlq, inbound, ledger, state } = yield* setup(root)
      yield* inbound.offer(event, room)
      yield* waitUntil(Effect.map(dlq.count, (n) => n === 1))
      const line = fs.readFileSync(path.join(root, "matrix/inbound_dlq.jsonl"), "utf8").trim()
      expect(decodeLine(line, KEY)).toMatchObject({
        _tag: "Record",
        record: { eventId: event.eventId, roomId: event.roomId, senderId: ALICE, text: "please answer", isGroup: false }
      })
      expect(ledger.state(event.eventId)).toBe("claimed")
      const status = (yield* Effect.flatMap(ChannelStatus, (s) => s.get)).find((c) => c.id === "matrix")
      expect(status?.extra?.inboundDispatchFailureTotal).toBe(1)

      // the same event re-offered (resumed after a restart) fails again: still one record. (An offer while
      // the first answer is still finishing is ignored, so offer until it is taken.)
      yield* waitUntil(inbound.offer(event, room).pipe(Effect.map(() => state.agentCalls >= 2)))
      const dispatchFailures = Effect.flatMap(Metrics, (m) => m.render).pipe(
        Effect.map((t) => t.includes("carapace_matrix_inbound_dispatch_failures_total{failure_stage=\"dispatch\"} 2"))
      )
      yield* waitUntil(dispatchFailures)
      expect(state.agentCalls).toBe(2)
      expect(yield* dlq.count).toBe(1)

      // replay while the fault persists: kept, not appended again, nothing sent
      const record = { eventId: event.eventId, roomId: event.roomId, senderId: ALICE, text: event.body, receivedAt: 1 }
      const failed = yield* Effect.flip(inbound.redeliver(record))
      expect(failed.kind).toBe("dlq-dispatch-failure")
      expect(yield* dlq.count).toBe(1)
      expect(state.replies).toEqual([])

      // fault gone: automatic replay answers it once and removes it
      state.failing = false
      const report = yield* Effect.scoped(
        dlq.register({ allowed: (s) => s === ALICE, dispatch: inbound.redeliver, resend: inbound.resend }).pipe(
          Effect.zipRight(dlq.replay({ _tag: "One", id: recordId(event.eventId) }))
        )
      )
      expect(report).toMatchObject({ replayed: 1, remaining: 0 })
      expect(state.replies).toEqual([event.eventId])
      expect(ledger.state(event.eventId)).toBe("committed")

      // a second delivery of an answered event (a record left by a crash before the rewrite) sends nothing
      const calls = state.agentCalls
      yield* inbound.redeliver(record)
      expect(state.agentCalls).toBe(calls)
      expect(state.replies).toEqual([event.eventId])
      // and a live redelivery of the same event is ignored too (the ledger answers before anything is forked)
      yield* inbound.offer(event, room)
      expect(state.agentCalls).toBe(calls)
      expect(state.replies).toEqual([event.eventId])
    }).pipe(Effect.provide(layerAt(root)))
  })
})
