// One SQLite file of the durable IndexedDB (the crypto file or the sync-state file).
//
// node:sqlite (built into Node 24) rather than better-sqlite3: it is synchronous too, which the commit
// path needs (the write must finish inside the `complete` dispatch), it ships typings with @types/node,
// and it adds no native module to load. Measured here: ~0.2 ms per small WAL commit.
//
// Layout (all blobs sealed with the store's row key when the store is encrypted):
//   kv(key, value)            'format' (plain JSON: format version, encrypted or not), 'cipher' (wrapped data key)
//   dbs(id, meta)             one row per IndexedDB database: name, version, object stores, indexes, key generators
//   records(id, db, store, data)   one row per IndexedDB record, updated in place
//   ixs(store, id, ix)        per record: its key and the index keys of its value (codec.ts sealIndexBlob),
//                             written in the same SQLite transaction as the record
//   snapshots(store, snap, maxrid)  per object store, written at a clean close (durableIdb.ts detach; kept when
//                             still exact): its keys and index entries, already sorted (snapshot.ts, codec.ts sealSnapshotBlob),
//                             and the highest record rowid then
//   snapd(store, id, ix)      the records of rowid <= maxrid written since their store's snapshot, each with
//                             its `ixs` row as it was at the snapshot (NULL: none), noted by triggers
//   snaps(store, snap)        version-1 snapshots of an older cara, dropped by triggers on any write to
//                             their store; read for a store without a version-2 one (the first start after
//                             an upgrade), emptied by this cara's clean close
//
// Snapshots: an open reads a store's snapshot and its delta instead of its `ixs` rows when the snapshot
// opens and matches, and the delta is short (deltaLimit) and every row of it opens: the snapshot minus the
// delta's records as they were, plus their `ixs` rows now and those of the records inserted since (rowid
// above maxrid) (snapshot.ts). The triggers `*_snapd_*` note a
// record in the transaction of any write to it, by any cara that opens the file (an older one too), so
// snapshot plus delta describe the rows SQLite holds, also after a crash; anything that does not check
// out (a damaged blob or delta row, a record without a usable `ixs` row) and the open reads `ixs`.
//
// Index keys beside the value (issue 19): an open reads `ixs` only (a few hundred bytes per record, in
// store order) and never a value. A record without a usable `ixs` row (written before the table existed,
// or by an older cara after a downgrade; damaged; or computed for another index list) is read as before
// (unseal, decode the value, compute its index keys), and its `ixs` row is written back in one SQLite
// transaction per object store at the end of that store's scan. A separate table rather than a column:
// a column would grow the typical ~1.8 KB Megolm row past half a page (measured: the file doubled).
// An older cara opens a store with the table (it never names it); the triggers `records_ixs_*`, kept in
// the file, delete a record's `ixs` row whenever any writer inserts, updates or deletes the record, and
// this code writes the new one after, so an `ixs` row always describes the record's current value, also
// after a downgrade and upgrade.
//
// Writes: a record is updated with an upsert (`INSERT … ON CONFLICT (id) DO UPDATE SET data`), which keeps
// the row's rowid and so leaves the three indexes alone (`INSERT OR REPLACE` deletes and re-inserts the
// row: measured 28.8 KB of WAL for one 9.2 KB update against 12.4 KB with the upsert, docs/benchmarks.md).
// A put whose key and value SQLite already holds (compared unsealed: each seal has a fresh nonce) is not
// written at all, and a commit that changes no row writes nothing to the WAL.
//
// Ownership: the connection runs in `locking_mode=EXCLUSIVE`, so the file stays locked by the kernel
// (POSIX byte-range locks) until this process closes it or dies: a second opener gets SQLITE_BUSY at
// once, and a killed owner leaves no lock behind. The holder's pid is kept beside it (`{file}.owner`,
// written by the CryptoStore layer) for the message only.
import * as fs from "node:fs"
import * as path from "node:path"
import { DatabaseSync, type StatementSync } from "node:sqlite"
import { CryptoStoreError } from "../../domain/cryptoStore.js"
import { createSqliteAtomically, inspectSqlite, missingTables } from "../sqliteState.js"
import {
  type CipherRecord,
  decodeCipherRecord,
  encodeCipherRecord,
  newDataKey,
  unwrapDataKey,
  wrapDataKey
} from "./cipher.js"
import {
  databaseId,
  deriveRowKeys,
  deserialize,
  openBlob,
  openIndexBlob,
  openOlderSnapshotBlob,
  openSnapshotBlob,
  recordId,
  type RowKeys,
  sealBlob,
  sealedLength,
  sealIndexBlob,
  sealSnapshotBlob,
  serialize,
  storeId
} from "./codec.js"

export interface IndexSchema {
  readonly name: string
  readonly keyPath: string | ReadonlyArray<string>
  readonly unique: boolean
  readonly multiEntry: boolean
}

export interface StoreSchema {
  readonly name: string
  readonly keyPath: string | ReadonlyArray<string> | null
  readonly autoIncrement: boolean
  /** The key generator's current number (autoIncrement stores), so a restart continues after it. */
  readonly keyGenerator: number | null
  readonly indexes: ReadonlyArray<IndexSchema>
}

export interface DatabaseSchema {
  readonly name: string
  readonly version: number
  readonly stores: ReadonlyArray<StoreSchema>
}

export interface LoadedDatabase {
  readonly schema: DatabaseSchema
  /** store name -> [key, value] pairs */
  readonly records: ReadonlyMap<string, ReadonlyArray<readonly [unknown, unknown]>>
}

/** A record's index keys, in the order of the store's index list named by `signature` (codec.ts). */
export interface IndexKeys {
  readonly signature: string
  readonly keys: ReadonlyArray<unknown>
}

export interface StoreChange {
  readonly name: string
  /** The whole store was cleared before the puts (IDBObjectStore.clear). */
  readonly cleared: boolean
  /** key, value, and the value's index keys (without them the record has no `ixs` row: read as an old row). */
  readonly puts: ReadonlyArray<readonly [unknown, unknown, IndexKeys?]>
  readonly deletes: ReadonlyArray<unknown>
  /** New index keys of rows whose value is unchanged (a versionchange created or deleted an index). */
  readonly reindex?: ReadonlyArray<readonly [unknown, IndexKeys]>
}

