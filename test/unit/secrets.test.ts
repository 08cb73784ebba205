import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit } from "effect"
import * as fc from "fast-check"
import * as crypto from "node:crypto"
import {
  ARGON2_PARAMS,
  type Argon2Params,
  derivationCount,
  deriveKey,
  envelopeVersion,
  formatEnvelope,
  isExactPlaceholder,
  isMalformedPlaceholder,
  looksEncrypted,
  makeSealer,
  open,
  openWithKey,
  parseEnvelope,
  seal,
  sealWithKey
} from "../../src/domain/secrets.js"

const sha256 = (s: string) => new Uint8Array(crypto.createHash("sha256").update(s).digest())

// Reference §2.3: the key is injected (no Argon2id), pinning the format and AES-GCM.
const GOLDEN = "enc:v2:HVld7esM3b11YwFS:/wAwmf1W35FauNExFxCqEMI+C6VcAxWkJ8TRWp69uF/85BSPBw==:WysQE5dy+IR3iQR5+ynVZQ=="
const goldenKey = sha256("carapace-secrets-golden-key")
const goldenSalt = sha256("carapace-secrets-golden-salt").subarray(0, 16)
const goldenNonce = sha256("carapace-secrets-golden-nonce").subarray(0, 12)

// Cheap parameters for properties over many inputs; the real ones are exercised separately below.
const FAST: Argon2Params = { memory: 64, passes: 1, parallelism: 1 }

describe("enc:v2 golden vector", () => {
  it("seals the reference plaintext to the reference envelope byte for byte", () => {
    expect(sealWithKey(goldenKey, "sk-live-golden-secret", goldenNonce, goldenSalt)).toBe(GOLDEN)
  })

  it("opens the reference envelope", () => {
    const env = Either.getOrThrow(parseEnvelope(GOLDEN))
    expect(Array.from(env.salt)).toEqual(Array.from(goldenSalt))
    expect(Array.from(env.nonce)).toEqual(Array.from(goldenNonce))
    expect(Either.getOrThrow(openWithKey(goldenKey, env))).toBe("sk-live-golden-secret")
    expect(formatEnvelope(env)).toBe(GOLDEN)
  })
})

describe("envelope parsing", () => {
  const bad: ReadonlyArray<[string, string]> = [
    ["enc:v2:HVld7esM3b11YwFS:/wAw", "segments"],
    [
      "enc:v2:HVld7esM3b11YwFS:/wAwmf1W35FauNExFxCqEMI+C6VcAxWkJ8TRWp69uF/85BSPBw==:WysQE5dy+IR3iQR5+ynVZQ==:x",
      "segments"
    ],
    ["enc:v2:AAAA:/wAwmf1W35FauNExFxCqEMI+C6VcAxWkJ8TRWp69uF/85BSPBw==:WysQE5dy+IR3iQR5+ynVZQ==", "nonce"],
    ["enc:v2:HVld7esM3b11YwFS:/wAwmf1W35FauNExFxCqEMI+C6VcAxWkJ8TRWp69uF/85BSPBw==:AAAA", "salt"],
    ["enc:v2:HVld7esM3b11YwFS:/wAw*f1W35FauNExFxCqEMI+C6VcAxWkJ8TRWp69uF/85BSPBw==:WysQE5dy+IR3iQR5+ynVZQ==", "base64"],
    // URL-safe alphabet is not the format.
    ["enc:v2:HVld7esM3b11YwFS:_wAwmf1W35FauNExFxCqEMI-C6VcAxWkJ8TRWp69uF_85BSPBw==:WysQE5dy-IR3iQR5-ynVZQ==", "base64"],
    ["enc:v2:HVld7esM3b11YwFS:AAAA:WysQE5dy+IR3iQR5+ynVZQ==", "tag"],
    ["enc:v1:abc", "enc:v2"]
  ]
  for (const [value, reason] of bad) {
    it(`rejects ${value.slice(0, 40)}… (${reason})`, () => {
      const r = parseEnvelope(value)
      expect(Either.isLeft(r)).toBe(true)
      if (Either.isLeft(r)) expect(r.left.reason).toContain(reason)
    })
  }

  it("classifies versions for the downgrade guard", () => {
    expect(envelopeVersion("enc:v1:zzz")).toEqual(expect.objectContaining({ value: 1 }))
    expect(envelopeVersion("enc:v3:")).toEqual(expect.objectContaining({ value: 3 }))
    expect(looksEncrypted("enc:v2:garbage")).toBe(true)
    expect(looksEncrypted("encv2:x")).toBe(false)
    expect(looksEncrypted("sk-plain")).toBe(false)
  })

  it("knows exact and malformed placeholders", () => {
    expect(isExactPlaceholder("${MATRIX_PASSWORD}")).toBe(true)
    expect(isExactPlaceholder("  ${A_1}  ")).toBe(true)
    expect(isExactPlaceholder("${lower}")).toBe(false)
    expect(isMalformedPlaceholder("${MATRIX_PASSWORD")).toBe(true)
    expect(isMalformedPlaceholder("${matrix_password}")).toBe(true)
    expect(isMalformedPlaceholder("${MATRIX_PASSWORD}")).toBe(false)
    expect(isMalformedPlaceholder("plain $ value")).toBe(false)
  })
})

