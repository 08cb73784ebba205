import { Cause, Clock, Effect, Layer, Option, type Scope } from "effect"
import * as fs from "node:fs"
import { DatabaseSync } from "node:sqlite"
import { normalizeAllowlist } from "../domain/allowlist.js"
import type { MatrixChannelExtra } from "../domain/channel.js"
import { DlqError, type DlqRecord } from "../domain/dlq.js"
import {
  DEFAULT_INBOUND_BUDGET,
  type InboundBudgetSpec,
  makeBudget,
  refusalNoticeText
} from "../domain/inboundBudget.js"
import type { InboundEvent } from "../domain/matrix.js"
import { decodeEventIds, decodeRoomEvent, type EventId, MatrixError } from "../domain/matrix.js"
import { describeSdkError } from "../domain/sendError.js"
import { corruptLedgerMessage, StateFileError } from "../domain/stateFiles.js"
import { answerThread, DEFAULT_THREAD_REPLIES, type ThreadReplies } from "../domain/threads.js"
import { Agent, type AgentShape, type TurnInput, type TurnOutcome } from "../services/Agent.js"
import { ChannelStatus, type ChannelStatusShape } from "../services/ChannelStatus.js"
import { Dlq, type DlqShape } from "../services/Dlq.js"
import { Inbound, InboundHooks, type InboundShape, type RoomFacts } from "../services/Inbound.js"
import { CurrentMatrixSession, MatrixSettings } from "../services/MatrixSync.js"
import { MatrixTransport } from "../services/MatrixTransport.js"
import { Outbound, type OutboundReply, type OutboundShape } from "../services/Outbound.js"
import { SessionStoreError } from "../services/Sessions.js"
import { StateDir } from "../services/StateDir.js"
import { makeEdits, withEdits } from "./editInbound.js"
import { type LifecycleReactions, lifecycleReactions } from "./reactions.js"
// By design: attachments (download, decrypt, classify) become the agent's input before the turn.
import { attachmentInput, type AttachmentIo, attachmentIoFor } from "./attachments.js"
// By design: redacted questions and held answers' reactions are kept apart from the pipeline (issue 20 §3).
import { type InboundRelations, inboundRelations } from "./inboundRelations.js"
import { makeRedactions, type Redactions } from "./redactions.js"
// By design: the answer's streaming into the room is its own module.
import {
  type AnswerArgs,
  type Answered,
  answerTurn,
  answerWithoutModel,
  type Streamed,
  type StreamingMode,
  streamMarks
} from "./streamReply.js"
// By design built on the send path: the pending-reply retrier lives with the Outbound it retries through.
import { Ledger as LedgerTag, type LedgerShape as Ledger, type LedgerState } from "../services/Ledger.js"
import {
  DEFAULT_DEAD_LETTER_AFTER_ROUNDS,
  type HeldReply,
  makeReplyRetry,
  type ReplyRetry,
  type ReplyRetryOptions
} from "./OutboundLive.js"
// By design built on the shared SQLite state-file helpers (atomic creation, read-only inspection).
import { createSqliteAtomically, inspectSqlite, missingTables } from "./sqliteState.js"
// The redaction and feedback tables live in the same ledger database (one transaction with the commit).
import { openRelationsLedger } from "./relationsLedger.js"

import { type BacklogCount, makeBacklogCounter } from "../domain/backlogProgress.js"
import { type GateContext, gateInbound, type InboundCounter as Counter } from "../domain/inboundGate.js"
import { type ProgressHooks, progressLine } from "../domain/progress.js"
export type { LedgerShape as Ledger, LedgerState, PendingReplyRow } from "../services/Ledger.js"

// The gates are pure (src/domain/inboundGate.ts); re-exported for the existing importers.
export {
  type GateContext,
  gateInbound,
  type GateVerdict,
  type GroupMessages,
  isInvisibleOnly,
  MAX_BODY_BYTES,
  mentionsBot
} from "../domain/inboundGate.js"

// ---------------------------------------------------------------------------------------------------------
// The ledger: `{state_dir}/matrix/inbound-ledger.sqlite`

export const LEDGER_FILE = "matrix/inbound-ledger.sqlite"

const LEDGER_SCHEMA = `
  CREATE TABLE IF NOT EXISTS inbound (
    event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, state TEXT NOT NULL,
    claimed_at INTEGER NOT NULL, committed_at INTEGER, reply_ids TEXT
  );
  CREATE TABLE IF NOT EXISTS utd (event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, first_seen INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS outbound_pending (
    event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, first_failed_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL, last_error TEXT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS streamed (event_id TEXT PRIMARY KEY, started_at INTEGER NOT NULL);
`

/**
 * Opens (creating 0600) the ledger. `synchronous=FULL` in WAL mode: a claim or commit is on disk when
 * the call returns, which is what "claimed before the first send" and "committed after handling" rely on.
 */
/** Why an existing ledger is not one, or undefined (a read-only look; `utd` is added on open when missing). */
export const inspectLedgerFile = (file: string) => inspectSqlite(file, (db) => missingTables(db, ["inbound"]))

