// A durable IndexedDB: a private fake-indexeddb factory whose every committed transaction is written to
// SQLite (one SQLite transaction per IndexedDB transaction) before the transaction's `complete` event
// reaches the caller, and which is rebuilt from SQLite when opened. Only keys and index entries are
// held in memory; values are read from SQLite on demand (lazyRecords.ts).
import { indexSignature } from "./codec.js"
import {
  databasesOf,
  type IdbFactory,
  installHooks,
  makeOwnedFactory,
  type Persister,
  type RawDatabase,
  type RawObjectStore,
  type RawRecord,
  type Touched,
  type TouchedStore
} from "./internals.js"
import { LazyRecord, settle, type StoreRows, ValueCache, type ValueCacheStats } from "./lazyRecords.js"
import { loadSnapshot, shapePrefixOf, snapshotOf } from "./snapshot.js"
import type {
  DatabaseChange,
  DatabaseSchema,
  IndexKeys,
  SnapshotRequest,
  SqliteFile,
  StoreChange,
  StoreSchema
} from "./sqliteFile.js"
import { bulkLoad, interner, pushEntries } from "./trees.js"

export { compareKeys } from "./trees.js"

export interface DurableIdbStats {
  /** IndexedDB transactions written to SQLite. */
  commits: number
  /** Transactions aborted because their SQLite write failed. */
  failedCommits: number
  /** The last write failure (no key material: the SQLite error text only). */
  lastError: string | undefined
}

export interface DurableIdb {
  readonly factory: IdbFactory
  readonly stats: DurableIdbStats
  /** The value cache of the on-demand records (for benches and tests). */
  readonly cacheStats: () => ValueCacheStats
  /** Writes each store's snapshot (see snapshot.ts), stops writing (later transactions abort) and closes every open connection. */
  readonly detach: () => void
}

const schemaOf = (raw: RawDatabase): DatabaseSchema => ({
  name: raw.name,
  version: raw.version,
  stores: Array.from(raw.rawObjectStores.values(), (s): StoreSchema => ({
    name: s.name,
    keyPath: s.keyPath,
    autoIncrement: s.autoIncrement,
    keyGenerator: s.keyGenerator?.num ?? null,
    indexes: Array.from(s.rawIndexes.values(), (i) => ({
      name: i.name,
      keyPath: i.keyPath,
      unique: i.unique,
      multiEntry: i.multiEntry
    }))
  }))
})

/** The signature of a store's index list as it is now (stored with each row's index keys). */
const signatureOf = (store: RawObjectStore): string => indexSignature(Array.from(store.rawIndexes.values()))

/** A value's index keys in the order of the store's index list (what fake-indexeddb's indexes hold for it). */
const indexKeysOf = (store: RawObjectStore, signature: string, value: unknown): IndexKeys => ({
  signature,
  keys: Array.from(store.rawIndexes.values(), (i) => i.getIndexKey(value))
})

/** One store's part of an ordinary commit: the keys it touched, with the values the transaction left. */
const touchedChange = (store: RawObjectStore, t: TouchedStore): StoreChange => {
  const signature = signatureOf(store)
  const puts: Array<readonly [unknown, unknown, IndexKeys]> = []
  const deletes: Array<unknown> = []
  // The value at commit time is the one the transaction left; intermediate writes collapse into it.
  for (const key of t.keys.values()) {
    const record = store.records.get(key)
    if (record === undefined) deletes.push(key)
    else puts.push([record.key, record.value, indexKeysOf(store, signature, record.value)])
  }
  return { name: store.name, cleared: t.cleared, puts, deletes }
}

const changeOf = (raw: RawDatabase, touched: Touched): DatabaseChange => {
  const stores: Array<StoreChange> = []
  let keyGeneratorMoved = false
  for (const [name, t] of touched) {
    const store: RawObjectStore | undefined = raw.rawObjectStores.get(name)
    if (store === undefined) continue
    if (store.keyGenerator !== null) keyGeneratorMoved = true
    stores.push(touchedChange(store, t))
  }
  return keyGeneratorMoved ? { db: raw.name, schema: schemaOf(raw), stores } : { db: raw.name, stores }
}

