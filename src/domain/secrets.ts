import { Data, Effect, Either, Option } from "effect"
import * as crypto from "node:crypto"

/**
 * `enc:v2` secrets at rest (reference §2.1–2.3), byte-compatible with the reference:
 *
 *   enc:v2:<B64(nonce 12)>:<B64(ciphertext||tag 16)>:<B64(salt 16)>
 *
 * standard base64 with padding, AES-256-GCM without AAD, key = Argon2id(password, salt, 64 MiB, t=3, p=1).
 * The functions that take a key are pure; key derivation is an Effect with a per-process cache.
 */

export const ENVELOPE_PREFIX = "enc:v2:"
export const NONCE_BYTES = 12
export const SALT_BYTES = 16
export const TAG_BYTES = 16
export const KEY_BYTES = 32

export interface Argon2Params {
  /** Memory cost in KiB. */
  readonly memory: number
  readonly passes: number
  readonly parallelism: number
}

/** The reference's parameters; every value on disk is sealed with these. */
export const ARGON2_PARAMS: Argon2Params = { memory: 65536, passes: 3, parallelism: 1 }

export interface Envelope {
  readonly nonce: Uint8Array
  /** AES-GCM ciphertext with the 16-byte tag appended. */
  readonly ciphertext: Uint8Array
  readonly salt: Uint8Array
}

export class EnvelopeFormatError extends Data.TaggedError("EnvelopeFormatError")<{ readonly reason: string }> {}
/** GCM authentication failed: wrong password or a corrupted value (indistinguishable by design). */
export class DecryptFailed extends Data.TaggedError("DecryptFailed")<{}> {}

// Strict standard base64 with padding: Buffer.from(…, "base64") silently accepts junk, the format does not.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

const decodeB64 = (s: string): Option.Option<Uint8Array> =>
  BASE64.test(s) ? Option.some(new Uint8Array(Buffer.from(s, "base64"))) : Option.none()

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64")

/** `Some(N)` when the value starts with `enc:v<N>:` (the downgrade guard's "looks encrypted"). */
export const envelopeVersion = (value: string): Option.Option<number> => {
  const m = /^enc:v(\d+):/.exec(value)
  return m === null ? Option.none() : Option.some(Number(m[1]))
}

export const looksEncrypted = (value: string): boolean => Option.isSome(envelopeVersion(value))

/** Parses a whole `enc:v2` envelope; anything else (other versions included) is a format error. */
export const parseEnvelope = (value: string): Either.Either<Envelope, EnvelopeFormatError> => {
  if (!value.startsWith(ENVELOPE_PREFIX)) {
    return Either.left(new EnvelopeFormatError({ reason: "does not start with enc:v2:" }))
  }
  const parts = value.slice(ENVELOPE_PREFIX.length).split(":")
  if (parts.length !== 3) {
    return Either.left(new EnvelopeFormatError({ reason: `expected 3 segments after enc:v2:, found ${parts.length}` }))
  }
  const [n, c, s] = parts.map(decodeB64) as [
    Option.Option<Uint8Array>,
    Option.Option<Uint8Array>,
    Option.Option<Uint8Array>
  ]
  if (Option.isNone(n) || Option.isNone(c) || Option.isNone(s)) {
    return Either.left(new EnvelopeFormatError({ reason: "a segment is not standard base64" }))
  }
  if (n.value.length !== NONCE_BYTES) {
    return Either.left(new EnvelopeFormatError({ reason: `nonce must be ${NONCE_BYTES} bytes, got ${n.value.length}` }))
  }
  if (s.value.length !== SALT_BYTES) {
    return Either.left(new EnvelopeFormatError({ reason: `salt must be ${SALT_BYTES} bytes, got ${s.value.length}` }))
  }
  if (c.value.length < TAG_BYTES) {
    return Either.left(new EnvelopeFormatError({ reason: "ciphertext is shorter than the GCM tag" }))
  }
  return Either.right({ nonce: n.value, ciphertext: c.value, salt: s.value })
}

export const isEnvelope = (value: string): boolean => Either.isRight(parseEnvelope(value))

export const formatEnvelope = (e: Envelope): string =>
  `${ENVELOPE_PREFIX}${b64(e.nonce)}:${b64(e.ciphertext)}:${b64(e.salt)}`

/** Seals with an already derived key and an explicit nonce (pure; the golden vector uses it). */
export const sealWithKey = (key: Uint8Array, plaintext: string, nonce: Uint8Array, salt: Uint8Array): string => {
  const cipher = crypto.createCipheriv("aes-256-gcm", key, nonce)
  const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final(), cipher.getAuthTag()])
  return formatEnvelope({ nonce, ciphertext: new Uint8Array(body), salt })
}

export const openWithKey = (key: Uint8Array, envelope: Envelope): Either.Either<string, DecryptFailed> => {
  try {
    const body = envelope.ciphertext
    const decipher = crypto.createDecipheriv("aes-256-gcm", key, envelope.nonce)
    decipher.setAuthTag(body.subarray(body.length - TAG_BYTES))
    const plain = Buffer.concat([decipher.update(body.subarray(0, body.length - TAG_BYTES)), decipher.final()])
    // The reference seals UTF-8 text; a value that does not decode as UTF-8 is corrupt, not a secret.
    return Either.right(new TextDecoder("utf-8", { fatal: true }).decode(plain))
  } catch {
    return Either.left(new DecryptFailed())
  }
}

// ---------------------------------------------------------------------------------------------------------
// Key derivation with a per-process cache

// Keyed by a digest of (params, salt, password) so the cache holds no second copy of the password.
const keyCache = new Map<string, Uint8Array>()
const KEY_CACHE_LIMIT = 64

