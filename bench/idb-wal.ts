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
    const put = async (store: string, value: unknown, key: string) => {
      const tx = db.transaction(store, "readwrite")
      tx.objectStore(store).put(value, key)
      await done(tx)
    }
    const fill = db.transaction("inbound_group_sessions3", "readwrite")
    for (let i = 0; i < ROWS; i++) {
      fill.objectStore("inbound_group_sessions3").put({ pickled: crypto.randomBytes(2000) }, `s${i}`)
    }
    await done(fill)
    await put("core", account(), "account")

    // CPU µs per put of the whole process (user: JS, SQLite, crypto; system: mostly the fsync and the
    // writes), next to the WAL bytes; the values are made before the timed series.
    const cpu: Record<string, { user: number; system: number }> = {}
    const series = async (
      name: string,
      values: ReadonlyArray<unknown>,
      body: (v: unknown, i: number) => Promise<void>
    ) => {
      f.checkpoint()
      const from = walSize(file)
      const c0 = process.cpuUsage()
      for (let i = 0; i < PUTS; i++) await body(values[i], i)
      const c = process.cpuUsage(c0)
      cpu[name] = { user: Math.round(c.user / PUTS), system: Math.round(c.system / PUTS) }
      return Math.round((walSize(file) - from) / PUTS)
    }
    const each = (make: () => unknown) => Array.from({ length: PUTS }, make)
    const upsert = await series("update9k", each(account), (v) => put("core", v, "account"))
    const same = account()
    await put("core", same, "account")
    const unchanged = await series("unchanged9k", each(() => same), (v) => put("core", v, "account"))
    const insert = await series(
      "insert2k",
      each(() => ({ pickled: crypto.randomBytes(2000) })),
      (v, i) => put("inbound_group_sessions3", v, `new${i}`)
    )
    const stats = { ...f.stats }
    db.close()
    idb.detach()
    f.close()

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
        walBytesPerPut: { update9k: { upsert, insertOrReplace }, unchanged9k: unchanged, insert2k: insert },
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