export const openLedger = (file: string): Ledger => {
  // created complete or not at all, so an existing ledger without its table is damage (refused, kept)
  if (!fs.existsSync(file)) createSqliteAtomically(file, (db) => db.exec(LEDGER_SCHEMA))
  const look = inspectLedgerFile(file)
  if (look.state === "bad") {
    throw new StateFileError({
      kind: "inbound-ledger-corrupt",
      path: file,
      message: corruptLedgerMessage(file, look.reason)
    })
  }
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW)
  fs.fchmodSync(fd, 0o600)
  fs.closeSync(fd)
  const db = new DatabaseSync(file)
  db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")
  // IF NOT EXISTS: a ledger from before the utd or outbound_pending table gains it here
  db.exec(LEDGER_SCHEMA)
  const { mapReplies, ...relations } = openRelationsLedger(db)
  for (const f of [`${file}-wal`, `${file}-shm`]) {
    try {
      fs.chmodSync(f, 0o600)
    } catch {
      // not created yet; SQLite gives them the database file's mode
    }
  }
  const qState = db.prepare("SELECT state FROM inbound WHERE event_id = ?")
  const qClaim = db.prepare(
    "INSERT OR IGNORE INTO inbound (event_id, room_id, state, claimed_at) VALUES (?, ?, 'claimed', ?)"
  )
  const qCommit = db.prepare(
    "INSERT INTO inbound (event_id, room_id, state, claimed_at, committed_at, reply_ids) VALUES (?, '', 'committed', ?, ?, ?) " +
      "ON CONFLICT(event_id) DO UPDATE SET state = 'committed', committed_at = excluded.committed_at, reply_ids = excluded.reply_ids"
  )
  const qUnfinished = db.prepare("SELECT event_id, room_id FROM inbound WHERE state = 'claimed' ORDER BY claimed_at")
  const qUtdAdd = db.prepare("INSERT OR IGNORE INTO utd (event_id, room_id, first_seen) VALUES (?, ?, ?)")
  const qUtdRemove = db.prepare("DELETE FROM utd WHERE event_id = ?")
  const qUtdList = db.prepare("SELECT event_id, room_id FROM utd ORDER BY first_seen")
  // No answer text here: after a restart it comes back from the session history (see docs/channels.md).
  const qPendingFailed = db.prepare(
    "INSERT INTO outbound_pending (event_id, room_id, first_failed_at, attempts, last_error) VALUES (?, ?, ?, 1, ?) " +
      "ON CONFLICT(event_id) DO UPDATE SET attempts = attempts + 1, last_error = excluded.last_error"
  )
  const qPendingClear = db.prepare("DELETE FROM outbound_pending WHERE event_id = ?")
  const qPending = db.prepare(
    "SELECT event_id, room_id, first_failed_at, attempts, last_error FROM outbound_pending ORDER BY first_failed_at"
  )
  const qStreamedAdd = db.prepare("INSERT OR IGNORE INTO streamed (event_id, started_at) VALUES (?, ?)")
  const qStreamed = db.prepare("SELECT 1 AS x FROM streamed WHERE event_id = ?")
  const rows = (r: ReadonlyArray<unknown>) =>
    (r as ReadonlyArray<{ event_id: string; room_id: string }>).map((x) => ({ eventId: x.event_id, roomId: x.room_id }))
  return {
    state: (eventId) => (qState.get(eventId) as { state: LedgerState } | undefined)?.state,
    claim: (eventId, roomId, now) => {
      qClaim.run(eventId, roomId, now)
    },
    commit: (eventId, replyIds, now) => {
      // one transaction: a committed event never keeps a pending-reply row
      db.exec("BEGIN IMMEDIATE")
      try {
        qCommit.run(eventId, now, now, JSON.stringify(replyIds))
        mapReplies(eventId, replyIds)
        qPendingClear.run(eventId)
        db.exec("COMMIT")
      } catch (e) {
        db.exec("ROLLBACK")
        throw e
      }
    },
    unfinished: () => rows(qUnfinished.all()),
    utdAdd: (eventId, roomId, now) => {
      qUtdAdd.run(eventId, roomId, now)
    },
    utdRemove: (eventId) => Number(qUtdRemove.run(eventId).changes) > 0,
    utdList: () => rows(qUtdList.all()),
    pendingFailed: (eventId, roomId, error, now) => {
      qPendingFailed.run(eventId, roomId, now, error)
    },
    pending: () =>
      (qPending.all() as unknown as ReadonlyArray<
        { event_id: string; room_id: string; first_failed_at: number; attempts: number; last_error: string }
      >)
        .map((r) => ({
          eventId: r.event_id,
          roomId: r.room_id,
          firstFailedAt: Number(r.first_failed_at),
          attempts: Number(r.attempts),
          lastError: r.last_error
        })),
    ...relations,
    streamedAdd: (eventId, now) => {
      qStreamedAdd.run(eventId, now)
    },
    streamed: (eventId) => qStreamed.get(eventId) !== undefined,
    close: () => db.close()
  }
}

