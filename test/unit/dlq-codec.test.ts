// The DLQ line format (reference §7.6.2): the pinned Argon2id vector, round trips, and refusal of anything
// tampered, truncated, re-versioned or carrying extra fields.
import { describe, expect, it } from "@effect/vitest"
import * as crypto from "node:crypto"
import {
  decodeLine,
  deriveDlqKey,
  deriveLegacyDlqKey,
  dlqKeyFromBytes,
  type DlqRecord,
  encodeLine,
  isEnvelopeLine,
  recordId,
  replayBackoffMs,
  splitLines
} from "../../src/domain/dlq.js"
import { legacyLine } from "../support/dlq-fixtures.js"

const record: DlqRecord = {
  eventId: "$abc:example.org",
  roomId: "!room:example.org",
  senderId: "@alice:example.org",
  text: "hello, dead letter",
  receivedAt: 1767225600000
}
const key = dlqKeyFromBytes(crypto.createHash("sha256").update("dlq-test-key").digest())
const other = dlqKeyFromBytes(crypto.createHash("sha256").update("another-key").digest())

const flipChar = (s: string, at: number) => s.slice(0, at) + (s[at] === "A" ? "B" : "A") + s.slice(at + 1)

describe("DLQ key derivation", () => {
  it("matches the pinned v2 vector (Argon2id, 64 MiB, t=3, p=1, salt = installation id)", () => {
    const k = deriveDlqKey("correct horse battery staple", "installation-00000000-0000-0000-0000-000000000000")
    expect(k.bytes.toString("hex")).toBe("92a4336c637a2792d43ce389686fb958777d557c27a79c287bac9d8350b12c78")
    // cached: the same object comes back, no second derivation
    expect(deriveDlqKey("correct horse battery staple", "installation-00000000-0000-0000-0000-000000000000")).toBe(k)
    expect(
      deriveDlqKey("correct horse battery stapler", "installation-00000000-0000-0000-0000-000000000000").bytes.equals(
        k.bytes
      )
    ).toBe(false)
  })
})

