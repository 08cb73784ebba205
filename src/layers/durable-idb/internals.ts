// The few fake-indexeddb 6.2.8 internals the write-through layer relies on, typed, and the hooks on
// them. fake-indexeddb is pinned exactly because of this file; the unit tests exercise every hook, so
// an upgrade that moves one fails loudly.
//
//   raw ObjectStore.storeRecord / deleteRecord / clear   called with the transaction's rollback log when
//                                                       they run as part of a transaction: we note the
//                                                       touched keys per rollback log (= per transaction)
//   FDBTransaction.prototype.dispatchEvent("complete")  the commit point: the transaction's changes go to
//                                                       SQLite here, before any listener (the SDK) runs
//   FDBFactory._databases (a Map)                       set() tags each database with its owner, delete()
//                                                       is deleteDatabase's commit point
//   RecordStore.put / .records (BinarySearchTree         an open fills each store's and index's tree in one
//   _rebuild, _numNodes), Index.getIndexKey              pass; a commit swaps records for LazyRecords
import { IDBFactory, IDBKeyRange, IDBTransaction } from "fake-indexeddb"
import type { IdbFactory } from "../../services/CryptoStore.js"

export type { IdbFactory }

/** fake-indexeddb's BinarySearchTree, for building a whole tree at once from sorted records. */
export interface RawTree {
  _root: unknown
  _numNodes: number
  _numTombstones: number
  _compare(a: RawRecord, b: RawRecord): number
  _rebuild(records: ReadonlyArray<RawRecord>, parent: undefined, red: boolean): unknown
}

export interface RawIndex {
  readonly name: string
  readonly keyPath: string | ReadonlyArray<string>
  readonly unique: boolean
  readonly multiEntry: boolean
  /** True once the index holds an entry for every record of its store. */
  readonly initialized: boolean
  /** Adds the index entries of one object store record (throws ConstraintError on a unique clash). */
  storeRecord(record: RawRecord): void
  /** The index key of a value (multiEntry: the array of keys), undefined when it is not indexed. */
  getIndexKey(value: unknown): unknown
  readonly records: { readonly records: RawTree; values(): Iterable<RawRecord> }
}

export interface RawRecord {
  readonly key: unknown
  readonly value: unknown
}

export interface RawObjectStore {
  readonly name: string
  readonly rawDatabase: RawDatabase
  readonly keyPath: string | ReadonlyArray<string> | null
  readonly autoIncrement: boolean
  readonly keyGenerator: { num: number } | null
  readonly rawIndexes: Map<string, RawIndex>
  readonly records: {
    get(key: unknown): RawRecord | undefined
    values(range?: unknown): Iterable<RawRecord>
    /** Puts or replaces (same key) a record in the store's tree, nothing else (no index upkeep). */
    put(record: object, noOverwrite?: boolean): unknown
    readonly records: RawTree
  }
}

export interface RawDatabase {
  readonly name: string
  readonly version: number
  readonly rawObjectStores: Map<string, RawObjectStore>
  /** The transactions not finished yet (fake-indexeddb removes a transaction when it finishes). */
  readonly transactions: ReadonlyArray<
    { readonly _state: string; readonly mode: string; readonly _scope: ReadonlySet<string> }
  >
}

interface RawTransaction {
  readonly mode: "readonly" | "readwrite" | "versionchange"
  readonly db: { readonly _rawDatabase: RawDatabase }
  readonly _rollbackLog: Array<unknown>
  readonly error: unknown
  _abort(errName: string): void
}

interface ObjectStoreProto {
  storeRecord(this: RawObjectStore, record: RawRecord, noOverwrite: boolean, rollbackLog?: Array<unknown>): unknown
  deleteRecord(this: RawObjectStore, key: unknown, rollbackLog?: Array<unknown>): void
  clear(this: RawObjectStore, rollbackLog?: Array<unknown>): void
}

/** Keys a transaction touched in one store; values are read back from memory at commit. */
export interface TouchedStore {
  cleared: boolean
  readonly keys: Map<string, unknown>
}
export type Touched = Map<string, TouchedStore>

/** What a durable factory does at the commit points. Throwing from `commit` aborts the transaction. */
export interface Persister {
  /** True while the factory is being rebuilt from disk: nothing is written back. */
  suspended: boolean
  commit(db: RawDatabase, touched: Touched | undefined, versionchange: boolean): void
  /** Returns false when the deletion could not be made durable (the database is then kept). */
  dropDatabase(name: string): boolean
}

const owners = new WeakMap<RawDatabase, Persister>()
const touchedByLog = new WeakMap<Array<unknown>, Touched>()

/** A stable string for a key, to deduplicate touched keys (any injective encoding works here). */
const keyString = (key: unknown): string => {
  if (typeof key === "number") return `n${key === 0 ? 0 : key}`
  if (typeof key === "string") return `s${key}`
  if (key instanceof Date) return `d${key.getTime()}`
  if (key instanceof ArrayBuffer) return `b${Buffer.from(key).toString("base64")}`
  if (ArrayBuffer.isView(key)) return `b${Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("base64")}`
  if (Array.isArray(key)) return `a[${key.map(keyString).join(",")}]`
  return `?${String(key)}`
}

