import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Exit, Layer, Queue, Scope, TestClock } from "effect"
import { VerificationPhase } from "matrix-js-sdk/lib/crypto-api/index.js"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type { DeviceId, UserId } from "../../src/domain/matrix.js"
import {
  FlowId,
  flowIdOf,
  sanitizeDisplay,
  sanitizeUserId,
  type VerificationFlow
} from "../../src/domain/verification.js"
import { deriveState } from "../../src/domain/verificationState.js"
import { ChannelStatusWithMatrix } from "../../src/layers/ChannelStatusLive.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { HANDLED_FILE } from "../../src/layers/verification/handled.js"
import { VerificationLive } from "../../src/layers/VerificationLive.js"
import { ChannelStatus } from "../../src/services/ChannelStatus.js"
import { EventBus, type GatewayEvent } from "../../src/services/EventBus.js"
import { Verification, type VerificationShape } from "../../src/services/Verification.js"
import { tmpDir } from "../support/tmp.js"
import { FakeClient, FakeRequest, type RawToDevice } from "./verification-fakes.js"

const BOT = "@bot:example.org"
const ALICE = "@alice:example.org"
const MALLORY = "@mallory:evil.example"

/** The service takes branded ids; the tests name them as text (one case passes a deliberately invalid user id). */
const startOn = (v: VerificationShape, user: string, device?: string) =>
  v.start(user as UserId, device as DeviceId | undefined)

const tmp = () => tmpDir("cara-verif-")

// The registry over one EventBus, ChannelStatus and state dir, all visible to the test.
const world = (dir: string) =>
  VerificationLive.pipe(
    Layer.provideMerge(Layer.mergeAll(EventBus.Live.pipe(Layer.provide(MetricsLive)), StateDirAt(dir))),
    Layer.provideMerge(ChannelStatusWithMatrix)
  )

/**
 * Lets the registry's work queue (which may write the handled-ids file) and the fakes' promise callbacks run:
 * waits in real time until the registry's listing stops changing for a few rounds (bounded, never asserted on).
 */
const settle = Effect.gen(function*() {
  const v = yield* Verification
  let last = ""
  let stable = 0
  for (let i = 0; i < 500 && stable < 10; i++) {
    yield* Effect.promise(() => new Promise((r) => setTimeout(r, 3)))
    yield* Effect.yieldNow()
    const now = JSON.stringify(yield* v.list)
    stable = now === last ? stable + 1 : 0
    last = now
  }
})

/** Polls the listing (real time, bounded) until it satisfies `pred`; the caller's assertions then say what is wrong. */
const until = (pred: (flows: ReadonlyArray<VerificationFlow>) => boolean) =>
  Effect.gen(function*() {
    const v = yield* Verification
    for (let i = 0; i < 2000; i++) {
      const flows = yield* v.list
      if (pred(flows)) return flows
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 5)))
    }
    return yield* v.list
  })
const listedOne = until((l) => l.length === 1)

const attachFake = (client: FakeClient, allowed: ReadonlyArray<string> = [ALICE]) =>
  Effect.flatMap(
    Verification,
    (v) => v.attach({ client: client.asClient(), botUserId: client.userId, isAllowed: (u) => allowed.includes(u) })
  )

const requestFrom = (sender: string, device: string, txn: string): RawToDevice => ({
  sender,
  type: "m.key.verification.request",
  content: { from_device: device, transaction_id: txn, methods: ["m.sas.v1"], timestamp: Date.now() }
})
const startFrom = (sender: string, device: string, txn: string): RawToDevice => ({
  sender,
  type: "m.key.verification.start",
  content: { from_device: device, transaction_id: txn, method: "m.sas.v1" }
})
const sync = (client: FakeClient, ...events: Array<RawToDevice>) => Effect.promise(() => client.syncToDevice(events))
const timesProcessed = (client: FakeClient, txn: string) =>
  client.processed.filter((e) => e.content["transaction_id"] === txn).length

const only = (flows: ReadonlyArray<VerificationFlow>) => {
  expect(flows).toHaveLength(1)
  return flows[0]!
}