// ---------------------------------------------------------------------------------------------------------
// Test-only fault point

/**
 * TEST ONLY. `CARA_TEST_FAULT=after-reply-before-commit` kills the process (SIGKILL, no cleanup) right after
 * an answer was sent and before its ledger commit, so the integration test can prove that a restart does
 * not post the answer twice. `CARA_TEST_FAULT=session-write:<file>` makes the session write of every answer
 * fail while `<file>` exists (the DLQ tests clear the fault by removing it). Read here and nowhere else;
 * never set it in production.
 */
const testFaultActive = (point: "after-reply-before-commit" | "session-write"): boolean => {
  const v = process.env["CARA_TEST_FAULT"]
  if (v === undefined) return false
  if (v === point) return true
  return v.startsWith(`${point}:`) && fs.existsSync(v.slice(point.length + 1))
}

const testFault = (point: "after-reply-before-commit") =>
  Effect.sync(() => {
    if (testFaultActive(point)) process.kill(process.pid, "SIGKILL")
  })

const testSessionWriteFault = Effect.suspend(() =>
  testFaultActive("session-write")
    ? Effect.fail(
      new SessionStoreError({
        kind: "agent-history-io",
        message: "test fault: the session write was refused (CARA_TEST_FAULT)"
      })
    )
    : Effect.void
)

// ---------------------------------------------------------------------------------------------------------
// The pipeline

export interface InboundDeps {
  readonly gate: GateContext
  readonly ledger: Ledger
  readonly agent: AgentShape
  readonly outbound: OutboundShape
  readonly status: ChannelStatusShape
  /** Where events whose durable handling failed go (and are replayed from); without it they stay claimed. */
  readonly dlq?: DlqShape
  /** Pending replies (makeReplyRetry): the runtime's view of the homeserver, and how to resume an event. */
  readonly replies?: {
    readonly reachable: Effect.Effect<boolean>
    readonly resume: (eventId: string, roomId: string) => Effect.Effect<void>
    readonly options: ReplyRetryOptions
  }
  /** `matrix.inboundBudget`; the defaults of domain/inboundBudget.ts when absent. */
  readonly budget?: InboundBudgetSpec
  /** `matrix.streaming`: answers streamed into the room with edits (off when absent). */
  readonly streaming?: StreamingMode | undefined
  /** `matrix.reactions`: lifecycle reactions on the question (off when absent). */
  readonly reactions?: LifecycleReactions | undefined
  /** `matrix.threadReplies`: where answers go and which conversation a message joins ("inbound" when absent). */
  readonly threadReplies?: ThreadReplies | undefined
  /** Images, files and voice messages in (issue 20.2); without it an attachment gets a short answer. */
  readonly attachments?: ((roomId: string) => AttachmentIo) | undefined
  /** Redacted questions are not answered, answered ones have their answer redacted (none when absent). */
  readonly redactions?: Redactions | undefined
  /** A catch-up counter on the operator's terminal (domain/backlogProgress.ts); nothing when absent. */
  readonly progress?: { readonly hooks: ProgressHooks; readonly done: Effect.Effect<void> } | undefined
}

/** Shows a backlog count on the progress line, and closes the line after the run's last answer. */
const showBacklog = (progress: InboundDeps["progress"], c: BacklogCount | undefined): Effect.Effect<void> =>
  progress?.hooks.count === undefined || c === undefined
    ? Effect.void
    : Effect.zipRight(
      progress.hooks.count("catching up: answered", c.done, c.total),
      c.end ? progress.done : Effect.void
    )

/** Rooms × senders told at most once per run why a device is not answered (bounded like the buckets). */
const MAX_UNSIGNED_NOTICES = 10_000

export const NOT_CROSS_SIGNED_NOTICE =
  "I do not answer messages from this session: it is not verified by its owner (cross-signing), and this bot only answers verified sessions (matrix.requireCrossSignedSenders). Verify this session from one of your other sessions, or send from a verified one."

/** The budget config section as the bucket spec. */
export const budgetSpec = (c: {
  readonly roomBurst: number
  readonly roomPerMinute: number
  readonly senderBurst: number
  readonly senderPerMinute: number
}): InboundBudgetSpec => ({
  room: { burst: c.roomBurst, perMinute: c.roomPerMinute },
  sender: { burst: c.senderBurst, perMinute: c.senderPerMinute }
})

const bump = (status: ChannelStatusShape, counters: ReadonlyArray<Counter>) =>
  status.updateMatrix((extra) => {
    const next: Record<string, unknown> = { ...extra }
    for (const c of counters) next[c] = (extra[c] ?? 0) + 1
    return next as MatrixChannelExtra
  })