/** Everything one IndexedDB transaction changed in one database. */
export interface DatabaseChange {
  readonly db: string
  /** New schema row (versionchange, or a key generator moved). */
  readonly schema?: DatabaseSchema
  /** Drop every record of the database first (a versionchange transaction rewrites the database). */
  readonly replaceAll?: boolean
  readonly stores: ReadonlyArray<StoreChange>
}

/** What this file wrote (for tests and benches). */
export interface SqliteFileStats {
  /** SQLite transactions that changed at least one row. */
  commits: number
  /** Record rows inserted or updated. */
  rowsWritten: number
  /** Record puts not written: SQLite already held the same key with the same value. */
  unchangedPuts: number
  /** Records an open had to read the value of (no usable `ixs` row), and wrote one back for. */
  indexKeysRebuilt: number
  /** Object stores an open filled from their snapshot (without reading `ixs`). */
  snapshotsRead: number
  /** Records written since their store's snapshot that an open applied to it (`snapd` rows, new records). */
  snapshotDeltaRows: number
  /** Snapshots written (at clean closes). */
  snapshotsWritten: number
  /** Snapshots a clean close left as they were (still exact: nothing of their store written since). */
  snapshotsKept: number
}

/** One store's part in a clean close's snapshots (SqliteFile.writeSnapshots). */
export interface SnapshotRequest {
  readonly db: string
  readonly store: string
  /** The start of a snapshot plaintext of the store's shape (snapshot.ts shapePrefixOf); undefined: the old one is never kept. */
  readonly shapePrefix: Buffer | undefined
  /** The store's snapshot plaintext now, when its old one is not kept; undefined: none. */
  readonly plain: () => Buffer | undefined
}

/** One record written since its store's snapshot: its key then (if the snapshot can have it) and now, with its index keys. */
export interface DeltaEntry {
  /** The primary key of the record's `ixs` row at the snapshot (undefined: it had none). */
  readonly was: unknown
  /** The record's key and index keys now (undefined: deleted since). */
  readonly now: readonly [unknown, ReadonlyArray<unknown>] | undefined
}

/** One object store's snapshot as the open reads it: the plaintext, the store's record count in SQLite, and the delta. */
export interface StoreSnapshot {
  readonly plain: Buffer
  readonly count: number
  readonly delta: ReadonlyArray<DeltaEntry>
}

/** A delta longer than this is not applied (the open reads `ixs` instead). */
export const deltaLimit = (count: number) => 16 + count / 4

/** One object store's keys as an open reads them. */
export interface KeyScan {
  readonly db: string
  readonly store: string
  /** The store's current index list (codec.ts indexSignature) and its length. */
  readonly signature: string
  readonly indexCount: number
  /** The index keys of a value, for rows read the old way. */
  readonly indexKeysOf: (value: unknown) => ReadonlyArray<unknown>
}

export type StoreSecret =
  | { readonly encrypted: false }
  | { readonly encrypted: true; readonly passphrase: string }

interface FormatRecord {
  readonly format: 1
  readonly encrypted: boolean
}

const FORMAT_VERSION = 1

const fail = (kind: CryptoStoreError["kind"], file: string, message: string, holderPid?: number) =>
  new CryptoStoreError(
    holderPid === undefined ? { kind, path: file, message } : { kind, path: file, message, holderPid }
  )

const errText = (e: unknown) => (e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e))

const isBusy = (e: unknown) => {
  const err = e as { errcode?: number; message?: string } | undefined
  return err?.errcode === 5 || err?.errcode === 6 || /database is locked/i.test(err?.message ?? "")
}

/** `{file}.owner`: the pid of the process holding the file, for the "locked" message only. */
export const ownerPath = (file: string) => `${file}.owner`

