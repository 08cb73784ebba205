import { Clock, Effect, Layer, Option, Redacted } from "effect"
import { existsSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import {
  type Decoded,
  decodeLine,
  deriveDlqKeyAsync,
  deriveLegacyDlqKey,
  directionOf,
  DLQ_CORRUPT_CAP_BYTES,
  DLQ_CORRUPT_FILE,
  DLQ_FILE,
  DLQ_RECORD_CAP,
  DlqError,
  type DlqErrorKind,
  type DlqKey,
  type DlqRecord,
  DlqRecordNotFound,
  type DlqReplayReport,
  type DlqSummary,
  encodeLine,
  isEnvelopeLine,
  type LegacyKeys,
  recordIdOf,
  replayBackoffMs,
  splitLines
} from "../domain/dlq.js"
import { EncryptedStateIoError } from "../domain/storePassphrase.js"
import { Audit } from "../services/Audit.js"
import { ChannelStatus, type ChannelStatusShape } from "../services/ChannelStatus.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"
import { Dlq, type DlqDispatcher, type DlqListing, type DlqSelector, type DlqShape } from "../services/Dlq.js"
import { Metrics, type MetricsShape } from "../services/Metrics.js"
import { StateDir, type StateDirShape } from "../services/StateDir.js"
import { StorePassphrase } from "../services/StorePassphrase.js"

const CHANNEL = "matrix"
/** After the cap was hit, appends are refused without touching the file for this long (reference §7.6.3). */
const CAP_LATCH_MS = 10_000
const LOST_IDS_KEPT = 32

const describe = (e: unknown) => (e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e))
const isNotFound = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code === "ENOENT"

const ioError = (what: string, file: string) => (e: unknown) =>
  new DlqError({
    kind: "dlq-io",
    message: `${what} ${file} failed (${
      describe(e)
    }). Check that the state directory is writable by this user and the disk is not full.`
  })

// ---------------------------------------------------------------------------------------------------------
// File access: appends (an fsync'd O_APPEND line is the durable unit; rewriting the whole file per failure
// would cost O(n) each) and atomic rewrites, both through StateDir.

const dlqIo = (e: { readonly message: string }) => new DlqError({ kind: "dlq-io", message: e.message })

/** The whole text of a state file without following a symlink; `""` when it does not exist. */
export const readNoFollow = (stateDir: StateDirShape, file: string) =>
  stateDir.readText(file).pipe(Effect.map(Option.getOrElse(() => "")), Effect.mapError(dlqIo))

const fileSize = (file: string) =>
  Effect.tryPromise({
    try: () => fs.lstat(file).then((s) => s.size, (e: unknown) => (isNotFound(e) ? 0 : Promise.reject(e))),
    catch: ioError("Checking", file)
  })

/** Replaces the DLQ with `lines` (removed when none are left). */
const rewriteLines = (stateDir: StateDirShape, lines: ReadonlyArray<string>) =>
  (lines.length === 0
    ? Effect.asVoid(stateDir.remove(DLQ_FILE))
    : stateDir.writeAtomic(DLQ_FILE, lines.map((l) => `${l}\n`).join(""))).pipe(Effect.mapError(dlqIo))

// ---------------------------------------------------------------------------------------------------------
// The service

export interface DlqOptions {
  /**
   * The v2 key, or `None` when records are written plain (`matrix.encrypted=false`). Called when needed; a
   * failure (no store secret yet) is retried at the next use, a success is kept.
   */
  readonly key: Effect.Effect<Option.Option<DlqKey>, DlqError>
  /** Legacy v1 envelopes (reference DLQs): the policy and the v1 key. Without it, v1 lines are kept as they are. */
  readonly legacy?: Effect.Effect<LegacyKeys, DlqError>
}

interface Backoff {
  attempts: number
  nextAt: number
  lastError?: string
}

const summary = (record: DlqRecord, encrypted: boolean, b: Backoff | undefined): DlqSummary => ({
  id: recordIdOf(record),
  direction: directionOf(record),
  eventId: record.eventId,
  roomId: record.roomId,
  senderId: record.senderId,
  receivedAt: record.receivedAt,
  encrypted,
  attempts: b?.attempts ?? 0,
  ...(b === undefined ? {} : { nextAttemptAt: b.nextAt }),
  ...(b?.lastError === undefined ? {} : { lastError: b.lastError }),
  textBytes: Buffer.byteLength(record.text, "utf8")
})