/** The object stores as filed in SQLite, by name, per database: what a versionchange is compared with. */
type Layout = Map<string, ReadonlyMap<string, RawObjectStore>>

/**
 * A versionchange commit. A store that is still the same object under the same name only writes the
 * keys it touched; one that is new, recreated or renamed is rewritten whole under its name, and a name
 * that no longer holds its old store loses its rows. (The on-demand records of an unchanged store are
 * not read back and rewritten, so a Rust-store migration costs what it changes.) A kept store whose
 * index list changed (createIndex / deleteIndex) gets new index keys for every row it still has.
 */
const versionChangeOf = (
  raw: RawDatabase,
  touched: Touched | undefined,
  filed: ReadonlyMap<string, RawObjectStore>,
  filedSignature: (store: RawObjectStore) => string | undefined
) => {
  const stores: Array<StoreChange> = []
  const rewritten: Array<RawObjectStore> = []
  for (const [name, old] of filed) {
    if (raw.rawObjectStores.get(name) !== old) stores.push({ name, cleared: true, puts: [], deletes: [] })
  }
  for (const store of raw.rawObjectStores.values()) {
    const signature = signatureOf(store)
    if (filed.get(store.name) === store) {
      const t = touched?.get(store.name)
      const change = t !== undefined
        ? touchedChange(store, t)
        : { name: store.name, cleared: false, puts: [], deletes: [] }
      if (filedSignature(store) !== signature) {
        // The values are read (from SQLite where on demand) as createIndex itself just did.
        const reindex = Array.from(
          store.records.values(),
          (r) => [r.key, indexKeysOf(store, signature, r.value)] as const
        )
        stores.push({ ...change, reindex })
      } else if (t !== undefined) stores.push(change)
    } else {
      rewritten.push(store)
      stores.push({
        name: store.name,
        cleared: true,
        puts: Array.from(
          store.records.values(),
          (r) => [r.key, r.value, indexKeysOf(store, signature, r.value)] as const
        ),
        deletes: []
      })
    }
  }
  const change: DatabaseChange = { db: raw.name, schema: schemaOf(raw), stores }
  return { change, rewritten }
}

const describe = (e: unknown) => (e instanceof Error ? e.message : String(e))

/** Creates one database's stores and indexes (no records) inside the factory, and returns it. */
const createSchema = (factory: IdbFactory, schema: DatabaseSchema): Promise<RawDatabase> =>
  new Promise((resolve, reject) => {
    const req = factory.open(schema.name, schema.version)
    req.onupgradeneeded = () => {
      const db = req.result
      for (const s of schema.stores) {
        const os = db.createObjectStore(
          s.name,
          s.keyPath === null
            ? { autoIncrement: s.autoIncrement }
            : { keyPath: s.keyPath, autoIncrement: s.autoIncrement }
        )
        for (const i of s.indexes) os.createIndex(i.name, i.keyPath, { unique: i.unique, multiEntry: i.multiEntry })
        const raw = (os as { _rawObjectStore: RawObjectStore })._rawObjectStore
        // Restores the exact generator (the highest present key understates it after deletions).
        if (raw.keyGenerator !== null && s.keyGenerator !== null) raw.keyGenerator.num = s.keyGenerator
      }
    }
    req.onsuccess = () => {
      const raw = (req.result as { _rawDatabase: RawDatabase })._rawDatabase
      req.result.close()
      resolve(raw)
    }
    req.onerror = () => reject(req.error ?? new Error(`durable-idb: rebuilding ${schema.name} failed`))
    req.onblocked = () => reject(new Error(`durable-idb: rebuilding ${schema.name} was blocked`))
  })

/**
 * Fills one store from its rows: keys and index entries in memory (from the rows' index keys), values
 * left in SQLite. Returns the signature of the index list the rows are now filed with.
 */
