// DlqLive over a real state dir: appends, counters, replay with backoff and the allowlist, quarantine and
// its cap, the record cap with its audit event, the durability error, show/purge, and the rekey store view.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Option, Redacted, Scope, TestClock } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import {
  decodeLine,
  deriveDlqKey,
  DlqError,
  type DlqKey,
  dlqKeyFromBytes,
  type DlqRecord,
  encodeLine,
  recordId
} from "../../src/domain/dlq.js"
import { AuditLive } from "../../src/layers/AuditLive.js"
import { ChannelStatusWithMatrix } from "../../src/layers/ChannelStatusLive.js"
import { dlqKeyedStore, makeDlq } from "../../src/layers/DlqLive.js"
import { registerDlq } from "../../src/layers/matrix/dlq.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import { ChannelStatus } from "../../src/services/ChannelStatus.js"
import { Dlq, type DlqDispatcher } from "../../src/services/Dlq.js"
import { Inbound, type InboundShape } from "../../src/services/Inbound.js"
import { MatrixSettings } from "../../src/services/MatrixSync.js"
import { Metrics } from "../../src/services/Metrics.js"
import { StateDir } from "../../src/services/StateDir.js"
import { legacyLine } from "../support/dlq-fixtures.js"
import { tmpDir } from "../support/tmp.js"

const tempRoot = () => tmpDir("cara-dlq-")

const KEY = dlqKeyFromBytes(crypto.createHash("sha256").update("service-test").digest())

const rec = (n: number, sender = "@alice:example.org"): DlqRecord => ({
  eventId: `$event${n}:example.org`,
  roomId: "!room:example.org",
  senderId: sender,
  text: `message number ${n}`,
  receivedAt: 1000 + n
})

const V1 = dlqKeyFromBytes(crypto.createHash("sha256").update("legacy-key").digest())

const layerAt = (
  root: string,
  key: Option.Option<DlqKey> | "fail" = Option.some(KEY),
  policy: "accept" | "refuse" = "accept"
) => {
  const infra = Layer.mergeAll(MetricsLive, AuditLive).pipe(
    Layer.provideMerge(ChannelStatusWithMatrix),
    Layer.provideMerge(Layer.effect(StateDir, makeStateDir(root)))
  )
  const keySource = key === "fail"
    ? Effect.fail(new DlqError({ kind: "dlq-crypto", message: "no store secret" }))
    : Effect.succeed(key)
  return Layer.effect(Dlq, makeDlq({ key: keySource, legacy: Effect.succeed({ policy, key: V1 }) })).pipe(
    Layer.provideMerge(infra)
  )
}

const dlqFile = (root: string) => path.join(root, "matrix", "inbound_dlq.jsonl")
const corruptFile = (root: string) => path.join(root, "matrix", "inbound_dlq.corrupt.jsonl")
const lines = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").filter((l) => l !== "") : [])
const audit = (root: string) =>
  lines(path.join(root, "audit.jsonl")).map((l) => JSON.parse(l) as { event: string; data: Record<string, unknown> })
const mode = (f: string) => fs.statSync(f).mode & 0o777

const extra = Effect.map(ChannelStatus, (s) => s.get).pipe(
  Effect.flatten,
  Effect.map((all) => all.find((c) => c.id === "matrix")!)
)

/** A dispatcher that records what it got and fails for the event ids in `failing`. */
const recorder = (failing: Set<string> = new Set(), allowed: (s: string) => boolean = () => true) => {
  const got: Array<string> = []
  const resent: Array<string> = []
  const d: DlqDispatcher = {
    allowed,
    dispatch: (r) =>
      Effect.suspend(() => {
        got.push(r.eventId)
        return failing.has(r.eventId)
          ? Effect.fail(new DlqError({ kind: "dlq-dispatch-failure", message: "session write failed" }))
          : Effect.void
      }),
    resend: (r) =>
      Effect.suspend(() => {
        resent.push(r.eventId)
        return failing.has(r.eventId)
          ? Effect.fail(new DlqError({ kind: "dlq-dispatch-failure", message: "send failed" }))
          : Effect.void
      })
  }
  return { got, resent, d }
}

const withRegistered = <A, E, R>(d: DlqDispatcher, body: Effect.Effect<A, E, R>) =>
  Effect.scoped(Effect.flatMap(Dlq, (dlq) => dlq.register(d)).pipe(Effect.zipRight(body)))