/** Removes one occurrence of each of `gone` from `lines` (lines appended meanwhile stay). */
const withoutLines = (lines: ReadonlyArray<string>, gone: ReadonlyArray<string>) => {
  const counts = new Map<string, number>()
  for (const g of gone) counts.set(g, (counts.get(g) ?? 0) + 1)
  return lines.filter((l) => {
    const n = counts.get(l) ?? 0
    if (n === 0) return true
    counts.set(l, n - 1)
    return false
  })
}

const PRIORITY: Record<DlqErrorKind, number> = {
  "dlq-io": 6,
  "dlq-cap-saturation": 5,
  "dlq-crypto": 4,
  "dlq-serialization": 2,
  "dlq-dispatch-failure": 0,
  "matrix-runtime-unavailable": 0
}

/** A record's first retry after it is appended (the next ones follow `replayBackoffMs`). */
const APPEND_RETRY_MS = 5_000

const EMPTY_REPORT: DlqReplayReport = { replayed: 0, failed: 0, dropped: 0, quarantined: 0, deferred: 0, remaining: 0 }

/** What every part of the live DLQ shares: its files, its locks, its keys and its in-memory state. */
interface DlqCore {
  readonly stateDir: StateDirShape
  readonly status: ChannelStatusShape
  readonly metrics: MetricsShape
  readonly file: string
  readonly corruptFile: string
  /** All file I/O of the live DLQ is serialized (append vs. rewrite). */
  readonly io: Effect.Semaphore
  readonly backoff: Map<string, Backoff>
  readonly state: {
    capLatchedAt: number | undefined
    durabilityError: string | undefined
    dispatcher: DlqDispatcher | undefined
    /** When records appended since the last automatic round are first retried (epoch ms). */
    appendRetryAt: number | undefined
  }
  readonly key: Effect.Effect<Option.Option<DlqKey>, DlqError>
  readonly legacyKeys: Effect.Effect<LegacyKeys | undefined>
  readonly readLines: Effect.Effect<Array<string>, DlqError>
  readonly audit: (event: string, data: Record<string, unknown>) => Effect.Effect<void, DlqError>
  readonly setCount: (n: number) => Effect.Effect<void>
}

type Decoding = { readonly line: string; readonly d: Decoded }

const makeCore = (options: DlqOptions) =>
  Effect.gen(function*() {
    const stateDir = yield* StateDir
    const auditLog = yield* Audit
    const status: ChannelStatusShape = yield* ChannelStatus
    const metrics: MetricsShape = yield* Metrics
    let cachedKey: Option.Option<DlqKey> | undefined
    let cachedLegacy: LegacyKeys | undefined
    const key = Effect.suspend(() =>
      cachedKey !== undefined
        ? Effect.succeed(cachedKey)
        : Effect.tap(options.key, (k) => Effect.sync(() => void (cachedKey = k)))
    )
    const legacyKeys: Effect.Effect<LegacyKeys | undefined> = Effect.suspend(() =>
      cachedLegacy !== undefined || options.legacy === undefined
        ? Effect.succeed(cachedLegacy)
        : options.legacy.pipe(
          Effect.tap((l) => Effect.sync(() => void (cachedLegacy = l))),
          // without the v1 key a v1 line is kept (NoKey) until it can be had
          Effect.orElseSucceed((): LegacyKeys => ({ policy: "accept", key: undefined }))
        )
    )
    const core: DlqCore = {
      stateDir,
      status,
      metrics,
      file: stateDir.resolve(DLQ_FILE),
      corruptFile: stateDir.resolve(DLQ_CORRUPT_FILE),
      io: yield* Effect.makeSemaphore(1),
      backoff: new Map<string, Backoff>(),
      state: { capLatchedAt: undefined, durabilityError: undefined, dispatcher: undefined, appendRetryAt: undefined },
      key,
      legacyKeys,
      readLines: Effect.map(readNoFollow(stateDir, DLQ_FILE), splitLines),
      audit: (event, data) => auditLog.append(event, data).pipe(Effect.mapError(dlqIo)),
      setCount: (n) =>
        status.updateMatrix((x) => ({ ...x, inboundDlqRecordCount: n })).pipe(
          Effect.zipRight(metrics.set("carapace_matrix_dlq_records", n))
        )
    }
    return core
  })

