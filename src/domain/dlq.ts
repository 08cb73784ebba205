// The inbound dead-letter queue's on-disk format (reference §7.6.2): one JSON line per record, either a plain
// record (`matrix.encrypted=false`) or an envelope v2 whose AEAD plaintext is that record. Pure: no file I/O.
import { Either, Schema } from "effect"
import * as crypto from "node:crypto"

export const DLQ_FILE = "matrix/inbound_dlq.jsonl"
export const DLQ_CORRUPT_FILE = "matrix/inbound_dlq.corrupt.jsonl"
/** Live records; an append at the cap is refused (`dlq-cap-saturation`) with one audit event. */
export const DLQ_RECORD_CAP = 10_000
/** The quarantine never grows past this; a batch that would is dropped and audited. */
export const DLQ_CORRUPT_CAP_BYTES = 10 * 1024 * 1024
/** A longer line is never decoded (fail closed: it is quarantined). */
export const DLQ_LINE_CAP_BYTES = 128 * 1024

// ---------------------------------------------------------------------------------------------------------
// Errors

/** `matrix-runtime-unavailable`: a replay asked of a daemon whose Matrix runtime is not running (503, like every Matrix action). */
export const DlqErrorKind = Schema.Literal(
  "dlq-crypto",
  "dlq-io",
  "dlq-serialization",
  "dlq-dispatch-failure",
  "dlq-cap-saturation",
  "matrix-runtime-unavailable"
)
export type DlqErrorKind = typeof DlqErrorKind.Type

/** A DLQ operation failed; the message says what to do and never holds a message body or key. */
export class DlqError extends Schema.TaggedError<DlqError>()("DlqError", {
  kind: DlqErrorKind,
  message: Schema.String
}) {}

/** `show`/`replay`/`purge` of an id that is not (or no longer) in the DLQ. */
export class DlqRecordNotFound extends Schema.TaggedError<DlqRecordNotFound>()("DlqRecordNotFound", {
  kind: Schema.Literal("dlq-record-not-found"),
  message: Schema.String
}) {}

// ---------------------------------------------------------------------------------------------------------
// Records

const MatrixEventId = Schema.String.pipe(Schema.pattern(/^\$[^\s]+$/))
const MatrixRoomId = Schema.String.pipe(Schema.pattern(/^![^:\s]+(:\S+)?$/))
const MatrixUserId = Schema.String.pipe(Schema.pattern(/^@[^:\s]+:\S+$/))

/** The plain record (the line itself when unencrypted; the AEAD plaintext otherwise). Extra fields refused. */
export const DlqRecord = Schema.Struct({
  eventId: MatrixEventId,
  roomId: MatrixRoomId,
  senderId: MatrixUserId,
  text: Schema.String,
  /** Unix ms when the failure was recorded. */
  receivedAt: Schema.Number,
  /** The thread root, so a replayed answer lands in the same thread (our addition; optional). */
  threadId: Schema.optional(Schema.String),
  /** The room had more than two members (the agent labels senders in groups; our addition; optional). */
  isGroup: Schema.optional(Schema.Boolean),
  /**
   * Our addition: `"outbound"` marks an answer that could not be sent (then `text` is the answer, not the
   * question, and replay re-sends it under its original transaction ids). Absent: an inbound record.
   */
  direction: Schema.optional(Schema.Literal("inbound", "outbound")),
  /**
   * Our addition (issue 20.2): an inbound attachment's event content (with its `file`: the key), so a replay
   * downloads and decrypts it again; `text` is then the file name or caption. Never shown by `dlq show`.
   */
  attachment: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
})
export type DlqRecord = typeof DlqRecord.Type

export type DlqDirection = "inbound" | "outbound"
export const directionOf = (record: DlqRecord): DlqDirection => record.direction ?? "inbound"

const decodeRecordStrict = Schema.decodeUnknownEither(DlqRecord, { onExcessProperty: "error" })

/** The operator-facing id of an inbound record: stable, short, and not the event id itself. */
export const recordId = (eventId: string): string =>
  crypto.createHash("sha256").update(eventId, "utf8").digest("hex").slice(0, 16)