const cacheKey = (password: string, salt: Uint8Array, p: Argon2Params) =>
  crypto
    .createHash("sha256")
    .update(`${p.memory}/${p.passes}/${p.parallelism}\0`)
    .update(salt)
    .update("\0")
    .update(password, "utf8")
    .digest("hex")

let derivations = 0
/** How many Argon2id derivations this process has run (tests check that the cache works). */
export const derivationCount = (): number => derivations

/** Argon2id(password, salt) → 32-byte key, cached per (password, salt, params) for the process lifetime. */
export const deriveKey = (
  password: string,
  salt: Uint8Array,
  params: Argon2Params = ARGON2_PARAMS
): Effect.Effect<Uint8Array> =>
  Effect.suspend(() => {
    const k = cacheKey(password, salt, params)
    const hit = keyCache.get(k)
    if (hit !== undefined) return Effect.succeed(hit)
    return Effect.async<Uint8Array>((resume) => {
      crypto.argon2(
        "argon2id",
        {
          message: Buffer.from(password, "utf8"),
          nonce: salt,
          memory: params.memory,
          passes: params.passes,
          parallelism: params.parallelism,
          tagLength: KEY_BYTES
        },
        (err, derived) => {
          // Argon2 only fails on invalid parameters, which are constants: a bug, not an operator error.
          if (err !== null) return resume(Effect.die(err))
          derivations++
          const key = new Uint8Array(derived)
          if (keyCache.size >= KEY_CACHE_LIMIT) {
            const oldest = keyCache.keys().next()
            if (oldest.done !== true) keyCache.delete(oldest.value)
          }
          keyCache.set(k, key)
          resume(Effect.succeed(key))
        }
      )
    })
  })

export const randomSalt = (): Uint8Array => new Uint8Array(crypto.randomBytes(SALT_BYTES))
export const randomNonce = (): Uint8Array => new Uint8Array(crypto.randomBytes(NONCE_BYTES))

/**
 * A sealer for one write operation: one fresh salt and one derived key, shared by every value sealed in
 * that write (each value gets its own nonce), as the reference does.
 */
export interface Sealer {
  readonly seal: (plaintext: string) => string
}

export const makeSealer = (
  password: string,
  params: Argon2Params = ARGON2_PARAMS,
  salt: Uint8Array = randomSalt()
): Effect.Effect<Sealer> =>
  Effect.map(deriveKey(password, salt, params), (key) => ({
    seal: (plaintext: string) => sealWithKey(key, plaintext, randomNonce(), salt)
  }))

export const seal = (password: string, plaintext: string, params: Argon2Params = ARGON2_PARAMS) =>
  Effect.map(makeSealer(password, params), (s) => s.seal(plaintext))

/** Opens an `enc:v2` value with a password (the key is re-derived from the envelope's own salt). */
export const open = (
  password: string,
  value: string,
  params: Argon2Params = ARGON2_PARAMS
): Effect.Effect<string, EnvelopeFormatError | DecryptFailed> =>
  Effect.gen(function*() {
    const envelope = yield* parseEnvelope(value)
    const key = yield* deriveKey(password, envelope.salt, params)
    return yield* openWithKey(key, envelope)
  })

// ---------------------------------------------------------------------------------------------------------
// Placeholders (reference §1.3): an exact `${UPPER_NAME}` is never sealed; a malformed one refuses the write.

const PLACEHOLDER = /^\$\{[A-Z_][A-Z0-9_]*\}$/

export const isExactPlaceholder = (value: string): boolean => PLACEHOLDER.test(value.trim())

/** True for values that look like a placeholder but are not a valid one (`${FOO`, `${matrix_password}`). */
export const isMalformedPlaceholder = (value: string): boolean => {
  const v = value.trim()
  if (!v.startsWith("${")) return false
  if (!v.includes("}")) return true
  const m = /^\$\{([^}]*)\}$/.exec(v)
  return m !== null && !PLACEHOLDER.test(v)
}

// ---------------------------------------------------------------------------------------------------------
// Downgrade guard (reference §2.6), on whole parsed documents

const encryptedLeaves = (v: unknown, path: ReadonlyArray<string> = []): Array<[ReadonlyArray<string>, string]> => {
  if (typeof v === "string") return looksEncrypted(v) ? [[path, v]] : []
  if (v === null || typeof v !== "object") return []
  return Object.entries(v).flatMap(([k, e]) => encryptedLeaves(e, [...path, k]))
}

const getIn = (v: unknown, path: ReadonlyArray<string>): unknown =>
  path.reduce<unknown>(
    (acc, k) => (acc !== null && typeof acc === "object" && Object.hasOwn(acc, k)
      ? (acc as Record<string, unknown>)[k]
      : undefined),
    v
  )

/**
 * Dot paths where a write would weaken a sealed value: an `enc:v*` value replaced by anything that is not
 * sealed (a `${VAR}` placeholder is fine), or (without the config password) changed at all. Deleting a
 * sealed value is allowed: that is how `matrix.password` is removed.
 */
export const downgradeViolations = (before: unknown, after: unknown, passwordSet: boolean): ReadonlyArray<string> =>
  encryptedLeaves(before).flatMap(([path, old]) => {
    const now = getIn(after, path)
    if (now === undefined) return []
    const stillSealed = typeof now === "string" && looksEncrypted(now)
    // A `${VAR}` placeholder is a reference, not plaintext: with the password it may replace a sealed value.
    const reference = passwordSet && typeof now === "string" && isExactPlaceholder(now)
    if (!(stillSealed || reference) || (!passwordSet && now !== old)) return [path.join(".")]
    return []
  })