/** A durability error pins the channel to `error` until a later append or clean replay clears it. */
const durability = ({ metrics, state, status }: DlqCore) => {
  const set = (e: DlqError, lost: DlqRecord | undefined) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      state.durabilityError = e.message
      yield* status.updateMatrix((x) => ({
        ...x,
        inboundDlqAppendFailureTotal: x.inboundDlqAppendFailureTotal + 1,
        inboundDlqDurabilityError: e.message,
        inboundDlqDurabilityErrorAt: now,
        lastInboundDlqAppendFailureAt: now,
        ...(lost === undefined ? {} : {
          inboundDlqLostEventIds: [...(x.inboundDlqLostEventIds ?? []), lost.eventId].slice(-LOST_IDS_KEPT),
          inboundDlqLostEventIdsAt: now
        })
      }))
      yield* status.setState(CHANNEL, "error", { kind: e.kind, message: e.message })
      yield* metrics.increment("carapace_matrix_inbound_dispatch_failures_total", { failure_stage: "dlq_append" })
      if (lost !== undefined) yield* metrics.increment("carapace_matrix_inbound_dlq_lost_event_ids_total")
      yield* Effect.logError(`Matrix inbound DLQ append failed; the event is lost: ${e.message}`).pipe(
        Effect.annotateLogs({ kind: e.kind, ...(lost === undefined ? {} : { eventId: lost.eventId }) })
      )
    })
  const clear = Effect.gen(function*() {
    if (state.durabilityError === undefined) return
    const was = state.durabilityError
    state.durabilityError = undefined
    yield* status.updateMatrix((x) => {
      const { inboundDlqDurabilityError: _a, inboundDlqDurabilityErrorAt: _b, ...rest } = x
      return rest
    })
    const matrix = (yield* status.get).find((c) => c.id === CHANNEL)
    if (matrix?.status === "error" && matrix.lastError === was) yield* status.setState(CHANNEL, "connected")
    yield* Effect.logInfo("Matrix inbound DLQ durability error cleared")
  })
  return { set, clear }
}

const capError = (file: string, latched: boolean) =>
  new DlqError({
    kind: "dlq-cap-saturation",
    message: `Matrix inbound DLQ at ${file} ${latched ? "is at its" : "reached its"} ${DLQ_RECORD_CAP}-record cap${
      latched ? " (latched)" : ""
    }; dropping new dispatch failures until the queue drains. Fix the cause (see \`cara matrix dlq list\`), then replay or purge records.`
  })

/** Appends one record unless it is already there; refused at the cap (latched for a while). */
const appendUnlocked = (core: DlqCore, record: DlqRecord) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const latched = core.state.capLatchedAt
    if (latched !== undefined && now - latched < CAP_LATCH_MS) return yield* capError(core.file, true)
    const k = yield* core.key
    const line = encodeLine(record, Option.getOrUndefined(k))
    yield* core.stateDir.ensureDir("matrix").pipe(Effect.mapError(dlqIo))
    // One record per event and direction: a re-offered event (resumed after a restart) that fails again is
    // already here.
    const existing = yield* core.readLines
    const id = recordIdOf(record)
    const legacy = yield* core.legacyKeys
    const sameEvent = (l: string) => {
      const d = decodeLine(l, Option.getOrUndefined(k), legacy)
      return d._tag === "Record" && recordIdOf(d.record) === id
    }
    if (existing.some(sameEvent)) return false
    if (existing.length >= DLQ_RECORD_CAP) {
      core.state.capLatchedAt = now
      yield* core.audit("matrix_inbound_dlq_cap_dropped", {
        existing_lines: existing.length,
        cap_records: DLQ_RECORD_CAP
      }).pipe(Effect.ignore)
      yield* Effect.logWarning(
        `Matrix inbound DLQ reached its ${DLQ_RECORD_CAP}-record cap; dropping new dispatch failures`
      )
      return yield* capError(core.file, false)
    }
    yield* core.stateDir.append(DLQ_FILE, `${line}\n`).pipe(Effect.mapError(dlqIo))
    return true
  })

