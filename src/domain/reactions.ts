import { createHash } from "node:crypto"

// ---------------------------------------------------------------------------------------------------------
// Lifecycle reactions on the question (`matrix.reactions`), pure parts
//
// 👀 goes on the question when the bot starts working on it and is redacted once the answer is in the room;
// ❌ stays on the question when the answer is a failure. Every reaction and redaction has a transaction id
// derived from the question's event id, so a retry (also after a restart) does not add a second one.

export const WORKING_REACTION = "👀"
export const FAILED_REACTION = "❌"
/** The lifecycle reactions by name. */
export const REACTION = { working: WORKING_REACTION, failed: FAILED_REACTION } as const

/** The `m.reaction` content: an `m.annotation` of `eventId` with `key`. */
export const reactionContent = (eventId: string, key: string): Record<string, unknown> => ({
  "m.relates_to": { rel_type: "m.annotation", event_id: eventId, key }
})

const hash = (s: string) => createHash("sha256").update(s, "utf8").digest("hex").slice(0, 40)

/** The transaction id of the reaction `key` on `eventId`. */
export const reactionTxnId = (eventId: string, key: string): string => `cara-x1-${hash(`${eventId}\u0000${key}`)}`

/** The transaction id of the redaction of the bot's reaction `key` on `eventId`. */
export const unreactTxnId = (eventId: string, key: string): string => `cara-u1-${hash(`${eventId}\u0000${key}`)}`