describe("Dlq append", () => {
  it.effect("appends one envelope per line (0600), counts it in status and metrics; the body stays off disk in clear", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      yield* dlq.append(rec(1))
      yield* dlq.append(rec(2))
      const ls = lines(dlqFile(root))
      expect(ls).toHaveLength(2)
      expect(mode(dlqFile(root))).toBe(0o600)
      expect(fs.readFileSync(dlqFile(root), "utf8")).not.toContain("message number")
      expect(ls.map((l) => decodeLine(l, KEY))).toEqual([
        { _tag: "Record", record: rec(1), encrypted: true },
        { _tag: "Record", record: rec(2), encrypted: true }
      ])
      expect((yield* extra).extra?.inboundDlqRecordCount).toBe(2)
      const text = yield* Effect.flatMap(Metrics, (m) => m.render)
      expect(text).toContain("carapace_matrix_dlq_records 2")
      expect(text).toContain("carapace_matrix_inbound_dispatch_failures_total{failure_stage=\"dispatch\"} 2")
      expect(yield* dlq.count).toBe(2)
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("a widened mode is reset to 0600; a torn last line does not swallow the next record", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      fs.mkdirSync(path.join(root, "matrix"), { recursive: true })
      fs.writeFileSync(dlqFile(root), encodeLine(rec(1), KEY) + "\n" + "{\"version\":2,\"nonce\":\"tor", {
        mode: 0o644
      })
      fs.chmodSync(dlqFile(root), 0o644)
      yield* dlq.append(rec(2))
      expect(mode(dlqFile(root))).toBe(0o600)
      const ls = lines(dlqFile(root))
      expect(ls).toHaveLength(3)
      expect(decodeLine(ls[2]!, KEY)).toMatchObject({ _tag: "Record", record: rec(2) })
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("an event already in the DLQ is not appended twice", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      yield* dlq.append(rec(1))
      yield* dlq.append({ ...rec(1), receivedAt: 99_999 })
      yield* dlq.append(rec(2))
      expect(lines(dlqFile(root))).toHaveLength(2)
      expect((yield* dlq.list).records.map((r) => r.receivedAt)).toEqual([rec(1).receivedAt, rec(2).receivedAt])
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("unencrypted mode writes plain records", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      yield* Effect.flatMap(Dlq, (d) => d.append(rec(1)))
      expect(JSON.parse(lines(dlqFile(root))[0]!)).toEqual(rec(1))
    }).pipe(Effect.provide(layerAt(root, Option.none())))
  })

  it.effect("a failed append puts the channel in error with a durability error until an append succeeds", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      const status = yield* ChannelStatus
      yield* status.setState("matrix", "connected")
      // a directory where the file should be: every append fails
      fs.mkdirSync(dlqFile(root), { recursive: true })
      const failed = yield* Effect.exit(dlq.append(rec(1)))
      expect(Exit.isFailure(failed)).toBe(true)
      let m = yield* extra
      expect(m.status).toBe("error")
      expect(m.extra?.lastErrorKind).toBe("dlq-io")
      expect(m.extra?.inboundDlqAppendFailureTotal).toBe(1)
      expect(m.extra?.inboundDlqDurabilityError).toContain("inbound_dlq.jsonl")
      expect(m.extra?.inboundDlqLostEventIds).toEqual([rec(1).eventId])
      expect(m.lastError).not.toContain("message number")
      const text = yield* Effect.flatMap(Metrics, (x) => x.render)
      expect(text).toContain("carapace_matrix_inbound_dispatch_failures_total{failure_stage=\"dlq_append\"} 1")
      expect(text).toContain("carapace_matrix_inbound_dlq_lost_event_ids_total 1")
      fs.rmdirSync(dlqFile(root))
      yield* dlq.append(rec(2))
      m = yield* extra
      expect(m.status).toBe("connected")
      expect(m.extra?.inboundDlqDurabilityError).toBeUndefined()
      expect(m.extra?.inboundDlqAppendFailureTotal).toBe(1)
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("a key that cannot be derived fails the append as dlq-crypto (nothing written in clear)", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const r = yield* Effect.flip(Effect.flatMap(Dlq, (d) => d.append(rec(1))))
      expect(r.kind).toBe("dlq-crypto")
      expect(fs.existsSync(dlqFile(root))).toBe(false)
      expect((yield* extra).extra?.lastErrorKind).toBe("dlq-crypto")
    }).pipe(Effect.provide(layerAt(root, "fail")))
  })
})