describe("seal/open properties", () => {
  it.prop("round-trips any string under any key", [
    fc.string({ unit: "binary" }),
    fc.uint8Array({ minLength: 32, maxLength: 32 })
  ], ([text, key]) => {
    const salt = crypto.randomBytes(16)
    const nonce = crypto.randomBytes(12)
    const sealed = sealWithKey(key, text, nonce, salt)
    expect(sealed.startsWith("enc:v2:")).toBe(true)
    expect(Either.getOrThrow(openWithKey(key, Either.getOrThrow(parseEnvelope(sealed))))).toBe(text)
  })

  it.prop(
    "rejects any flipped byte of nonce, ciphertext, tag or salt",
    [fc.string({ minLength: 1 }), fc.nat(), fc.integer({ min: 1, max: 255 })],
    ([text, position, flip]) => {
      const key = sha256("k")
      const sealed = sealWithKey(key, text, crypto.randomBytes(12), crypto.randomBytes(16))
      const env = Either.getOrThrow(parseEnvelope(sealed))
      const segments = [env.nonce, env.ciphertext] as const
      const total = segments[0].length + segments[1].length
      const at = position % total
      const nonce = new Uint8Array(env.nonce)
      const ciphertext = new Uint8Array(env.ciphertext)
      if (at < nonce.length) nonce[at] = nonce[at]! ^ flip
      else ciphertext[at - nonce.length] = ciphertext[at - nonce.length]! ^ flip
      expect(Either.isLeft(openWithKey(key, { nonce, ciphertext, salt: env.salt }))).toBe(true)
    }
  )

  it.effect.prop(
    "password round-trip, and another password never opens it",
    [fc.string(), fc.string({ minLength: 1 }), fc.string({ minLength: 1 })],
    ([text, pw, other]) =>
      Effect.gen(function*() {
        const sealed = yield* seal(pw, text, FAST)
        expect(yield* open(pw, sealed, FAST)).toBe(text)
        if (other !== pw) {
          const exit = yield* Effect.exit(open(other, sealed, FAST))
          expect(Exit.isFailure(exit)).toBe(true)
        }
      }),
    { fastCheck: { numRuns: 40 } }
  )

  it.effect.prop(
    "a flipped salt derives another key and is rejected",
    [fc.string({ minLength: 1 }), fc.integer({ min: 0, max: 15 })],
    ([text, at]) =>
      Effect.gen(function*() {
        const sealed = yield* seal("pw", text, FAST)
        const env = Either.getOrThrow(parseEnvelope(sealed))
        const salt = new Uint8Array(env.salt)
        salt[at] = salt[at]! ^ 1
        const exit = yield* Effect.exit(open("pw", formatEnvelope({ ...env, salt }), FAST))
        expect(Exit.isFailure(exit)).toBe(true)
      }),
    { fastCheck: { numRuns: 20 } }
  )
})

describe("Argon2id with the reference parameters", () => {
  it("uses 64 MiB, t=3, p=1", () => {
    expect(ARGON2_PARAMS).toEqual({ memory: 65536, passes: 3, parallelism: 1 })
  })

  it.effect("derives a 32-byte key equal to node's argon2id with those parameters, and caches it", () =>
    Effect.gen(function*() {
      const salt = new Uint8Array(16).fill(7)
      const before = derivationCount()
      const key = yield* deriveKey("correct horse", salt)
      const again = yield* deriveKey("correct horse", salt)
      expect(derivationCount() - before).toBe(1)
      expect(again).toBe(key)
      const direct = crypto.argon2Sync("argon2id", {
        message: "correct horse",
        nonce: salt,
        memory: 65536,
        passes: 3,
        parallelism: 1,
        tagLength: 32
      })
      expect(Buffer.from(key).toString("hex")).toBe(direct.toString("hex"))
      // Another password with the same salt is a different cache entry.
      const other = yield* deriveKey("correct horse!", salt)
      expect(Buffer.from(other).equals(Buffer.from(key))).toBe(false)
    }))

  it.effect("one sealer shares its salt across values; opening them all derives once", () =>
    Effect.gen(function*() {
      const sealer = yield* makeSealer("pw-real")
      const a = sealer.seal("alpha")
      const b = sealer.seal("beta")
      const ea = Either.getOrThrow(parseEnvelope(a))
      const eb = Either.getOrThrow(parseEnvelope(b))
      expect(Buffer.from(ea.salt).equals(Buffer.from(eb.salt))).toBe(true)
      expect(Buffer.from(ea.nonce).equals(Buffer.from(eb.nonce))).toBe(false)
      const before = derivationCount()
      expect(yield* open("pw-real", a)).toBe("alpha")
      expect(yield* open("pw-real", b)).toBe("beta")
      expect(derivationCount() - before).toBe(0)
    }))
})
