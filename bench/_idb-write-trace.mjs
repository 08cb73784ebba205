// A measurement aid, not product code: preloaded into the daemon (`NODE_OPTIONS=--import <this file>`) by
// bench/matrix-idle.ts when BENCH_IDLE_TRACE_STORES=1. It logs one stderr line per IndexedDB write request
// (put/add/delete/clear) with the database, the object store and the value's serialized size, so the bench
// can say WHICH stores the daemon writes while idle. Values are never printed, only their size. The
// daemon's fake-indexeddb resolves to the same module file as this import, so patching its prototype
// reaches the daemon's own object stores.
import { IDBObjectStore } from "fake-indexeddb"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { serialize } from "node:v8"

const sizeOf = (value) => {
  try {
    return serialize(value).length
  } catch {
    return -1
  }
}

// same=1: the value serializes to the same bytes as the last put under this database, store and key (in
// this process): a put that changes nothing. Only a hash of each value is kept, never the value.
const lastHash = new Map()
const sameAsLast = (db, store, value, key) => {
  if (value === undefined) return 0
  let hash
  try {
    hash = createHash("sha256").update(serialize(value)).digest("base64")
  } catch {
    return 0
  }
  const slot = `${db}\0${store}\0${key === undefined ? "(in-line)" : String(key)}`
  const same = lastHash.get(slot) === hash ? 1 : 0
  lastHash.set(slot, hash)
  return same
}

const trace = (op, store, value, key) => {
  const db = store.transaction?.db?.name ?? "?"
  const same = op === "put" ? ` same=${sameAsLast(db, store.name, value, key)}` : ""
  process.stderr.write(
    `[idb-write] ${Date.now()} ${op} db=${db} store=${store.name} bytes=${
      value === undefined ? 0 : sizeOf(value)
    }${same}\n`
  )
}

for (const op of ["put", "add", "delete", "clear"]) {
  const original = IDBObjectStore.prototype[op]
  IDBObjectStore.prototype[op] = function(...args) {
    trace(op, this, op === "put" || op === "add" ? args[0] : undefined, op === "put" ? args[1] : undefined)
    return original.apply(this, args)
  }
}

// The durable store's SQLite commits (the daemon's own module, when it is the built one in dist/): one line
// per IndexedDB transaction written, with the rows it wrote and the puts it skipped as unchanged.
const sqliteFileJs = new URL("../dist/src/layers/durable-idb/sqliteFile.js", import.meta.url)
if (fs.existsSync(sqliteFileJs)) {
  const { SqliteFile } = await import(sqliteFileJs.href)
  const commit = SqliteFile.prototype.commit
  if (typeof commit === "function") {
    // gapUs: time since the previous commit (of any file) ended; a commit that follows another within the
    // same event-loop turn shows a gap of a few µs, one that waited for I/O (a /sync) shows milliseconds.
    let lastEnd
    SqliteFile.prototype.commit = function(changes) {
      const before = this.stats === undefined ? undefined : { ...this.stats }
      const start = process.hrtime.bigint()
      const result = commit.call(this, changes)
      const end = process.hrtime.bigint()
      const gap = lastEnd === undefined ? -1 : Number((start - lastEnd) / 1000n)
      lastEnd = end
      if (before !== undefined) {
        const s = this.stats
        process.stderr.write(
          `[idb-commit] ${Date.now()} role=${this.role} committed=${s.commits - before.commits} rows=${
            s.rowsWritten - before.rowsWritten
          } unchanged=${s.unchangedPuts - before.unchangedPuts} gapUs=${gap}\n`
        )
      }
      return result
    }
  }
}