/** Dropped events are logged: the first 10 per reason, then powers of two (reference's log-volume rule). */
const dropLogger = () => {
  const dropLogs = new Map<string, number>()
  // first 10 per reason, then powers of two (reference's log-volume rule)
  return (reason: string, ev: InboundEvent) =>
    Effect.suspend(() => {
      const n = (dropLogs.get(reason) ?? 0) + 1
      dropLogs.set(reason, n)
      return n <= 10 || (n & (n - 1)) === 0
        ? Effect.logWarning(`Matrix inbound event ignored: ${reason}`).pipe(
          Effect.annotateLogs({ eventId: ev.eventId, roomId: ev.roomId, total: n })
        )
        : Effect.void
    })
}

/** A failed durable handling: counted and logged; a failed session write also goes to the DLQ. */
const failures = (status: ChannelStatusShape, dlq: DlqShape | undefined) => {
  const failure = (ev: InboundEvent, what: string, message: string) =>
    Effect.logError(
      `Matrix inbound ${what} failed; the event stays claimed and is retried at the next start: ${message}`
    ).pipe(
      Effect.annotateLogs({ eventId: ev.eventId, roomId: ev.roomId }),
      Effect.zipRight(
        status.updateMatrix((x) => ({
          ...x,
          inboundDispatchFailureTotal: x.inboundDispatchFailureTotal + 1,
          lastInboundFailureAt: Date.now()
        }))
      )
    )

  // Durable handling failed: the event goes to the DLQ (encrypted) and is replayed after a later sync.
  const deadLetter = (ev: InboundEvent, isGroup: boolean, e: SessionStoreError) =>
    failure(ev, "dispatch", e.message).pipe(
      Effect.zipRight(
        dlq === undefined ? Effect.void : dlq.append({
          eventId: ev.eventId,
          roomId: ev.roomId,
          senderId: ev.sender,
          text: ev.body,
          receivedAt: Date.now(),
          isGroup,
          ...(ev.threadId === undefined ? {} : { threadId: ev.threadId }),
          ...(ev.attachment === undefined ? {} : { attachment: ev.attachment })
        }).pipe(Effect.ignore)
      )
    )

  return { failure, deadLetter }
}

/** The ledger's pending-reply rows mirrored into the channel status, and the commit that clears them. */
const ledgerOps = (ledger: Ledger, status: ChannelStatusShape, dlq: DlqShape | undefined) => {
  // Pending replies: the ledger row per reply whose send failed is mirrored into the channel status.
  const refreshPending = Effect.suspend(() => {
    const rows = ledger.pending()
    return status.updateMatrix((x) => {
      const { outboundPendingCount: _c, outboundPendingOldestAt: _o, ...rest } = x
      return rows.length === 0
        ? rest
        : { ...rest, outboundPendingCount: rows.length, outboundPendingOldestAt: rows[0]!.firstFailedAt }
    })
  }).pipe(Effect.catchAllCause((c) => Effect.logWarning(`reading the pending replies failed: ${Cause.pretty(c)}`)))

  const attemptFailed = (r: OutboundReply, detail: string) =>
    Effect.sync(() => ledger.pendingFailed(r.inReplyTo, r.roomId, detail, Date.now())).pipe(
      Effect.zipRight(refreshPending),
      Effect.catchAllCause((c) =>
        Effect.logWarning(`recording a failed send in the inbound ledger failed: ${Cause.pretty(c)}`)
      )
    )

  const commit = (eventId: string, ids: ReadonlyArray<string>) =>
    Effect.sync(() => ledger.commit(eventId, ids, Date.now())).pipe(Effect.zipRight(refreshPending))

  // An answer the DLQ holds is handled (durability rule 2): the event is committed after the append.
  const deadLetterReply = (h: HeldReply) =>
    dlq === undefined ? Effect.fail({ message: "no DLQ" }) : dlq.append({
      eventId: h.reply.inReplyTo,
      roomId: h.reply.roomId,
      senderId: h.senderId,
      text: h.reply.text,
      receivedAt: Date.now(),
      isGroup: h.isGroup,
      direction: "outbound",
      ...(h.reply.threadId === undefined ? {} : { threadId: h.reply.threadId })
    }).pipe(Effect.zipRight(commit(h.reply.inReplyTo, [])))

  return { refreshPending, attemptFailed, commit, deadLetterReply }
}

/** Refusal notices (m.notice, never answered by a bot), sent in the background of `scope`. */
const notices = (outbound: OutboundShape, status: ChannelStatusShape, scope: Scope.Scope) => {
  const unsignedNoticed = new Set<string>()
  // A notice is an m.notice (no bot answers it), sent in the background so the sync loop never waits on it.
  const notice = (ev: InboundEvent, text: string, counters: ReadonlyArray<Counter>) =>
    Effect.forkIn(
      outbound.reply({ roomId: ev.roomId, text, inReplyTo: ev.eventId }).pipe(
        Effect.zipRight(bump(status, counters)),
        Effect.catchAll((e) =>
          Effect.logWarning(`Matrix refusal notice not sent: ${e.kind}: ${e.message}`).pipe(
            Effect.annotateLogs({ eventId: ev.eventId })
          )
        )
      ),
      scope
    )

  const noticeUnsigned = (ev: InboundEvent) =>
    Effect.suspend(() => {
      const key = `${ev.roomId}\u0000${ev.sender}`
      if (unsignedNoticed.has(key) || unsignedNoticed.size >= MAX_UNSIGNED_NOTICES) return Effect.void
      unsignedNoticed.add(key)
      return notice(ev, NOT_CROSS_SIGNED_NOTICE, [])
    })

  return { notice, noticeUnsigned }
}