const readOwnerPid = (file: string): number | undefined => {
  try {
    const text = fs.readFileSync(ownerPath(file), "utf8").trim()
    const pid = Number(text)
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

/** An existing store file must be a regular file (a planted symlink must not redirect the store); mode 0600. */
const checkRegular = (file: string) => {
  const st = fs.lstatSync(file)
  if (st.isSymbolicLink() || !st.isFile()) throw Object.assign(new Error("not a regular file"), { code: "EINVAL" })
  if ((st.mode & 0o777) !== 0o600) fs.chmodSync(file, 0o600)
}

const exists = (file: string) => {
  try {
    fs.lstatSync(file)
    return true
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false
    throw e
  }
}

/** The error kind of a damaged file of this role. */
const corruptKind = (
  role: string
): CryptoStoreError["kind"] => (role === "state" ? "state-store-corrupt" : "crypto-store-corrupt")

/** The operator message of a damaged store file: what is wrong, that nothing was written, and what to do. */
export const corruptStoreMessage = (file: string, role: string, reason: string): string =>
  role === "state"
    ? `The Matrix sync-state store ${file} cannot be used: ${reason}. It was left untouched. Restore it from the backup the crypto store came from, or move it aside: the next start rebuilds it from the homeserver (messages sent while the daemon was stopped are then not answered).`
    : `The Matrix crypto store ${file} cannot be used: ${reason}. It was left untouched, and no new store is created in its place (that would reuse the device id with new keys). Restore it, with matrix-sdk-state.sqlite3, from a backup; without a backup, move both store files aside and follow the disaster recovery in docs/channels.md (\`cara matrix recovery-key restore\`, then the password for one start).`

/**
 * Why an existing file is not a store this code wrote, or undefined: the three tables, a format record
 * that parses, and (encrypted) a cipher record that decodes. Says nothing about the passphrase.
 */
export const storeStructureProblem = (db: DatabaseSync): string | undefined => {
  const missing = missingTables(db, ["kv", "dbs", "records"])
  if (missing !== undefined) return missing
  const row = (key: string) =>
    (db.prepare("SELECT value FROM kv WHERE key = ?").get(key) as { value: Uint8Array } | undefined)?.value
  const formatBytes = row("format")
  if (formatBytes === undefined) return "it has no format record"
  let format: Partial<FormatRecord>
  try {
    format = JSON.parse(Buffer.from(formatBytes).toString("utf8")) as Partial<FormatRecord>
  } catch {
    return "its format record is unreadable"
  }
  if (
    typeof format !== "object" || format === null || typeof format.format !== "number" ||
    typeof format.encrypted !== "boolean"
  ) {
    return "its format record is unreadable"
  }
  if (format.encrypted) {
    const cipher = row("cipher")
    if (cipher === undefined || decodeCipherRecord(cipher) === undefined) return "it has no readable cipher record"
  }
  return undefined
}

// Each trigger drops the `ixs` row of the record it fires for; this code writes the new one afterwards.
const IXS_SCHEMA: ReadonlyArray<readonly [string, string]> = [
  [
    "ixs",
    "CREATE TABLE IF NOT EXISTS ixs (store BLOB NOT NULL, id BLOB NOT NULL, ix BLOB NOT NULL, PRIMARY KEY (store, id)) WITHOUT ROWID"
  ],
  [
    "records_ixs_insert",
    "CREATE TRIGGER IF NOT EXISTS records_ixs_insert AFTER INSERT ON records BEGIN DELETE FROM ixs WHERE store = new.store AND id = new.id; END"
  ],
  [
    "records_ixs_update",
    "CREATE TRIGGER IF NOT EXISTS records_ixs_update AFTER UPDATE ON records BEGIN DELETE FROM ixs WHERE store = old.store AND id = old.id; END"
  ],
  [
    "records_ixs_delete",
    "CREATE TRIGGER IF NOT EXISTS records_ixs_delete AFTER DELETE ON records BEGIN DELETE FROM ixs WHERE store = old.store AND id = old.id; END"
  ]
]

// A snapshot is dropped in the same SQLite transaction as any write to its store's records or index keys,
// by whichever cara writes (the triggers live in the file), so one that exists describes the store as it is.
const snapTrigger = (table: string, event: string, row: string) =>
  `CREATE TRIGGER IF NOT EXISTS ${table}_snaps_${event.toLowerCase()} AFTER ${event} ON ${table} BEGIN DELETE FROM snaps WHERE store = ${row}.store; END`

const SNAPS_SCHEMA: ReadonlyArray<readonly [string, string]> = [
  ["snaps", "CREATE TABLE IF NOT EXISTS snaps (store BLOB PRIMARY KEY, snap BLOB NOT NULL) WITHOUT ROWID"],
  ...(["records", "ixs"] as const).flatMap((table) =>
    [["INSERT", "new"], ["UPDATE", "old"], ["DELETE", "old"]].map(([event, row]) =>
      [`${table}_snaps_${event!.toLowerCase()}`, snapTrigger(table, event!, row!)] as const
    )
  )
]

// Snapshots with a delta (`snapshots`, `snapd`): a snapshot stays valid across writes. A snapshot keeps
// the highest record rowid at its writing (`maxrid`): a record inserted since has a higher one and is
// found by a rowid range at the open, without a note. In the transaction of any other write to a record
// of a store that has a snapshot, by any cara (the triggers live in the file), the record's id is noted
// in `snapd` with its `ixs` row as it was before that first write (only the first one since the snapshot,
// that is the snapshot's own state; NULL: it had none). BEFORE triggers, so the old `ixs` row is read
// before `records_ixs_*` delete it; on both tables, so a REPLACE into `ixs` or `records` (which fires no
// DELETE trigger) is seen too; one AFTER INSERT for a new record that got a rowid the snapshot may have
// seen (SQLite reuses the highest one after its row is deleted). NOT EXISTS rather than INSERT OR IGNORE:
// a statement's conflict clause (the upsert's, INSERT OR REPLACE's) overrides the one of a trigger it
// fires. A clean close, in one transaction, writes a new snapshot of each store that changed (keeping, unwritten,
// each one still exact: writeSnapshots) and empties `snapd`.
const deltaTrigger = (name: string, when: string, row: string, rid: string, ix: string) =>
  `CREATE TRIGGER IF NOT EXISTS ${name} ${when} BEGIN INSERT INTO snapd (store, id, ix) SELECT s.store, ${row}.id, ${ix} FROM snapshots s WHERE s.store = ${row}.store AND ${rid} <= s.maxrid AND NOT EXISTS (SELECT 1 FROM snapd d WHERE d.store = ${row}.store AND d.id = ${row}.id); END`

const ixOf = (row: string) => `(SELECT x.ix FROM ixs x WHERE x.store = ${row}.store AND x.id = ${row}.id)`
/** The rowid of the record SQLite holds under `row`'s id now (NULL: none). */
const ridOf = (row: string) => `(SELECT r.rid FROM records r WHERE r.id = ${row}.id)`

const SNAPD_SCHEMA: ReadonlyArray<readonly [string, string]> = [
  [
    "snapshots",
    "CREATE TABLE IF NOT EXISTS snapshots (store BLOB PRIMARY KEY, snap BLOB NOT NULL, maxrid INTEGER NOT NULL) WITHOUT ROWID"
  ],
  [
    "snapd",
    "CREATE TABLE IF NOT EXISTS snapd (store BLOB NOT NULL, id BLOB NOT NULL, ix BLOB, PRIMARY KEY (store, id)) WITHOUT ROWID"
  ],
  ...([
    ["records_snapd_insert", "BEFORE INSERT ON records", "new", ridOf("new"), ixOf("new")],
    ["records_snapd_reuse", "AFTER INSERT ON records", "new", "new.rid", "NULL"],
    ["records_snapd_update", "BEFORE UPDATE ON records", "old", "old.rid", ixOf("old")],
    ["records_snapd_delete", "BEFORE DELETE ON records", "old", "old.rid", ixOf("old")],
    ["ixs_snapd_insert", "BEFORE INSERT ON ixs", "new", ridOf("new"), ixOf("new")],
    ["ixs_snapd_update", "BEFORE UPDATE ON ixs", "old", ridOf("old"), "old.ix"],
    ["ixs_snapd_delete", "BEFORE DELETE ON ixs", "old", ridOf("old"), "old.ix"]
  ] as const).map(([name, when, row, rid, ix]) => [name, deltaTrigger(name, when, row, rid, ix)] as const)
]

const STORE_SCHEMA = [...IXS_SCHEMA, ...SNAPS_SCHEMA, ...SNAPD_SCHEMA]

/** A store written before the `ixs`, `snaps` or `snapshots` tables: the tables and their triggers, added in one transaction. */
const addIndexTable = (db: DatabaseSync) => {
  const names = new Set(
    (db.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')").all() as Array<{ name: string }>)
      .map((r) => r.name)
  )
  if (STORE_SCHEMA.every(([name]) => names.has(name))) return
  db.exec("BEGIN IMMEDIATE")
  try {
    // Rows kept while one of their table's triggers was missing may be stale: start that table over (an
    // open rebuilds `ixs`; a clean close writes `snapshots`).
    const complete = (schema: ReadonlyArray<readonly [string, string]>) => schema.every(([name]) => names.has(name))
    if (names.has("ixs") && !complete(IXS_SCHEMA)) db.exec("DELETE FROM ixs")
    if (names.has("snaps") && !complete(SNAPS_SCHEMA)) db.exec("DELETE FROM snaps")
    if (!complete(SNAPD_SCHEMA)) {
      if (names.has("snapshots")) db.exec("DELETE FROM snapshots")
      if (names.has("snapd")) db.exec("DELETE FROM snapd")
    }
    for (const [, sql] of STORE_SCHEMA) db.exec(sql)
    db.exec("COMMIT")
  } catch (e) {
    if (db.isTransaction) db.exec("ROLLBACK")
    throw e
  }
}

/** The schema and first rows of a new store, inside createSqliteAtomically's transaction. */
const createSchema = (db: DatabaseSync, encrypted: boolean, cipher: CipherRecord | undefined) => {
  db.exec("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
  db.exec("CREATE TABLE dbs (id BLOB PRIMARY KEY, meta BLOB NOT NULL) WITHOUT ROWID")
  // A rowid table on purpose: rows are ~2 KB sealed blobs, which a WITHOUT ROWID b-tree would push
  // into overflow pages (measured: 2.6x the file size).
  db.exec(
    "CREATE TABLE records (rid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, db BLOB NOT NULL, store BLOB NOT NULL, data BLOB NOT NULL)"
  )
  db.exec("CREATE INDEX records_store ON records (store)")
  db.exec("CREATE INDEX records_db ON records (db)")
  for (const [, sql] of STORE_SCHEMA) db.exec(sql)
  const format: FormatRecord = { format: FORMAT_VERSION, encrypted }
  db.prepare("INSERT INTO kv (key, value) VALUES ('format', ?)").run(Buffer.from(JSON.stringify(format)))
  if (cipher !== undefined) {
    db.prepare("INSERT INTO kv (key, value) VALUES ('cipher', ?)").run(encodeCipherRecord(cipher))
  }
}

export class SqliteFile {
  private readonly db: DatabaseSync
  private readonly file: string
  private readonly role: string
  private keys: RowKeys
  private readonly put: StatementSync
  private readonly putIx: StatementSync
  private readonly del: StatementSync
  private readonly delStore: StatementSync
  private readonly delDb: StatementSync
  private readonly putDb: StatementSync
  private readonly delDbRow: StatementSync
  private byStoreIx: StatementSync | undefined
  private byId: StatementSync | undefined
  private readonly begin: StatementSync
  private readonly end: StatementSync
  /** The (db, store) row ids of the stores written so far: two keyed HMACs fewer per put. */
  private readonly storeIds = new Map<string, { readonly db: Buffer; readonly store: Buffer }>()
  /** The data key (also the Rust store's storageKey for the crypto file); undefined when unencrypted. */
  readonly dataKey: Buffer | undefined
  readonly stats: SqliteFileStats = {
    commits: 0,
    rowsWritten: 0,
    unchangedPuts: 0,
    indexKeysRebuilt: 0,
    snapshotsRead: 0,
    snapshotDeltaRows: 0,
    snapshotsWritten: 0,
    snapshotsKept: 0
  }
  private closed = false

  private constructor(db: DatabaseSync, file: string, role: string, dataKey: Buffer | undefined) {
    this.db = db
    this.file = file
    this.role = role
    this.dataKey = dataKey
    this.keys = deriveRowKeys(dataKey)
    // An id names one (db, store, key), so only `data` can differ on a conflict.
    this.put = db.prepare(
      "INSERT INTO records (id, db, store, data) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data"
    )
    // Only for a record SQLite holds (so `ixs` never names a missing record), after the record's own write.
    this.putIx = db.prepare("INSERT OR REPLACE INTO ixs (store, id, ix) SELECT store, id, ? FROM records WHERE id = ?")
    this.del = db.prepare("DELETE FROM records WHERE id = ?")
    this.delStore = db.prepare("DELETE FROM records WHERE store = ?")
    this.delDb = db.prepare("DELETE FROM records WHERE db = ?")
    this.putDb = db.prepare("INSERT OR REPLACE INTO dbs (id, meta) VALUES (?, ?)")
    this.delDbRow = db.prepare("DELETE FROM dbs WHERE id = ?")
    this.begin = db.prepare("BEGIN IMMEDIATE")
    this.end = db.prepare("COMMIT")
  }

  /**
   * Opens the file (creating it first, atomically, when it does not exist), takes its exclusive lock and
   * unwraps the data key. An existing file is looked at before anything opens it for writing: one that is
   * empty, truncated, not SQLite or not a store is refused (`crypto-store-corrupt` / `state-store-corrupt`)
   * and never rebuilt. Throws `CryptoStoreError` for operator-facing failures; nothing is written on a refused open.
   */
  static async open(file: string, role: string, secret: StoreSecret): Promise<SqliteFile> {
    // the data key of a store created by this call (no unwrap needed); undefined: the file existed
    let created: { readonly dataKey: Buffer | undefined } | undefined
    try {
      if (!exists(file)) {
        const dataKey = secret.encrypted ? newDataKey() : undefined
        const cipher = secret.encrypted && dataKey !== undefined
          ? await wrapDataKey(dataKey, secret.passphrase, role)
          : undefined
        if (createSqliteAtomically(file, (db) => createSchema(db, secret.encrypted, cipher))) created = { dataKey }
      }
    } catch (e) {
      if (e instanceof CryptoStoreError) throw e
      throw fail(
        "encrypted-state-io",
        file,
        `Creating the Matrix store ${file} failed (${errText(e)}). Check free disk space and permissions.`
      )
    }
    if (created === undefined) {
      const look = inspectSqlite(file, storeStructureProblem)
      if (look.state === "bad") throw fail(corruptKind(role), file, corruptStoreMessage(file, role, look.reason))
      // "busy": another process holds it; the lock step below names it
    }
    let db: DatabaseSync | undefined
    try {
      try {
        checkRegular(file)
        db = new DatabaseSync(file, { timeout: 0 })
      } catch (e) {
        throw fail(
          "encrypted-state-io",
          file,
          `Opening the Matrix store ${file} failed (${
            errText(e)
          }). Check that the state directory is writable by this user and the file is a regular file.`
        )
      }
      try {
        db.exec("PRAGMA locking_mode = EXCLUSIVE")
        db.exec("PRAGMA journal_mode = WAL")
        // FULL: the WAL is fsynced at every commit, so an acknowledged transaction also survives power loss.
        db.exec("PRAGMA synchronous = FULL")
        db.exec("BEGIN EXCLUSIVE")
        db.exec("COMMIT")
      } catch (e) {
        if (isBusy(e)) {
          const pid = readOwnerPid(file)
          throw fail(
            "store-locked",
            file,
            pid !== undefined
              ? `The Matrix store ${file} is in use by process ${pid}. Stop that process (another cara daemon or maintenance command) before starting this one.`
              : `The Matrix store ${file} is in use by another process. Stop the other cara daemon or maintenance command before starting this one.`,
            pid
          )
        }
        throw fail(
          "encrypted-state-io",
          file,
          `Locking the Matrix store ${file} failed (${errText(e)}). Check the file and the disk, then start again.`
        )
      }
      try {
        fs.chmodSync(file, 0o600)
        if (fs.existsSync(`${file}-wal`)) fs.chmodSync(`${file}-wal`, 0o600)
      } catch (e) {
        throw fail(
          "encrypted-state-io",
          file,
          `Securing the Matrix store ${file} failed (${errText(e)}). Check the ownership of the state directory.`
        )
      }

      const dataKey = created !== undefined ? created.dataKey : await SqliteFile.unlock(db, file, role, secret)
      try {
        addIndexTable(db)
      } catch (e) {
        throw fail(
          "encrypted-state-io",
          file,
          `Upgrading the Matrix store ${file} failed (${errText(e)}). Check free disk space, then start again.`
        )
      }
      return new SqliteFile(db, file, role, dataKey)
    } catch (e) {
      if (db !== undefined && db.isOpen) {
        try {
          db.close()
        } catch {
          // the open already failed; the first error is the one to report
        }
      }
      throw e
    }
  }

  private static async unlock(
    db: DatabaseSync,
    file: string,
    role: string,
    secret: StoreSecret
  ): Promise<Buffer | undefined> {
    // looked at before the open already; checked again under the lock (the file may have changed meanwhile)
    const problem = storeStructureProblem(db)
    if (problem !== undefined) throw fail(corruptKind(role), file, corruptStoreMessage(file, role, problem))
    const kvGet = (key: string): Uint8Array | undefined =>
      (db.prepare("SELECT value FROM kv WHERE key = ?").get(key) as { value: Uint8Array } | undefined)?.value
    const formatBytes = kvGet("format")!

    const format = JSON.parse(Buffer.from(formatBytes).toString("utf8")) as FormatRecord
    if (format.format !== FORMAT_VERSION) {
      throw fail(
        "encrypted-state-io",
        file,
        `The Matrix store ${file} has format ${
          String(format.format)
        }, which this cara does not know. Upgrade cara, or restore a matching backup.`
      )
    }
    if (!format.encrypted) {
      if (secret.encrypted) {
        throw fail(
          "encrypted-state-io",
          file,
          `The Matrix store ${file} was created unencrypted (matrix.encrypted=false) and cannot be opened as an encrypted store. Set matrix.encrypted=false again, or move the matrix directory aside to start over as a new device.`
        )
      }
      return undefined
    }
    if (!secret.encrypted) {
      throw fail(
        "missing-store-secret",
        file,
        `The Matrix store ${file} is encrypted but no store passphrase was given. Set matrix.encrypted=true and provide CARAPACE_CONFIG_PASSWORD or MATRIX_STORE_PASSPHRASE.`
      )
    }
    const cipherBytes = kvGet("cipher")
    const cipher = cipherBytes === undefined ? undefined : decodeCipherRecord(cipherBytes)
    if (cipher === undefined) {
      throw fail(corruptKind(role), file, corruptStoreMessage(file, role, "it has no readable cipher record"))
    }
    const dataKey = await unwrapDataKey(cipher, secret.passphrase, role)
    if (dataKey === undefined) {
      throw fail(
        "encrypted-store-passphrase-mismatch",
        file,
        `The store passphrase does not open the Matrix store ${file}; the store was left untouched. Provide the passphrase it was created with (CARAPACE_CONFIG_PASSWORD, MATRIX_STORE_PASSPHRASE or matrix/store_passphrase), or finish an interrupted rekey with \`cara matrix rekey-store --new\`.`
      )
    }
    return dataKey
  }

  /**
   * Every database with its records, decrypted. A row that does not authenticate or decode (or a page
   * SQLite finds damaged) is a damaged store: `crypto-store-corrupt` / `state-store-corrupt`, nothing written.
   */
  load(): Array<LoadedDatabase> {
    return this.readingRows(() => this.loadRows())
  }

  /** The schema of every database, without records (the on-demand open reads records per store). */
  loadSchemas(): Array<DatabaseSchema> {
    return this.readingRows(() => {
      const rows = this.db.prepare("SELECT id, meta FROM dbs").all() as Array<{ id: Uint8Array; meta: Uint8Array }>
      return rows.map((row) => deserialize(openBlob(this.keys.seal, Buffer.from(row.id), row.meta)) as DatabaseSchema)
    })
  }

  /**
   * Every key of one store with its index keys, from `ixs` alone where it is usable; other records are
   * read the old way (unseal, decode the value, `indexKeysOf`) and get their `ixs` row written back, all
   * in one SQLite transaction after the scan. A value that does not open either is a damaged store.
   */
  scanKeys(scan: KeyScan, visit: (key: unknown, indexKeys: ReadonlyArray<unknown>) => void): void {
    const store = storeId(this.keys, scan.db, scan.store)
    const missing: Array<Buffer> = []
    this.readingRows(() => {
      if (this.byStoreIx === undefined) {
        this.byStoreIx = this.db.prepare("SELECT id, ix FROM ixs WHERE store = ?")
        this.byStoreIx.setReturnArrays(true) // no object per row: measured ~40 % less CPU for the iteration
      }
      let rows = 0
      for (const [rid, ix] of this.byStoreIx.iterate(store) as Iterable<[Uint8Array, Uint8Array]>) {
        rows++
        const id = Buffer.from(rid.buffer, rid.byteOffset, rid.byteLength)
        const entry = this.indexEntry(id, ix, scan)
        if (entry === undefined) missing.push(id)
        else visit(entry[0], entry[1])
      }
      // Every `ixs` row names a record (putIx, triggers): equal counts mean no record lacks one.
      const count = this.db.prepare("SELECT count(*) AS n FROM records WHERE store = ?").get(store) as { n: number }
      if (count.n === rows) return
      const without = this.db.prepare(
        "SELECT id FROM records r WHERE store = ? AND NOT EXISTS (SELECT 1 FROM ixs x WHERE x.store = r.store AND x.id = r.id)"
      )
      for (const r of without.iterate(store) as Iterable<{ id: Uint8Array }>) missing.push(Buffer.from(r.id))
    })
    if (missing.length === 0) return
    const rebuilt: Array<readonly [Buffer, Buffer]> = []
    this.readingRows(() => {
      this.byId ??= this.db.prepare("SELECT data FROM records WHERE id = ?")
      for (const id of missing) {
        const row = this.byId.get(id) as { data: Uint8Array }
        const [key, value] = deserialize(openBlob(this.keys.seal, id, row.data)) as [unknown, unknown]
        const indexKeys = scan.indexKeysOf(value)
        visit(key, indexKeys)
        rebuilt.push([id, this.indexBlob(id, key, { signature: scan.signature, keys: indexKeys })])
      }
    })
    this.inTransaction(() => {
      for (const [id, ix] of rebuilt) this.putIx.run(ix, id)
      return true
    })
    this.stats.indexKeysRebuilt += rebuilt.length
  }

  /**
   * One store's snapshot, authenticated (or checksummed), with the store's record count and the records
   * written since (`snapd`, each with its `ixs` row now); undefined when there is none, it does not open,
   * the delta is over `deltaLimit` or one of its rows does not open or check out (the caller then scans
   * `ixs`). Never throws for a bad snapshot or delta.
   */
  readSnapshot(scan: Omit<KeyScan, "indexKeysOf">): StoreSnapshot | undefined {
    if (this.closed) throw new Error(`durable-idb: ${this.file} is closed`)
    const id = storeId(this.keys, scan.db, scan.store)
    try {
      const row = this.db.prepare("SELECT snap, maxrid FROM snapshots WHERE store = ?").get(id) as
        | { snap: Uint8Array; maxrid: number }
        | undefined
      const count = (this.db.prepare("SELECT count(*) AS n FROM records WHERE store = ?").get(id) as { n: number }).n
      if (row === undefined) return this.readOlderSnapshot(id, count)
      // The new records: a range of the store's index (store, rowid), with maxrid as a bound parameter.
      const changed = (this.db.prepare(
        "SELECT (SELECT count(*) FROM snapd WHERE store = ?1) + (SELECT count(*) FROM records r WHERE r.rid > ?2 AND r.store = ?1) AS n"
      ).get(id, row.maxrid) as { n: number }).n
      if (changed > deltaLimit(count)) return undefined
      const plain = openSnapshotBlob(this.keys.seal, id, row.snap)
      if (plain === undefined) return undefined
      const delta = this.readDelta(id, row.maxrid, scan)
      return delta === undefined ? undefined : { plain, count, delta }
    } catch {
      return undefined
    }
  }

  /**
   * An older cara's snapshot (`snaps`, version 1: the first start after an upgrade from it): valid as it
   * stands, since its triggers, kept in the file, drop it in the transaction of any write to its store.
   */
  private readOlderSnapshot(id: Buffer, count: number): StoreSnapshot | undefined {
    const row = this.db.prepare("SELECT snap FROM snaps WHERE store = ?").get(id) as { snap: Uint8Array } | undefined
    const plain = row === undefined ? undefined : openOlderSnapshotBlob(this.keys.seal, id, row.snap)
    return plain === undefined ? undefined : { plain, count, delta: [] }
  }

  /**
   * A store's `snapd` rows and the records inserted since its snapshot (rowid above `maxrid`, not noted),
   * opened; undefined when one does not open or a record now has no usable `ixs` row.
   */
  private readDelta(store: Buffer, maxrid: number, scan: Omit<KeyScan, "indexKeysOf">): Array<DeltaEntry> | undefined {
    const rows = this.db.prepare(
      `SELECT d.id AS id, d.ix AS was, x.ix AS now, EXISTS (SELECT 1 FROM records r WHERE r.id = d.id) AS present
         FROM snapd d LEFT JOIN ixs x ON x.store = d.store AND x.id = d.id WHERE d.store = ?1
       UNION ALL
       SELECT r.id, NULL, x.ix, 1 FROM records r LEFT JOIN ixs x ON x.store = r.store AND x.id = r.id
         WHERE r.rid > ?2 AND r.store = ?1 AND NOT EXISTS (SELECT 1 FROM snapd d WHERE d.store = r.store AND d.id = r.id)`
    ).all(store, maxrid) as Array<{ id: Uint8Array; was: Uint8Array | null; now: Uint8Array | null; present: number }>
    const delta: Array<DeltaEntry> = []
    for (const row of rows) {
      const id = Buffer.from(row.id)
      let was: unknown = undefined
      if (row.was !== null) {
        const plain = openIndexBlob(this.keys.seal, id, row.was)
        const parsed = plain === undefined ? undefined : deserialize(plain)
        if (!Array.isArray(parsed) || parsed.length !== 3) return undefined
        was = parsed[1]
      }
      let now: readonly [unknown, ReadonlyArray<unknown>] | undefined = undefined
      if (row.present !== 0) {
        now = row.now === null ? undefined : this.indexEntry(id, row.now, scan)
        if (now === undefined) return undefined
      } else if (row.now !== null) return undefined
      delta.push({ was, now })
    }
    return delta
  }

  /** Counts a snapshot the open used, and the delta rows it applied (stats). */
  snapshotUsed(deltaRows: number): void {
    this.stats.snapshotsRead++
    this.stats.snapshotDeltaRows += deltaRows
  }

  /**
   * Brings this file's snapshots up to date at a clean close, in one SQLite transaction: a store whose
   * snapshot is still exact (snapshotExact) keeps it, unwritten; any other store listed gets the plaintext
   * `plain()` gives (undefined: none); a store not listed has none afterwards. Not counted in `commits`.
   */
  writeSnapshots(stores: ReadonlyArray<SnapshotRequest>) {
    if (this.closed) throw new Error(`durable-idb: ${this.file} is closed`)
    const insert = this.db.prepare("INSERT OR REPLACE INTO snapshots (store, snap, maxrid) VALUES (?, ?, ?)")
    const drop = this.db.prepare("DELETE FROM snapshots WHERE store = ?")
    this.begin.run()
    try {
      const maxrid = (this.db.prepare("SELECT coalesce(max(rid), 0) AS n FROM records").get() as { n: number }).n
      // `snaps` (version 1, an older cara's) would be valid until a write; it is replaced here too. (Each
      // DELETE only when there are rows: one without WHERE clears the table and writes its root page.)
      this.clearTable("snaps")
      const kept = new Set<string>()
      const fresh: Array<readonly [Buffer, Buffer]> = []
      for (const s of stores) {
        const id = storeId(this.keys, s.db, s.store)
        if (s.shapePrefix !== undefined && this.snapshotExact(id, s.shapePrefix)) kept.add(id.toString("hex"))
        else {
          const plain = s.plain()
          if (plain !== undefined) fresh.push([id, plain])
        }
      }
      const old = this.db.prepare("SELECT store FROM snapshots").all() as Array<{ store: Uint8Array }>
      for (const { store } of old) if (!kept.has(Buffer.from(store).toString("hex"))) drop.run(store)
      // A kept snapshot has no `snapd` row: every row left is of a store rewritten or dropped here.
      this.clearTable("snapd")
      for (const [id, plain] of fresh) insert.run(id, sealSnapshotBlob(this.keys.seal, id, plain), maxrid)
      this.end.run()
      this.stats.snapshotsWritten += fresh.length
      this.stats.snapshotsKept += kept.size
    } catch (e) {
      if (this.db.isTransaction) this.db.exec("ROLLBACK")
      throw e
    }
  }

  /**
   * Whether a store's snapshot still describes its rows exactly, from what SQLite holds alone: it opens
   * and was taken of a store of this shape (its plaintext starts with `shapePrefix`), no record of the
   * store was written since (no `snapd` row: the triggers note each one in its write's transaction) and
   * none was added (no rowid above its maxrid).
   */
  private snapshotExact(id: Buffer, shapePrefix: Buffer): boolean {
    try {
      return this.snapshotUnchanged(id, shapePrefix)
    } catch {
      return false // damaged (say, not a blob): rewritten
    }
  }

  private snapshotUnchanged(id: Buffer, shapePrefix: Buffer): boolean {
    const row = this.db.prepare("SELECT snap, maxrid FROM snapshots WHERE store = ?").get(id) as
      | { snap: Uint8Array; maxrid: number }
      | undefined
    if (row === undefined) return false
    const changed = this.db.prepare(
      "SELECT EXISTS (SELECT 1 FROM snapd WHERE store = ?1) OR EXISTS (SELECT 1 FROM records r WHERE r.rid > ?2 AND r.store = ?1) AS c"
    ).get(id, row.maxrid) as { c: number }
    if (changed.c !== 0) return false
    const plain = openSnapshotBlob(this.keys.seal, id, row.snap)
    return plain !== undefined && plain.length >= shapePrefix.length &&
      plain.subarray(0, shapePrefix.length).equals(shapePrefix)
  }

  /** Deletes every row of a table, writing nothing when it has none. */
  private clearTable(table: "snaps" | "snapd"): void {
    const any = this.db.prepare(`SELECT EXISTS (SELECT 1 FROM ${table}) AS e`).get() as { e: number }
    if (any.e !== 0) this.db.exec(`DELETE FROM ${table}`)
  }

  /** A record's [key, index keys] from its `ixs` row, or undefined when that is damaged or for another index list. */
  private indexEntry(
    id: Buffer,
    ix: Uint8Array,
    scan: Omit<KeyScan, "indexKeysOf">
  ): readonly [unknown, ReadonlyArray<unknown>] | undefined {
    const plain = openIndexBlob(this.keys.seal, id, ix)
    if (plain === undefined) return undefined
    let parsed: unknown
    try {
      parsed = deserialize(plain)
    } catch {
      return undefined
    }
    if (!Array.isArray(parsed) || parsed.length !== 3 || parsed[0] !== scan.signature) return undefined
    const keys: unknown = parsed[2]
    if (!Array.isArray(keys) || keys.length !== scan.indexCount) return undefined
    return [parsed[1], keys]
  }

  private indexBlob(id: Buffer, key: unknown, indexKeys: IndexKeys): Buffer {
    return sealIndexBlob(this.keys.seal, id, serialize([indexKeys.signature, key, indexKeys.keys]))
  }

  /** One committed record's value (and its sealed size, for the caller's cache), or undefined without a row. */
  readRecord(db: string, store: string, key: unknown): { readonly value: unknown; readonly bytes: number } | undefined {
    if (this.closed) throw new Error(`durable-idb: ${this.file} is closed`)
    return this.readingRows(() => {
      this.byId ??= this.db.prepare("SELECT data FROM records WHERE id = ?")
      const id = recordId(this.keys, db, store, key)
      const row = this.byId.get(id) as { data: Uint8Array } | undefined
      if (row === undefined) return undefined
      const [, value] = deserialize(openBlob(this.keys.seal, id, row.data)) as [unknown, unknown]
      return { value, bytes: row.data.byteLength }
    })
  }

  /** A row that does not authenticate or decode (or a page SQLite finds damaged) is a damaged store. */
  private readingRows<A>(body: () => A): A {
    try {
      return body()
    } catch (e) {
      const errcode = (e as { errcode?: number }).errcode
      const reason = errcode === 11 || errcode === 26
        ? "SQLite reports a damaged page"
        : `a stored record does not decrypt or decode (${e instanceof Error ? e.message : String(e)})`
      throw fail(corruptKind(this.role), this.file, corruptStoreMessage(this.file, this.role, reason))
    }
  }

  private loadRows(): Array<LoadedDatabase> {
    const out: Array<LoadedDatabase> = []
    const rows = this.db.prepare("SELECT id, meta FROM dbs").all() as Array<{ id: Uint8Array; meta: Uint8Array }>
    const byStore = this.db.prepare("SELECT id, data FROM records WHERE store = ?")
    for (const row of rows) {
      const schema = deserialize(openBlob(this.keys.seal, Buffer.from(row.id), row.meta)) as DatabaseSchema
      const records = new Map<string, Array<readonly [unknown, unknown]>>()
      for (const store of schema.stores) {
        const list: Array<readonly [unknown, unknown]> = []
        for (
          const r of byStore.iterate(storeId(this.keys, schema.name, store.name)) as Iterable<
            { id: Uint8Array; data: Uint8Array }
          >
        ) {
          const [key, value] = deserialize(openBlob(this.keys.seal, Buffer.from(r.id), r.data)) as [unknown, unknown]
          list.push([key, value])
        }
        records.set(store.name, list)
      }
      out.push({ schema, records })
    }
    return out
  }

  private writeSchema(schema: DatabaseSchema) {
    const id = databaseId(this.keys, schema.name)
    this.putDb.run(id, sealBlob(this.keys.seal, id, serialize(schema)))
  }

  private idsOf(db: string, store: string) {
    const slot = `${db.length}:${db}${store}`
    let ids = this.storeIds.get(slot)
    if (ids === undefined) {
      this.storeIds.set(slot, ids = { db: databaseId(this.keys, db), store: storeId(this.keys, db, store) })
    }
    return ids
  }

  /**
   * Whether SQLite holds exactly `plain` under this row id. Read inside the commit's transaction, so
   * earlier deletes of it are seen. A row of another length is not opened (a seal adds a fixed overhead);
   * one that does not open is simply overwritten.
   */
  private holds(id: Buffer, plain: Buffer): boolean {
    this.byId ??= this.db.prepare("SELECT data FROM records WHERE id = ?")
    const row = this.byId.get(id) as { data: Uint8Array } | undefined
    if (row === undefined || row.data.byteLength !== sealedLength(this.keys.seal, plain.length)) return false
    try {
      return openBlob(this.keys.seal, id, row.data).equals(plain)
    } catch {
      return false
    }
  }

  /** Writes one record unless SQLite already holds this key with this value; true when a row was written. */
  private writeRecord(db: string, store: string, key: unknown, value: unknown, indexKeys?: IndexKeys): boolean {
    const id = recordId(this.keys, db, store, key)
    const plain = serialize([key, value])
    if (this.holds(id, plain)) {
      this.stats.unchangedPuts++
      return false
    }
    const ids = this.idsOf(db, store)
    this.put.run(id, ids.db, ids.store, sealBlob(this.keys.seal, id, plain))
    if (indexKeys !== undefined) this.putIx.run(this.indexBlob(id, key, indexKeys), id)
    this.stats.rowsWritten++
    return true
  }

  /**
   * Applies the given changes (the persister passes one IndexedDB transaction's) in ONE SQLite transaction.
   * Throws on I/O failure (nothing applied). Puts that change nothing are skipped; when no row changes,
   * nothing is written.
   */
  commit(changes: ReadonlyArray<DatabaseChange>): void {
    this.inTransaction(() => {
      let changed = false
      for (const change of changes) {
        if (change.replaceAll === true) {
          changed = this.delDb.run(databaseId(this.keys, change.db)).changes > 0 || changed
        }
        if (change.schema !== undefined) {
          this.writeSchema(change.schema)
          changed = true
        }
        for (const s of change.stores) {
          if (s.cleared) changed = this.delStore.run(this.idsOf(change.db, s.name).store).changes > 0 || changed
          for (const k of s.deletes) {
            changed = this.del.run(recordId(this.keys, change.db, s.name, k)).changes > 0 || changed
          }
          for (const [k, v, ix] of s.puts) changed = this.writeRecord(change.db, s.name, k, v, ix) || changed
          for (const [k, ix] of s.reindex ?? []) {
            const id = recordId(this.keys, change.db, s.name, k)
            changed = this.putIx.run(this.indexBlob(id, k, ix), id).changes > 0 || changed
          }
        }
      }
      return changed
    })
  }

  /** IDBFactory.deleteDatabase */
  dropDatabase(name: string): void {
    this.inTransaction(() => {
      const id = databaseId(this.keys, name)
      this.delDb.run(id)
      this.delDbRow.run(id)
      return true
    })
  }

  /** `body` returns whether it changed a row (a transaction that changed none writes nothing at COMMIT). */
  private inTransaction(body: () => boolean) {
    if (this.closed) throw new Error(`durable-idb: ${this.file} is closed`)
    this.begin.run()
    try {
      const changed = body()
      this.end.run()
      if (changed) this.stats.commits++
    } catch (e) {
      if (this.db.isTransaction) this.db.exec("ROLLBACK")
      throw e
    }
  }

  /**
   * Re-wraps the data key under a new passphrase: one row, one transaction. Only the data key's
   * wrapping changes; the rows (sealed with subkeys of the data key) are untouched.
   */
  async rewrap(newPassphrase: string): Promise<void> {
    if (this.dataKey === undefined) throw new Error("durable-idb: an unencrypted store has no key to re-wrap")
    const record: CipherRecord = await wrapDataKey(this.dataKey, newPassphrase, this.role)
    this.inTransaction(() => {
      this.db.prepare("UPDATE kv SET value = ? WHERE key = 'cipher'").run(encodeCipherRecord(record))
      return true
    })
  }

  /** Moves the WAL into the main file (the store stays open). */
  checkpoint(): void {
    if (!this.closed) this.db.exec("PRAGMA wal_checkpoint(TRUNCATE)")
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    try {
      this.db.exec("PRAGMA wal_checkpoint(TRUNCATE)")
    } finally {
      this.db.close()
    }
  }

  get path(): string {
    return this.file
  }

  get directory(): string {
    return path.dirname(this.file)
  }
}