const makeAppend = (core: DlqCore, count: Effect.Effect<number, DlqError>) => {
  const { clear, set } = durability(core)
  const append = (record: DlqRecord) =>
    Effect.gen(function*() {
      const outbound = directionOf(record) === "outbound"
      if (!outbound) {
        yield* core.metrics.increment("carapace_matrix_inbound_dispatch_failures_total", { failure_stage: "dispatch" })
      }
      const r = yield* Effect.either(core.io.withPermits(1)(appendUnlocked(core, record)))
      if (r._tag === "Left") {
        yield* set(r.left, record)
        return yield* Effect.fail(r.left)
      }
      yield* clear
      const what = outbound ? "Matrix reply that could not be sent" : "Matrix inbound event"
      yield* Effect.logWarning(
        r.right
          ? `${what} moved to the DLQ; it is retried in ${APPEND_RETRY_MS / 1000} s and after every successful sync`
          : `${what} failed again; it is already in the DLQ`
      ).pipe(Effect.annotateLogs({ dlqId: recordIdOf(record) }))
      yield* count.pipe(Effect.flatMap(core.setCount), Effect.ignore)
      // a first retry soon, not only at the next sync (in a quiet room the long poll returns every 30 s)
      const retryAt = (yield* Clock.currentTimeMillis) + APPEND_RETRY_MS
      const pending = core.state.appendRetryAt
      core.state.appendRetryAt = pending === undefined ? retryAt : Math.min(pending, retryAt)
      const wake = core.state.dispatcher?.wake
      if (wake !== undefined) yield* wake
    }).pipe(Effect.withSpan("Dlq.append"))
  return { append, clearDurabilityError: clear }
}

// Decodes every line; a key that cannot be had now makes envelopes "NoKey" (kept), not corrupt.
const decodeAllOf = (core: DlqCore) =>
  Effect.gen(function*() {
    const lines = yield* core.io.withPermits(1)(core.readLines)
    const k = yield* Effect.either(core.key)
    const keyValue = k._tag === "Right" ? Option.getOrUndefined(k.right) : undefined
    const keyError = k._tag === "Left" ? k.left : undefined
    const legacy = yield* core.legacyKeys
    const decoded: ReadonlyArray<Decoding> = lines.map((line) => ({ line, d: decodeLine(line, keyValue, legacy) }))
    return { decoded, keyError, keyValue }
  })

const notFound = (id: string) =>
  new DlqRecordNotFound({
    kind: "dlq-record-not-found",
    message: `no DLQ record with id ${id}; list the current ids with \`cara matrix dlq list\`.`
  })

const makeReads = (core: DlqCore, decodeAll: ReturnType<typeof decodeAllOf>) => {
  const list = Effect.gen(function*() {
    const { decoded } = yield* decodeAll
    const records: Array<DlqSummary> = []
    let undecodable = 0
    for (const { d } of decoded) {
      if (d._tag === "Record") records.push(summary(d.record, d.encrypted, core.backoff.get(recordIdOf(d.record))))
      else undecodable++
    }
    records.sort((a, b) => a.receivedAt - b.receivedAt)
    return { records, undecodable } satisfies DlqListing
  })
  const show = (id: string, reveal: boolean) =>
    Effect.gen(function*() {
      const { decoded } = yield* decodeAll
      for (const { d } of decoded) {
        if (d._tag === "Record" && recordIdOf(d.record) === id) {
          return { ...summary(d.record, d.encrypted, core.backoff.get(id)), ...(reveal ? { text: d.record.text } : {}) }
        }
      }
      return yield* notFound(id)
    })
  return { list, show }
}

/** Appends undecodable lines to the quarantine, within its cap (a batch over it is dropped, on record). */
const quarantine = (core: DlqCore, lines: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    if (lines.length === 0) return
    const batch = lines.map((l) => `${l}\n`).join("")
    const size = yield* fileSize(core.corruptFile)
    if (size + Buffer.byteLength(batch, "utf8") > DLQ_CORRUPT_CAP_BYTES) {
      // The drop must be on record; without the audit line the lines stay where they are.
      yield* core.audit("matrix_inbound_dlq_quarantine_cap_dropped", {
        dropped_lines: lines.length,
        quarantine_bytes: size,
        cap_bytes: DLQ_CORRUPT_CAP_BYTES
      })
      yield* Effect.logWarning(
        `Matrix inbound DLQ quarantine ${core.corruptFile} is at its 10 MiB cap; ${lines.length} undecodable line(s) dropped`
      )
      yield* core.status.updateMatrix((x) => ({
        ...x,
        inboundDlqUndecodableLostCount: x.inboundDlqUndecodableLostCount + lines.length
      }))
      return
    }
    yield* core.stateDir.append(DLQ_CORRUPT_FILE, batch).pipe(Effect.mapError(dlqIo))
    yield* Effect.logWarning(`Matrix inbound DLQ: ${lines.length} undecodable line(s) moved to ${core.corruptFile}`)
  })

