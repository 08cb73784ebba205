// Row codec of the durable IndexedDB: how keys, values and schemas become SQLite blobs.
//
// Values and keys are serialized with node:v8 (the structured-clone wire format, so every value
// IndexedDB accepts round-trips: typed arrays, ArrayBuffer, Date, Map, nested objects). With a data key,
// every blob is sealed with AES-256-GCM and every row id is an HMAC, so database names, store names
// and IndexedDB keys (the Rust store keeps tracked user ids as plain keys) never reach the disk in clear.
import * as crypto from "node:crypto"
import * as v8 from "node:v8"

/** Subkeys of one store's data key; the data key itself is also the Rust store's `storageKey`. */
export interface RowKeys {
  readonly seal: Buffer | undefined
  readonly ids: Buffer | undefined
}

const ROW_SEAL_INFO = "cara-durable-idb-rows-v1"
const ROW_ID_INFO = "cara-durable-idb-ids-v1"

/** Separate subkeys: the data key is also given to the Rust store, so we never use it directly. */
export const deriveRowKeys = (dataKey: Uint8Array | undefined): RowKeys => {
  if (dataKey === undefined) return { seal: undefined, ids: undefined }
  const sub = (info: string) => Buffer.from(crypto.hkdfSync("sha256", dataKey, Buffer.alloc(0), info, 32))
  return { seal: sub(ROW_SEAL_INFO), ids: sub(ROW_ID_INFO) }
}

const u32 = (n: number) => {
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE(n, 0)
  return b
}
const f64 = (n: number) => {
  const b = Buffer.allocUnsafe(8)
  b.writeDoubleBE(n, 0)
  return b
}

/**
 * A canonical byte form of an IndexedDB key (number, Date, string, binary, array of those). Two keys
 * that IndexedDB considers equal encode to the same bytes, so a row is updated in place.
 */
export const encodeKey = (key: unknown): Buffer => {
  const parts: Array<Buffer> = []
  const walk = (k: unknown): void => {
    if (typeof k === "number") {
      parts.push(Buffer.from("n"), f64(k === 0 ? 0 : k)) // -0 and 0 are the same key
    } else if (typeof k === "string") {
      const s = Buffer.from(k, "utf8")
      parts.push(Buffer.from("s"), u32(s.length), s)
    } else if (k instanceof Date) {
      parts.push(Buffer.from("d"), f64(k.getTime()))
    } else if (k instanceof ArrayBuffer) {
      parts.push(Buffer.from("b"), u32(k.byteLength), Buffer.from(k))
    } else if (ArrayBuffer.isView(k)) {
      parts.push(Buffer.from("b"), u32(k.byteLength), Buffer.from(k.buffer, k.byteOffset, k.byteLength))
    } else if (Array.isArray(k)) {
      parts.push(Buffer.from("a"), u32(k.length))
      for (const item of k) walk(item)
    } else {
      throw new TypeError(`durable-idb: unsupported IndexedDB key type ${typeof k}`)
    }
  }
  walk(key)
  return Buffer.concat(parts)
}

const lengthPrefixed = (chunks: ReadonlyArray<Buffer | string>): Buffer =>
  Buffer.concat(
    chunks.flatMap((c) => {
      const b = typeof c === "string" ? Buffer.from(c, "utf8") : c
      return [u32(b.length), b]
    })
  )

// A KeyObject per subkey: handing createCipheriv/createHmac a Buffer imports the key again on every
// call, which was a third of the CPU of opening a 50,000-session store.
const keyObjects = new WeakMap<Buffer, crypto.KeyObject>()
const keyObject = (key: Buffer): crypto.KeyObject => {
  let k = keyObjects.get(key)
  if (k === undefined) keyObjects.set(key, k = crypto.createSecretKey(key))
  return k
}

/** A 16-byte row id: keyed HMAC with a data key, a plain hash without one. */
const rowId = (keys: RowKeys, chunks: ReadonlyArray<Buffer | string>): Buffer => {
  const input = lengthPrefixed(chunks)
  const digest = keys.ids !== undefined
    ? crypto.createHmac("sha256", keyObject(keys.ids)).update(input).digest()
    : crypto.createHash("sha256").update(input).digest()
  return digest.subarray(0, 16)
}

export const databaseId = (keys: RowKeys, db: string) => rowId(keys, ["db", db])
export const storeId = (keys: RowKeys, db: string, store: string) => rowId(keys, ["store", db, store])
export const recordId = (keys: RowKeys, db: string, store: string, key: unknown) =>
  rowId(keys, ["record", db, store, encodeKey(key)])

const IV_BYTES = 12
const TAG_BYTES = 16

