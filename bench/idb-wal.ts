// Bytes the durable IndexedDB appends to its SQLite WAL per write; prints one JSON object. No Synapse, no
// timings: WAL bytes depend on the page layout only, so the figures mean the same on a loaded machine.
//   A store shaped like a daemon's crypto file: BENCH_WAL_ROWS (3,000) rows of ~2.1 KB (Megolm sessions) and
//   one ~9.2 KB record (the Rust crypto's account, re-saved on every /sync). Measured, each over
//   BENCH_WAL_PUTS (50) one-put IndexedDB transactions, the WAL checkpointed before each series:
//     update9k.upsert           a changed account record, through the store (upsert in place)
//     update9k.insertOrReplace  the same update with the statement used before (`INSERT OR REPLACE`, which
//                               deletes and re-inserts the row and so rewrites its three index entries), on a
//                               copy of the same file: the reference
//     unchanged9k               the same value put again (skipped: SQLite already holds it)
//     insert2k                  a new 2.1 KB record
//   Then the store is closed cleanly (writing its snapshots) and reopened, and two series run again with the
//   snapshots in place (what a daemon's run after a clean start writes): withSnapshot.update9k (the same
//   record every time) and withSnapshot.insert2k (a new record every time).
// Also the process CPU (user / system µs) per put of each series: on a loaded machine only roughly comparable.
// Run: `node_modules/.bin/vite-node bench/idb-wal.ts`.
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { openDurableIdb } from "../src/layers/durable-idb/durableIdb.js"
import { SqliteFile } from "../src/layers/durable-idb/sqliteFile.js"
import { done, openDb } from "../test/support/cryptostore-child.idb.js"

const ROWS = Number(process.env["BENCH_WAL_ROWS"] ?? 3000)
const PUTS = Number(process.env["BENCH_WAL_PUTS"] ?? 50)
const SECRET = { encrypted: true as const, passphrase: "bench passphrase" }
const DB = "cara::matrix-sdk-crypto"

const walSize = (file: string) => (fs.existsSync(`${file}-wal`) ? fs.statSync(`${file}-wal`).size : 0)
// Random bytes: the Rust store's values are ciphertext, so nothing here may compress or repeat.
const account = () => ({ ciphertext: crypto.randomBytes(9000), nonce: crypto.randomBytes(24), version: 1 })

/** Puts into `store` of the bench database, one IndexedDB transaction each. */
const putter = (db: any) => async (store: string, value: unknown, key: string) => {
  const tx = db.transaction(store, "readwrite")
  tx.objectStore(store).put(value, key)
  await done(tx)
}

/** WAL bytes per put of `values`, the WAL checkpointed first; the CPU per put goes into `cpu[name]`. */
const series = async (
  f: SqliteFile,
  cpu: Record<string, { user: number; system: number }>,
  name: string,
  values: ReadonlyArray<unknown>,
  body: (v: unknown, i: number) => Promise<void>
) => {
  f.checkpoint()
  const from = walSize(f.path)
  const c0 = process.cpuUsage()
  for (let i = 0; i < PUTS; i++) await body(values[i], i)
  const c = process.cpuUsage(c0)
  cpu[name] = { user: Math.round(c.user / PUTS), system: Math.round(c.system / PUTS) }
  return Math.round((walSize(f.path) - from) / PUTS)
}

/** The store reopened after a clean close (its snapshots in place): an account update and new sessions. */
const afterCleanStop = async (file: string, cpu: Record<string, { user: number; system: number }>) => {
  const f = await SqliteFile.open(file, "crypto", SECRET)
  const idb = await openDurableIdb([f], () => f)
  const db = await openDb(idb.factory, DB, 1)
  const put = putter(db)
  const each = (make: () => unknown) => Array.from({ length: PUTS }, make)
  const update9k = await series(f, cpu, "withSnapshot.update9k", each(account), (v) => put("core", v, "account"))
  const insert2k = await series(
    f,
    cpu,
    "withSnapshot.insert2k",
    each(() => ({ pickled: crypto.randomBytes(2000) })),
    (v, i) => put("inbound_group_sessions3", v, `after${i}`)
  )
  db.close()
  idb.detach()
  f.close()
  return { update9k, insert2k, snapshotsRead: f.stats.snapshotsRead }
}

const main = async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "cara-bench-wal-"))
  try {
    const file = path.join(root, "matrix-sdk-crypto.sqlite3")
    const f = await SqliteFile.open(file, "crypto", SECRET)
    const idb = await openDurableIdb([f], () => f)
    const db = await openDb(idb.factory, DB, 1, (d) => {
      d.createObjectStore("core")
      d.createObjectStore("inbound_group_sessions3")
    })
    const put = putter(db)
    const fill = db.transaction("inbound_group_sessions3", "readwrite")
    for (let i = 0; i < ROWS; i++) {
      fill.objectStore("inbound_group_sessions3").put({ pickled: crypto.randomBytes(2000) }, `s${i}`)
    }
    await done(fill)
    await put("core", account(), "account")

    // CPU µs per put of the whole process (user: JS, SQLite, crypto; system: mostly the fsync and the
    // writes), next to the WAL bytes; the values are made before the timed series.
    const cpu: Record<string, { user: number; system: number }> = {}
    const each = (make: () => unknown) => Array.from({ length: PUTS }, make)
    const upsert = await series(f, cpu, "update9k", each(account), (v) => put("core", v, "account"))
    const same = account()
    await put("core", same, "account")
    const unchanged = await series(f, cpu, "unchanged9k", each(() => same), (v) => put("core", v, "account"))
    const insert = await series(
      f,
      cpu,
      "insert2k",
      each(() => ({ pickled: crypto.randomBytes(2000) })),
      (v, i) => put("inbound_group_sessions3", v, `new${i}`)
    )
    const stats = { ...f.stats }
    db.close()
    idb.detach()
    f.close()
    const withSnapshot = await afterCleanStop(file, cpu)

    // The reference: the statement before this change, on the same file (same rows, same page layout).
    const raw = new DatabaseSync(file)
    raw.exec("PRAGMA journal_mode = WAL")
    raw.exec("PRAGMA synchronous = FULL")
    const big = raw.prepare("SELECT id, db, store FROM records ORDER BY length(data) DESC LIMIT 1").get() as {
      id: Uint8Array
      db: Uint8Array
      store: Uint8Array
    }
    const replace = raw.prepare("INSERT OR REPLACE INTO records (id, db, store, data) VALUES (?, ?, ?, ?)")
    raw.exec("PRAGMA wal_checkpoint(TRUNCATE)")
    const from = walSize(file)
    for (let i = 0; i < PUTS; i++) {
      raw.exec("BEGIN IMMEDIATE")
      replace.run(big.id, big.db, big.store, crypto.randomBytes(9200 + 28))
      raw.exec("COMMIT")
    }
    const insertOrReplace = Math.round((walSize(file) - from) / PUTS)
    raw.close()

    process.stdout.write(`${
      JSON.stringify({
        bench: "idb-wal",
        rows: ROWS,
        puts: PUTS,
        walBytesPerPut: {
          update9k: { upsert, insertOrReplace },
          unchanged9k: unchanged,
          insert2k: insert,
          withSnapshot
        },
        cpuMicrosPerPut: cpu,
        store: {
          sqliteCommits: stats.commits,
          rowsWritten: stats.rowsWritten,
          unchangedPutsSkipped: stats.unchangedPuts
        }
      })
    }\n`)
  } finally {
    fs.rmSync(root, { recursive: true, force: true })
  }
}

await main()