const note = (store: RawObjectStore, rollbackLog: Array<unknown> | undefined): TouchedStore | undefined => {
  if (rollbackLog === undefined) return undefined // a rollback or an index rebuild, not a transaction's write
  const owner = owners.get(store.rawDatabase)
  if (owner === undefined || owner.suspended) return undefined
  let touched = touchedByLog.get(rollbackLog)
  if (touched === undefined) touchedByLog.set(rollbackLog, touched = new Map())
  let entry = touched.get(store.name)
  if (entry === undefined) touched.set(store.name, entry = { cleared: false, keys: new Map() })
  return entry
}

let hooksInstalled: Promise<void> | undefined

const rawObjectStorePrototype = (): Promise<ObjectStoreProto> =>
  // The raw ObjectStore class is not exported; take its prototype from a throwaway store, which also
  // guarantees it is the very class our factories use (whatever module loader is in between).
  new Promise((resolve, reject) => {
    const probe = new IDBFactory()
    const req = probe.open("durable-idb-probe", 1)
    let proto: ObjectStoreProto | undefined
    req.onupgradeneeded = () => {
      const os = req.result.createObjectStore("probe")
      proto = Object.getPrototypeOf((os as unknown as { _rawObjectStore: object })._rawObjectStore) as ObjectStoreProto
    }
    req.onsuccess = () => {
      req.result.close()
      if (proto === undefined) reject(new Error("durable-idb: fake-indexeddb internals not found"))
      else resolve(proto)
    }
    req.onerror = () => reject(req.error)
  })

/** Installs the hooks once per process. They are inert for databases no durable factory owns. */
export const installHooks = (): Promise<void> =>
  hooksInstalled ??= (async () => {
    const proto = await rawObjectStorePrototype()
    for (const name of ["storeRecord", "deleteRecord", "clear"] as const) {
      if (typeof proto[name] !== "function") throw new Error(`durable-idb: fake-indexeddb ObjectStore.${name} missing`)
    }
    const txProto = IDBTransaction.prototype as unknown as {
      dispatchEvent(this: RawTransaction, event: { type: string }): boolean
      _abort?: unknown
    }
    if (typeof txProto._abort !== "function") {
      throw new Error("durable-idb: fake-indexeddb FDBTransaction._abort missing")
    }

    const storeRecord = proto.storeRecord
    proto.storeRecord = function(record, noOverwrite, rollbackLog) {
      const key = storeRecord.call(this, record, noOverwrite, rollbackLog)
      const entry = note(this, rollbackLog)
      if (entry !== undefined) entry.keys.set(keyString(key), key)
      return key
    }

    const deleteRecord = proto.deleteRecord
    proto.deleteRecord = function(key, rollbackLog) {
      const entry = note(this, rollbackLog)
      if (entry !== undefined) {
        const keys = key instanceof IDBKeyRange ? Array.from(this.records.values(key), (r) => r.key) : [key]
        for (const k of keys) entry.keys.set(keyString(k), k)
      }
      deleteRecord.call(this, key, rollbackLog)
    }

    const clear = proto.clear
    proto.clear = function(rollbackLog) {
      const entry = note(this, rollbackLog)
      if (entry !== undefined) {
        entry.cleared = true
        entry.keys.clear()
      }
      clear.call(this, rollbackLog)
    }

    const dispatchEvent = txProto.dispatchEvent
    txProto.dispatchEvent = function(event) {
      if (event.type === "complete" && this.mode !== "readonly" && this.error === null) {
        const raw = this.db._rawDatabase
        const owner = owners.get(raw)
        if (owner !== undefined && !owner.suspended) {
          const touched = touchedByLog.get(this._rollbackLog)
          touchedByLog.delete(this._rollbackLog)
          try {
            owner.commit(raw, touched, this.mode === "versionchange")
          } catch {
            // Not durable, so not committed: roll memory back and report an abort instead of `complete`.
            this._abort("UnknownError")
            return true
          }
        }
      }
      return dispatchEvent.call(this, event)
    }
  })()

/** A Map for FDBFactory._databases that ties each database to its persister. */
class OwnedDatabases extends Map<string, RawDatabase> {
  constructor(private readonly persister: Persister) {
    super()
  }
  override set(name: string, db: RawDatabase): this {
    owners.set(db, this.persister)
    return super.set(name, db)
  }
  override delete(name: string): boolean {
    if (!this.has(name)) return false
    if (!this.persister.suspended && !this.persister.dropDatabase(name)) return false
    return super.delete(name)
  }
}

/** A fresh fake-indexeddb factory whose databases are persisted by `persister`. Call after installHooks. */
export const makeOwnedFactory = (persister: Persister): IdbFactory => {
  const factory: IdbFactory = new IDBFactory()
  const slot = factory as unknown as { _databases: Map<string, RawDatabase> }
  if (!(slot._databases instanceof Map)) throw new Error("durable-idb: fake-indexeddb FDBFactory._databases missing")
  slot._databases = new OwnedDatabases(persister)
  return factory
}

/** The raw database behind an open connection (used to read schemas). */
export const databasesOf = (factory: IdbFactory): ReadonlyMap<string, RawDatabase> =>
  (factory as unknown as { _databases: Map<string, RawDatabase> })._databases
