// The timeline side of reactions and redactions (src/layers/matrix/relations.ts) over SDK events and a small
// fake room: which reactions become feedback records (once), which redactions count, and the removal record.
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import * as sdk from "matrix-js-sdk"
import * as path from "node:path"
import { Matrix } from "../../src/domain/config.js"
import { openLedger } from "../../src/layers/InboundLive.js"
import { MatrixClient } from "../../src/layers/matrix/client.js"
import { MatrixRelations, MatrixRelationsLive } from "../../src/layers/matrix/relations.js"
import { Audit } from "../../src/services/Audit.js"
import { Ledger } from "../../src/services/Ledger.js"
import { CurrentMatrixSession, MatrixSettings } from "../../src/services/MatrixSync.js"
import { MatrixTransport } from "../../src/services/MatrixTransport.js"
import { tmpDir } from "../support/tmp.js"

const BOT = "@bot:x"
const ALICE = "@alice:x"
const MALLORY = "@mallory:x"
const MOD = "@mod:x"
const ROOM = "!r:x"

const ev = (e: Record<string, unknown>) => new sdk.MatrixEvent({ room_id: ROOM, origin_server_ts: 1, ...e } as never)

/** The few room members the layer reads: events by id, power levels, members' levels. */
const fakeRoom = (events: ReadonlyArray<sdk.MatrixEvent>) =>
  ({
    roomId: ROOM,
    findEventById: (id: string) => events.find((e) => e.getId() === id),
    hasEncryptionStateEvent: () => true,
    currentState: {
      getStateEvents: () => ({ getContent: () => ({ redact: 50 }) }),
      getMember: (u: string) => ({ powerLevel: u === MOD ? 50 : 0 })
    }
  }) as unknown as sdk.Room

const setup = Effect.gen(function*() {
  const ledger = openLedger(path.join(tmpDir("cara-rel-matrix-"), "ledger.sqlite"))
  yield* Effect.addFinalizer(() => Effect.sync(() => ledger.close()))
  const audit: Array<{ event: string; data: Record<string, unknown> }> = []
  const redacted: Array<string> = []
  const settings = Schema.decodeUnknownSync(Matrix)({ autoJoin: { allowUsers: [ALICE] } })
  const layer = MatrixRelationsLive.pipe(
    Layer.provide(Layer.succeed(MatrixSettings, settings)),
    Layer.provide(Layer.succeed(CurrentMatrixSession, { userId: BOT, deviceId: "D" } as never)),
    Layer.provide(Layer.succeed(Ledger, ledger)),
    Layer.provide(
      Layer.succeed(Audit, { append: (event, data) => Effect.sync(() => void audit.push({ event, data })) })
    ),
    Layer.provide(Layer.succeed(
      MatrixClient,
      {
        client: { fetchRoomEvent: () => Promise.reject(new Error("not found")) }
      } as unknown as typeof MatrixClient.Service
    )),
    Layer.provide(Layer.succeed(
      MatrixTransport,
      {
        redact: async (_r: string, eventId: string) => void redacted.push(eventId)
      } as unknown as typeof MatrixTransport.Service
    ))
  )
  // built in the test's scope: the layer forks the answers' redactions into it
  const relations = Context.get(yield* Layer.build(layer), MatrixRelations)
  return { ledger, audit, redacted, relations }
})

const reaction = (id: string, sender: string, target: string, key: string) =>
  ev({
    event_id: id,
    sender,
    type: "m.reaction",
    content: { "m.relates_to": { rel_type: "m.annotation", event_id: target, key } }
  })

const redaction = (id: string, sender: string, target: string) =>
  ev({ event_id: id, sender, type: "m.room.redaction", redacts: target, content: { redacts: target } })

describe("reactions from the timeline", () => {
  it.scoped("👍 on an answer from an allowed user: one feedback record, whatever the redeliveries", () =>
    Effect.gen(function*() {
      const { audit, ledger, relations } = yield* setup
      ledger.claim("$q:x", ROOM, 1)
      ledger.commit("$q:x", ["$a:x"], 2)
      const room = fakeRoom([])
      const up = reaction("$up:x", ALICE, "$a:x", "👍")
      expect(relations.accepts(up)).toBe(true)
      yield* relations.handle(up, room)
      yield* relations.handle(up, room)
      // on the question, from a user off the allowlist, not feedback, the bot's own: nothing
      yield* relations.handle(reaction("$onq:x", ALICE, "$q:x", "👍"), room)
      yield* relations.handle(reaction("$m:x", MALLORY, "$a:x", "👍"), room)
      yield* relations.handle(reaction("$heart:x", ALICE, "$a:x", "❤️"), room)
      yield* relations.handle(reaction("$own:x", BOT, "$a:x", "👍"), room)
      expect(audit).toEqual([{
        event: "feedback",
        data: {
          value: "positive",
          roomId: ROOM,
          userId: ALICE,
          answerEventId: "$a:x",
          reactionEventId: "$up:x",
          questionEventId: "$q:x"
        }
      }])
      // taken back by someone else (not a moderator): nothing; by alice: one removal record
      yield* relations.handle(redaction("$r1:x", MALLORY, "$up:x"), room)
      yield* relations.handle(redaction("$r2:x", ALICE, "$up:x"), room)
      yield* relations.handle(redaction("$r2:x", ALICE, "$up:x"), room)
      expect(audit.map((a) => a.event)).toEqual(["feedback", "feedback-removed"])
      expect(audit[1]!.data).toMatchObject({ reactionEventId: "$up:x", redactionEventId: "$r2:x", value: "positive" })
    }))
})

describe("redactions from the timeline", () => {
  it.scoped("counts the question's sender and a moderator, not another user", () =>
    Effect.gen(function*() {
      const { ledger, redacted, relations } = yield* setup
      const questions = ["$q1:x", "$q2:x"].map((id) =>
        ev({ event_id: id, sender: ALICE, type: "m.room.encrypted", content: {} })
      )
      const room = fakeRoom(questions)
      for (const [i, q] of ["$q1:x", "$q2:x"].entries()) {
        ledger.claim(q, ROOM, 1)
        ledger.commit(q, [`$a${i + 1}:x`], 2)
      }
      yield* relations.handle(redaction("$x1:x", MALLORY, "$q1:x"), room)
      expect(ledger.redacted("$q1:x")).toBeUndefined()
      yield* relations.handle(redaction("$x2:x", ALICE, "$q1:x"), room)
      yield* relations.handle(redaction("$x3:x", MOD, "$q2:x"), room)
      // the answers are redacted in the background
      yield* Effect.promise(() => new Promise((r) => setImmediate(r))).pipe(Effect.repeatN(20))
      expect(redacted).toEqual(["$a1:x", "$a2:x"])
      // an event the layer cannot find out about (not in the timeline, not fetchable) is ignored
      yield* relations.handle(redaction("$x4:x", ALICE, "$gone:x"), room)
      expect(ledger.redacted("$gone:x")).toBeUndefined()
    }))
})