interface DlqHandlerDeps {
  readonly ledger: Ledger
  readonly outbound: OutboundShape
  readonly inProgress: Set<string>
  readonly roomLock: (roomId: string) => Effect.Semaphore
  readonly answerCore: (ev: InboundEvent, isGroup: boolean) => Effect.Effect<void, SessionStoreError | DlqError>
  readonly commit: (eventId: string, ids: ReadonlyArray<string>) => Effect.Effect<void>
}

type ReplayIds = Pick<InboundEvent, "eventId" | "roomId" | "sender" | "threadId">

/** A DLQ record's ids, branded (a checked decode: a record whose ids are not Matrix ids is not replayed). */
const recordIds = (r: DlqRecord): Effect.Effect<ReplayIds, DlqError> =>
  decodeEventIds({
    eventId: r.eventId,
    roomId: r.roomId,
    sender: r.senderId,
    ...(r.threadId === undefined ? {} : { threadId: r.threadId })
  }).pipe(
    Effect.mapError(() =>
      new DlqError({ kind: "dlq-dispatch-failure", message: "the record's Matrix ids are malformed" })
    )
  )

/** What DLQ replay hands back: an inbound record answered in the foreground, an outbound one re-sent. */
const dlqHandlers = ({ answerCore, commit, inProgress, ledger, outbound, roomLock }: DlqHandlerDeps) => {
  // DLQ replay: the same handling in the foreground, so the record is removed only once it is durable.
  const redeliver = (r: DlqRecord) =>
    Effect.gen(function*() {
      const busy = (why: string) => new DlqError({ kind: "dlq-dispatch-failure", message: why })
      const state = yield* Effect.try({
        try: () => ledger.state(r.eventId),
        catch: (e) => busy(`inbound ledger: ${String(e)}`)
      })
      if (state === "committed") return
      if (inProgress.has(r.eventId)) return yield* busy("the event is being answered right now")
      yield* Effect.try({
        try: () => ledger.claim(r.eventId, r.roomId, Date.now()),
        catch: (e) => busy(`inbound ledger: ${String(e)}`)
      })
      const ids = yield* recordIds(r)
      inProgress.add(r.eventId)
      const ev: InboundEvent = {
        ...ids,
        ts: r.receivedAt,
        msgtype: typeof r.attachment?.["msgtype"] === "string" ? r.attachment["msgtype"] : "m.text",
        body: r.text,
        encrypted: true,
        ...(r.attachment === undefined ? {} : { attachment: r.attachment })
      }
      yield* answerCore(ev, r.isGroup ?? false).pipe(
        Effect.catchAllDefect((d) => Effect.fail(busy(String(d)))),
        Effect.mapError((e) => (e instanceof DlqError ? e : busy(`session: ${e.message}`))),
        roomLock(r.roomId).withPermits(1),
        Effect.ensuring(Effect.sync(() => inProgress.delete(r.eventId)))
      )
    }).pipe(Effect.withSpan("Inbound.redeliver"))

  // DLQ replay of an outbound record: the stored answer, under its original transaction ids.
  const resend = (r: DlqRecord) =>
    Effect.flatMap(recordIds(r), ({ eventId, roomId, threadId }) =>
      outbound.reply(
        {
          roomId,
          text: r.text,
          inReplyTo: eventId,
          ...(threadId === undefined ? {} : { threadId }),
          // a streamed answer is finished with its final edit, never sent a second time
          ...(ledger.streamed(r.eventId) ? { mayHaveStreamed: true } : {})
        },
        { attempts: 3 }
      ).pipe(
        Effect.flatMap((ids) => commit(r.eventId, ids)),
        Effect.mapError((e) =>
          new DlqError({
            kind: "dlq-dispatch-failure",
            message: `re-sending the answer failed (${e.kind}): ${e.message}`
          })
        ),
        Effect.catchAllDefect((d) =>
          Effect.fail(
            new DlqError({ kind: "dlq-dispatch-failure", message: `re-sending the answer failed: ${String(d)}` })
          )
        )
      )).pipe(
        Effect.withSpan("Inbound.resend")
      )

  return { redeliver, resend }
}

/** Ledger rows with their ids branded; a row whose ids are not Matrix ids is left out (and logged). */
const brandedRows = (read: () => ReadonlyArray<{ readonly eventId: string; readonly roomId: string }>) =>
  Effect.gen(function*() {
    const rows = read()
    const branded = rows.flatMap((row) => Option.toArray(decodeRoomEvent(row)))
    if (branded.length < rows.length) {
      yield* Effect.logWarning(`inbound ledger: ${rows.length - branded.length} row(s) with malformed ids skipped`)
    }
    return branded
  })

