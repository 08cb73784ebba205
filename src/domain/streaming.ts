import { createHash } from "node:crypto"
import { MAX_CHUNK_BYTES, messageContent, splitMessage } from "./markdown.js"
import { editContent } from "./relations.js"
import { txnIdFor } from "./txnId.js"

// ---------------------------------------------------------------------------------------------------------
// Streaming an answer into Matrix by editing one message (pure: the driver feeds deltas and the clock)
//
// The first chunk goes out as the reply as soon as there is a sentence, or 1 s after the first text; then
// `m.replace` edits follow, at most one per `editIntervalMs` and only after `minGrowthChars` more characters
// (or after `flushAfterMs` for any growth), so a fast model costs one event per second and a slow one
// still shows progress. A 429 from the homeserver blocks sends until its `retry_after_ms` and doubles the
// interval for the rest of the answer. The end of the stream gives the final plan: one final edit with
// the full formatted body (and further replies when the answer is longer than one event), sent even when
// a throttled edit was pending. The driver keeps typing on until the final edit is out.
//
// Exactly-once: the reply's transaction id is the one non-streamed answers use (`cara-r1-<hash>-<i>`, as
// txnIdFor in the Outbound layer), the final edit's is derived from the question alone, so a retry or a
// restart sends it once. Intermediate edits carry the process run's nonce: they are progress, not
// answers, and a run after a restart must not have its fresh edits swallowed as duplicates of old ones.

export interface StreamSettings {
  /** Send the first chunk this long after the first text even without a sentence end. */
  readonly firstChunkAfterMs: number
  /** At most one edit per this interval. */
  readonly editIntervalMs: number
  /** An edit needs at least this many more characters than the last one shown... */
  readonly minGrowthChars: number
  /** ...unless this long has passed since the last one (then any growth is sent). */
  readonly flushAfterMs: number
  /** Ceiling of the interval after rate limiting doubled it. */
  readonly maxEditIntervalMs: number
  /** The streamed message shows at most the first event's worth of text (the rest follows at the end). */
  readonly maxPreviewBytes: number
}

export const DEFAULT_STREAM_SETTINGS: StreamSettings = {
  firstChunkAfterMs: 1_000,
  editIntervalMs: 1_000,
  minGrowthChars: 40,
  flushAfterMs: 3_000,
  maxEditIntervalMs: 10_000,
  maxPreviewBytes: MAX_CHUNK_BYTES
}

// ---------------------------------------------------------------------------------------------------------
// Transaction ids

const eventKey = (eventId: string) => createHash("sha256").update(eventId, "utf8").digest("hex").slice(0, 40)

/** Chunk `index` of the answer to `eventId`: the very id of a non-streamed answer's chunk (txnId.ts). */
export const replyTxnId: (eventId: string, index: number) => string = txnIdFor

/** Intermediate edit `seq` (1, 2, ...) of this run's stream (`run`: a nonce per process start). */
export const editTxnId = (eventId: string, run: string, seq: number): string =>
  `cara-e1-${eventKey(eventId)}-${run.replace(/[^A-Za-z0-9]/g, "").slice(0, 16)}-${seq}`

/** The final edit of the streamed reply: one per question, whatever happened before. */
export const finalEditTxnId = (eventId: string): string => `cara-f1-${eventKey(eventId)}-0`

// ---------------------------------------------------------------------------------------------------------
// The state machine

export interface StreamState {
  readonly eventId: string
  readonly run: string
  readonly text: string
  /** When the first non-blank text arrived. */
  readonly firstTextAt: number | undefined
  /** What the room shows now (the reply or the last edit), and since when. */
  readonly shown: { readonly text: string; readonly at: number } | undefined
  readonly edits: number
  readonly blockedUntil: number
  readonly intervalMs: number
  readonly ended: boolean
}

export type StreamAction =
  /** Send the reply (with the answer's reply/thread relation) showing `text`. */
  | { readonly _tag: "SendFirst"; readonly text: string; readonly txnId: string }
  /** Edit the reply to show `text`. */
  | { readonly _tag: "Edit"; readonly text: string; readonly seq: number; readonly txnId: string }
  /** The stream ended: carry out `finishPlan(state)`. */
  | { readonly _tag: "Finish" }

export const initialStream = (
  eventId: string,
  run: string,
  settings: StreamSettings = DEFAULT_STREAM_SETTINGS
): StreamState => ({
  eventId,
  run,
  text: "",
  firstTextAt: undefined,
  shown: undefined,
  edits: 0,
  blockedUntil: 0,
  intervalMs: settings.editIntervalMs,
  ended: false
})

export const onDelta = (s: StreamState, delta: string, now: number): StreamState => {
  const text = s.text + delta
  return { ...s, text, firstTextAt: s.firstTextAt ?? (text.trim() === "" ? undefined : now) }
}

export const onEnd = (s: StreamState): StreamState => ({ ...s, ended: true })