describe("Dlq record cap", () => {
  it.effect("at 10,000 records an append is refused (dlq-cap-saturation), audited once while latched, and works again after a purge", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      fs.mkdirSync(path.join(root, "matrix"), { recursive: true })
      const plain = Array.from({ length: 10_000 }, (_, i) => encodeLine(rec(i + 10), undefined))
      fs.writeFileSync(dlqFile(root), plain.join("\n") + "\n", { mode: 0o600 })
      const e1 = yield* Effect.flip(dlq.append(rec(1)))
      expect(e1.kind).toBe("dlq-cap-saturation")
      expect(e1.message).toContain("10000-record cap")
      const e2 = yield* Effect.flip(dlq.append(rec(2)))
      expect(e2.kind).toBe("dlq-cap-saturation")
      const capEvents = audit(root).filter((a) => a.event === "matrix_inbound_dlq_cap_dropped")
      expect(capEvents).toEqual(
        [{ event: "matrix_inbound_dlq_cap_dropped", data: { existing_lines: 10_000, cap_records: 10_000 } }].map((x) =>
          expect.objectContaining(x)
        )
      )
      expect(lines(dlqFile(root))).toHaveLength(10_000)
      const m = yield* extra
      expect(m.status).toBe("error")
      expect(m.extra?.lastErrorKind).toBe("dlq-cap-saturation")
      expect(m.extra?.inboundDlqLostEventIds).toEqual([rec(1).eventId, rec(2).eventId])
      // the latch expires after 10 s; still full -> audited again
      yield* TestClock.adjust("11 seconds")
      yield* Effect.flip(dlq.append(rec(3)))
      expect(audit(root).filter((a) => a.event === "matrix_inbound_dlq_cap_dropped")).toHaveLength(2)
      expect(yield* dlq.purge({ _tag: "One", id: recordId(rec(10).eventId) })).toBe(1)
      yield* dlq.append(rec(4))
      expect(lines(dlqFile(root))).toHaveLength(10_000)
      expect((yield* extra).extra?.inboundDlqDurabilityError).toBeUndefined()
    }).pipe(Effect.provide(layerAt(root)))
  })
})