/** What one replay pass did, line by line, before the file is rewritten. */
interface ReplayPass {
  readonly gone: Array<string>
  /** v1 records that stay are rewritten as v2 (when the v2 key is at hand). */
  readonly replacements: Map<string, string>
  readonly legacyStats: { record_count: number; drained_count: number }
  readonly corrupt: Array<string>
  readonly errors: Array<DlqError>
  readonly report: {
    replayed: number
    failed: number
    dropped: number
    quarantined: number
    deferred: number
    remaining: number
  }
}

/** Replays (or defers, or drops) one decoded record. */
const replayRecord = (
  core: DlqCore,
  pass: ReplayPass,
  line: string,
  dec: Extract<Decoded, { _tag: "Record" }>,
  now: number,
  automatic: boolean
) =>
  Effect.gen(function*() {
    const id = recordIdOf(dec.record)
    const b = core.backoff.get(id)
    const d = core.state.dispatcher
    if ((automatic && b !== undefined && b.nextAt > now) || d === undefined) {
      pass.report.deferred++
      return
    }
    if (!d.allowed(dec.record.senderId)) {
      yield* core.audit("matrix_inbound_dlq_replay_dropped", { id, reason: "sender-not-allowed" })
      pass.gone.push(line)
      core.backoff.delete(id)
      pass.report.dropped++
      return
    }
    // an outbound record is an answer to re-send; an inbound one a message to handle
    const r = yield* Effect.either(
      directionOf(dec.record) === "outbound" ? d.resend(dec.record) : d.dispatch(dec.record)
    )
    if (r._tag === "Right") {
      pass.gone.push(line)
      core.backoff.delete(id)
      pass.report.replayed++
      if (dec.legacy === true) pass.legacyStats.drained_count++
    } else {
      const attempts = (b?.attempts ?? 0) + 1
      core.backoff.set(id, { attempts, nextAt: now + replayBackoffMs(attempts), lastError: r.left.kind })
      pass.errors.push(r.left)
      pass.report.failed++
    }
  })

const replayLines = (
  core: DlqCore,
  decoded: ReadonlyArray<Decoding>,
  keyValue: DlqKey | undefined,
  select: (id: string) => boolean,
  automatic: boolean,
  pass: ReplayPass
) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    for (const { line, d: dec } of decoded) {
      if (dec._tag === "Corrupt") {
        pass.corrupt.push(line)
        continue
      }
      if (dec._tag === "NoKey") continue
      if (dec.legacy === true) {
        pass.legacyStats.record_count++
        if (keyValue !== undefined) pass.replacements.set(line, encodeLine(dec.record, keyValue))
      }
      if (select(recordIdOf(dec.record))) yield* replayRecord(core, pass, line, dec, now, automatic)
    }
  })

/** Quarantines the corrupt lines, audits v1 re-encoding, then rewrites the file; returns what remains. */
const settlePass = (core: DlqCore, pass: ReplayPass) =>
  Effect.gen(function*() {
    const q = yield* Effect.either(quarantine(core, pass.corrupt))
    if (q._tag === "Right") {
      pass.gone.push(...pass.corrupt)
      pass.report.quarantined = pass.corrupt.length
    } else {
      pass.errors.push(q.left)
    }
    for (const g of pass.gone) pass.replacements.delete(g)
    if (pass.legacyStats.record_count > 0) {
      // on record before the rewrite changes the file; without the audit line nothing is rewritten
      yield* core.audit("matrix_inbound_dlq_legacy_envelope_processed", {
        from_version: 1,
        current_version: 2,
        record_count: pass.legacyStats.record_count,
        reencoded_count: pass.replacements.size,
        drained_count: pass.legacyStats.drained_count,
        quarantined_count: 0
      })
    }
    // Rewrite with what is gone removed (and v1 lines re-encoded); lines appended meanwhile are kept.
    return yield* core.io.withPermits(1)(
      Effect.gen(function*() {
        const current = yield* core.readLines
        if (pass.gone.length === 0 && pass.replacements.size === 0) return current.length
        const next = withoutLines(current, pass.gone).map((l) => pass.replacements.get(l) ?? l)
        yield* rewriteLines(core.stateDir, next)
        return next.length
      })
    )
  })