/**
 * The operator-facing id of a record. The question and the answer to one event can both be dead letters (an
 * inbound record is replayed, and its answer then cannot be sent), so an outbound record has its own id.
 */
export const recordIdOf = (record: DlqRecord): string =>
  directionOf(record) === "outbound" ? recordId(`outbound\u0000${record.eventId}`) : recordId(record.eventId)

// ---------------------------------------------------------------------------------------------------------
// Keys: v2 = Argon2id(store passphrase, salt = installation id ASCII, 64 MiB, t=3, p=1) -> 32 bytes

export const ENVELOPE_VERSION = 2
const AAD_V2 = Buffer.from("matrix-inbound-dlq-envelope-v2", "utf8")

/** A derived DLQ key; opaque outside this module (never printed). */
export interface DlqKey {
  readonly _tag: "DlqKey"
  readonly bytes: Buffer
}

// Derivation costs ~180 ms and 64 MiB: at most once per (passphrase, installation id) in a process. The map
// key is a hash, so the cache itself holds no passphrase.
const keyCache = new Map<string, DlqKey>()
// Derivations under way (the daemon's first uses may overlap): one argon2 run per key, shared.
const keyInFlight = new Map<string, Promise<DlqKey>>()

const cacheIdOf = (passphrase: string, installationId: string) =>
  crypto.createHash("sha256").update(`${passphrase.length}:${passphrase}\u0000${installationId}`, "utf8").digest("hex")

const argon2Parameters = (passphrase: string, installationId: string): crypto.Argon2Parameters => ({
  message: Buffer.from(passphrase, "utf8"),
  nonce: Buffer.from(installationId, "ascii"),
  parallelism: 1,
  tagLength: 32,
  memory: 65536,
  passes: 3
})

const remember = (id: string, bytes: Buffer): DlqKey => {
  const key: DlqKey = { _tag: "DlqKey", bytes }
  keyCache.set(id, key)
  return key
}

/** The v2 key, derived synchronously (tools and tests; the daemon uses `deriveDlqKeyAsync`). */
export const deriveDlqKey = (passphrase: string, installationId: string): DlqKey => {
  const id = cacheIdOf(passphrase, installationId)
  return keyCache.get(id) ?? remember(id, crypto.argon2Sync("argon2id", argon2Parameters(passphrase, installationId)))
}

/**
 * The v2 key, derived on libuv's thread pool so the event loop (and the reply being sent meanwhile) never
 * waits for argon2; same parameters and output as `deriveDlqKey`, same cache.
 */
export const deriveDlqKeyAsync = (passphrase: string, installationId: string): Promise<DlqKey> => {
  const id = cacheIdOf(passphrase, installationId)
  const hit = keyCache.get(id)
  if (hit !== undefined) return Promise.resolve(hit)
  const running = keyInFlight.get(id)
  if (running !== undefined) return running
  const derivation = new Promise<DlqKey>((resolve, reject) => {
    crypto.argon2("argon2id", argon2Parameters(passphrase, installationId), (error, bytes) => {
      if (error !== null) reject(error)
      else resolve(remember(id, Buffer.from(bytes)))
    })
  }).finally(() => keyInFlight.delete(id))
  keyInFlight.set(id, derivation)
  return derivation
}

/**
 * The legacy v1 key (read only): HKDF-SHA256(salt = installation id, ikm = store passphrase,
 * info = "carapace-matrix-inbound-dlq-v1"). cara never writes v1; it reads DLQs written by the reference.
 */
export const deriveLegacyDlqKey = (passphrase: string, installationId: string): DlqKey => ({
  _tag: "DlqKey",
  bytes: Buffer.from(
    crypto.hkdfSync(
      "sha256",
      Buffer.from(passphrase, "utf8"),
      Buffer.from(installationId, "ascii"),
      Buffer.from("carapace-matrix-inbound-dlq-v1", "utf8"),
      32
    )
  )
})

/** `matrix.inboundDlq.legacyEnvelopePolicy` with the v1 key when one can be had. */
export interface LegacyKeys {
  readonly policy: "accept" | "refuse"
  readonly key: DlqKey | undefined
}