const fillStore = (store: RawObjectStore, rows: StoreRows): string => {
  const signature = signatureOf(store)
  const indexes = Array.from(store.rawIndexes.values())
  for (const index of indexes) {
    if (!index.initialized) throw new Error(`durable-idb: index ${index.name} of ${store.name} not initialized`)
  }
  const scan = {
    db: rows.db,
    store: store.name,
    signature,
    indexCount: indexes.length,
    indexKeysOf: (value: unknown) => indexes.map((index) => index.getIndexKey(value))
  }
  // A clean close's snapshot and the records written since (a crash after it): keys and index entries
  // without reading more than those records' rows.
  const snapshot = rows.file.readSnapshot(scan)
  if (snapshot !== undefined && loadSnapshot(store, rows, snapshot)) {
    rows.file.snapshotUsed(snapshot.delta.length)
    return signature
  }
  // Each record with its index keys; sorted by key (bulkLoad), the index keys move along.
  const records: Array<LazyRecord> = []
  rows.file.scanKeys(scan, (key, indexKeys) => {
    const record = new LazyRecord(key, rows)
    if (indexes.length > 0) record.indexKeys = indexKeys
    records.push(record)
  })
  bulkLoad(store.records.records, records, true, store.name)
  const intern = interner()
  indexes.forEach((index, i) => {
    // In primary-key order (records is sorted now), which bulkLoad's stable sort keeps among equal keys.
    const entries: Array<RawRecord> = []
    for (const record of records) pushEntries(entries, record.indexKeys![i], index.multiEntry, record.key, intern)
    bulkLoad(index.records.records, entries, index.unique, `${store.name}.${index.name}`)
  })
  for (const record of records) record.indexKeys = undefined
  return signature
}

/**
 * The stores of a database that a running transaction may have changed in memory without a commit (the
 * scope of each readwrite one; every store while a versionchange runs), or "all". Readonly ones cannot.
 */
const busyStores = (raw: RawDatabase): ReadonlySet<string> | "all" => {
  const busy = new Set<string>()
  for (const t of raw.transactions) {
    if (t._state === "finished" || t.mode === "readonly") continue
    if (t.mode !== "readwrite" || !(t._scope instanceof Set)) return "all"
    for (const name of t._scope) busy.add(name)
  }
  return busy
}

/**
 * At a clean close: per file, the snapshots brought up to date. A store whose snapshot is still exact
 * (SqliteFile.writeSnapshots proves it from SQLite) keeps it unwritten; any other gets a new one, unless a
 * running transaction may have changed it (busyStores). Nothing after a failed commit. A failure here only
 * means the next open uses the snapshots and deltas as they were (or reads `ixs`).
 */
const writeSnapshots = (
  factory: IdbFactory,
  files: ReadonlyArray<SqliteFile>,
  route: (dbName: string) => SqliteFile
) => {
  const byFile = new Map(files.map((f) => [f, [] as Array<SnapshotRequest>]))
  for (const raw of databasesOf(factory).values()) {
    const busy = busyStores(raw)
    const list = byFile.get(route(raw.name))
    if (busy === "all" || list === undefined) continue
    for (const store of raw.rawObjectStores.values()) {
      const plain = busy.has(store.name) ? () => undefined : () => snapshotOf(store)
      list.push({ db: raw.name, store: store.name, shapePrefix: shapePrefixOf(store), plain })
    }
  }
  for (const [file, list] of byFile) {
    try {
      file.writeSnapshots(list)
    } catch {
      // rolled back whole: the previous snapshots and their deltas stay consistent (the triggers)
    }
  }
}

/** Closes every open connection of the factory's databases. */
const closeConnections = (factory: IdbFactory) => {
  for (const raw of databasesOf(factory).values()) {
    const connections = (raw as unknown as { connections: Array<{ close(): void; _closed: boolean }> }).connections
    for (const connection of connections) if (!connection._closed) connection.close()
  }
}

export interface DurableIdbOptions {
  /** Sealed bytes of decoded values kept in memory (LRU). Default 8 MiB. */
  readonly cacheBytes?: number
  /** Decoded values kept in memory (LRU). Default 4,096. */
  readonly cacheEntries?: number
  /** Write each store's snapshot at detach (the next open reads it instead of `ixs`). Default true. */
  readonly snapshotAtClose?: boolean
}