describe("Dlq replay", () => {
  it.effect("the automatic replay after a sync does not open a queue that has no file; it reads again after an append", () => {
    const root = tempRoot()
    let reads = 0
    const counting = Layer.effect(
      StateDir,
      Effect.map(makeStateDir(root), (s) => ({
        ...s,
        readText: (file: string) => {
          if (file.endsWith("inbound_dlq.jsonl")) reads++
          return s.readText(file)
        }
      }))
    )
    const infra = Layer.mergeAll(MetricsLive, AuditLive).pipe(
      Layer.provideMerge(ChannelStatusWithMatrix),
      Layer.provideMerge(counting)
    )
    const layer = Layer.effect(
      Dlq,
      makeDlq({ key: Effect.succeed(Option.some(KEY)), legacy: Effect.succeed({ policy: "accept", key: V1 }) })
    ).pipe(Layer.provideMerge(infra))
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      const { d, got } = recorder(new Set())
      const atStart = reads
      const empty = yield* withRegistered(d, dlq.replayDue)
      expect(empty).toEqual({ replayed: 0, failed: 0, dropped: 0, quarantined: 0, deferred: 0, remaining: 0 })
      expect(reads).toBe(atStart)
      yield* dlq.append(rec(1))
      const r = yield* withRegistered(d, dlq.replayDue)
      expect(r.replayed).toBe(1)
      expect(got).toEqual([rec(1).eventId])
      // replayed to empty: the next rounds read nothing again
      const before = reads
      yield* withRegistered(d, dlq.replayDue)
      expect(reads).toBe(before)
    }).pipe(Effect.provide(layer))
  })

  it.effect("automatic replay dispatches each record once, keeps failures with a growing backoff, removes successes", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      for (const n of [1, 2, 3]) yield* dlq.append(rec(n))
      const failing = new Set([rec(2).eventId])
      const { d, got } = recorder(failing)
      const r1 = yield* withRegistered(d, dlq.replayDue)
      expect(r1).toEqual({ replayed: 2, failed: 1, dropped: 0, quarantined: 0, deferred: 0, remaining: 1 })
      expect(got).toEqual([rec(1).eventId, rec(2).eventId, rec(3).eventId])
      expect(lines(dlqFile(root)).map((l) => decodeLine(l, KEY))).toEqual([{
        _tag: "Record",
        record: rec(2),
        encrypted: true
      }])
      // not due yet: deferred, not dispatched
      const r2 = yield* withRegistered(d, dlq.replayDue)
      expect(r2.deferred).toBe(1)
      expect(got).toHaveLength(3)
      const listed = (yield* dlq.list).records
      expect(listed[0]).toMatchObject({
        id: recordId(rec(2).eventId),
        attempts: 1,
        nextAttemptAt: 5000,
        lastError: "dlq-dispatch-failure"
      })
      yield* TestClock.adjust("5 seconds")
      yield* withRegistered(d, dlq.replayDue)
      expect(got).toHaveLength(4)
      expect((yield* dlq.list).records[0]).toMatchObject({ attempts: 2, nextAttemptAt: 15000 })
      failing.clear()
      yield* TestClock.adjust("10 seconds")
      const r3 = yield* withRegistered(d, dlq.replayDue)
      expect(r3).toMatchObject({ replayed: 1, remaining: 0 })
      expect(fs.existsSync(dlqFile(root))).toBe(false)
      const m = yield* extra
      expect(m.extra?.inboundDlqRecordCount).toBe(0)
      expect(m.extra?.inboundDlqReplayedTotal).toBe(3)
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("the allowlist is checked again: a sender no longer allowed is dropped without dispatch, audited", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      yield* dlq.append(rec(1, "@mallory:evil.example"))
      yield* dlq.append(rec(2))
      const { d, got } = recorder(new Set(), (s) => s.endsWith(":example.org"))
      const r = yield* withRegistered(d, dlq.replayDue)
      expect(r).toMatchObject({ replayed: 1, dropped: 1, remaining: 0 })
      expect(got).toEqual([rec(2).eventId])
      expect(audit(root).filter((a) => a.event === "matrix_inbound_dlq_replay_dropped")).toEqual([
        expect.objectContaining({ data: { id: recordId(rec(1).eventId), reason: "sender-not-allowed" } })
      ])
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("undecodable lines (garbage, tampered envelope) are quarantined verbatim; the rest is replayed", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      yield* dlq.append(rec(1))
      const good = lines(dlqFile(root))[0]!
      const env = JSON.parse(good) as { ciphertext: string }
      const tampered = JSON.stringify({
        ...JSON.parse(good),
        ciphertext: (env.ciphertext[0] === "A" ? "B" : "A") + env.ciphertext.slice(1)
      })
      fs.appendFileSync(dlqFile(root), `{not json\n${tampered}\n`)
      yield* dlq.append(rec(2))
      const listing = yield* dlq.list
      expect(listing.records.map((r) => r.eventId)).toEqual([rec(1).eventId, rec(2).eventId])
      expect(listing.undecodable).toBe(2)
      const { d, got } = recorder()
      const r = yield* withRegistered(d, dlq.replayDue)
      expect(r).toMatchObject({ replayed: 2, quarantined: 2, remaining: 0 })
      expect(got).toEqual([rec(1).eventId, rec(2).eventId])
      expect(lines(corruptFile(root))).toEqual(["{not json", tampered])
      expect(mode(corruptFile(root))).toBe(0o600)
      expect(fs.existsSync(dlqFile(root))).toBe(false)
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("a quarantine at its 10 MiB cap drops the batch with an audit event", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      fs.mkdirSync(path.join(root, "matrix"), { recursive: true })
      fs.writeFileSync(corruptFile(root), "x".repeat(10 * 1024 * 1024 - 5) + "\n", { mode: 0o600 })
      fs.writeFileSync(dlqFile(root), "garbage line\n", { mode: 0o600 })
      const { d } = recorder()
      const r = yield* withRegistered(d, dlq.replayDue)
      expect(r.quarantined).toBe(1)
      expect(fs.statSync(corruptFile(root)).size).toBe(10 * 1024 * 1024 - 4)
      expect(audit(root).map((a) => a.event)).toContain("matrix_inbound_dlq_quarantine_cap_dropped")
      expect((yield* extra).extra?.inboundDlqUndecodableLostCount).toBe(1)
      expect(fs.existsSync(dlqFile(root))).toBe(false)
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("envelopes stay untouched while no key is available (unencrypted mode now)", () => {
    const root = tempRoot()
    fs.mkdirSync(path.join(root, "matrix"), { recursive: true })
    const env = encodeLine(rec(1), KEY)
    fs.writeFileSync(dlqFile(root), `${env}\n${encodeLine(rec(2), undefined)}\n`, { mode: 0o600 })
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      const { d, got } = recorder()
      const r = yield* withRegistered(d, dlq.replayDue)
      expect(r).toMatchObject({ replayed: 1, quarantined: 0, remaining: 1 })
      expect(got).toEqual([rec(2).eventId])
      expect(lines(dlqFile(root))).toEqual([env])
    }).pipe(Effect.provide(layerAt(root, Option.none())))
  })

  it.effect("operator replay: one id or all, ignoring the backoff; without a runtime it is refused; unknown id is not found", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      yield* dlq.append(rec(1))
      yield* dlq.append(rec(2))
      const noRuntime = yield* Effect.flip(dlq.replay({ _tag: "All" }))
      expect(noRuntime).toMatchObject({ kind: "matrix-runtime-unavailable" })
      const failing = new Set([rec(1).eventId])
      const { d, got } = recorder(failing)
      yield* withRegistered(d, dlq.replayDue)
      const one = yield* Effect.flip(withRegistered(d, dlq.replay({ _tag: "One", id: recordId(rec(1).eventId) })))
      expect(one).toMatchObject({ kind: "dlq-dispatch-failure" })
      expect(got).toEqual([rec(1).eventId, rec(2).eventId, rec(1).eventId])
      const missing = yield* Effect.flip(withRegistered(d, dlq.replay({ _tag: "One", id: "0000000000000000" })))
      expect(missing).toMatchObject({ kind: "dlq-record-not-found" })
      failing.clear()
      const all = yield* withRegistered(d, dlq.replay({ _tag: "All" }))
      expect(all).toMatchObject({ replayed: 1, remaining: 0 })
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("lines appended while a replay dispatches are kept", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      yield* dlq.append(rec(1))
      const d: DlqDispatcher = {
        allowed: () => true,
        dispatch: () => dlq.append(rec(9)).pipe(Effect.orDie),
        resend: () => Effect.void
      }
      const r = yield* withRegistered(d, dlq.replayDue)
      expect(r).toMatchObject({ replayed: 1, remaining: 1 })
      expect(lines(dlqFile(root)).map((l) => decodeLine(l, KEY))).toEqual([{
        _tag: "Record",
        record: rec(9),
        encrypted: true
      }])
    }).pipe(Effect.provide(layerAt(root)))
  })
})

