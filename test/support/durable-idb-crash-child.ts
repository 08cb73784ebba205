// Child of durable-idb-crash.test.ts: rewrites every record of a store in each transaction, reading the
// previous (on-demand) value first, and prints `ack <gen>` once a transaction's `complete` arrived.
// Each transaction also rewrites or deletes a small subset of a larger store (`many`), so a clean close's
// snapshot of it is opened with a delta. The parent SIGKILLs it at random moments.
import { openDurableIdb } from "../../src/layers/durable-idb/durableIdb.js"
import { SqliteFile } from "../../src/layers/durable-idb/sqliteFile.js"
import { done, openDb, request } from "./cryptostore-child.idb.js"

export const CRASH_DB = "cara::crash"
export const CRASH_RECORDS = 40
export const CRASH_SECRET = { encrypted: true as const, passphrase: "crash child passphrase" }

/** The record `id` as written by generation `gen`: the payload says which generation wrote it. */
export const crashRecord = (id: number, gen: number) => ({ id, gen, payload: new Uint8Array(1500).fill(gen % 251) })

/** Put again by every transaction, always equal: after the first, a put the store skips as unchanged. */
export const crashConstant = () => ({ fixed: true, payload: new Uint8Array(3000).fill(7) })

/** Records of `many`, all written by generation 0; generation g > 0 writes those with id % MANY_EVERY = g % MANY_EVERY. */
export const MANY_RECORDS = 600
export const MANY_EVERY = 100

/** The last generation at or before `gen` that wrote record `id` of `many`. */
const manyWriter = (id: number, gen: number): number => {
  const g = gen - (((gen - id) % MANY_EVERY) + MANY_EVERY) % MANY_EVERY
  return g >= 1 ? g : 0
}

/** Record `id` of `many` as written by generation `gen` (gen > 0, gen % 3 = 0: deleted). */
export const manyRecord = (id: number, gen: number) => ({ id, gen, pad: new Uint8Array(200).fill(gen % 251) })

/** Record `id` of `many` as the store holds it after generation `gen` (undefined: deleted). */
export const manyHeld = (id: number, gen: number) => {
  const g = manyWriter(id, gen)
  return g > 0 && g % 3 === 0 ? undefined : manyRecord(id, g)
}

export const crashSchema = (
  db: { createObjectStore(name: string, o?: object): { createIndex(n: string, k: string): void } }
) => {
  db.createObjectStore("recs", { keyPath: "id" }).createIndex("by_gen", "gen")
  db.createObjectStore("meta")
  db.createObjectStore("many", { keyPath: "id" }).createIndex("by_gen", "gen")
}

/** Generation `next`'s writes to `many`, each after reading the record's previous (on-demand) value. */
const writeMany = (many: any, gen: number, next: number) => {
  for (let id = next === 0 ? 0 : next % MANY_EVERY; id < MANY_RECORDS; id += next === 0 ? 1 : MANY_EVERY) {
    const get = many.get(id)
    get.onsuccess = () => {
      const old = get.result as { gen: number } | undefined
      if (gen >= 0 && old?.gen !== manyHeld(id, gen)?.gen) {
        process.stdout.write(`bad many ${id} ${String(old?.gen)} ${gen}\n`)
        process.exit(3)
      }
      if (next > 0 && next % 3 === 0) many.delete(id)
      else many.put(manyRecord(id, next))
    }
  }
}

const run = async (file: string) => {
  const f = await SqliteFile.open(file, "crypto", CRASH_SECRET)
  const idb = await openDurableIdb([f], () => f, { cacheEntries: 8 })
  const db = await openDb(idb.factory, CRASH_DB, 1, crashSchema)
  let gen = ((await request(db.transaction("meta").objectStore("meta").get("gen"))) as number | undefined) ?? -1
  for (;;) {
    const next = gen + 1
    const tx = db.transaction(["recs", "meta", "many"], "readwrite")
    const recs = tx.objectStore("recs")
    for (let id = 0; id < CRASH_RECORDS; id++) {
      const get = recs.get(id)
      get.onsuccess = () => {
        const old = get.result as { gen: number } | undefined
        if (gen >= 0 && old?.gen !== gen) {
          process.stdout.write(`bad ${id} ${String(old?.gen)} ${gen}\n`)
          process.exit(3)
        }
        recs.put(crashRecord(id, next))
      }
    }
    // Records come and go too: odd generations drop the last one.
    if (next % 2 === 1) recs.delete(CRASH_RECORDS)
    else recs.put(crashRecord(CRASH_RECORDS, next))
    writeMany(tx.objectStore("many"), gen, next)
    tx.objectStore("meta").put(next, "gen")
    tx.objectStore("meta").put(crashConstant(), "constant")
    await done(tx)
    gen = next
    process.stdout.write(`ack ${gen}\n`)
  }
}

if (process.argv[2] !== undefined) await run(process.argv[2])