/** One semaphore per room: answers in a room run one at a time, rooms do not wait for each other. */
const roomLocks = () => {
  const rooms = new Map<string, Effect.Semaphore>()
  return (roomId: string) => {
    let s = rooms.get(roomId)
    if (s === undefined) {
      s = Effect.unsafeMakeSemaphore(1)
      rooms.set(roomId, s)
    }
    return s
  }
}

interface AnswerDeps {
  readonly answer: (args: AnswerArgs) => Effect.Effect<Answered, SessionStoreError>
  readonly outbound: OutboundShape
  readonly replies: ReplyRetry
  readonly attemptFailed: (r: OutboundReply, detail: string) => Effect.Effect<void>
  readonly commit: (eventId: string, ids: ReadonlyArray<string>) => Effect.Effect<void>
  readonly reactions: LifecycleReactions | undefined
  readonly botUserId: string
  readonly threadReplies: ThreadReplies
  readonly attachments: ((roomId: string) => AttachmentIo) | undefined
  readonly relations: InboundRelations
}

/** The answer to one claimed event: agent (typing meanwhile), reply, commit, read receipt. */
const answering = (
  { answer, attachments, attemptFailed, botUserId, commit, outbound, reactions, relations, replies, threadReplies }:
    AnswerDeps
) => {
  return (ev: InboundEvent, isGroup: boolean, editing?: EventId) =>
    Effect.gen(function*() {
      yield* Effect.logDebug("Matrix message dispatched to the agent").pipe(
        Effect.annotateLogs({ eventId: ev.eventId, roomId: ev.roomId })
      )
      yield* testSessionWriteFault
      const working = reactions === undefined ? Option.none() : yield* reactions.working(ev.roomId, ev.eventId)
      // the thread the answer goes in is also the conversation the question joins (src/domain/threads.ts)
      const threadId = answerThread(threadReplies, ev.eventId, ev.threadId)
      const base: TurnInput = {
        roomId: ev.roomId,
        eventId: ev.eventId,
        senderId: ev.sender,
        ...(ev.senderLabel === undefined ? {} : { senderLabel: ev.senderLabel }),
        ...(threadId === undefined ? {} : { threadId }),
        text: ev.body,
        isGroup,
        botUserId
      }
      const toReply = (text: string, streamed: Streamed): OutboundReply => ({
        roomId: ev.roomId,
        text,
        inReplyTo: ev.eventId,
        ...(threadId === undefined ? {} : { threadId }),
        ...streamed
      })
      // a send that keeps failing is handed over to the pending replies, which own it from here
      const send = (reply: OutboundReply, outcome: TurnOutcome) =>
        Effect.gen(function*() {
          // redacted while it was answered: not sent, and a streamed first chunk is taken back (issue 20 §3)
          if (yield* relations.redacted(ev, reply.streamedReply === undefined ? [] : [reply.streamedReply])) {
            if (reactions !== undefined) yield* reactions.answered(ev.roomId, ev.eventId, working, false)
            return undefined
          }
          if (reply.text.trim() === "") return []
          return yield* outbound.reply(reply, { onFailedAttempt: (d) => attemptFailed(reply, d) }).pipe(
            Effect.catchTag("MatrixError", (e) =>
              relations.held(ev, working, outcome._tag === "Failed").pipe(
                Effect.zipRight(replies.hold({ reply, senderId: ev.sender, isGroup }, e)),
                Effect.as(undefined)
              ))
          )
        })
      // attachments are downloaded and checked first; a refused one is answered without a model call
      const prepared = yield* outbound.whileTyping(
        ev.roomId,
        attachmentInput(attachments?.(ev.roomId), ev.attachment, base)
      )
      // the turn, streamed into the room per `matrix.streaming` (streamReply.ts), then the send
      const { ids, outcome } = prepared._tag === "Answer"
        ? yield* answerWithoutModel(prepared.text, (o) => send(toReply(o.text, {}), o))
        : yield* answer({
          input: prepared.input,
          toReply,
          send,
          ...(editing === undefined ? {} : { editing })
        })
      if (ids === undefined) {
        return
      }
      yield* testFault("after-reply-before-commit")
      yield* commit(ev.eventId, ids)
      yield* relations.committed(ev.eventId)
      yield* outbound.readReceipt(ev.roomId, ev.eventId)
      if (reactions !== undefined) {
        yield* reactions.answered(ev.roomId, ev.eventId, working, outcome._tag === "Failed")
      }
      yield* Effect.logInfo(`Matrix message answered (${ids.length} event${ids.length === 1 ? "" : "s"})`).pipe(
        Effect.annotateLogs({ eventId: ev.eventId, roomId: ev.roomId, outcome: outcome._tag })
      )
    })
}

/** Redacted questions and held answers' reactions around the answer (issue 20 §3). */
const relationsOf = (deps: InboundDeps, commit: (eventId: string, ids: ReadonlyArray<string>) => Effect.Effect<void>) =>
  inboundRelations({
    state: (eventId) => deps.ledger.state(eventId),
    commit,
    count: bump(deps.status, ["inboundRedactedTotal"]),
    redactions: deps.redactions,
    reactions: deps.reactions
  })