/** AES-256-GCM with a random IV; the row id is the associated data, so rows cannot be swapped. */
export const sealBlob = (key: Buffer | undefined, aad: Buffer, plain: Buffer): Buffer => {
  if (key === undefined) return plain
  const iv = crypto.randomBytes(IV_BYTES)
  const c = crypto.createCipheriv("aes-256-gcm", keyObject(key), iv)
  c.setAAD(aad)
  const body = Buffer.concat([c.update(plain), c.final()])
  return Buffer.concat([iv, c.getAuthTag(), body])
}

/** The length of `sealBlob`'s output for a plaintext of `plainLength` bytes. */
export const sealedLength = (key: Buffer | undefined, plainLength: number): number =>
  key === undefined ? plainLength : IV_BYTES + TAG_BYTES + plainLength

/** Throws on a wrong key or a tampered row. */
export const openBlob = (key: Buffer | undefined, aad: Buffer, sealed: Uint8Array): Buffer => {
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength)
  if (key === undefined) return buf
  if (buf.length < IV_BYTES + TAG_BYTES) throw new Error("sealed blob too short")
  const d = crypto.createDecipheriv("aes-256-gcm", keyObject(key), buf.subarray(0, IV_BYTES))
  d.setAAD(aad)
  d.setAuthTag(buf.subarray(IV_BYTES, IV_BYTES + TAG_BYTES))
  const plain = d.update(buf.subarray(IV_BYTES + TAG_BYTES))
  // GCM is a stream mode: update() returned all of it, final() only checks the tag (and throws on a mismatch).
  const rest = d.final()
  return rest.length === 0 ? plain : Buffer.concat([plain, rest])
}

export const serialize = (value: unknown): Buffer => v8.serialize(value)
export const deserialize = (buf: Buffer): unknown => v8.deserialize(buf)

/**
 * A versioned blob bound to a row or store id and a purpose `tag`:
 *   [1 byte version][body]
 *   body, with a data key: sealBlob(plain), associated data = id + tag (a blob of another row or purpose
 *   cannot stand in)
 *   body, without one: plain + the first `sumBytes` of SHA-256(id, tag, plain) (catches damage and truncation)
 * `open` gives undefined for another version, a truncated or a damaged blob.
 */
const boundBlob = (tag: string, version: number, sumBytes: number) => {
  const aad = (id: Buffer) => Buffer.concat([id, Buffer.from(tag)])
  const sum = (id: Buffer, plain: Buffer) =>
    crypto.createHash("sha256").update(aad(id)).update(plain).digest().subarray(0, sumBytes)
  const seal = (key: Buffer | undefined, id: Buffer, plain: Buffer): Buffer => {
    const body = key === undefined ? Buffer.concat([plain, sum(id, plain)]) : sealBlob(key, aad(id), plain)
    return Buffer.concat([Buffer.of(version), body])
  }
  const open = (key: Buffer | undefined, id: Buffer, blob: Uint8Array): Buffer | undefined => {
    const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength)
    if (buf.length < 1 || buf[0] !== version) return undefined
    const body = buf.subarray(1)
    if (key !== undefined) {
      try {
        return openBlob(key, aad(id), body)
      } catch {
        return undefined
      }
    }
    if (body.length < sumBytes) return undefined
    const plain = body.subarray(0, body.length - sumBytes)
    return sum(id, plain).equals(body.subarray(body.length - sumBytes)) ? plain : undefined
  }
  return { seal, open }
}

// Index-key blobs (the `ixs` table, sqliteFile.ts): a record's primary key and the index keys of its value,
// stored beside the value so an open rebuilds keys and index entries without unsealing or decoding a value.
// Bound to the record's row id, tag "ix", version 1, an 8-byte sum without a data key;
// plain: serialize([signature of the store's index list, primary key, index keys in that list's order]).
const indexBlob = boundBlob("ix", 1, 8)
export const sealIndexBlob = indexBlob.seal
export const openIndexBlob = indexBlob.open

// Snapshot blobs (the `snapshots` table, sqliteFile.ts): one object store's sorted keys and index entries.
// Bound to the store's id, tag "snap", the whole 32-byte sum without a data key. Version 2: version 1 was
// the `snaps` table's (dropped on any write); a version-2 blob is kept across writes beside its delta, and
// must never be taken for a version-1 one.
const snapshotBlob = boundBlob("snap", 2, 32)
export const sealSnapshotBlob = snapshotBlob.seal
export const openSnapshotBlob = snapshotBlob.open
/** An older cara's version-1 snapshot blob (the `snaps` table; the same plaintext). */
export const openOlderSnapshotBlob = boundBlob("snap", 1, 32).open

/** A short name of a store's index list (names, key paths, multiEntry): index keys stored under another are stale. */
export const indexSignature = (
  indexes: ReadonlyArray<{ readonly name: string; readonly keyPath: unknown; readonly multiEntry: boolean }>
): string =>
  crypto.createHash("sha256").update(JSON.stringify(indexes.map((i) => [i.name, i.keyPath, i.multiEntry])))
    .digest("base64").slice(0, 12)
