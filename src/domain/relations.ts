import { createHash } from "node:crypto"

// ---------------------------------------------------------------------------------------------------------
// Edits, reactions and redactions (pure helpers over event content; spec "Event replacements",
// "Event annotations and reactions", "Redactions")

type Content = Readonly<Record<string, unknown>>

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

export interface Edit {
  /** The event being replaced. */
  readonly targetEventId: string
  /** `m.new_content`: the full replacement content (never the `* ` fallback). */
  readonly newContent: Content
  readonly newBody: string
}

/** The edit in an `m.room.message` content (`m.replace` with `m.new_content`), or undefined. */
export const editOf = (content: Content): Edit | undefined => {
  const rel = content["m.relates_to"]
  const next = content["m.new_content"]
  if (!isRecord(rel) || rel["rel_type"] !== "m.replace" || typeof rel["event_id"] !== "string" || !isRecord(next)) {
    return undefined
  }
  if (typeof next["body"] !== "string") return undefined
  return { targetEventId: rel["event_id"], newContent: next, newBody: next["body"] }
}

export interface EventFacts {
  readonly eventId: string
  readonly roomId: string
  readonly sender: string
  readonly type: string
  /** The event is a state event (has a state_key). */
  readonly isState: boolean
  /** `m.relates_to.rel_type` of the event's own content. */
  readonly relType: string | undefined
}

export type EditValidity = "valid" | "other-room" | "other-sender" | "other-type" | "state-event" | "edit-of-edit"

/**
 * Whether `edit` may replace `original` (the spec's rules): same room, same sender, same type, the
 * original is neither a state event nor itself an edit. An invalid edit is ignored, not answered.
 */
export const editValidity = (original: EventFacts, edit: EventFacts): EditValidity =>
  original.roomId !== edit.roomId
    ? "other-room"
    : original.sender !== edit.sender
    ? "other-sender"
    : original.type !== edit.type
    ? "other-type"
    : original.isState
    ? "state-event"
    : original.relType === "m.replace"
    ? "edit-of-edit"
    : "valid"

/**
 * The content of an edit that replaces `eventId` with `newContent` (an `m.room.message` content such as
 * markdown.messageContent gives). The outer `body`/`formatted_body` are the `* ` fallback for clients
 * without edit support; `m.new_content` carries no relation (the original's reply/thread relation stays).
 */
export const editContent = (eventId: string, newContent: Content): Record<string, unknown> => {
  const { "m.relates_to": _dropped, ...clean } = newContent
  const body = typeof clean["body"] === "string" ? clean["body"] : ""
  const fallback: Record<string, unknown> = { ...clean, body: `* ${body}` }
  if (typeof clean["formatted_body"] === "string") fallback["formatted_body"] = `* ${clean["formatted_body"]}`
  return { ...fallback, "m.new_content": clean, "m.relates_to": { rel_type: "m.replace", event_id: eventId } }
}

// ---------------------------------------------------------------------------------------------------------
// Reactions (cara's own lifecycle reactions, their content and transaction ids: src/domain/reactions.ts)

export interface Reaction {
  readonly targetEventId: string
  readonly key: string
}

/** The annotation in an `m.reaction` content, or undefined. */
export const reactionOf = (content: Content): Reaction | undefined => {
  const rel = content["m.relates_to"]
  if (!isRecord(rel) || rel["rel_type"] !== "m.annotation") return undefined
  if (typeof rel["event_id"] !== "string" || typeof rel["key"] !== "string") return undefined
  return { targetEventId: rel["event_id"], key: rel["key"] }
}

export type Feedback = "positive" | "negative"

/** Variation selectors, skin tones, and the `:+1:` spellings some clients send. */
const normalizeKey = (key: string) => key.replace(/[\ufe0e\ufe0f\u{1f3fb}-\u{1f3ff}]/gu, "").trim().toLowerCase()
const POSITIVE = new Set(["👍", "+1", ":+1:", ":thumbsup:"])
const NEGATIVE = new Set(["👎", "-1", ":-1:", ":thumbsdown:"])

/** 👍 / 👎 (any skin tone) as feedback on an answer; other keys are no feedback. */
export const feedbackOf = (key: string): Feedback | undefined => {
  const k = normalizeKey(key)
  return POSITIVE.has(k) ? "positive" : NEGATIVE.has(k) ? "negative" : undefined
}

/** What the audit log records for feedback: event ids and who, never any content. */
export interface FeedbackRecord {
  readonly kind: "feedback"
  readonly value: Feedback
  readonly roomId: string
  readonly userId: string
  readonly answerEventId: string
  readonly reactionEventId: string
}

export const feedbackRecord = (
  value: Feedback,
  ids: {
    readonly roomId: string
    readonly userId: string
    readonly answerEventId: string
    readonly reactionEventId: string
  }
): FeedbackRecord => ({ kind: "feedback", value, ...ids })

// ---------------------------------------------------------------------------------------------------------
// Redactions

/**
 * The event an `m.room.redaction` removes: `content.redacts` from room version 11 on, the top-level
 * `redacts` before.
 */
export const redactedEventId = (
  event: { readonly type?: unknown; readonly redacts?: unknown; readonly content?: unknown }
): string | undefined => {
  if (event.type !== "m.room.redaction") return undefined
  const inContent = isRecord(event.content) ? event.content["redacts"] : undefined
  if (typeof inContent === "string") return inContent
  return typeof event.redacts === "string" ? event.redacts : undefined
}

/** The `redact` power level of a room whose power levels do not set one (the spec's default). */
export const DEFAULT_REDACT_LEVEL = 50

export type RedactionAuthority = "sender" | "moderator"

/**
 * Whether a redaction takes an event back for cara: one by the event's own sender, or by a room moderator
 * (a power level at or above the room's \`redact\` level). Any other redaction is ignored: the homeserver
 * may accept the redaction event itself without applying it (a same-server user redacting someone else).
 */
export const redactionAuthority = (f: {
  readonly redacter: string
  readonly eventSender: string
  readonly redacterPowerLevel: number
  readonly redactLevel: number
}): RedactionAuthority | undefined =>
  f.redacter === f.eventSender ? "sender" : f.redacterPowerLevel >= f.redactLevel ? "moderator" : undefined

/**
 * The transaction id of the redaction of an answer whose question was redacted (`matrix.redactAnswers`).
 * It shares the `cara-x1-` prefix with the lifecycle reactions' ids (domain/reactions.ts) but hashes another
 * input (the answer's event id alone) and goes to the redact endpoint, so the two never meet.
 */
export const redactAnswerTxnId = (answerEventId: string): string =>
  `cara-x1-${createHash("sha256").update(answerEventId, "utf8").digest("hex").slice(0, 40)}`