const makeRunReplay =
  (core: DlqCore, decodeAll: ReturnType<typeof decodeAllOf>, clearDurabilityError: Effect.Effect<void>) =>
  (select: (id: string) => boolean, automatic: boolean) =>
    Effect.gen(function*() {
      // this round reads every record appended so far: their first retry is this one
      if (automatic) core.state.appendRetryAt = undefined
      const { decoded, keyError, keyValue } = yield* decodeAll
      const pass: ReplayPass = {
        gone: [],
        replacements: new Map(),
        legacyStats: { record_count: 0, drained_count: 0 },
        corrupt: [],
        errors: keyError === undefined ? [] : [keyError],
        report: { replayed: 0, failed: 0, dropped: 0, quarantined: 0, deferred: 0, remaining: 0 }
      }
      yield* replayLines(core, decoded, keyValue, select, automatic, pass)
      // a record gone from the file (purged, replayed by the operator) keeps no backoff: no wake-up for it
      const present = new Set(decoded.flatMap(({ d }) => (d._tag === "Record" ? [recordIdOf(d.record)] : [])))
      for (const id of core.backoff.keys()) if (!present.has(id)) core.backoff.delete(id)
      const remaining = yield* settlePass(core, pass)
      const report = { ...pass.report, remaining }
      if (report.replayed > 0) {
        yield* core.status.updateMatrix((x) => ({
          ...x,
          inboundDlqReplayedTotal: (x.inboundDlqReplayedTotal ?? 0) + report.replayed
        }))
      }
      yield* core.setCount(remaining)
      // Dispatch failures stay in the DLQ for the next try (reported, not an error of replay); a DLQ that
      // cannot be read, decrypted or quarantined is.
      const fatal = pass.errors.filter((e) => e.kind === "dlq-io" || e.kind === "dlq-crypto")
      if (fatal.length === 0) {
        if (report.failed === 0) yield* clearDurabilityError
        return report satisfies DlqReplayReport
      }
      const worst = fatal.reduce((a, b) => (PRIORITY[b.kind] > PRIORITY[a.kind] ? b : a))
      return yield* new DlqError({
        kind: worst.kind,
        message: `Matrix inbound DLQ replay still has ${remaining} record(s) it could not process: ${worst.message}`
      })
    })

const selectorFilter = (
  selector: DlqSelector
) => (selector._tag === "All" ? () => true : (id: string) => id === selector.id)

const makeReplay = (
  core: DlqCore,
  decodeAll: ReturnType<typeof decodeAllOf>,
  runReplay: ReturnType<typeof makeRunReplay>
) =>
  Effect.gen(function*() {
    // one replay runs at a time
    const replaying = yield* Effect.makeSemaphore(1)
    const replay = (selector: DlqSelector) =>
      replaying.withPermits(1)(
        Effect.gen(function*() {
          if (core.state.dispatcher === undefined) {
            return yield* new DlqError({
              kind: "matrix-runtime-unavailable",
              message:
                "the Matrix runtime is not connected, so DLQ records cannot be replayed now; check `cara status` and retry once it is connected."
            })
          }
          if (selector._tag === "One") {
            const { decoded } = yield* decodeAll
            if (!decoded.some(({ d }) => d._tag === "Record" && recordIdOf(d.record) === selector.id)) {
              return yield* notFound(selector.id)
            }
          }
          const report = yield* runReplay(selectorFilter(selector), false)
          if (selector._tag === "One" && report.failed > 0) {
            const b = core.backoff.get(selector.id)
            return yield* new DlqError({
              kind: "dlq-dispatch-failure",
              message: `replaying DLQ record ${selector.id} failed (${
                b?.lastError ?? "dispatch"
              }); it stays in the DLQ. Check the daemon log for the cause, then retry.`
            })
          }
          return report
        })
      ).pipe(Effect.withSpan("Dlq.replay"))
    // after every /sync: no file, no records, nothing to open (the failed open of the missing file, with its
    // stack trace, was ~5 % of a backlog's CPU in the profile; docs/benchmarks.md)
    const replayDue = Effect.suspend(() =>
      !existsSync(core.file)
        ? Effect.sync(() => {
          core.backoff.clear()
          core.state.appendRetryAt = undefined
          return EMPTY_REPORT
        })
        : replaying.withPermits(1)(runReplay(() => true, true))
    ).pipe(Effect.withSpan("Dlq.replayDue"))
    return { replay, replayDue }
  })

