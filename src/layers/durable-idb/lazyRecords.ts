// Records whose values stay in SQLite until read.
//
// fake-indexeddb keeps each object store's records as `{ key, value }` objects in a search tree and
// reads `record.value` wherever it needs a value (get, getAll, cursors, index upkeep on overwrite and
// delete). Once a transaction is in SQLite, its records are swapped for LazyRecords: the key stays in
// the tree (key order, ranges, counts and indexes keep working from memory), and `value` is a getter
// that reads the committed row back, through a small LRU of decoded values. Records an open
// transaction wrote are ordinary objects until its commit, so an abort rolls back in memory exactly as
// before, and a LazyRecord always stands for the row SQLite holds for its key.
import type { SqliteFile } from "./sqliteFile.js"

/** Where one object store's rows live. `store` is the name the rows are filed under (a rename moves them at commit). */
export interface StoreRows {
  readonly file: SqliteFile
  readonly db: string
  store: string
  readonly cache: ValueCache
}

const NOT_CACHED: unique symbol = Symbol("durable-idb.not-cached")

export class LazyRecord {
  /** Set only by ValueCache (which evicts it). */
  cached: unknown = NOT_CACHED
  /** Only while an open builds the index trees (durableIdb.ts fillStore): the record's index keys. */
  indexKeys: ReadonlyArray<unknown> | undefined = undefined

  constructor(readonly key: unknown, readonly rows: StoreRows) {}

  get value(): unknown {
    const cache = this.rows.cache
    if (this.cached !== NOT_CACHED) {
      cache.hit(this)
      return this.cached
    }
    const got = this.rows.file.readRecord(this.rows.db, this.rows.store, this.key)
    // Cannot happen while the invariant holds (a LazyRecord's key has a row); say so loudly if it does.
    if (got === undefined) throw new Error(`durable-idb: a committed record of ${this.rows.store} has no row`)
    cache.add(this, got.value, got.bytes)
    return got.value
  }
}

export interface ValueCacheStats {
  readonly entries: number
  readonly bytes: number
  readonly hits: number
  readonly reads: number
}

/**
 * A least-recently-used set of decoded values, bounded by entries and by sealed bytes (a proxy for
 * the decoded size). fake-indexeddb clones every value it hands out, so a cached value is never mutated.
 */
export class ValueCache {
  private readonly lru = new Map<LazyRecord, number>()
  private bytes = 0
  private hits = 0
  private reads = 0

  constructor(readonly maxBytes: number, readonly maxEntries: number) {}

  hit(record: LazyRecord): void {
    const bytes = this.lru.get(record)
    if (bytes === undefined) return
    this.hits++
    this.lru.delete(record)
    this.lru.set(record, bytes)
  }

  add(record: LazyRecord, value: unknown, bytes: number): void {
    this.reads++
    if (bytes > this.maxBytes || this.maxEntries === 0) return
    record.cached = value
    this.lru.set(record, bytes)
    this.bytes += bytes
    while (this.bytes > this.maxBytes || this.lru.size > this.maxEntries) {
      const [oldest, size] = this.lru.entries().next().value as [LazyRecord, number]
      this.lru.delete(oldest)
      this.bytes -= size
      oldest.cached = NOT_CACHED
    }
  }

  stats(): ValueCacheStats {
    return { entries: this.lru.size, bytes: this.bytes, hits: this.hits, reads: this.reads }
  }
}

/** The parts of fake-indexeddb's RecordStore used here. */
export interface RecordTree {
  get(key: unknown): { readonly key: unknown; readonly value: unknown } | undefined
  put(record: object, noOverwrite?: boolean): unknown
  values(): Iterable<{ readonly key: unknown; readonly value: unknown }>
}

/**
 * After a commit: replaces the in-memory records under `keys` (all records when undefined) by
 * LazyRecords, dropping their values from memory. Same key, same tree node: indexes are untouched.
 */
export const settle = (tree: RecordTree, rows: StoreRows, keys: Iterable<unknown> | undefined): void => {
  const plain: Array<unknown> = []
  if (keys === undefined) {
    for (const r of tree.values()) if (!(r instanceof LazyRecord)) plain.push(r.key)
  } else {
    for (const k of keys) {
      const r = tree.get(k)
      if (r !== undefined && !(r instanceof LazyRecord)) plain.push(r.key)
    }
  }
  for (const key of plain) tree.put(new LazyRecord(key, rows), false)
}