describe("DLQ lines", () => {
  it("an envelope is strict v2 JSON that decodes back to the record; the body never appears in it", () => {
    const line = encodeLine(record, key)
    const parsed = JSON.parse(line) as Record<string, unknown>
    expect(Object.keys(parsed).sort()).toEqual(["ciphertext", "nonce", "version"])
    expect(parsed["version"]).toBe(2)
    expect(Buffer.from(parsed["nonce"] as string, "base64url")).toHaveLength(12)
    expect(parsed["nonce"]).toMatch(/^[A-Za-z0-9_-]+$/)
    expect(line).not.toContain("hello")
    expect(line).not.toContain("alice")
    expect(isEnvelopeLine(line)).toBe(true)
    expect(decodeLine(line, key)).toEqual({ _tag: "Record", record, encrypted: true })
    // fresh nonce per line
    expect(encodeLine(record, key)).not.toBe(line)
  })

  it("a fixed nonce gives a fixed line (format pinned)", () => {
    const nonce = Buffer.alloc(12, 7)
    const a = encodeLine(record, key, nonce)
    expect(encodeLine(record, key, nonce)).toBe(a)
    expect(JSON.parse(a)).toMatchObject({ version: 2, nonce: "BwcHBwcHBwcHBwcH" })
  })

  it("without a key the line is the plain record, and it decodes with or without a key", () => {
    const line = encodeLine(record, undefined)
    expect(JSON.parse(line)).toEqual(record)
    expect(isEnvelopeLine(line)).toBe(false)
    expect(decodeLine(line, undefined)).toEqual({ _tag: "Record", record, encrypted: false })
    expect(decodeLine(line, key)).toEqual({ _tag: "Record", record, encrypted: false })
  })

  it("an envelope without a key available is kept for later (NoKey), not quarantined", () => {
    expect(decodeLine(encodeLine(record, key), undefined)).toEqual({ _tag: "NoKey" })
  })

  it("refuses a tampered ciphertext, a tampered nonce, and another key (dlq-crypto)", () => {
    const line = encodeLine(record, key)
    const env = JSON.parse(line) as { version: number; nonce: string; ciphertext: string }
    const tampered = JSON.stringify({ ...env, ciphertext: flipChar(env.ciphertext, 5) })
    const tamperedTag = JSON.stringify({ ...env, ciphertext: flipChar(env.ciphertext, env.ciphertext.length - 3) })
    const tamperedNonce = JSON.stringify({ ...env, nonce: flipChar(env.nonce, 2) })
    for (const l of [tampered, tamperedTag, tamperedNonce]) {
      expect(decodeLine(l, key)).toMatchObject({ _tag: "Corrupt", kind: "dlq-crypto" })
    }
    expect(decodeLine(line, other)).toMatchObject({ _tag: "Corrupt", kind: "dlq-crypto" })
  })

  it("refuses malformed envelopes and records (dlq-serialization)", () => {
    const env = JSON.parse(encodeLine(record, key)) as Record<string, unknown>
    const bad = [
      "not json",
      "[1,2]",
      JSON.stringify({ ...env, extra: 1 }),
      JSON.stringify({ ...env, version: 1 }),
      JSON.stringify({ ...env, version: 3 }),
      JSON.stringify({ ...env, nonce: "AAAA" }),
      JSON.stringify({ ...env, nonce: "+/+/+/+/+/+/+/+/" }),
      JSON.stringify({ ...env, ciphertext: "" }),
      JSON.stringify({ ...record, extra: true }),
      JSON.stringify({ ...record, eventId: "abc" }),
      JSON.stringify({ ...record, roomId: "#alias:example.org" }),
      JSON.stringify({ ...record, senderId: "alice" }),
      JSON.stringify({ eventId: record.eventId }),
      "x".repeat(128 * 1024 + 1)
    ]
    for (const l of bad) expect(decodeLine(l, key)).toMatchObject({ _tag: "Corrupt", kind: "dlq-serialization" })
  })

  it("an encrypted record with extra fields inside is refused too", () => {
    // forge a valid envelope whose plaintext carries an extra field
    const nonce = crypto.randomBytes(12)
    const c = crypto.createCipheriv("aes-256-gcm", key.bytes, nonce)
    c.setAAD(Buffer.from("matrix-inbound-dlq-envelope-v2"))
    const ct = Buffer.concat([c.update(JSON.stringify({ ...record, extra: 1 })), c.final(), c.getAuthTag()])
    const line = JSON.stringify({
      version: 2,
      nonce: nonce.toString("base64url"),
      ciphertext: ct.toString("base64url")
    })
    expect(decodeLine(line, key)).toMatchObject({ _tag: "Corrupt", kind: "dlq-serialization" })
  })

  it("the AAD is bound: the same key with another AAD is refused", () => {
    const nonce = crypto.randomBytes(12)
    const c = crypto.createCipheriv("aes-256-gcm", key.bytes, nonce)
    c.setAAD(Buffer.from("matrix-inbound-dlq-envelope-v1"))
    const ct = Buffer.concat([c.update(JSON.stringify(record)), c.final(), c.getAuthTag()])
    const line = JSON.stringify({
      version: 2,
      nonce: nonce.toString("base64url"),
      ciphertext: ct.toString("base64url")
    })
    expect(decodeLine(line, key)).toMatchObject({ _tag: "Corrupt", kind: "dlq-crypto" })
  })

  it("ids are stable, short and not the event id; lines split without blanks; backoff grows to 1 h", () => {
    expect(recordId(record.eventId)).toMatch(/^[0-9a-f]{16}$/)
    expect(recordId(record.eventId)).toBe(recordId("$abc:example.org"))
    expect(recordId("$other")).not.toBe(recordId(record.eventId))
    expect(splitLines("a\n\nb\n  \nc")).toEqual(["a", "b", "c"])
    expect([1, 2, 3].map(replayBackoffMs)).toEqual([5000, 10000, 20000])
    expect(replayBackoffMs(50)).toBe(3_600_000)
  })
})

describe("legacy v1 envelopes (read only)", () => {
  const v1 = deriveLegacyDlqKey("correct horse battery staple", "installation-00000000-0000-0000-0000-000000000000")

  it("the v1 key matches the pinned HKDF vector", () => {
    expect(v1.bytes.toString("hex")).toBe("4f17d4dc2615c81e3e552fe15374de09634d883e4b7835a1d43a04676f5a0ff7")
  })

  it("accepted: decodes under both v1 AADs, marked legacy; without a v1 key it waits (NoKey)", () => {
    for (const aad of ["matrix-inbound-dlq-envelope-v1", "matrix-inbound-dlq-v1"]) {
      expect(decodeLine(legacyLine(record, v1, aad), key, { policy: "accept", key: v1 })).toEqual({
        _tag: "Record",
        record,
        encrypted: true,
        legacy: true
      })
    }
    expect(decodeLine(legacyLine(record, v1), key, { policy: "accept", key: undefined })).toEqual({ _tag: "NoKey" })
    // the v2 AAD is not a v1 AAD
    expect(decodeLine(legacyLine(record, v1, "matrix-inbound-dlq-envelope-v2"), key, { policy: "accept", key: v1 }))
      .toMatchObject({ _tag: "Corrupt", kind: "dlq-crypto" })
  })

  it("refused by policy, or with no legacy support at all: undecodable (quarantined)", () => {
    expect(decodeLine(legacyLine(record, v1), key, { policy: "refuse", key: v1 })).toMatchObject({
      _tag: "Corrupt",
      kind: "dlq-serialization"
    })
    expect(decodeLine(legacyLine(record, v1), key)).toMatchObject({ _tag: "Corrupt", kind: "dlq-serialization" })
  })
})
