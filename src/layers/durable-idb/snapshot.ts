// Object-store snapshots (issue 19): one blob per object store holding its keys and index entries in
// tree order, written at a clean close and read by the next open instead of one `ixs` row per record
// (no per-row unseal, decode or sort). The blob is sealed (or checksummed) by sqliteFile.ts and kept
// across later writes: triggers note each record written since in the write's own transaction (the
// delta), and the open removes those records as the snapshot had them and adds them as their `ixs` rows
// are now, so snapshot plus delta describe the rows SQLite holds; the open still checks the result
// (format, the store's shape, the record count, the key order) and reads `ixs` when anything does not match.
//
//   plain: serialize([1, shape, keys, indexes])
//     shape    shapeOf(store): key path, key generator kind, index list (name, key path, unique, multiEntry)
//     keys     the primary keys in key order
//     indexes  per index of the list, [index keys in the index's order, Uint32Array of the positions in
//              `keys` of each entry's primary key] (a multiEntry record has one entry per key)
import { deserialize, serialize } from "./codec.js"
import type { RawObjectStore, RawRecord } from "./internals.js"
import { LazyRecord, type StoreRows } from "./lazyRecords.js"
import type { DeltaEntry, StoreSnapshot } from "./sqliteFile.js"
import {
  checkEmptyTree,
  compareKeys,
  interner,
  inTreeOrder,
  pushEntries,
  setTree,
  treeOrder,
  treeRecords
} from "./trees.js"

const FORMAT = 1

/** What a snapshot must have been taken of: the store's key path, key generator kind and index list. */
export const shapeOf = (store: RawObjectStore): string =>
  JSON.stringify([
    store.keyPath,
    store.autoIncrement,
    Array.from(store.rawIndexes.values(), (i) => [i.name, i.keyPath, i.unique, i.multiEntry])
  ])

// The bytes serialize() ends [FORMAT, shape, 0, 0] with: two small integers, then the end of a dense
// array of 4 (its tag, no properties, the length).
const TAIL = Buffer.from([0x49, 0x00, 0x49, 0x00, 0x24, 0x00, 0x04])

/**
 * The bytes every snapshot plaintext of a store of this shape starts with (format and shape, up to the
 * keys), or undefined when the serializer does not lay out [FORMAT, shape, 0, 0] as expected (then no
 * old snapshot is ever taken for exact).
 */
export const shapePrefixOf = (store: RawObjectStore): Buffer | undefined => {
  const probe = serialize([FORMAT, shapeOf(store), 0, 0])
  if (probe.length <= TAIL.length || !probe.subarray(probe.length - TAIL.length).equals(TAIL)) return undefined
  return probe.subarray(0, probe.length - TAIL.length)
}

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

/**
 * The snapshot's keys with the delta applied: which of them are gone (`removed`, by position; a record
 * written since is removed and added back with its index keys now) and the records to add (`added`, in
 * key order). Undefined when the delta does not fit the snapshot (a record it had is not there, two rows
 * for one key) or the result does not have `count` records.
 */
const applyDelta = (keys: ReadonlyArray<unknown>, delta: ReadonlyArray<DeltaEntry>, count: number) => {
  const removed = new Uint8Array(keys.length)
  let removedCount = 0
  const remove = (key: unknown, must: boolean): boolean => {
    const at = positionOf(keys, key)
    if (at < 0) return !must
    if (removed[at] === 0) removedCount++
    removed[at] = 1
    return true
  }
  const added: Array<readonly [unknown, ReadonlyArray<unknown>]> = []
  for (const d of delta) {
    // An `ixs` row at the snapshot names a record the snapshot holds.
    if (d.was !== undefined && !remove(d.was, true)) return undefined
    if (d.now === undefined) continue
    if (d.was !== undefined && compareKeys(d.was, d.now[0]) !== 0) return undefined
    remove(d.now[0], false)
    added.push(d.now)
  }
  added.sort((a, b) => compareKeys(a[0], b[0]))
  for (let i = 1; i < added.length; i++) if (compareKeys(added[i - 1]![0], added[i]![0]) >= 0) return undefined
  if (keys.length - removedCount + added.length !== count) return undefined
  return { removed, added }
}