describe("Dlq legacy v1 records", () => {
  it.effect("v1 lines are replayed; a kept one is re-encoded as v2; the processing is audited before the rewrite", () => {
    const root = tempRoot()
    fs.mkdirSync(path.join(root, "matrix"), { recursive: true })
    fs.writeFileSync(dlqFile(root), `${legacyLine(rec(1), V1)}\n${legacyLine(rec(2), V1, "matrix-inbound-dlq-v1")}\n`, {
      mode: 0o600
    })
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      const { d, got } = recorder(new Set([rec(2).eventId]))
      const r = yield* withRegistered(d, dlq.replayDue)
      expect(r).toMatchObject({ replayed: 1, failed: 1, remaining: 1 })
      expect(got).toEqual([rec(1).eventId, rec(2).eventId])
      const ls = lines(dlqFile(root))
      expect(ls).toHaveLength(1)
      expect(JSON.parse(ls[0]!)).toMatchObject({ version: 2 })
      expect(decodeLine(ls[0]!, KEY)).toEqual({ _tag: "Record", record: rec(2), encrypted: true })
      expect(audit(root).find((a) => a.event === "matrix_inbound_dlq_legacy_envelope_processed")?.data).toEqual({
        from_version: 1,
        current_version: 2,
        record_count: 2,
        reencoded_count: 1,
        drained_count: 1,
        quarantined_count: 0
      })
    }).pipe(Effect.provide(layerAt(root)))
  })

  it.effect("with legacyEnvelopePolicy \"refuse\" a v1 line is quarantined, not dispatched", () => {
    const root = tempRoot()
    fs.mkdirSync(path.join(root, "matrix"), { recursive: true })
    const v1line = legacyLine(rec(1), V1)
    fs.writeFileSync(dlqFile(root), `${v1line}\n`, { mode: 0o600 })
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      const { d, got } = recorder()
      const r = yield* withRegistered(d, dlq.replayDue)
      expect(r).toMatchObject({ replayed: 0, quarantined: 1, remaining: 0 })
      expect(got).toEqual([])
      expect(lines(corruptFile(root))).toEqual([v1line])
    }).pipe(Effect.provide(layerAt(root, Option.some(KEY), "refuse")))
  })
})

