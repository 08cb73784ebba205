// Shared by the DLQ tests: lines in the formats cara reads but never writes.
import * as crypto from "node:crypto"
import type { DlqRecord } from "../../src/domain/dlq.js"

/** A v1 envelope as the reference wrote it (HKDF key, AAD v1 or the original AAD). */
export const legacyLine = (r: DlqRecord, k: { bytes: Buffer }, aad = "matrix-inbound-dlq-envelope-v1") => {
  const nonce = crypto.randomBytes(12)
  const c = crypto.createCipheriv("aes-256-gcm", k.bytes, nonce)
  c.setAAD(Buffer.from(aad))
  const ct = Buffer.concat([c.update(JSON.stringify(r)), c.final(), c.getAuthTag()])
  return JSON.stringify({ version: 1, nonce: nonce.toString("base64url"), ciphertext: ct.toString("base64url") })
}