/** Two lists, each in `order`, as one list in `order` (ties: `a` first; the caller checks strictness). */
const merge = <T>(a: ReadonlyArray<T>, b: ReadonlyArray<T>, order: (x: T, y: T) => number): Array<T> => {
  if (b.length === 0) return a as Array<T>
  const out: Array<T> = new Array(a.length + b.length)
  let i = 0
  let j = 0
  let k = 0
  while (i < a.length && j < b.length) out[k++] = order(a[i]!, b[j]!) <= 0 ? a[i++]! : b[j++]!
  while (i < a.length) out[k++] = a[i++]!
  while (j < b.length) out[k++] = b[j++]!
  return out
}

/** The records of `kept` that are there, in one array sized once (`kept` itself when none was removed). */
const present = (kept: Array<LazyRecord | undefined>): Array<LazyRecord> => {
  let n = 0
  for (const r of kept) if (r !== undefined) n++
  if (n === kept.length) return kept as Array<LazyRecord>
  const out: Array<LazyRecord> = new Array(n)
  let i = 0
  for (const r of kept) if (r !== undefined) out[i++] = r
  return out
}

/**
 * The entries of a snapshot's index without those of removed records, merged with those of the added
 * ones (`addedRecords[i]`, index keys `added[i][1][index]`); undefined when the snapshot's part is malformed.
 */
const entriesOf = (
  raw: unknown,
  kept: ReadonlyArray<LazyRecord | undefined>,
  index: { readonly at: number; readonly unique: boolean; readonly multiEntry: boolean },
  added: ReadonlyArray<readonly [LazyRecord, ReadonlyArray<unknown>]>,
  intern: (key: unknown) => unknown
): Array<RawRecord> | undefined => {
  if (!Array.isArray(raw) || raw.length !== 2) return undefined
  const [indexKeys, refs] = raw as [unknown, unknown]
  if (!Array.isArray(indexKeys) || !(refs instanceof Uint32Array) || refs.length !== indexKeys.length) return undefined
  // Sized once (the common case removes nothing): fewer temporary arrays while a large store loads.
  const entries: Array<RawRecord> = new Array(indexKeys.length)
  let n = 0
  for (let j = 0; j < indexKeys.length; j++) {
    const ref = refs[j]!
    if (ref >= kept.length) return undefined
    const record = kept[ref]
    if (record !== undefined) entries[n++] = { key: intern(indexKeys[j]), value: record.key }
  }
  entries.length = n
  const more: Array<RawRecord> = []
  for (const [record, keys] of added) pushEntries(more, keys[index.at], index.multiEntry, record.key, intern)
  const order = treeOrder(index.unique)
  return merge(entries, more.sort(order), order)
}

/**
 * Fills a store's (empty) trees from its snapshot and delta; false, with the trees left empty, when they
 * do not match the store (another shape or record count, malformed, out of order, a delta that does not fit).
 */
export const loadSnapshot = (store: RawObjectStore, rows: StoreRows, snapshot: StoreSnapshot): boolean => {
  try {
    const parsed = deserialize(snapshot.plain)
    if (!Array.isArray(parsed) || parsed.length !== 4 || parsed[0] !== FORMAT) return false
    const [, shape, keys, indexData] = parsed as [unknown, unknown, unknown, unknown]
    const indexes = Array.from(store.rawIndexes.values())
    if (shape !== shapeOf(store) || !Array.isArray(keys)) return false
    if (!Array.isArray(indexData) || indexData.length !== indexes.length) return false
    const applied = applyDelta(keys, snapshot.delta, snapshot.count)
    if (applied === undefined) return false
    const kept = keys.map((key, i) => applied.removed[i] === 0 ? new LazyRecord(key, rows) : undefined)
    const added = applied.added.map(([key, ixs]) => [new LazyRecord(key, rows), ixs] as const)
    const byKey = treeOrder(true)
    const records = merge(present(kept), added.map(([r]) => r), byKey)
    if (!inTreeOrder(records, true)) return false
    const intern = interner()
    const filled: Array<Array<RawRecord>> = []
    for (let i = 0; i < indexes.length; i++) {
      const index = { at: i, unique: indexes[i]!.unique, multiEntry: indexes[i]!.multiEntry }
      const entries = entriesOf(indexData[i], kept, index, added, intern)
      if (entries === undefined || !inTreeOrder(entries, index.unique)) return false
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