/** The pending replies' start, and (in the background) the redactions of answers a stop interrupted. */
const withSweep = (start: Effect.Effect<void>, redactions: Redactions | undefined, scope: Scope.Scope) =>
  redactions === undefined ? start : Effect.zipRight(start, Effect.asVoid(Effect.forkIn(redactions.sweep, scope)))

/** The pending replies over the ledger; a held answer finishes its reactions (and a redaction) once out. */
const pendingReplies = (deps: InboundDeps, ops: ReturnType<typeof ledgerOps>, relations: InboundRelations) => {
  const { attemptFailed, commit, deadLetterReply } = ops
  return makeReplyRetry({
    outbound: relations.guard(deps.outbound),
    reachable: deps.replies?.reachable ?? Effect.succeed(true),
    attemptFailed,
    sent: (eventId, ids) => commit(eventId, ids).pipe(Effect.zipRight(relations.heldDone(eventId, false))),
    deadLetter: deps.dlq === undefined
      ? Option.none()
      : Option.some((h: HeldReply) =>
        deadLetterReply(h).pipe(Effect.zipRight(relations.heldDone(h.reply.inReplyTo, true)))
      ),
    pendingRows: Effect.sync(() => deps.ledger.pending()).pipe(Effect.orElseSucceed(() => [])),
    resume: deps.replies?.resume ?? (() => Effect.void)
  }, deps.replies?.options ?? { deadLetterAfterRounds: DEFAULT_DEAD_LETTER_AFTER_ROUNDS })
}

/**
 * The inbound pipeline in the current scope: answers run as fibers of that scope (interrupted when the
 * runtime stops; an interrupted answer stays claimed and is resumed at the next start).
 */
export const makeInbound = (deps: InboundDeps): Effect.Effect<InboundShape, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { agent, gate, ledger, outbound, status } = deps
    const scope = yield* Effect.scope
    const inProgress = new Set<string>()
    const backlog = makeBacklogCounter()
    const spec = deps.budget ?? DEFAULT_INBOUND_BUDGET
    const budget = makeBudget(spec)

    const roomLock = roomLocks()
    const logDrop = dropLogger()
    const { deadLetter, failure } = failures(status, deps.dlq)
    const ops = ledgerOps(ledger, status, deps.dlq)
    const { attemptFailed, commit, refreshPending } = ops
    const { notice, noticeUnsigned } = notices(outbound, status, scope)
    const relations = relationsOf(deps, commit)
    const replies = yield* pendingReplies(deps, ops, relations)
    yield* refreshPending

    const answerCore = answering({
      answer: answerTurn({ agent, outbound, mode: deps.streaming ?? "off", ...streamMarks(ledger) }),
      attachments: deps.attachments,
      attemptFailed,
      botUserId: deps.gate.botUserId,
      commit,
      outbound,
      reactions: deps.reactions,
      relations,
      replies,
      threadReplies: deps.threadReplies ?? DEFAULT_THREAD_REPLIES
    })

    // an edit's answer edits the reply of the question it replaces (editInbound.ts)
    const edits = makeEdits(ledger, inProgress)
    const answer = (ev: InboundEvent, isGroup: boolean) =>
      withEdits(edits, answerCore)(ev, isGroup).pipe(
        Effect.catchTag("SessionStoreError", (e) => deadLetter(ev, isGroup, e)),
        Effect.catchAllDefect((d) => failure(ev, "dispatch", String(d))),
        roomLock(ev.roomId).withPermits(1),
        Effect.ensuring(
          Effect.suspend(() => {
            edits.forget(ev.eventId)
            inProgress.delete(ev.eventId)
            return showBacklog(deps.progress, backlog.finished())
          })
        ),
        Effect.withSpan("Inbound.answer")
      )

    // The budget is charged only for a message that will reach the model (after every gate and the
    // redelivery check), so ignored or already-answered events cost nothing.
    const admit = (ev: InboundEvent) =>
      Effect.gen(function*() {
        const verdict = budget.take(ev.roomId, ev.sender, yield* Clock.currentTimeMillis)
        if (verdict._tag === "Admit") return true
        yield* bump(status, [
          verdict.scope === "room" ? "inboundBudgetRefusedRoomTotal" : "inboundBudgetRefusedSenderTotal"
        ])
        yield* logDrop(`inbound budget of the ${verdict.scope} exhausted`, ev)
        if (verdict.notice) yield* notice(ev, refusalNoticeText(verdict.scope, spec), ["inboundBudgetNoticeTotal"])
        return false
      })

    const offer = (ev: InboundEvent, room: RoomFacts) =>
      Effect.gen(function*() {
        const verdict = gateInbound(gate, ev, room)
        if (verdict._tag === "Drop") {
          yield* bump(status, verdict.counters)
          yield* logDrop(verdict.reason, ev)
          if (verdict.reason === "not-cross-signed") yield* noticeUnsigned(ev)
          if (verdict.reason === "redacted") yield* relations.arrivedRedacted(ev)
          return
        }
        if (verdict._tag === "Ignore") {
          yield* Effect.logDebug(`Matrix inbound event not for the agent: ${verdict.reason}`).pipe(
            Effect.annotateLogs({ eventId: ev.eventId })
          )
          return
        }
        if (inProgress.has(ev.eventId)) return
        const state = yield* Effect.try(() => ledger.state(ev.eventId))
        if (state === "committed") {
          yield* Effect.logDebug("Matrix inbound event already answered (redelivery)").pipe(
            Effect.annotateLogs({ eventId: ev.eventId })
          )
          return
        }
        if (yield* relations.redacted(ev)) return
        if (!(yield* edits.known(ev))) return
        // an event claimed before a restart was admitted then: resuming it is not a new model call
        if (state === undefined && !(yield* admit(ev))) return
        yield* Effect.try(() => ledger.claim(ev.eventId, ev.roomId, Date.now()))
        // an edit of a question still waiting for its turn: that answer uses the new text
        if (yield* edits.fold(ev)) return
        inProgress.add(ev.eventId)
        yield* showBacklog(deps.progress, backlog.started())
        yield* Effect.forkIn(answer(ev, verdict.isGroup), scope)
      }).pipe(
        Effect.catchAll((e) => failure(ev, "ledger", String(e))),
        Effect.withSpan("Inbound.offer")
      )

    const { redeliver, resend } = dlqHandlers({ answerCore, commit, inProgress, ledger, outbound, roomLock })

    const isCommitted = (eventId: EventId) =>
      Effect.sync(() => ledger.state(eventId) === "committed").pipe(Effect.orElseSucceed(() => false))

    return {
      offer,
      redeliver,
      resend,
      replies: { start: withSweep(replies.start, deps.redactions, scope), kick: replies.kick },
      isCommitted,
      // claimed and not committed, except those this process is answering or has queued: after a catch-up's
      // first sync most of the backlog is claimed and waiting for its room, and re-fetching each would only cost
      unfinished: brandedRows(() => ledger.unfinished().filter((row) => !inProgress.has(row.eventId))),
      utd: {
        add: (eventId, roomId) => Effect.sync(() => ledger.utdAdd(eventId, roomId, Date.now())),
        remove: (eventId) => Effect.sync(() => ledger.utdRemove(eventId)),
        list: brandedRows(() => ledger.utdList())
      }
    } satisfies InboundShape
  })