const makePurge = (core: DlqCore) => (selector: DlqSelector) =>
  Effect.gen(function*() {
    const k = yield* Effect.either(core.key)
    const keyValue = k._tag === "Right" ? Option.getOrUndefined(k.right) : undefined
    const legacy = yield* core.legacyKeys
    const purged = yield* core.io.withPermits(1)(
      Effect.gen(function*() {
        const lines = yield* core.readLines
        const keep = selector._tag === "All" ? [] : lines.filter((l) => {
          const d = decodeLine(l, keyValue, legacy)
          return !(d._tag === "Record" && recordIdOf(d.record) === selector.id)
        })
        const n = lines.length - keep.length
        if (selector._tag === "One" && n === 0) return yield* notFound(selector.id)
        // an empty queue (no file, not even a matrix/ directory yet) is purged by doing nothing
        if (lines.length > 0) yield* rewriteLines(core.stateDir, keep)
        yield* core.setCount(keep.length)
        return n
      })
    )
    if (selector._tag === "One") core.backoff.delete(selector.id)
    else core.backoff.clear()
    yield* core.audit("matrix_inbound_dlq_purged", {
      count: purged,
      scope: selector._tag === "All" ? "all" : selector.id
    }).pipe(Effect.ignore)
    core.state.capLatchedAt = undefined
    return purged
  }).pipe(Effect.withSpan("Dlq.purge"))

export const makeDlq = (options: DlqOptions) =>
  Effect.gen(function*() {
    const core = yield* makeCore(options)
    const count = Effect.map(core.readLines, (l) => l.length)
    const decodeAll = decodeAllOf(core)
    const { append, clearDurabilityError } = makeAppend(core, count)
    const { replay, replayDue } = yield* makeReplay(
      core,
      decodeAll,
      makeRunReplay(core, decodeAll, clearDurabilityError)
    )
    const register = (d: DlqDispatcher) =>
      Effect.acquireRelease(
        Effect.sync(() => void (core.state.dispatcher = d)),
        () => Effect.sync(() => void (core.state.dispatcher = undefined))
      )

    // The gauge starts from what is on disk (a restart with a non-empty DLQ shows it at once).
    yield* count.pipe(
      Effect.flatMap(core.setCount),
      Effect.catchAll(() => core.metrics.set("carapace_matrix_dlq_records", -1))
    )

    return {
      append,
      ...makeReads(core, decodeAll),
      replay,
      replayDue,
      nextRetryAt: Effect.sync(() => {
        let next = core.state.appendRetryAt
        for (const b of core.backoff.values()) if (next === undefined || b.nextAt < next) next = b.nextAt
        return Option.fromNullable(next)
      }),
      purge: makePurge(core),
      count,
      register
    } satisfies DlqShape
  })

/** The v2 key off the event loop (argon2 on the thread pool), cached per passphrase and installation id. */
const deriveKey = <E>(passphrase: string, installationId: string, onError: (e: unknown) => E) =>
  Effect.tryPromise({ try: () => deriveDlqKeyAsync(passphrase, installationId), catch: onError })

/** Key sources from the daemon's store passphrase (reference §7.6.2: the DLQ follows the store key). */
export const dlqKeyFromStore: Effect.Effect<DlqOptions, never, ConfigSecrets | StorePassphrase> = Effect.gen(
  function*() {
    const { config } = yield* ConfigSecrets
    const sp = yield* StorePassphrase
    const encrypted = config.matrix?.encrypted !== false
    const policy = config.matrix?.inboundDlq?.legacyEnvelopePolicy ?? "accept"
    const cryptoError = (message: string) => new DlqError({ kind: "dlq-crypto", message })
    // the store passphrase and installation id, or None when records are written plain
    const material = Effect.gen(function*() {
      if (!encrypted) return Option.none<readonly [string, string]>()
      const pass = yield* sp.resolve.pipe(
        Effect.mapError((e) => cryptoError(`the DLQ key cannot be derived: ${e.message}`))
      )
      if (Option.isNone(pass)) return Option.none<readonly [string, string]>()
      const iid = yield* sp.installationId.pipe(
        Effect.mapError((e) => cryptoError(`the DLQ key cannot be derived: ${e.message}`))
      )
      return Option.some([Redacted.value(pass.value), iid] as const)
    })
    return {
      key: Effect.flatMap(material, (m) =>
        Option.isNone(m)
          ? Effect.succeed(Option.none<DlqKey>())
          : Effect.map(
            deriveKey(m.value[0], m.value[1], (e) => cryptoError(`the DLQ key cannot be derived: ${describe(e)}`)),
            Option.some
          )),
      legacy: Effect.map(material, (m): LegacyKeys => ({
        policy,
        key: Option.getOrUndefined(Option.map(m, ([pass, iid]) => deriveLegacyDlqKey(pass, iid)))
      }))
    } satisfies DlqOptions
  }
)