const pending = Effect.flatMap(ChannelStatus, (s) => s.get).pipe(
  Effect.map((all) => all.find((c) => c.id === "matrix")?.extra)
)

describe("verification domain", () => {
  it("flow ids follow the reference's length-prefixed SHA-256 and never collide on split points", () => {
    const expected = (u: string, p: string) => {
      const lp = (s: string) => {
        const b = Buffer.from(s, "utf8")
        const l = Buffer.alloc(8)
        l.writeBigUInt64LE(BigInt(b.length))
        return Buffer.concat([l, b])
      }
      return "mvr_" +
        createHash("sha256").update(
          Buffer.concat([Buffer.from("carapace-matrix-verification-control-id-v2\0"), lp(u), lp(p)])
        ).digest("base64url")
    }
    expect(flowIdOf(ALICE, "txn1")).toBe(expected(ALICE, "txn1"))
    expect(flowIdOf(ALICE, "txn1")).toBe(flowIdOf(ALICE, "txn1"))
    expect(flowIdOf("@a:b", "cd")).not.toBe(flowIdOf("@a:bc", "d"))
    expect(flowIdOf(ALICE, "txn1")).toMatch(/^mvr_[A-Za-z0-9_-]{43}$/)
  })

  it("sanitises peer-chosen text and replaces ids that stop being valid", () => {
    expect(sanitizeDisplay("DEV\u202eICE\u200b\u0007")).toBe("DEVICE")
    expect(sanitizeDisplay("e\u0301")).toBe("e")
    expect(Buffer.byteLength(sanitizeDisplay("é".repeat(300)), "utf8")).toBeLessThanOrEqual(255)
    expect(sanitizeUserId("@al\u200bice:example.org")).toBe("@alice:example.org")
    expect(sanitizeUserId("\u202e")).toMatch(/^@invalid-[0-9a-f]{16}:carapace\.invalid$/)
  })

  it("derives wire states with the SAS view winning over the request view", () => {
    const base = { hasVerifier: false, verifyCalled: false, sasCaptured: false, confirmed: false, mismatched: false }
    expect(deriveState({ ...base, phase: VerificationPhase.Unsent })).toBe("created")
    expect(deriveState({ ...base, phase: VerificationPhase.Requested })).toBe("requested")
    expect(deriveState({ ...base, phase: VerificationPhase.Ready })).toBe("ready")
    expect(deriveState({ ...base, phase: VerificationPhase.Started })).toBe("transitioned")
    expect(deriveState({ ...base, phase: VerificationPhase.Started, hasVerifier: true })).toBe("started")
    expect(deriveState({ ...base, phase: VerificationPhase.Started, hasVerifier: true, verifyCalled: true })).toBe(
      "accepted"
    )
    expect(
      deriveState({
        ...base,
        phase: VerificationPhase.Started,
        hasVerifier: true,
        verifyCalled: true,
        sasCaptured: true
      })
    ).toBe("keys_exchanged")
    expect(deriveState({ ...base, phase: VerificationPhase.Started, sasCaptured: true, confirmed: true })).toBe(
      "confirmed"
    )
    expect(deriveState({ ...base, phase: VerificationPhase.Done, confirmed: true })).toBe("done")
    expect(deriveState({ ...base, phase: VerificationPhase.Cancelled })).toBe("cancelled")
    expect(deriveState({ ...base, phase: VerificationPhase.Cancelled, mismatched: true })).toBe("mismatched")
  })
})

