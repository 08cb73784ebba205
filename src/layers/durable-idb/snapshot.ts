// Object-store snapshots (issue 19): one blob per object store holding its keys and index entries in
// tree order, written at a clean close and read by the next open instead of one `ixs` row per record
// (no per-row unseal, decode or sort). The blob is sealed (or checksummed) by sqliteFile.ts and dropped
// by triggers in the transaction of any later write to the store, so a snapshot that opens describes
// the rows SQLite holds; the open still checks it (format, the store's shape, the record count, the
// key order) and reads `ixs` when anything does not match.
//
//   plain: serialize([1, shape, keys, indexes])
//     shape    shapeOf(store): key path, key generator kind, index list (name, key path, unique, multiEntry)
//     keys     the primary keys in key order
//     indexes  per index of the list, [index keys in the index's order, Uint32Array of the positions in
//              `keys` of each entry's primary key] (a multiEntry record has one entry per key)
import { deserialize, serialize } from "./codec.js"
import type { RawObjectStore, RawRecord } from "./internals.js"
import { LazyRecord, type StoreRows } from "./lazyRecords.js"
import type { StoreSnapshot } from "./sqliteFile.js"
import { checkEmptyTree, compareKeys, interner, inTreeOrder, setTree, treeRecords } from "./trees.js"

const FORMAT = 1

/** What a snapshot must have been taken of: the store's key path, key generator kind and index list. */
export const shapeOf = (store: RawObjectStore): string =>
  JSON.stringify([
    store.keyPath,
    store.autoIncrement,
    Array.from(store.rawIndexes.values(), (i) => [i.name, i.keyPath, i.unique, i.multiEntry])
  ])

/** The position of `key` in the sorted `keys`, or -1. */
const positionOf = (keys: ReadonlyArray<unknown>, key: unknown): number => {
  let lo = 0
  let hi = keys.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const c = compareKeys(keys[mid], key)
    if (c === 0) return mid
    if (c < 0) lo = mid + 1
    else hi = mid - 1
  }
  return -1
}

/**
 * The snapshot plaintext of a store as its trees hold it, or undefined when a record is not a committed
 * one (not a LazyRecord: written by a transaction whose commit has not settled) or an index entry names
 * no record. The caller makes sure no transaction of the database is running.
 */
export const snapshotOf = (store: RawObjectStore): Buffer | undefined => {
  const keys: Array<unknown> = []
  // Strings (and the very key objects the index entries share) are found at once; other keys by search.
  const known = new Map<unknown, number>()
  for (const record of treeRecords(store.records.records) ?? store.records.values()) {
    if (!(record instanceof LazyRecord)) return undefined
    known.set(record.key, keys.length)
    keys.push(record.key)
  }
  const indexes: Array<readonly [Array<unknown>, Uint32Array]> = []
  for (const index of store.rawIndexes.values()) {
    const indexKeys: Array<unknown> = []
    const refs: Array<number> = []
    for (const entry of treeRecords(index.records.records) ?? index.records.values()) {
      const at = known.get(entry.value) ?? positionOf(keys, entry.value)
      if (at < 0) return undefined
      indexKeys.push(entry.key)
      refs.push(at)
    }
    indexes.push([indexKeys, Uint32Array.from(refs)])
  }
  return serialize([FORMAT, shapeOf(store), keys, indexes])
}

/** The index entries of a snapshot's index, or undefined when it is malformed. */
const entriesOf = (
  raw: unknown,
  records: ReadonlyArray<LazyRecord>,
  intern: (key: unknown) => unknown
): Array<RawRecord> | undefined => {
  if (!Array.isArray(raw) || raw.length !== 2) return undefined
  const [indexKeys, refs] = raw as [unknown, unknown]
  if (!Array.isArray(indexKeys) || !(refs instanceof Uint32Array) || refs.length !== indexKeys.length) return undefined
  const entries: Array<RawRecord> = new Array(indexKeys.length)
  for (let j = 0; j < indexKeys.length; j++) {
    const record = records[refs[j]!]
    if (record === undefined) return undefined
    entries[j] = { key: intern(indexKeys[j]), value: record.key }
  }
  return entries
}

/**
 * Fills a store's (empty) trees from its snapshot; false, with the trees left empty, when the snapshot
 * does not match the store (another shape or record count, malformed, out of order).
 */
export const loadSnapshot = (store: RawObjectStore, rows: StoreRows, snapshot: StoreSnapshot): boolean => {
  try {
    const parsed = deserialize(snapshot.plain)
    if (!Array.isArray(parsed) || parsed.length !== 4 || parsed[0] !== FORMAT) return false
    const [, shape, keys, indexData] = parsed as [unknown, unknown, unknown, unknown]
    const indexes = Array.from(store.rawIndexes.values())
    if (shape !== shapeOf(store) || !Array.isArray(keys) || keys.length !== snapshot.count) return false
    if (!Array.isArray(indexData) || indexData.length !== indexes.length) return false
    const records = keys.map((key) => new LazyRecord(key, rows))
    if (!inTreeOrder(records, true)) return false
    const intern = interner()
    const filled: Array<Array<RawRecord>> = []
    for (let i = 0; i < indexes.length; i++) {
      const entries = entriesOf(indexData[i], records, intern)
      if (entries === undefined || !inTreeOrder(entries, indexes[i]!.unique)) return false
      filled.push(entries)
    }
    checkEmptyTree(store.records.records)
    for (const index of indexes) checkEmptyTree(index.records.records)
    setTree(store.records.records, records)
    indexes.forEach((index, i) => setTree(index.records.records, filled[i]!))
    return true
  } catch {
    return false
  }
}