/** The ledger, open (created 0600 under `{state_dir}/matrix`) for the life of the layer. */
export const LedgerLive = Layer.scoped(
  LedgerTag,
  Effect.gen(function*() {
    const stateDir = yield* StateDir
    yield* stateDir.ensureDir("matrix").pipe(
      Effect.mapError((e) => new MatrixError({ kind: "encrypted-state-io", message: e.message }))
    )
    return yield* Effect.acquireRelease(
      Effect.try({
        try: () => openLedger(stateDir.resolve(LEDGER_FILE)),
        catch: (e) =>
          e instanceof StateFileError && e.kind === "inbound-ledger-corrupt"
            ? new MatrixError({ kind: e.kind, message: e.message })
            : new MatrixError({
              kind: "encrypted-state-io",
              message: `Opening the inbound ledger failed (${describeSdkError(e)}); check the state directory.`
            })
      }),
      (l) => Effect.sync(() => l.close())
    )
  })
)

/** The inbound pipeline of the running Matrix runtime: gates from `matrix.*`, answers through Outbound. */
export const InboundLive = Layer.scoped(
  Inbound,
  Effect.gen(function*() {
    const m = yield* MatrixSettings
    const session = yield* CurrentMatrixSession
    const hooks = yield* InboundHooks
    return yield* makeInbound({
      gate: {
        botUserId: session.userId,
        allowlist: normalizeAllowlist(m.autoJoin),
        encryptedMode: m.encrypted,
        groupMessages: m.groupMessages,
        requireCrossSignedSenders: m.requireCrossSignedSenders
      },
      budget: budgetSpec(m.inboundBudget),
      threadReplies: m.threadReplies,
      streaming: m.streaming,
      ...(m.reactions ? { reactions: lifecycleReactions(yield* MatrixTransport) } : {}),
      attachments: attachmentIoFor(m.attachments.images, (yield* MatrixTransport).download, yield* Agent),
      redactions: makeRedactions({
        ledger: yield* LedgerTag,
        transport: yield* MatrixTransport,
        redactAnswers: m.redactAnswers
      }),
      ledger: yield* LedgerTag,
      agent: yield* Agent,
      outbound: yield* Outbound,
      status: yield* ChannelStatus,
      dlq: yield* Dlq,
      replies: { ...hooks, options: { deadLetterAfterRounds: m.outbound.deadLetterAfterRounds } },
      // on a terminal only (a pipe or a log file gets nothing extra)
      progress: progressLine("cara")
    })
  })
)
