// The inbound ledger's tables for redactions and feedback (issue 20 §3, §4): which question was redacted
// (and whether cara's answer to it was redacted too), which event ids are cara's replies to which question,
// and which feedback reactions were recorded. Opened by openLedger (InboundLive.ts) on the same database;
// every table is IF NOT EXISTS, so a ledger from before them gains them on open.
import type { DatabaseSync } from "node:sqlite"
import type { RelationsLedgerShape } from "../services/Ledger.js"

const RELATIONS_SCHEMA = `
  CREATE TABLE IF NOT EXISTS redacted (
    event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, redaction_id TEXT NOT NULL,
    redacted_at INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0
  );
  CREATE TABLE IF NOT EXISTS reply_map (reply_id TEXT PRIMARY KEY, event_id TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS feedback (
    reaction_id TEXT PRIMARY KEY, answer_id TEXT NOT NULL, room_id TEXT NOT NULL, sender TEXT NOT NULL,
    value TEXT NOT NULL, recorded_at INTEGER NOT NULL, removed_at INTEGER
  );
`

/** Whether a table exists (before the schema runs: a new reply_map is filled from the committed rows). */
const hasTable = (db: DatabaseSync, name: string) =>
  db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined

/**
 * Creates the tables when missing and returns their queries. A ledger written before reply_map existed has
 * its reply ids in `inbound.reply_ids` only: they are copied over once, here.
 */
export const openRelationsLedger = (db: DatabaseSync): RelationsLedgerShape & {
  /** Inside the commit's transaction: the reply ids of `eventId`, for reply → question look-ups. */
  readonly mapReplies: (eventId: string, replyIds: ReadonlyArray<string>) => void
} => {
  const backfill = !hasTable(db, "reply_map")
  db.exec(RELATIONS_SCHEMA)
  if (backfill) {
    db.exec(
      "INSERT OR IGNORE INTO reply_map (reply_id, event_id) SELECT j.value, i.event_id " +
        "FROM inbound i, json_each(i.reply_ids) j WHERE i.reply_ids IS NOT NULL AND json_valid(i.reply_ids)"
    )
  }
  const qMap = db.prepare("INSERT OR IGNORE INTO reply_map (reply_id, event_id) VALUES (?, ?)")
  const qQuestionOf = db.prepare(
    "SELECT m.event_id, i.room_id FROM reply_map m JOIN inbound i ON i.event_id = m.event_id WHERE m.reply_id = ?"
  )
  const qReplyIds = db.prepare("SELECT reply_ids FROM inbound WHERE event_id = ? AND state = 'committed'")
  const qRedactedAdd = db.prepare(
    "INSERT OR IGNORE INTO redacted (event_id, room_id, redaction_id, redacted_at) VALUES (?, ?, ?, ?)"
  )
  const qRedacted = db.prepare("SELECT room_id, done FROM redacted WHERE event_id = ?")
  const qRedactedDone = db.prepare("UPDATE redacted SET done = 1 WHERE event_id = ?")
  // only questions the ledger committed: a redaction of anything else has nothing of cara's to take back
  const qRedactedOpen = db.prepare(
    "SELECT r.event_id, r.room_id FROM redacted r JOIN inbound i ON i.event_id = r.event_id " +
      "WHERE r.done = 0 AND i.state = 'committed' ORDER BY r.redacted_at"
  )
  const qFeedbackAdd = db.prepare(
    "INSERT OR IGNORE INTO feedback (reaction_id, answer_id, room_id, sender, value, recorded_at) " +
      "VALUES (?, ?, ?, ?, ?, ?)"
  )
  const qFeedback = db.prepare(
    "SELECT answer_id, room_id, sender, value, removed_at FROM feedback WHERE reaction_id = ?"
  )
  const qFeedbackRemoved = db.prepare(
    "UPDATE feedback SET removed_at = ? WHERE reaction_id = ? AND removed_at IS NULL"
  )
  return {
    mapReplies: (eventId, replyIds) => {
      for (const id of replyIds) qMap.run(id, eventId)
    },
    questionOf: (replyId) => {
      const row = qQuestionOf.get(replyId) as { event_id: string; room_id: string } | undefined
      return row === undefined ? undefined : { eventId: row.event_id, roomId: row.room_id }
    },
    replyIds: (eventId) => {
      const row = qReplyIds.get(eventId) as { reply_ids: string | null } | undefined
      if (row === undefined) return undefined
      try {
        const ids: unknown = JSON.parse(row.reply_ids ?? "[]")
        return Array.isArray(ids) ? ids.filter((x): x is string => typeof x === "string") : []
      } catch {
        return []
      }
    },
    redactedAdd: (eventId, roomId, redactionId, now) =>
      Number(qRedactedAdd.run(eventId, roomId, redactionId, now).changes) > 0,
    redacted: (eventId) => {
      const row = qRedacted.get(eventId) as { room_id: string; done: number } | undefined
      return row === undefined ? undefined : { roomId: row.room_id, done: Number(row.done) === 1 }
    },
    redactedDone: (eventId) => {
      qRedactedDone.run(eventId)
    },
    redactedOpen: () =>
      (qRedactedOpen.all() as unknown as ReadonlyArray<{ event_id: string; room_id: string }>).map((r) => ({
        eventId: r.event_id,
        roomId: r.room_id
      })),
    feedbackAdd: (f, now) =>
      Number(qFeedbackAdd.run(f.reactionEventId, f.answerEventId, f.roomId, f.userId, f.value, now).changes) > 0,
    feedback: (reactionId) => {
      const row = qFeedback.get(reactionId) as
        | { answer_id: string; room_id: string; sender: string; value: string; removed_at: number | null }
        | undefined
      return row === undefined ? undefined : {
        reactionEventId: reactionId,
        answerEventId: row.answer_id,
        roomId: row.room_id,
        userId: row.sender,
        value: row.value === "negative" ? "negative" : "positive",
        removed: row.removed_at !== null
      }
    },
    feedbackRemoved: (reactionId, now) => Number(qFeedbackRemoved.run(now, reactionId).changes) > 0
  }
}
