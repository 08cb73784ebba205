import { createHash, randomUUID } from "node:crypto"

// Transaction ids

/**
 * The transaction id of chunk `index` of the answer to `eventId`: a pure function of the two, so the
 * id is "recorded" by the ledger's claim of the inbound event, and every retry (also in a new process
 * after a crash) reuses it; the homeserver then returns the first send's event id instead of posting
 * twice. Hashed: event ids may hold characters that are awkward in a URL path segment.
 */
export const txnIdFor = (eventId: string, index: number): string =>
  `cara-r1-${createHash("sha256").update(eventId, "utf8").digest("hex").slice(0, 40)}-${index}`

/** The transaction id of a control-API probe message: unique per call (a probe is never retried). */
export const testTxnId = (): string => `cara-test-${randomUUID()}`
