// A durable IndexedDB: a private fake-indexeddb factory whose every committed transaction is written to
// SQLite (one SQLite transaction per IndexedDB transaction) before the transaction's `complete` event
// reaches the caller, and which is rebuilt from SQLite when opened.
import {
  databasesOf,
  type IdbFactory,
  installHooks,
  makeOwnedFactory,
  type Persister,
  type RawDatabase,
  type RawObjectStore,
  type Touched
} from "./internals.js"
import type { DatabaseChange, DatabaseSchema, LoadedDatabase, SqliteFile, StoreChange, StoreSchema } from "./sqliteFile.js"

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
  /** Stops writing (later transactions abort) and closes every open connection of the factory. */
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

const fullDump = (raw: RawDatabase): DatabaseChange => ({
  db: raw.name,
  schema: schemaOf(raw),
  replaceAll: true,
  stores: Array.from(raw.rawObjectStores.values(), (s): StoreChange => ({
    name: s.name,
    cleared: false,
    puts: Array.from(s.records.values(), (r) => [r.key, r.value] as const),
    deletes: []
  }))
})

const changeOf = (raw: RawDatabase, touched: Touched): DatabaseChange => {
  const stores: Array<StoreChange> = []
  let keyGeneratorMoved = false
  for (const [name, t] of touched) {
    const store: RawObjectStore | undefined = raw.rawObjectStores.get(name)
    if (store === undefined) continue
    if (store.keyGenerator !== null) keyGeneratorMoved = true
    const puts: Array<readonly [unknown, unknown]> = []
    const deletes: Array<unknown> = []
    // The value at commit time is the one the transaction left; intermediate writes collapse into it.
    for (const key of t.keys.values()) {
      const record = store.records.get(key)
      if (record === undefined) deletes.push(key)
      else puts.push([record.key, record.value])
    }
    stores.push({ name, cleared: t.cleared, puts, deletes })
  }
  return keyGeneratorMoved ? { db: raw.name, schema: schemaOf(raw), stores } : { db: raw.name, stores }
}

const describe = (e: unknown) => (e instanceof Error ? e.message : String(e))

/** Rebuilds one database (schema, indexes, key generators, records) inside the factory. */
const materialize = (factory: IdbFactory, loaded: LoadedDatabase): Promise<void> =>
  new Promise((resolve, reject) => {
    const { schema } = loaded
    const req = factory.open(schema.name, schema.version)
    req.onupgradeneeded = () => {
      const db = req.result
      for (const s of schema.stores) {
        const os = db.createObjectStore(
          s.name,
          s.keyPath === null ? { autoIncrement: s.autoIncrement } : { keyPath: s.keyPath, autoIncrement: s.autoIncrement }
        )
        for (const i of s.indexes) os.createIndex(i.name, i.keyPath, { unique: i.unique, multiEntry: i.multiEntry })
        const raw = (os as { _rawObjectStore: RawObjectStore })._rawObjectStore
        // Restores the exact generator (the highest present key understates it after deletions).
        if (raw.keyGenerator !== null && s.keyGenerator !== null) raw.keyGenerator.num = s.keyGenerator
        for (const [key, value] of loaded.records.get(s.name) ?? []) {
          if (s.keyPath === null) os.put(value, key)
          else os.put(value)
        }
      }
    }
    req.onsuccess = () => {
      req.result.close()
      resolve()
    }
    req.onerror = () => reject(req.error ?? new Error(`durable-idb: rebuilding ${schema.name} failed`))
    req.onblocked = () => reject(new Error(`durable-idb: rebuilding ${schema.name} was blocked`))
  })

/**
 * Opens the durable IndexedDB over `files`; `route` names the file each database lives in (by name).
 * The databases already on disk are rebuilt before this resolves.
 */
export const openDurableIdb = async (
  files: ReadonlyArray<SqliteFile>,
  route: (dbName: string) => SqliteFile
): Promise<DurableIdb> => {
  await installHooks()
  const stats: DurableIdbStats = { commits: 0, failedCommits: 0, lastError: undefined }
  let detached = false

  const persister: Persister = {
    suspended: true,
    commit(raw, touched, versionchange) {
      if (detached) throw new Error("durable-idb: store closed")
      if (!versionchange && (touched === undefined || touched.size === 0)) return
      const change = versionchange ? fullDump(raw) : changeOf(raw, touched!)
      try {
        route(raw.name).commit([change])
        stats.commits++
      } catch (e) {
        stats.failedCommits++
        stats.lastError = describe(e)
        throw e
      }
    },
    dropDatabase(name) {
      if (detached) return false
      try {
        route(name).dropDatabase(name)
        stats.commits++
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
    for (const loaded of file.load()) await materialize(factory, loaded)
  }
  persister.suspended = false

  return {
    factory,
    stats,
    detach: () => {
      detached = true
      for (const raw of databasesOf(factory).values()) {
        for (const connection of (raw as unknown as { connections: Array<{ close(): void; _closed: boolean }> }).connections) {
          if (!connection._closed) connection.close()
        }
      }
    }
  }
}
