// The audit log's record (reference §6.6, §7.6.3, §4.5): `{state_dir}/audit.jsonl`, one redacted JSON line per
// record, append-only. Pure: the file is written by the Audit service (src/layers/AuditLive.ts).
import { Schema } from "effect"
import { auditLine } from "./redact.js"

export const AUDIT_FILE = "audit.jsonl"

/**
 * Issue 20 §4: a 👍/👎 reaction of an allowed user on one of cara's answers, and its removal (the reaction
 * redacted). The data is event ids, the room, the sender and the polarity: never any message content.
 */
export const AUDIT_FEEDBACK = "feedback"
export const AUDIT_FEEDBACK_REMOVED = "feedback-removed"

/** One line of audit.jsonl: an ISO timestamp, the event name and its data (never key material). */
export const AuditRecord = Schema.Struct({
  ts: Schema.String,
  event: Schema.String,
  data: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})
export type AuditRecord = typeof AuditRecord.Type

/** The line for one record, newline-terminated, with every registered secret redacted. */
export const encodeAuditRecord = (event: string, data: Record<string, unknown>, now: Date = new Date()): string =>
  auditLine(event, data, now)

const decodeRecord = Schema.decodeUnknownOption(Schema.parseJson(AuditRecord))

/** The records of an audit.jsonl text; lines that are not records (a torn last line) are skipped. */
export const parseAuditLog = (text: string): Array<AuditRecord> =>
  text.split("\n").flatMap((line) => {
    if (line.trim() === "") return []
    const r = decodeRecord(line)
    return r._tag === "Some" ? [r.value] : []
  })

/** Writing the audit log failed; the message names the file and what to check. */
export class AuditError extends Schema.TaggedError<AuditError>()("AuditError", {
  kind: Schema.Literal("audit-io"),
  message: Schema.String
}) {}
