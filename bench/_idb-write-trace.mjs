// A measurement aid, not product code: preloaded into the daemon (`NODE_OPTIONS=--import <this file>`) by
// bench/matrix-idle.ts when BENCH_IDLE_TRACE_STORES=1. It logs one stderr line per IndexedDB write request
// (put/add/delete/clear) with the database, the object store and the value's serialized size, so the bench
// can say WHICH stores the daemon writes while idle. Values are never printed, only their size. The
// daemon's fake-indexeddb resolves to the same module file as this import, so patching its prototype
// reaches the daemon's own object stores.
import { IDBObjectStore } from "fake-indexeddb"
import { serialize } from "node:v8"

const sizeOf = (value) => {
  try {
    return serialize(value).length
  } catch {
    return -1
  }
}

const trace = (op, store, value) => {
  const db = store.transaction?.db?.name ?? "?"
  process.stderr.write(`[idb-write] ${Date.now()} ${op} db=${db} store=${store.name} bytes=${value === undefined ? 0 : sizeOf(value)}\n`)
}

for (const op of ["put", "add", "delete", "clear"]) {
  const original = IDBObjectStore.prototype[op]
  IDBObjectStore.prototype[op] = function(...args) {
    trace(op, this, op === "put" || op === "add" ? args[0] : undefined)
    return original.apply(this, args)
  }
}