const AAD_V1 = [Buffer.from("matrix-inbound-dlq-envelope-v1", "utf8"), Buffer.from("matrix-inbound-dlq-v1", "utf8")]

/** For tests and vectors: a key from raw bytes. */
export const dlqKeyFromBytes = (bytes: Uint8Array): DlqKey => ({ _tag: "DlqKey", bytes: Buffer.from(bytes) })

// ---------------------------------------------------------------------------------------------------------
// Lines

const b64u = (b: Uint8Array) => Buffer.from(b).toString("base64url")
const fromB64u = (
  s: string
): Buffer | undefined => (/^[A-Za-z0-9_-]*$/.test(s) ? Buffer.from(s, "base64url") : undefined)

/** One line (without the newline) for `record`: an envelope v2 with a key, else the plain record. */
export const encodeLine = (
  record: DlqRecord,
  key: DlqKey | undefined,
  nonce: Uint8Array = crypto.randomBytes(12)
): string => {
  const plain = JSON.stringify(Schema.encodeSync(DlqRecord)(record))
  if (key === undefined) return plain
  const cipher = crypto.createCipheriv("aes-256-gcm", key.bytes, nonce)
  cipher.setAAD(AAD_V2)
  const ct = Buffer.concat([cipher.update(plain, "utf8"), cipher.final(), cipher.getAuthTag()])
  return JSON.stringify({ version: ENVELOPE_VERSION, nonce: b64u(nonce), ciphertext: b64u(ct) })
}

export type Decoded =
  | { readonly _tag: "Record"; readonly record: DlqRecord; readonly encrypted: boolean; readonly legacy?: true }
  /** An envelope, but no key is available now (unencrypted mode, no store secret): kept as it is. */
  | { readonly _tag: "NoKey" }
  /** Never decodable (bad JSON, bad ids, unknown version, AEAD failure): quarantined. */
  | { readonly _tag: "Corrupt"; readonly kind: "dlq-crypto" | "dlq-serialization"; readonly reason: string }

const corrupt = (kind: "dlq-crypto" | "dlq-serialization", reason: string): Decoded => ({
  _tag: "Corrupt",
  kind,
  reason
})

/** A line is an envelope iff it is a JSON object with `version`, `nonce` and `ciphertext` (config-independent). */
export const isEnvelopeLine = (line: string): boolean => {
  try {
    const v = JSON.parse(line) as unknown
    return typeof v === "object" && v !== null && !Array.isArray(v) && "version" in v && "nonce" in v &&
      "ciphertext" in v
  } catch {
    return false
  }
}

const open = (key: DlqKey, nonce: Buffer, ct: Buffer, aad: Buffer): string | undefined => {
  try {
    const decipher = crypto.createDecipheriv("aes-256-gcm", key.bytes, nonce)
    decipher.setAAD(aad)
    decipher.setAuthTag(ct.subarray(ct.length - 16))
    return Buffer.concat([decipher.update(ct.subarray(0, ct.length - 16)), decipher.final()]).toString("utf8")
  } catch {
    return undefined
  }
}

/**
 * Decodes one line. `key` is the v2 key (`undefined`: none available now); `legacy` enables v1 envelopes
 * (without it, or with policy "refuse", a v1 line is undecodable and goes to quarantine).
 */