describe("Dlq show and purge", () => {
  it.effect("show gives metadata, and the body only with reveal; purge one and all, audited", () => {
    const root = tempRoot()
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      for (const n of [1, 2, 3]) yield* dlq.append(rec(n))
      const id = recordId(rec(2).eventId)
      const hidden = yield* dlq.show(id, false)
      expect(hidden).toMatchObject({
        id,
        eventId: rec(2).eventId,
        senderId: rec(2).senderId,
        encrypted: true,
        textBytes: 16
      })
      expect("text" in hidden).toBe(false)
      expect((yield* dlq.show(id, true)).text).toBe("message number 2")
      expect(yield* Effect.flip(dlq.show("nope", true))).toMatchObject({ kind: "dlq-record-not-found" })
      expect(yield* dlq.purge({ _tag: "One", id })).toBe(1)
      expect((yield* dlq.list).records.map((r) => r.eventId)).toEqual([rec(1).eventId, rec(3).eventId])
      expect(yield* Effect.flip(dlq.purge({ _tag: "One", id }))).toMatchObject({ kind: "dlq-record-not-found" })
      expect(yield* dlq.purge({ _tag: "All" })).toBe(2)
      expect(fs.existsSync(dlqFile(root))).toBe(false)
      expect(audit(root).filter((a) => a.event === "matrix_inbound_dlq_purged").map((a) => a.data)).toEqual([
        { count: 1, scope: id },
        { count: 2, scope: "all" }
      ])
      expect((yield* extra).extra?.inboundDlqRecordCount).toBe(0)
    }).pipe(Effect.provide(layerAt(root)))
  })
})

describe("Dlq as a keyed store of rekey-store", () => {
  it("opens only with the passphrase it is under; rewrap moves every envelope and keeps plain lines", async () => {
    const root = tempRoot()
    const iid = "0123456789abcdef".repeat(4)
    const sd = await Effect.runPromise(makeStateDir(root))
    const store = dlqKeyedStore(sd, Effect.succeed(iid))
    expect(await Effect.runPromise(store.exists)).toBe(false)
    const oldKey = deriveDlqKey("old-pass", iid)
    const newKey = deriveDlqKey("new-pass", iid)
    fs.mkdirSync(path.join(root, "matrix"), { recursive: true })
    const plain = encodeLine(rec(3), undefined)
    fs.writeFileSync(dlqFile(root), [encodeLine(rec(1), oldKey), plain, encodeLine(rec(2), oldKey)].join("\n") + "\n")
    expect(await Effect.runPromise(store.exists)).toBe(true)
    expect(await Effect.runPromise(store.opens(Redacted.make("old-pass")))).toBe(true)
    expect(await Effect.runPromise(store.opens(Redacted.make("new-pass")))).toBe(false)
    await Effect.runPromise(store.rewrap(Redacted.make("old-pass"), Redacted.make("new-pass")))
    expect(await Effect.runPromise(store.opens(Redacted.make("new-pass")))).toBe(true)
    expect(await Effect.runPromise(store.opens(Redacted.make("old-pass")))).toBe(false)
    const ls = lines(dlqFile(root))
    expect(ls[1]).toBe(plain)
    expect(ls.map((l) => decodeLine(l, newKey))).toEqual([
      { _tag: "Record", record: rec(1), encrypted: true },
      { _tag: "Record", record: rec(3), encrypted: false },
      { _tag: "Record", record: rec(2), encrypted: true }
    ])
    expect(mode(dlqFile(root))).toBe(0o600)
    // a line under neither key refuses the rewrap and changes nothing
    fs.appendFileSync(dlqFile(root), encodeLine(rec(4), oldKey) + "\n")
    const before = fs.readFileSync(dlqFile(root), "utf8")
    const exit = await Effect.runPromiseExit(store.rewrap(Redacted.make("new-pass"), Redacted.make("third")))
    expect(Exit.isFailure(exit)).toBe(true)
    expect(fs.readFileSync(dlqFile(root), "utf8")).toBe(before)
    void Scope
  })
})