/**
 * Opens the durable IndexedDB over `files`; `route` names the file each database lives in (by name).
 * The databases already on disk are rebuilt before this resolves: schemas, keys and index entries in
 * memory, record values read from SQLite when asked for (see lazyRecords.ts).
 */
export const openDurableIdb = async (
  files: ReadonlyArray<SqliteFile>,
  route: (dbName: string) => SqliteFile,
  options: DurableIdbOptions = {}
): Promise<DurableIdb> => {
  await installHooks()
  const stats: DurableIdbStats = { commits: 0, failedCommits: 0, lastError: undefined }
  const cache = new ValueCache(options.cacheBytes ?? 8 * 1024 * 1024, options.cacheEntries ?? 4096)
  const rowsOf = new WeakMap<RawObjectStore, StoreRows>()
  /** The index list each store's rows were last filed with (their `ix` signature). */
  const signatures = new WeakMap<RawObjectStore, string>()
  const layout: Layout = new Map()
  let detached = false

  const rowsFor = (db: string, store: RawObjectStore): StoreRows => {
    let rows = rowsOf.get(store)
    if (rows === undefined) rowsOf.set(store, rows = { file: route(db), db, store: store.name, cache })
    return rows
  }

  /** After the SQLite commit: file the new layout and drop the committed values from memory. */
  const settleCommit = (
    raw: RawDatabase,
    touched: Touched | undefined,
    rewritten: ReadonlyArray<RawObjectStore> | undefined
  ) => {
    try {
      if (rewritten !== undefined) {
        for (const store of raw.rawObjectStores.values()) rowsFor(raw.name, store).store = store.name
        layout.set(raw.name, new Map(raw.rawObjectStores))
        for (const store of raw.rawObjectStores.values()) signatures.set(store, signatureOf(store))
        for (const store of rewritten) settle(store.records, rowsFor(raw.name, store), undefined)
      }
      for (const [name, t] of touched ?? []) {
        const store = raw.rawObjectStores.get(name)
        const rows = store === undefined ? undefined : rowsOf.get(store)
        if (store !== undefined && rows !== undefined) settle(store.records, rows, t.keys.values())
      }
    } catch {
      // Already durable: a record left in memory is still correct, only not released.
    }
  }

  const persister: Persister = {
    suspended: true,
    commit(raw, touched, versionchange) {
      if (detached) throw new Error("durable-idb: store closed")
      if (!versionchange && (touched === undefined || touched.size === 0)) return
      const planned = versionchange
        ? versionChangeOf(raw, touched, layout.get(raw.name) ?? new Map(), (store) => signatures.get(store))
        : { change: changeOf(raw, touched!), rewritten: undefined }
      try {
        route(raw.name).commit([planned.change])
        stats.commits++
      } catch (e) {
        stats.failedCommits++
        stats.lastError = describe(e)
        throw e
      }
      settleCommit(raw, touched, planned.rewritten)
    },
    dropDatabase(name) {
      if (detached) return false
      try {
        route(name).dropDatabase(name)
        stats.commits++
        layout.delete(name)
        return true
      } catch (e) {
        stats.failedCommits++
        stats.lastError = describe(e)
        return false
      }
    }
  }

  const factory = makeOwnedFactory(persister)
  for (const file of files) {
    for (const schema of file.loadSchemas()) {
      const raw = await createSchema(factory, schema)
      for (const store of raw.rawObjectStores.values()) {
        signatures.set(store, fillStore(store, rowsFor(raw.name, store)))
      }
      layout.set(raw.name, new Map(raw.rawObjectStores))
    }
  }
  persister.suspended = false

  return {
    factory,
    stats,
    cacheStats: () => cache.stats(),
    detach: () => {
      if (detached) return
      if (stats.failedCommits === 0 && (options.snapshotAtClose ?? true)) writeSnapshots(factory, files, route)
      detached = true
      closeConnections(factory)
    }
  }
}