/** The homeserver said 429: nothing is sent before `retryAfterMs`, and edits come half as often. */
export const onRateLimited = (
  s: StreamState,
  now: number,
  retryAfterMs: number | undefined,
  settings: StreamSettings = DEFAULT_STREAM_SETTINGS
): StreamState => ({
  ...s,
  blockedUntil: Math.max(s.blockedUntil, now + (retryAfterMs ?? s.intervalMs)),
  intervalMs: Math.min(settings.maxEditIntervalMs, s.intervalMs * 2)
})

/** Records that `action` went out at `now`. */
export const onSent = (s: StreamState, action: StreamAction, now: number): StreamState =>
  action._tag === "SendFirst"
    ? { ...s, shown: { text: action.text, at: now } }
    : action._tag === "Edit"
    ? { ...s, shown: { text: action.text, at: now }, edits: Math.max(s.edits, action.seq) }
    : s

const SENTENCE_END = /[.!?…。！？:;]["'’”)\]]*(\s|$)|\n/

/** The text the streamed message may show: the first event's worth, trimmed (as splitMessage trims). */
export const previewText = (text: string, settings: StreamSettings = DEFAULT_STREAM_SETTINGS): string => {
  const t = text.trim()
  return Buffer.byteLength(t, "utf8") <= settings.maxPreviewBytes
    ? t
    : (splitMessage(t, settings.maxPreviewBytes)[0] ?? "")
}

export interface Decision {
  readonly action: StreamAction | undefined
  /** When to ask again without a new delta (a timer), if ever. */
  readonly wakeAt: number | undefined
}

/** What to send now, if anything. Call after every delta, at `wakeAt`, and after the end. */
export const decide = (s: StreamState, now: number, settings: StreamSettings = DEFAULT_STREAM_SETTINGS): Decision => {
  if (now < s.blockedUntil) return { action: undefined, wakeAt: s.blockedUntil }
  if (s.ended) return { action: { _tag: "Finish" }, wakeAt: undefined }
  const preview = previewText(s.text, settings)
  if (s.shown === undefined) {
    if (s.firstTextAt === undefined || preview.trim() === "") return { action: undefined, wakeAt: undefined }
    const due = s.firstTextAt + settings.firstChunkAfterMs
    if (SENTENCE_END.test(preview.trimStart()) || now >= due) {
      return { action: { _tag: "SendFirst", text: preview, txnId: replyTxnId(s.eventId, 0) }, wakeAt: undefined }
    }
    return { action: undefined, wakeAt: due }
  }
  const growth = [...preview].length - [...s.shown.text].length
  if (preview === s.shown.text || growth <= 0) return { action: undefined, wakeAt: undefined }
  const nextAllowed = s.shown.at + s.intervalMs
  const wanted = growth >= settings.minGrowthChars
    ? nextAllowed
    : Math.max(nextAllowed, s.shown.at + settings.flushAfterMs)
  if (now < wanted) return { action: undefined, wakeAt: wanted }
  const seq = s.edits + 1
  return { action: { _tag: "Edit", text: preview, seq, txnId: editTxnId(s.eventId, s.run, seq) }, wakeAt: undefined }
}

// ---------------------------------------------------------------------------------------------------------
// The end of an answer

export type FinishStep =
  /** A new reply event (chunk `index` of the answer). */
  | { readonly _tag: "Reply"; readonly index: number; readonly text: string; readonly txnId: string }
  /** The final edit of the streamed reply with chunk 0 of the full answer. */
  | { readonly _tag: "FinalEdit"; readonly text: string; readonly txnId: string }

/**
 * The sends that finish an answer whose full text is `text`. `replyShown`: the streamed reply is out (its
 * event id known). `mayHaveStreamed` (after a restart): a previous run may have sent the reply without
 * recording it; the reply is then re-sent with its transaction id (the homeserver returns the earlier
 * event if there was one) and always followed by the final edit, so the room ends with exactly one
 * complete answer either way.
 */
export const finishPlan = (
  eventId: string,
  text: string,
  replyShown: boolean,
  mayHaveStreamed = false
): ReadonlyArray<FinishStep> => {
  const chunks = splitMessage(text)
  if (chunks.length === 0) return []
  const rest = chunks.slice(1).map((c, i): FinishStep => ({
    _tag: "Reply",
    index: i + 1,
    text: c,
    txnId: replyTxnId(eventId, i + 1)
  }))
  const first: FinishStep = { _tag: "Reply", index: 0, text: chunks[0]!, txnId: replyTxnId(eventId, 0) }
  const final: FinishStep = { _tag: "FinalEdit", text: chunks[0]!, txnId: finalEditTxnId(eventId) }
  if (replyShown) return [final, ...rest]
  return mayHaveStreamed ? [first, final, ...rest] : [first, ...rest]
}

/** The content of an edit of the streamed reply `replyEventId` to show `text` (rendered Markdown). */
export const streamEditContent = (replyEventId: string, text: string): Record<string, unknown> =>
  editContent(replyEventId, messageContent(text))