describe("verification registry", () => {
  it.scoped("a peer's to-device request from an allowed user is listed, accepted, SAS captured, confirmed, done; WS events in order", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus
      const events = yield* bus.subscribe
      const v = yield* Verification
      const client = new FakeClient(BOT)
      yield* attachFake(client)

      const req = new FakeRequest(ALICE, "txn-alice-1", { deviceId: "ALICEDEV" })
      client.receive(req)
      yield* listedOne
      const listed = only(yield* v.list)
      expect(listed.flowId).toBe(flowIdOf(ALICE, "txn-alice-1"))
      expect(listed).toMatchObject({
        userId: ALICE,
        deviceId: "ALICEDEV",
        protocolFlowId: "txn-alice-1",
        state: "requested"
      })
      expect(listed.sas).toBeUndefined()
      expect((yield* pending)?.pendingVerificationCount).toBe(1)

      // confirm before SAS: typed 409, nothing sent
      const early = yield* Effect.either(v.confirm(listed.flowId, true))
      expect(Either.isLeft(early) && early.left._tag).toBe("VerificationFlowNotReady")
      expect(Either.isLeft(early) && early.left.kind).toBe("verification-flow-not-ready")

      const accepted = yield* v.accept(listed.flowId)
      expect(req.acceptCalls).toBe(1)
      yield* settle
      // ready → the bot starts SAS itself and answers it
      expect(req.startCalls).toBe(1)
      expect(req.verifier?.verifyCalls).toBe(1)
      expect(["ready", "accepted", "started"]).toContain(accepted.state)

      req.verifier!.showSas()
      yield* settle
      const withSas = only(yield* v.list)
      expect(withSas.state).toBe("keys_exchanged")
      expect(withSas.sas?.emoji?.[1]).toEqual({ symbol: "🐱", description: "Cat" })
      expect(withSas.sas?.emoji).toHaveLength(7)
      expect(withSas.sas?.decimals).toEqual([1234, 5678, 910])

      const confirmed = yield* v.confirm(listed.flowId, true)
      expect(confirmed.state).toBe("confirmed")
      expect(req.verifier!.confirmed).toBe(true)
      req.done()
      yield* settle
      const done = only(yield* v.list)
      expect(done.state).toBe("done")
      expect((yield* pending)?.pendingVerificationCount).toBe(0)
      // terminal: further actions answer 410
      const late = yield* Effect.either(v.accept(listed.flowId))
      expect(Either.isLeft(late) && late.left.kind).toBe("verification-cancelled")

      const seen = Chunk.toReadonlyArray(yield* Queue.takeAll(events)) as ReadonlyArray<GatewayEvent>
      const states = seen.map((e) =>
        `${e.event.replace("matrix.verification.", "")}:${
          (e.payload as { verification: VerificationFlow }).verification.state
        }`
      )
      expect(states[0]).toBe("requested:requested")
      expect(states.slice(1).every((s) => s.startsWith("updated:"))).toBe(true)
      expect(states).toContain("updated:keys_exchanged")
      expect(states.indexOf("updated:keys_exchanged")).toBeLessThan(states.indexOf("updated:confirmed"))
      expect(states.at(-1)).toBe("updated:done")
      // every event names the same flow; no duplicate consecutive states (no no-op updates)
      expect(new Set(seen.map((e) => (e.payload as { verification: VerificationFlow }).verification.flowId)).size).toBe(
        1
      )
      for (let i = 1; i < states.length; i++) expect(states[i]).not.toBe(states[i - 1])
    }).pipe(Effect.provide(world(tmp()))))

  it.scoped("requests from users outside the allowlist are never listed and are counted", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus
      const events = yield* bus.subscribe
      const v = yield* Verification
      const client = new FakeClient(BOT)
      yield* attachFake(client)
      client.receive(new FakeRequest(MALLORY, "txn-m", { deviceId: "MDEV" }))
      // the queue runs in order: once a later allowed request is listed, mallory's was handled
      client.receive(new FakeRequest(ALICE, "txn-after", { deviceId: "ADEV" }))
      yield* listedOne
      expect(only(yield* v.list).userId).toBe(ALICE)
      expect((yield* pending)?.peerDropAllowlistRejectionTotal).toBe(1)
      const evs = Chunk.toReadonlyArray(yield* Queue.takeAll(events))
      expect(evs.map((e) => (e.payload as { verification: VerificationFlow }).verification.userId)).toEqual([ALICE])
      // the bot's own other devices may always verify it
      client.receive(new FakeRequest(BOT, "txn-self", { deviceId: "OTHER" }))
      expect((yield* until((l) => l.length === 2)).map((f) => f.userId).sort()).toEqual([ALICE, BOT].sort())
    }).pipe(Effect.provide(world(tmp()))))

  it.scoped("glare: a verifier replaced inside the same request is re-read, answered and its SAS captured", () =>
    Effect.gen(function*() {
      const v = yield* Verification
      const client = new FakeClient(BOT)
      yield* attachFake(client)
      const req = new FakeRequest(ALICE, "txn-glare", { deviceId: "ALICEDEV" })
      client.receive(req)
      yield* listedOne
      const { flowId } = only(yield* v.list)
      yield* v.accept(flowId)
      yield* settle
      const first = req.verifier!
      const second = req.peerStart()
      yield* settle
      expect(second).not.toBe(first)
      expect(second.verifyCalls).toBe(1)
      first.showSas() // a stale verifier's SAS must be ignored
      yield* settle
      expect(only(yield* v.list).sas).toBeUndefined()
      second.showSas()
      yield* settle
      expect(only(yield* v.list).state).toBe("keys_exchanged")
      yield* v.confirm(flowId, true)
      expect(second.confirmed).toBe(true)
      expect(first.confirmed).toBe(false)
    }).pipe(Effect.provide(world(tmp()))))

  it.scoped("--no-match marks the flow mismatched and cancels the peer with m.mismatched_sas; then 410", () =>
    Effect.gen(function*() {
      const v = yield* Verification
      const client = new FakeClient(BOT)
      yield* attachFake(client)
      const req = new FakeRequest(ALICE, "txn-mm", { deviceId: "ALICEDEV" })
      client.receive(req)
      yield* listedOne
      const { flowId } = only(yield* v.list)
      yield* v.accept(flowId)
      yield* settle
      const verifier = req.verifier!
      verifier.showSas()
      yield* settle
      const r = yield* v.confirm(flowId, false)
      expect(r.state).toBe("mismatched")
      expect(verifier.mismatched).toBe(true)
      expect(req.cancellationCode).toBe("m.mismatched_sas")
      expect(req.cancelCalls).toBe(0) // request.cancel() would have sent m.user
      yield* settle
      expect(only(yield* v.list).state).toBe("mismatched")
      const again = yield* Effect.either(v.confirm(flowId, true))
      expect(Either.isLeft(again) && again.left._tag).toBe("VerificationFlowTerminal")
      expect((yield* pending)?.pendingVerificationCount).toBe(0)
    }).pipe(Effect.provide(world(tmp()))))

  it.scoped("a peer's cancel shows as cancelled; cancel on a terminal flow returns it; unknown ids are 404", () =>
    Effect.gen(function*() {
      const v = yield* Verification
      const client = new FakeClient(BOT)
      yield* attachFake(client)
      const req = new FakeRequest(ALICE, "txn-c", { deviceId: "ALICEDEV" })
      client.receive(req)
      yield* listedOne
      const { flowId } = only(yield* v.list)
      req.cancelWith("m.user")
      yield* settle
      expect(only(yield* v.list).state).toBe("cancelled")
      expect((yield* v.cancel(flowId)).state).toBe("cancelled")
      const missing = yield* Effect.either(v.accept(FlowId.make("mvr_nope")))
      expect(Either.isLeft(missing) && missing.left.kind).toBe("verification-flow-not-found")

      const req2 = new FakeRequest(ALICE, "txn-c2", { deviceId: "ALICEDEV" })
      client.receive(req2)
      yield* until((l) => l.length === 2)
      const second = (yield* v.list).find((f) => f.protocolFlowId === "txn-c2")!
      expect((yield* v.cancel(second.flowId)).state).toBe("cancelled")
      expect(req2.cancelCalls).toBe(1)
    }).pipe(Effect.provide(world(tmp()))))

  it.scoped("a flow without progress for 10 minutes expires to cancelled (on the peer too)", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus
      const events = yield* bus.subscribe
      const v = yield* Verification
      const client = new FakeClient(BOT)
      yield* attachFake(client)
      const req = new FakeRequest(ALICE, "txn-exp", { deviceId: "ALICEDEV" })
      client.receive(req)
      yield* listedOne
      yield* TestClock.adjust("9 minutes")
      yield* settle
      expect(only(yield* v.list).state).toBe("requested")
      expect(req.cancelCalls).toBe(0)
      yield* TestClock.adjust("61 seconds")
      yield* settle
      expect(req.cancelCalls).toBe(1)
      expect(only(yield* v.list).state).toBe("cancelled")
      const seen = Chunk.toReadonlyArray(yield* Queue.takeAll(events)).map((e) => e.event)
      expect(seen).toEqual(["matrix.verification.requested", "matrix.verification.updated"])
      // terminal records are kept for 30 minutes, then pruned
      yield* TestClock.adjust("31 minutes")
      yield* settle
      expect(yield* v.list).toHaveLength(0)
    }).pipe(Effect.provide(world(tmp()))))

  it.effect("handled request ids are persisted: a phantom re-emission after a restart is ignored", () =>
    Effect.gen(function*() {
      const dir = tmp()
      let round = 0
      const run = (req: FakeRequest) =>
        Effect.scoped(
          Effect.gen(function*() {
            const v = yield* Verification
            const client = new FakeClient(BOT)
            yield* attachFake(client)
            client.receive(req)
            // a phantom is dropped silently: wait until the queue has certainly run by sending a marker after it
            client.receive(new FakeRequest(BOT, `marker-${++round}`, { deviceId: "OTHER" }))
            const flows = yield* until((l) => l.some((f) => f.userId === BOT))
            return flows.filter((f) => f.userId !== BOT)
          }).pipe(Effect.provide(world(dir)))
        )
      expect(yield* run(new FakeRequest(ALICE, "$inroom-event", { roomId: "!dm:example.org" }))).toHaveLength(1)
      const file = path.join(dir, HANDLED_FILE)
      expect(fs.statSync(file).mode & 0o777).toBe(0o600)
      expect(JSON.parse(fs.readFileSync(file, "utf8")).ids).toHaveProperty("$inroom-event")
      // "restart": a fresh registry on the same state dir
      expect(yield* run(new FakeRequest(ALICE, "$inroom-event", { roomId: "!dm:example.org" }))).toHaveLength(0)
      expect(yield* run(new FakeRequest(ALICE, "$another-event", { roomId: "!dm:example.org" }))).toHaveLength(1)
    }))

  it.scoped("bot-initiated: validation, unknown device, no client; a ready peer gets SAS started without another accept", () =>
    Effect.gen(function*() {
      const v = yield* Verification
      const noClient = yield* Effect.either(startOn(v, ALICE, "ALICEDEV"))
      expect(Either.isLeft(noClient) && noClient.left.kind).toBe("not-connected")
      const client = new FakeClient(BOT)
      client.devices.set(ALICE, [{ deviceId: "ALICEDEV" }])
      yield* attachFake(client)
      const bad = yield* Effect.either(startOn(v, "alice", "X"))
      expect(Either.isLeft(bad) && bad.left.kind).toBe("invalid-user-id")
      const unknown = yield* Effect.either(startOn(v, ALICE, "NOPE"))
      expect(Either.isLeft(unknown) && unknown.left.kind).toBe("device-not-found")

      const flow = yield* startOn(v, ALICE, "ALICEDEV")
      expect(flow).toMatchObject({ userId: ALICE, deviceId: "ALICEDEV", state: "requested" })
      const req = client.requested[0]!
      expect(flow.flowId).toBe(flowIdOf(ALICE, req.transactionId!))
      req.peerReady()
      yield* settle
      expect(req.startCalls).toBe(1)
      expect(req.verifier?.verifyCalls).toBe(1)
      req.verifier!.showSas()
      yield* settle
      expect(only(yield* v.list).state).toBe("keys_exchanged")
    }).pipe(Effect.provide(world(tmp()))))

  it.scoped("verify of a device the bot does not know yet refreshes the user's device list once, then finds it", () =>
    Effect.gen(function*() {
      const v = yield* Verification
      const client = new FakeClient(BOT)
      client.devices.set(ALICE, [{ deviceId: "ALICEDEV" }])
      client.serverOnlyDevices.set(ALICE, [{ deviceId: "PHONE" }])
      yield* attachFake(client)
      const known = yield* startOn(v, ALICE, "ALICEDEV")
      expect(known.deviceId).toBe("ALICEDEV")
      expect(client.refreshes).toBe(0)
      const flow = yield* startOn(v, ALICE, "PHONE")
      expect(flow).toMatchObject({ userId: ALICE, deviceId: "PHONE", state: "requested" })
      expect(client.refreshes).toBe(1)
      // still unknown after the refresh: 404, after exactly one more refresh
      const missing = yield* Effect.either(startOn(v, ALICE, "NOPE"))
      expect(Either.isLeft(missing) && missing.left.kind).toBe("device-not-found")
      expect(client.refreshes).toBe(2)
    }).pipe(Effect.provide(world(tmp()))))

  it.scopedLive("a bot-initiated request right after a flow with the same user ended waits for two syncs (the SDK's clean-up)", () =>
    Effect.gen(function*() {
      const v = yield* Verification
      const client = new FakeClient(BOT)
      client.devices.set(ALICE, [{ deviceId: "ALICEDEV" }])
      yield* attachFake(client)
      client.completeSync()
      // no earlier flow with alice: no wait, no nudge
      const first = yield* startOn(v, ALICE, "ALICEDEV")
      expect(client.nudges).toEqual([])
      expect(client.syncsAtRequest).toEqual([1])
      const req = client.requested[0]!
      req.cancelWith("m.user")
      yield* until((l) => l.find((f) => f.flowId === first.flowId)?.state === "cancelled")
      const endedAt = client.syncs
      yield* startOn(v, ALICE, "ALICEDEV")
      // the bot woke its own long-poll and sent the request only after two more completed syncs
      expect(client.nudges.length).toBeGreaterThanOrEqual(1)
      expect(client.nudges.every((t) => t === "org.cara.sync_nudge")).toBe(true)
      expect(client.syncsAtRequest[1]).toBeGreaterThanOrEqual(endedAt + 2)
    }).pipe(Effect.provide(world(tmp()))))

  it.scoped("devices lists the bot's own devices with trust, flagging ids changed by sanitisation", () =>
    Effect.gen(function*() {
      const v = yield* Verification
      const client = new FakeClient(BOT)
      client.devices.set(BOT, [
        { deviceId: "BOTDEV", displayName: "Carapace Matrix", verified: true },
        { deviceId: "PHONE\u200b", displayName: "", verified: false }
      ])
      yield* attachFake(client)
      const list = yield* v.devices
      expect(list).toEqual([
        { userId: BOT, deviceId: "BOTDEV", displayName: "Carapace Matrix", verified: true },
        { userId: BOT, deviceId: "PHONE", verified: false, rawDeviceIdHex: Buffer.from("PHONE\u200b").toString("hex") }
      ])
    }).pipe(Effect.provide(world(tmp()))))

  it.effect("detaching the client (runtime stopped) makes actions answer not-connected", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const v = yield* Verification
      const client = new FakeClient(BOT)
      client.devices.set(BOT, [{ deviceId: "BOTDEV" }])
      yield* Scope.extend(attachFake(client), scope)
      expect(yield* v.devices).toHaveLength(1)
      expect(client.listenerCount("crypto.verificationRequestReceived")).toBe(1)
      yield* Scope.close(scope, Exit.void)
      expect(client.listenerCount("crypto.verificationRequestReceived")).toBe(0)
      const r = yield* Effect.either(v.devices)
      expect(Either.isLeft(r) && r.left.kind).toBe("not-connected")
    }).pipe(Effect.provide(world(tmp()))))

  it.scoped("a to-device request from an allowlisted user's device the bot does not know yet is processed after one refresh of their devices", () =>
    Effect.gen(function*() {
      const client = new FakeClient(BOT)
      client.devices.set(ALICE, [{ deviceId: "ALICEDEV" }])
      client.serverOnlyDevices.set(ALICE, [{ deviceId: "PHONE" }])
      client.serverOnlyDevices.set(MALLORY, [{ deviceId: "MDEV" }])
      yield* attachFake(client)

      // the machine drops the first delivery (unknown device); the registry refreshes and feeds it again
      yield* sync(client, requestFrom(ALICE, "PHONE", "txn-phone"))
      const listed = (yield* until((l) => l.some((f) => f.protocolFlowId === "txn-phone"))).find((f) =>
        f.protocolFlowId === "txn-phone"
      )
      expect(listed).toMatchObject({ userId: ALICE, deviceId: "PHONE", state: "requested" })
      expect(client.refreshes).toBe(1)
      expect(timesProcessed(client, "txn-phone")).toBe(2)

      // someone outside the allowlist: no refresh, nothing fed again; a known device: processed once
      yield* sync(client, requestFrom(MALLORY, "MDEV", "txn-mallory"), requestFrom(ALICE, "ALICEDEV", "txn-known"))
      yield* until((l) => l.some((f) => f.protocolFlowId === "txn-known"))
      yield* settle
      expect(timesProcessed(client, "txn-mallory")).toBe(1)
      expect(timesProcessed(client, "txn-known")).toBe(1)
      expect(client.refreshes).toBe(1)

      // a device the homeserver does not list either: one refresh, not fed again, and only once per request
      yield* sync(client, requestFrom(ALICE, "GHOST", "txn-ghost"))
      for (let i = 0; i < 400 && client.refreshes < 2; i++) {
        yield* Effect.promise(() => new Promise((r) => setTimeout(r, 5)))
      }
      yield* sync(client, requestFrom(ALICE, "GHOST", "txn-ghost"))
      yield* settle
      expect(client.refreshes).toBe(2)
      expect(timesProcessed(client, "txn-ghost")).toBe(2) // the two syncs, nothing fed again
      expect((yield* Verification.pipe(Effect.flatMap((v) => v.list))).map((f) => f.protocolFlowId).sort()).toEqual([
        "txn-known",
        "txn-phone"
      ])
    }).pipe(Effect.provide(world(tmp()))))

  it.scopedLive("accept, then the peer's start right after ready: one SAS decision per flow, never a second start, no cancel (50 rounds)", () =>
    Effect.gen(function*() {
      const v = yield* Verification
      const client = new FakeClient(BOT)
      client.devices.set(ALICE, [{ deviceId: "ALICEDEV" }])
      yield* attachFake(client)
      let peerWasFirst = 0
      let botWasFirst = 0
      for (let round = 0; round < 50; round++) {
        const txn = `txn-race-${round}`
        yield* sync(client, requestFrom(ALICE, "ALICEDEV", txn))
        const flow = (yield* until((l) => l.some((f) => f.protocolFlowId === txn))).find((f) =>
          f.protocolFlowId === txn
        )!
        const req = client.incoming.get(txn)!
        // the peer's client answers the bot's ready with its start at once; how soon it lands varies by round
        req.onReady = () => {
          const send = () => void client.syncToDevice([startFrom(ALICE, "ALICEDEV", txn)])
          if (round % 3 === 0) send()
          else setTimeout(send, round % 3)
        }
        yield* v.accept(flow.flowId)
        for (let i = 0; i < 400 && timesProcessed(client, txn) < 2; i++) {
          yield* Effect.promise(() => new Promise((r) => setTimeout(r, 2)))
        }
        yield* settle
        expect(req.cancellationCode, `round ${round}`).toBeNull()
        expect(req.startCalls, `round ${round}`).toBeLessThanOrEqual(1)
        expect(req.verifier?.verifyCalls, `round ${round}`).toBe(1)
        if (req.startCalls === 0) peerWasFirst++
        else botWasFirst++
        req.verifier!.showSas()
        yield* settle
        yield* v.confirm(flow.flowId, true)
        req.done()
        yield* until((l) => l.find((f) => f.flowId === flow.flowId)?.state === "done")
      }
      // both orders came up, so the loop did exercise the race from both sides
      expect(peerWasFirst).toBeGreaterThan(0)
      expect(botWasFirst).toBeGreaterThan(0)
    }).pipe(Effect.provide(world(tmp()))))

  /** A peer's flow, accepted, with its SAS shown: the point where the operator confirms. */
  const flowWithSas = (client: FakeClient, txn: string) =>
    Effect.gen(function*() {
      const v = yield* Verification
      const req = new FakeRequest(ALICE, txn, { deviceId: "ALICEDEV" })
      client.receive(req)
      const flowId = (yield* until((l) => l.some((f) => f.protocolFlowId === txn))).find((f) =>
        f.protocolFlowId === txn
      )!.flowId
      yield* v.accept(flowId)
      yield* settle
      req.verifier!.showSas()
      yield* until((l) => l.find((f) => f.flowId === flowId)?.state === "keys_exchanged")
      return { flowId, req, verifier: req.verifier! }
    })

  const statesOf = (events: ReadonlyArray<GatewayEvent>) =>
    events.map((e) => (e.payload as { verification: VerificationFlow }).verification.state)

  it.scoped("a confirm the SDK refuses leaves the flow keys_exchanged and publishes no confirmed; a retry that succeeds confirms", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus
      const events = yield* bus.subscribe
      const v = yield* Verification
      const client = new FakeClient(BOT)
      yield* attachFake(client)
      const { flowId, verifier } = yield* flowWithSas(client, "txn-confirm-fails")
      verifier.confirmWith = () => Promise.reject(new Error("to-device send failed"))
      const failed = yield* Effect.either(v.confirm(flowId, true))
      expect(Either.isLeft(failed) && failed.left._tag).toBe("VerificationFailed")
      expect(verifier.confirmCalls).toBe(1)
      yield* settle
      expect(only(yield* v.list).state).toBe("keys_exchanged")
      expect(statesOf(Chunk.toReadonlyArray(yield* Queue.takeAll(events)))).not.toContain("confirmed")
      expect((yield* pending)?.pendingVerificationCount).toBe(1)

      verifier.confirmWith = undefined
      expect((yield* v.confirm(flowId, true)).state).toBe("confirmed")
      expect(verifier.confirmed).toBe(true)
      expect(statesOf(Chunk.toReadonlyArray(yield* Queue.takeAll(events)))).toEqual(["confirmed"])
    }).pipe(Effect.provide(world(tmp()))))

  it.scopedLive("while the SDK's confirm is in flight the flow is not confirmed (listing and WS); it is once the confirm resolved", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus
      const events = yield* bus.subscribe
      const v = yield* Verification
      const client = new FakeClient(BOT)
      yield* attachFake(client)
      const { flowId, verifier } = yield* flowWithSas(client, "txn-confirm-slow")
      let release: () => void = () => undefined
      verifier.confirmWith = () => new Promise<void>((r) => (release = r))
      const running = yield* Effect.fork(v.confirm(flowId, true))
      for (let i = 0; i < 400 && verifier.confirmCalls === 0; i++) yield* Effect.sleep("5 millis")
      expect(verifier.confirmCalls).toBe(1)
      yield* settle
      expect(only(yield* v.list).state).toBe("keys_exchanged")
      expect(statesOf(Chunk.toReadonlyArray(yield* Queue.takeAll(events)))).not.toContain("confirmed")
      release()
      expect((yield* running.await).pipe(Exit.map((f) => f.state))).toEqual(Exit.succeed("confirmed"))
      expect(only(yield* v.list).state).toBe("confirmed")
      expect(statesOf(Chunk.toReadonlyArray(yield* Queue.takeAll(events)))).toEqual(["confirmed"])
    }).pipe(Effect.provide(world(tmp()))))
})