export const decodeLine = (line: string, key: DlqKey | undefined, legacy?: LegacyKeys): Decoded => {
  if (Buffer.byteLength(line, "utf8") > DLQ_LINE_CAP_BYTES) {
    return corrupt("dlq-serialization", "line longer than 128 KiB")
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(line)
  } catch {
    return corrupt("dlq-serialization", "not JSON")
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return corrupt("dlq-serialization", "not a JSON object")
  }
  const obj = parsed as Record<string, unknown>
  if ("version" in obj && "nonce" in obj && "ciphertext" in obj) {
    const keys = Object.keys(obj)
    if (keys.length !== 3) return corrupt("dlq-serialization", "envelope has extra fields")
    const v1 = obj["version"] === 1 && legacy !== undefined
    if (obj["version"] === 1 && legacy?.policy === "refuse") {
      return corrupt("dlq-serialization", "legacy v1 envelope refused by matrix.inboundDlq.legacyEnvelopePolicy")
    }
    if (obj["version"] !== ENVELOPE_VERSION && !v1) {
      return corrupt("dlq-serialization", `unsupported envelope version ${JSON.stringify(obj["version"])}`)
    }
    if (typeof obj["nonce"] !== "string" || typeof obj["ciphertext"] !== "string") {
      return corrupt("dlq-serialization", "envelope fields are not strings")
    }
    const nonce = fromB64u(obj["nonce"])
    const ct = fromB64u(obj["ciphertext"])
    if (nonce === undefined || nonce.length !== 12) {
      return corrupt("dlq-serialization", "envelope nonce is not 12 bytes of base64url")
    }
    if (ct === undefined || ct.length < 16) return corrupt("dlq-serialization", "envelope ciphertext is malformed")
    const k = v1 ? legacy?.key : key
    if (k === undefined) return { _tag: "NoKey" }
    // v2 never accepts a legacy AAD; v1 tries its AAD, then the original one
    const plain = v1 ? (open(k, nonce, ct, AAD_V1[0]!) ?? open(k, nonce, ct, AAD_V1[1]!)) : open(k, nonce, ct, AAD_V2)
    if (plain === undefined) {
      return corrupt(
        "dlq-crypto",
        "envelope does not authenticate under the current key (tampered, or written under another passphrase)"
      )
    }
    let inner: unknown
    try {
      inner = JSON.parse(plain)
    } catch {
      return corrupt("dlq-serialization", "decrypted record is not JSON")
    }
    return Either.match(decodeRecordStrict(inner), {
      onLeft: () => corrupt("dlq-serialization", "decrypted record has missing, extra or malformed fields"),
      onRight: (record) => ({ _tag: "Record", record, encrypted: true, ...(v1 ? { legacy: true } : {}) })
    })
  }
  return Either.match(decodeRecordStrict(obj), {
    onLeft: () => corrupt("dlq-serialization", "plain record has missing, extra or malformed fields"),
    onRight: (record) => ({ _tag: "Record", record, encrypted: false })
  })
}

/** Splits file content into its non-empty lines (a torn last line without `\n` is still a line). */
export const splitLines = (content: string): Array<string> => content.split("\n").filter((l) => l.trim() !== "")

// ---------------------------------------------------------------------------------------------------------
// What the operator surface shows

export const DlqSummary = Schema.Struct({
  id: Schema.String,
  /** `inbound`: a message whose handling failed; `outbound`: an answer that could not be sent. */
  direction: Schema.Literal("inbound", "outbound"),
  eventId: Schema.String,
  roomId: Schema.String,
  senderId: Schema.String,
  receivedAt: Schema.Number,
  encrypted: Schema.Boolean,
  /** Automatic replay attempts by this daemon since it started. */
  attempts: Schema.Int,
  nextAttemptAt: Schema.optional(Schema.Number),
  lastError: Schema.optional(Schema.String),
  textBytes: Schema.Int
})
export type DlqSummary = typeof DlqSummary.Type

export const DlqDetail = Schema.Struct({
  ...DlqSummary.fields,
  /** The message body: only when asked for with reveal. */
  text: Schema.optional(Schema.String)
})
export type DlqDetail = typeof DlqDetail.Type

export const DlqReplayReport = Schema.Struct({
  replayed: Schema.Int,
  failed: Schema.Int,
  /** Sender no longer on the allowlist: removed without an answer (audited). */
  dropped: Schema.Int,
  quarantined: Schema.Int,
  /** Not due yet (automatic replay only). */
  deferred: Schema.Int,
  remaining: Schema.Int
})
export type DlqReplayReport = typeof DlqReplayReport.Type

/** Per-record automatic retry delay: 5 s doubling to 1 h. */
export const replayBackoffMs = (attempts: number): number => Math.min(5_000 * 2 ** Math.max(0, attempts - 1), 3_600_000)
