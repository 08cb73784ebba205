// The store cipher record: a random 32-byte data key, kept on disk only wrapped (AES-256-GCM) under a
// key-encryption key derived from the store passphrase.
//
// KDF choice: Argon2id (RFC 9106, built into Node 24's node:crypto) at 19 MiB / 2 passes / 1 lane, the
// OWASP minimum profile (~100 ms here). The passphrase is usually the 64-hex HKDF output of the
// reference's derive mode (high entropy, where any KDF would do), but `MATRIX_STORE_PASSPHRASE` may be
// typed by a person, and the wrapped key sits next to the data: a memory-hard KDF makes offline guessing
// expensive. The parameters travel in the record, so they can be raised later by a re-wrap alone.
import * as crypto from "node:crypto"
import { promisify } from "node:util"

export interface KdfParams {
  readonly alg: "argon2id"
  /** KiB */
  readonly memory: number
  readonly passes: number
  readonly parallelism: number
  readonly salt: string
}

export interface CipherRecord {
  readonly v: 1
  readonly kdf: KdfParams
  readonly iv: string
  readonly tag: string
  readonly wrapped: string
}

export const DEFAULT_KDF = { alg: "argon2id", memory: 19_456, passes: 2, parallelism: 1 } as const

const argon2 = promisify(crypto.argon2)

// Derivations are cached per (passphrase, salt, params) inside the process: a restart of the store in
// the same process (tests, maintenance programs that reopen) does not pay the KDF twice.
const kekCache = new Map<string, Buffer>()

const deriveKek = async (passphrase: string, kdf: KdfParams): Promise<Buffer> => {
  const cacheKey = crypto
    .createHash("sha256")
    .update(JSON.stringify([kdf.alg, kdf.memory, kdf.passes, kdf.parallelism, kdf.salt]))
    .update("\0")
    .update(passphrase, "utf8")
    .digest("hex")
  const cached = kekCache.get(cacheKey)
  if (cached !== undefined) return cached
  const kek = await argon2(kdf.alg, {
    message: Buffer.from(passphrase, "utf8"),
    nonce: Buffer.from(kdf.salt, "base64"),
    parallelism: kdf.parallelism,
    tagLength: 32,
    memory: kdf.memory,
    passes: kdf.passes
  })
  kekCache.set(cacheKey, kek)
  return kek
}

/** The record's associated data names its role, so the crypto file's record cannot stand in for the state file's. */
const aadFor = (role: string) => Buffer.from(`cara-store-cipher-v1:${role}`, "utf8")

export const newDataKey = (): Buffer => crypto.randomBytes(32)

export const wrapDataKey = async (dataKey: Uint8Array, passphrase: string, role: string): Promise<CipherRecord> => {
  const kdf: KdfParams = { ...DEFAULT_KDF, salt: crypto.randomBytes(16).toString("base64") }
  const kek = await deriveKek(passphrase, kdf)
  const iv = crypto.randomBytes(12)
  const c = crypto.createCipheriv("aes-256-gcm", kek, iv)
  c.setAAD(aadFor(role))
  const wrapped = Buffer.concat([c.update(dataKey), c.final()])
  return {
    v: 1,
    kdf,
    iv: iv.toString("base64"),
    tag: c.getAuthTag().toString("base64"),
    wrapped: wrapped.toString("base64")
  }
}

/** The data key, or `undefined` when the passphrase does not open the record (GCM tag mismatch). */
export const unwrapDataKey = async (
  record: CipherRecord,
  passphrase: string,
  role: string
): Promise<Buffer | undefined> => {
  const kek = await deriveKek(passphrase, record.kdf)
  const d = crypto.createDecipheriv("aes-256-gcm", kek, Buffer.from(record.iv, "base64"))
  d.setAAD(aadFor(role))
  d.setAuthTag(Buffer.from(record.tag, "base64"))
  try {
    const key = Buffer.concat([d.update(Buffer.from(record.wrapped, "base64")), d.final()])
    return key.length === 32 ? key : undefined
  } catch {
    return undefined
  }
}

export const encodeCipherRecord = (record: CipherRecord): Buffer => Buffer.from(JSON.stringify(record), "utf8")

export const decodeCipherRecord = (bytes: Uint8Array): CipherRecord | undefined => {
  try {
    const r = JSON.parse(Buffer.from(bytes).toString("utf8")) as Partial<CipherRecord>
    const k = r.kdf
    if (
      r.v !== 1 || k === undefined || k.alg !== "argon2id" || typeof k.salt !== "string" ||
      typeof k.memory !== "number" || typeof k.passes !== "number" || typeof k.parallelism !== "number" ||
      typeof r.iv !== "string" || typeof r.tag !== "string" || typeof r.wrapped !== "string"
    ) return undefined
    return r as CipherRecord
  } catch {
    return undefined
  }
}