/** The daemon's DLQ: needs StateDir, ChannelStatus, Metrics, ConfigSecrets and StorePassphrase. */
export const DlqLive = Layer.effect(Dlq, Effect.flatMap(dlqKeyFromStore, makeDlq))

// ---------------------------------------------------------------------------------------------------------
// rekey-store (reference §4.5): the DLQ is one more keyed store of the rotation's state machine. Its
// rewrap is one atomic file replace, so at every point the whole file is under one passphrase.

/** The KeyedStore shape of src/programs/rekeyStore.ts, restated to keep this module free of SQLite imports. */
export interface DlqKeyedStore {
  readonly name: string
  readonly path: string
  readonly exists: Effect.Effect<boolean>
  readonly opens: (passphrase: Redacted.Redacted<string>) => Effect.Effect<boolean, EncryptedStateIoError>
  readonly rewrap: (
    from: Redacted.Redacted<string>,
    to: Redacted.Redacted<string>
  ) => Effect.Effect<void, EncryptedStateIoError>
}

export const dlqKeyedStore = (
  stateDir: StateDirShape,
  installationId: Effect.Effect<string, { readonly message: string }>
): DlqKeyedStore => {
  const file = stateDir.resolve(DLQ_FILE)
  const stateIo = (message: string) => new EncryptedStateIoError({ kind: "encrypted-state-io", path: file, message })
  const lines = readNoFollow(stateDir, DLQ_FILE).pipe(
    Effect.map(splitLines),
    Effect.mapError((e) => stateIo(e.message))
  )
  const keyFor = (p: Redacted.Redacted<string>) =>
    installationId.pipe(
      Effect.mapError((e) => stateIo(`the DLQ key cannot be derived: ${e.message}`)),
      Effect.flatMap((iid) =>
        deriveKey(Redacted.value(p), iid, (e) => stateIo(`the DLQ key cannot be derived: ${describe(e)}`))
      )
    )
  // a reference-written v1 line under the same passphrase moves too (re-encoded as v2)
  const legacyFor = (p: Redacted.Redacted<string>) =>
    installationId.pipe(
      Effect.mapError((e) => stateIo(`the DLQ key cannot be derived: ${e.message}`)),
      Effect.map((iid): LegacyKeys => ({ policy: "accept", key: deriveLegacyDlqKey(Redacted.value(p), iid) }))
    )
  return {
    name: path.basename(file),
    path: file,
    // Only envelopes are keyed; a DLQ of plain lines (or none) has nothing to re-protect.
    exists: lines.pipe(Effect.map((ls) => ls.some(isEnvelopeLine)), Effect.orElseSucceed(() => false)),
    opens: (p) =>
      Effect.gen(function*() {
        const envelopes = (yield* lines).filter(isEnvelopeLine)
        const k = yield* keyFor(p)
        const legacy = yield* legacyFor(p)
        return envelopes.every((l) => decodeLine(l, k, legacy)._tag === "Record")
      }),
    rewrap: (from, to) =>
      Effect.gen(function*() {
        const current = yield* lines
        const kFrom = yield* keyFor(from)
        const legacyFrom = yield* legacyFor(from)
        const kTo = yield* keyFor(to)
        const next: Array<string> = []
        for (const l of current) {
          if (!isEnvelopeLine(l)) {
            next.push(l)
            continue
          }
          const d = decodeLine(l, kFrom, legacyFrom)
          if (d._tag !== "Record") {
            return yield* stateIo(
              `a line of ${file} does not decode under the current passphrase; move it to ${
                stateDir.resolve(DLQ_CORRUPT_FILE)
              } (or drop it), then rerun \`cara matrix rekey-store --new\`.`
            )
          }
          next.push(encodeLine(d.record, kTo))
        }
        yield* stateDir.writeAtomic(DLQ_FILE, next.map((l) => `${l}\n`).join("")).pipe(
          Effect.mapError((e) => stateIo(e.message))
        )
      })
  }
}