describe("Dlq purge with no Matrix state (#16.9)", () => {
  for (const [label, key] of [["with a store key", Option.some(KEY)], ["without any store secret", "fail"]] as const) {
    it.effect(`purging all on a state dir that has no matrix/ directory answers 0 ${label}, and creates nothing`, () => {
      const root = tempRoot()
      return Effect.gen(function*() {
        const dlq = yield* Dlq
        expect(yield* dlq.purge({ _tag: "All" })).toBe(0)
        expect(fs.existsSync(dlqFile(root))).toBe(false)
        expect((yield* dlq.list).records).toEqual([])
      }).pipe(Effect.provide(layerAt(root, key)))
    })
  }
})

describe("Dlq retry at the end of a record's backoff (the runtime's wake-up, src/layers/matrix/dlq.ts)", () => {
  // the runtime's replay trigger over the live DLQ, with an Inbound whose redeliver fails while `failing` holds
  const runtimeLayer = (root: string, failing: Set<string>, got: Array<string>) => {
    const inbound = Layer.succeed(Inbound, {
      redeliver: (r: DlqRecord) =>
        Effect.suspend(() => {
          got.push(r.eventId)
          return failing.has(r.eventId)
            ? Effect.fail(new DlqError({ kind: "dlq-dispatch-failure", message: "session write failed" }))
            : Effect.void
        }),
      resend: () => Effect.void
    } as unknown as InboundShape)
    const settings = Layer.succeed(
      MatrixSettings,
      { autoJoin: { allowUsers: ["@alice:example.org"], allowServerNames: [] } } as never
    )
    return Layer.mergeAll(layerAt(root), inbound, settings)
  }
  /** Lets the forked replay rounds (real file I/O) run after a clock step: 200 ms of real time. */
  const settle = Effect.promise(() => new Promise<void>((r) => setTimeout(r, 200)))

  it.scoped("a failed record is retried when its backoff ends, with no sync in between; nothing is left to wake for", () => {
    const root = tempRoot()
    const failing = new Set([rec(1).eventId])
    const got: Array<string> = []
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      yield* dlq.append(rec(1))
      const replay = yield* registerDlq
      yield* replay // the sync-triggered round: the dispatch fails, backoff 5 s
      yield* settle
      expect(got).toEqual([rec(1).eventId])
      expect(yield* dlq.nextRetryAt).toEqual(Option.some(5_000))
      yield* TestClock.adjust("4 seconds")
      yield* settle
      expect(got).toHaveLength(1)
      failing.clear()
      yield* TestClock.adjust("1 second")
      yield* settle
      // the wake-up's round replayed it: no sync was needed
      expect(got).toEqual([rec(1).eventId, rec(1).eventId])
      expect(lines(dlqFile(root))).toEqual([])
      expect(yield* dlq.nextRetryAt).toEqual(Option.none())
    }).pipe(Effect.provide(runtimeLayer(root, failing, got)))
  })

  it.scoped("a record appended while the runtime runs is first retried 5 s later, not at the next sync", () => {
    const root = tempRoot()
    const got: Array<string> = []
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      yield* registerDlq
      yield* dlq.append(rec(1))
      expect(yield* dlq.nextRetryAt).toEqual(Option.some(5_000))
      yield* TestClock.adjust("4 seconds")
      yield* settle
      expect(got).toEqual([])
      yield* TestClock.adjust("1 second")
      yield* settle
      expect(got).toEqual([rec(1).eventId])
      expect(lines(dlqFile(root))).toEqual([])
      expect(yield* dlq.nextRetryAt).toEqual(Option.none())
    }).pipe(Effect.provide(runtimeLayer(root, new Set(), got)))
  })

  it.scoped("a record purged while it waits leaves no backoff behind (no wake-up loop)", () => {
    const root = tempRoot()
    const got: Array<string> = []
    return Effect.gen(function*() {
      const dlq = yield* Dlq
      yield* dlq.append(rec(1))
      yield* dlq.append(rec(2))
      const replay = yield* registerDlq
      yield* replay
      yield* settle
      expect(Option.isSome(yield* dlq.nextRetryAt)).toBe(true)
      // the operator removes the file by hand: the next round forgets both backoffs
      fs.rmSync(dlqFile(root))
      yield* TestClock.adjust("5 seconds")
      yield* settle
      expect(yield* dlq.nextRetryAt).toEqual(Option.none())
      expect(got).toHaveLength(2)
    }).pipe(Effect.provide(runtimeLayer(root, new Set([rec(1).eventId, rec(2).eventId]), got)))
  })
})
