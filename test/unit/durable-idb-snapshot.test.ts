// Object-store snapshots (the `snapshots` table, snapshot.ts): a clean close writes one per store and the
// next open fills the store from it without reading `ixs`; a write (by this code or, through the
// triggers, by any other writer) notes the record in `snapd` in the write's own transaction, so after a
// crash the open applies that delta to the snapshot; a damaged blob, another index list or an old store
// without the tables all fall back to `ixs`. Every case gives exactly the answers of in-memory
// fake-indexeddb. (durable-idb-snapshot-delta.test.ts: the delta in detail.)
import { IDBFactory, IDBKeyRange } from "fake-indexeddb"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { beforeEach, describe, expect, it } from "vitest"
import { type DurableIdb, openDurableIdb } from "../../src/layers/durable-idb/durableIdb.js"
import type { IdbFactory } from "../../src/layers/durable-idb/internals.js"
import { shapePrefixOf, snapshotOf } from "../../src/layers/durable-idb/snapshot.js"
import { SqliteFile, type StoreSecret } from "../../src/layers/durable-idb/sqliteFile.js"
import { treeRecords } from "../../src/layers/durable-idb/trees.js"
import { type Db, done, openDb, request } from "../support/cryptostore-child.idb.js"
import { tmpDir } from "../support/tmp.js"

const DB = "cara::snaps"
const ENCRYPTED: StoreSecret = { encrypted: true, passphrase: "snapshot passphrase" }
const PLAIN: StoreSecret = { encrypted: false }
const N = 40
/** Object stores of V1: ob, kv, bin, empty. */
const STORES = 4

let file: string
beforeEach(() => {
  file = path.join(tmpDir("cara-didb-snap-"), "crypto.sqlite3")
})

interface Opened {
  readonly idb: DurableIdb
  readonly file: SqliteFile
  /** A clean close: detach (writes the snapshots), then the file. */
  readonly close: () => void
  /** A crash as far as the store can tell: the file is closed, the factory never detached. */
  readonly crash: () => void
}

const openDurable = async (secret: StoreSecret = ENCRYPTED): Promise<Opened> => {
  const f = await SqliteFile.open(file, "crypto", secret)
  const idb = await openDurableIdb([f], () => f, { cacheEntries: 2 })
  return {
    idb,
    file: f,
    close: () => {
      idb.detach()
      f.close()
    },
    crash: () => f.close()
  }
}

/** SQL on the closed store file (what an older cara, or damage, does to it). */
const onFile = <A>(body: (db: DatabaseSync) => A): A => {
  const db = new DatabaseSync(file)
  try {
    return body(db)
  } finally {
    db.close()
  }
}

const snapCount = () => onFile((db) => (db.prepare("SELECT count(*) AS n FROM snapshots").get() as { n: number }).n)
const deltaCount = () => onFile((db) => (db.prepare("SELECT count(*) AS n FROM snapd").get() as { n: number }).n)

const rec = (i: number, gen = 0) => ({
  room: `!r${i % 3}`,
  id: `s${String(i).padStart(2, "0")}`,
  sender: `@u${i % 4}`,
  tags: [`t${i % 5}`, `t${(i + 1) % 5}`, `t${i % 5}`],
  uid: i,
  at: new Date(1_700_000_000_000 + (i % 7) * 1000),
  gen
})

const V1 = (db: Db) => {
  const ob = db.createObjectStore("ob", { keyPath: ["room", "id"] })
  ob.createIndex("by_sender", "sender")
  ob.createIndex("by_tag", "tags", { multiEntry: true })
  ob.createIndex("by_uid", "uid", { unique: true })
  ob.createIndex("by_at", "at")
  db.createObjectStore("kv")
  db.createObjectStore("bin", { autoIncrement: true }).createIndex("by_blob", "blob")
  db.createObjectStore("empty").createIndex("by_x", "x")
}

const fill = async (f: IdbFactory) => {
  const db = await openDb(f, DB, 1, V1)
  const tx = db.transaction(["ob", "kv", "bin"], "readwrite")
  for (let i = 0; i < N; i++) tx.objectStore("ob").put(rec(i))
  for (let i = 0; i < 6; i++) tx.objectStore("kv").put({ i }, i % 2 === 0 ? `k${i}` : i)
  tx.objectStore("kv").put({ date: true }, new Date(5))
  tx.objectStore("kv").put({ binary: true }, new Uint8Array([3, 1]).buffer)
  tx.objectStore("kv").put({ array: true }, ["a", 1, ["b"]])
  for (let i = 0; i < 5; i++) tx.objectStore("bin").put({ blob: new Uint8Array([i % 3, 9]).buffer })
  await done(tx)
  db.close()
}

/** A later transaction: changes, deletes and adds records of `ob` only. */
const edit = async (f: IdbFactory) => {
  const db = await openDb(f, DB, 1)
  const tx = db.transaction("ob", "readwrite")
  const ob = tx.objectStore("ob")
  for (let i = 0; i < N; i += 3) ob.put({ ...rec(i, 1), sender: "@moved", tags: ["t9"] })
  ob.delete(["!r1", "s01"])
  ob.delete(IDBKeyRange.bound(["!r2", "s05"], ["!r2", "s20"]))
  ob.put(rec(N + 1))
  await done(tx)
  db.close()
}

/** V2: by_uid dropped, by_gen added, on a populated store. */
const toV2 = async (f: IdbFactory) => {
  const db = await openDb(f, DB, 2, (_db, tx) => {
    const ob = tx.objectStore("ob")
    ob.deleteIndex("by_uid")
    ob.createIndex("by_gen", "gen")
  })
  db.close()
}

/** Reads that only keys and index entries answer (plus the values they lead to). */
const answers = async (f: IdbFactory, version = 1): Promise<Array<unknown>> => {
  const db = await openDb(f, DB, version)
  const names = ["ob", "kv", "bin", "empty"]
  const tx = db.transaction(names, "readonly")
  const out: Array<unknown> = []
  for (const name of names) {
    const os = tx.objectStore(name)
    out.push(name, [...os.indexNames], await request(os.getAllKeys()), await request(os.count()))
    for (const index of os.indexNames as Iterable<string>) {
      out.push(index, await request(os.index(index).getAllKeys()), await request(os.index(index).count()))
    }
  }
  const ob = tx.objectStore("ob")
  out.push(await request(ob.count(IDBKeyRange.lowerBound(["!r1"]))))
  out.push(await request(ob.getAll(IDBKeyRange.bound(["!r0", "s10"], ["!r2", "s00"]))))
  out.push(await request(ob.index("by_sender").getAllKeys(IDBKeyRange.bound("@u1", "@u3", false, true))))
  out.push(await request(ob.index("by_tag").getAll("t3")), await request(ob.index("by_tag").count("t0")))
  out.push(await request(ob.index("by_at").getAllKeys(IDBKeyRange.upperBound(new Date(1_700_000_002_000)))))
  if ([...ob.indexNames].includes("by_gen")) out.push(await request(ob.index("by_gen").getAllKeys(1)))
  out.push(await request(tx.objectStore("kv").getAll()))
  out.push(await request(tx.objectStore("bin").index("by_blob").getAllKeys(new Uint8Array([1, 9]).buffer)))
  // The key generator goes on after the highest key, as in memory.
  await done(tx)
  const wtx = db.transaction("bin", "readwrite")
  out.push(await request(wtx.objectStore("bin").add({ blob: new Uint8Array([7]).buffer })))
  wtx.abort()
  db.close()
  return out
}

const expected = async (...steps: Array<(f: IdbFactory) => Promise<void>>) => {
  const memory = new IDBFactory()
  await fill(memory)
  for (const step of steps) await step(memory)
  return answers(memory, steps.includes(toV2) ? 2 : 1)
}

/** Opens the store, runs `body`, and closes it cleanly or not. */
const session = async <A>(
  body: (o: Opened) => Promise<A>,
  end: "close" | "crash" = "close",
  secret: StoreSecret = ENCRYPTED
): Promise<A> => {
  const opened = await openDurable(secret)
  try {
    return await body(opened)
  } finally {
    if (end === "close") opened.close()
    else opened.crash()
  }
}

/** Reopens, reads the answers (version `version`), closes cleanly; with what the open read. */
const reopen = (version = 1, secret: StoreSecret = ENCRYPTED) =>
  session(
    async (o) => {
      const stats = { ...o.file.stats }
      const readsAtOpen = o.idb.cacheStats().reads
      return { stats, readsAtOpen, answers: await answers(o.idb.factory, version) }
    },
    "close",
    secret
  )

describe("object-store snapshots", () => {
  it("walks a tree's live records in order, as fake-indexeddb iterates them (tombstones left out)", async () => {
    const memory = new IDBFactory()
    const db = await openDb(memory, "walk", 1, (d) => d.createObjectStore("s").createIndex("by_v", "v"))
    const tx = db.transaction("s", "readwrite")
    const os = tx.objectStore("s")
    for (let i = 0; i < 300; i++) os.put({ v: i % 17 }, (i * 7919) % 1009)
    for (let i = 0; i < 300; i += 4) os.delete((i * 7919) % 1009)
    await done(tx)
    const raw = db.transaction("s").objectStore("s")._rawObjectStore
    for (const records of [raw.records, raw.rawIndexes.get("by_v").records]) {
      expect(records.records._numTombstones).toBeGreaterThan(0)
      expect(treeRecords(records.records)).toEqual(Array.from(records.values()))
    }
    db.close()
  })

  it("shapePrefixOf starts every snapshot of a store of that shape, and no snapshot of another shape", async () => {
    const opened = await openDurable()
    const db = await openDb(opened.idb.factory, "shape", 1, (d) => {
      d.createObjectStore("a", { keyPath: "k" }).createIndex("by_v", "v")
      d.createObjectStore("b", { keyPath: "k" }).createIndex("by_v", "v", { unique: true })
      d.createObjectStore("é", { keyPath: "k" }).createIndex("by_ü", "ü")
    })
    const tx = db.transaction(["a", "b", "é"], "readwrite")
    for (const name of ["a", "b", "é"]) {
      for (let i = 0; i < 5; i++) tx.objectStore(name).put({ k: `k${i}`, v: i, ü: "x" })
    }
    await done(tx)
    const raw = (name: string) => db.transaction(name).objectStore(name)._rawObjectStore
    for (const name of ["a", "b", "é"]) {
      const prefix = shapePrefixOf(raw(name))!
      const snap = snapshotOf(raw(name))!
      expect(prefix.length).toBeGreaterThan(10)
      expect(snap.subarray(0, prefix.length).equals(prefix)).toBe(true)
    }
    // a and b differ in one index's unique flag only
    const b = snapshotOf(raw("b"))!
    const prefixA = shapePrefixOf(raw("a"))!
    expect(b.subarray(0, prefixA.length).equals(prefixA)).toBe(false)
    db.close()
    opened.crash()
  })

  it("a clean close writes one per store, and the next open uses them alone, encrypted or not", async () => {
    for (const secret of [ENCRYPTED, PLAIN]) {
      file = path.join(tmpDir("cara-didb-snap-"), "crypto.sqlite3")
      const written = await session(
        async (o) => {
          await fill(o.idb.factory)
          return o
        },
        "close",
        secret
      )
      expect(written.file.stats.snapshotsWritten).toBe(STORES)
      expect(snapCount()).toBe(STORES)
      // The `ixs` rows go (the snapshots stay and no delta is noted: their triggers are set aside for the
      // deletion): the open must not need them.
      onFile((db) => {
        const triggers = ["ixs_snaps_delete", "ixs_snapd_delete"]
        const sql = triggers.map((name) =>
          (db.prepare("SELECT sql FROM sqlite_master WHERE name = ?").get(name) as { sql: string }).sql
        )
        for (const name of triggers) db.exec(`DROP TRIGGER ${name}`)
        db.exec("DELETE FROM ixs")
        for (const text of sql) db.exec(text)
      })
      expect(snapCount()).toBe(STORES)
      expect(deltaCount()).toBe(0)
      const got = await reopen(1, secret)
      expect(got.stats.snapshotsRead).toBe(STORES)
      expect(got.stats.indexKeysRebuilt).toBe(0)
      expect(got.readsAtOpen).toBe(0)
      expect(got.answers).toEqual(await expected())
      // Answers from a snapshot after a snapshot (the reopen closed cleanly too).
      const again = await reopen(1, secret)
      expect(again.stats.snapshotsRead).toBe(STORES)
      expect(again.answers).toEqual(got.answers)
    }
  })

  it("a write notes its records beside the snapshot in the same transaction: after a crash the open applies them", async () => {
    await session((o) => fill(o.idb.factory))
    expect(snapCount()).toBe(STORES)
    await session(async (o) => {
      expect(o.file.stats.snapshotsRead).toBe(STORES)
      await edit(o.idb.factory)
    }, "crash")
    // The snapshots stay; the edited store's written records are noted (14 puts, 7 deletes); the new one
    // is found by its rowid (above the snapshot's highest).
    expect(snapCount()).toBe(STORES)
    expect(deltaCount()).toBe(21)
    const got = await reopen()
    expect(got.stats.snapshotsRead).toBe(STORES)
    expect(got.stats.snapshotDeltaRows).toBe(22)
    expect(got.stats.indexKeysRebuilt).toBe(0)
    expect(got.answers).toEqual(await expected(edit))
    // The clean close wrote new snapshots and emptied the delta.
    expect(deltaCount()).toBe(0)
    // That clean close wrote them all again, and they answer the same.
    expect(snapCount()).toBe(STORES)
    const again = await reopen()
    expect(again.stats.snapshotsRead).toBe(STORES)
    expect(again.answers).toEqual(got.answers)
  })

  it("a writer that does not know the tables (an older cara without ixs) has its writes noted; the open reads ixs for them", async () => {
    await session((o) => fill(o.idb.factory))
    // The first `ob` record moves to the place of the second (the row, verbatim), the third is deleted:
    // an older cara's upsert, its INSERT OR REPLACE, its delete.
    onFile((db) => {
      const rows = db.prepare("SELECT id, data FROM records ORDER BY rid LIMIT 3").all() as Array<
        { id: Uint8Array; data: Uint8Array }
      >
      db.prepare("UPDATE records SET data = ? WHERE id = ?").run(rows[0]!.data, rows[0]!.id)
      db.prepare(
        "INSERT OR REPLACE INTO records (id, db, store, data) SELECT id, db, store, ? FROM records WHERE id = ?"
      )
        .run(rows[1]!.data, rows[1]!.id)
      db.prepare("DELETE FROM records WHERE id = ?").run(rows[2]!.id)
    })
    // Noted with the `ixs` rows they had; two records now have none (the writer did not know the table),
    // so the store is read from `ixs` (and the two rebuilt).
    expect(snapCount()).toBe(STORES)
    expect(deltaCount()).toBe(3)
    const got = await reopen()
    expect(got.stats.indexKeysRebuilt).toBe(2)
    expect(got.stats.snapshotsRead).toBe(STORES - 1)
    const memory = await expected()
    // One `ob` record fewer than in memory, everything else the same.
    expect(got.answers[3]).toBe((memory[3] as number) - 1)
  })

  it("a damaged or truncated snapshot falls back to ixs, encrypted or not", async () => {
    for (const secret of [ENCRYPTED, PLAIN]) {
      for (const damage of ["flip", "truncate", "version", "swap"] as const) {
        file = path.join(tmpDir("cara-didb-snap-"), "crypto.sqlite3")
        await session((o) => fill(o.idb.factory), "close", secret)
        onFile((db) => {
          const rows = db.prepare("SELECT store, snap FROM snapshots ORDER BY length(snap) DESC").all() as Array<
            { store: Uint8Array; snap: Uint8Array }
          >
          const update = db.prepare("UPDATE snapshots SET snap = ? WHERE store = ?")
          const blob = Buffer.from(rows[0]!.snap)
          if (damage === "flip") blob[Math.floor(blob.length / 2)]! ^= 0x10
          if (damage === "version") blob[0] = 9
          if (damage === "swap") update.run(rows[1]!.snap, rows[0]!.store)
          else update.run(damage === "truncate" ? blob.subarray(0, blob.length - 7) : blob, rows[0]!.store)
        })
        const got = await reopen(1, secret)
        expect(got.stats.snapshotsRead, damage).toBe(STORES - 1)
        expect(got.stats.indexKeysRebuilt, damage).toBe(0)
        expect(got.answers, damage).toEqual(await expected())
      }
    }
  })

  it("after createIndex and deleteIndex the snapshot is not used, also of an empty store", async () => {
    await session((o) => fill(o.idb.factory))
    await session(async (o) => {
      await toV2(o.idb.factory)
      const db = await openDb(o.idb.factory, DB, 3, (_db, tx) => tx.objectStore("empty").createIndex("by_y", "y"))
      db.close()
    }, "crash")
    // `ob`'s re-index noted every record (over the delta's limit); `empty` has no row to trigger on.
    expect(snapCount()).toBe(STORES)
    const got = await reopen(3)
    // Both no longer match the index list and are not used.
    expect(got.stats.snapshotsRead).toBe(STORES - 2)
    const memory = new IDBFactory()
    await fill(memory)
    await toV2(memory)
    const db = await openDb(memory, DB, 3, (_db, tx) => tx.objectStore("empty").createIndex("by_y", "y"))
    db.close()
    expect(got.answers).toEqual(await answers(memory, 3))
  })

  it("opens a store written before the snapshot tables, and writes them at the next clean close", async () => {
    await session((o) => fill(o.idb.factory))
    onFile((db) => {
      for (const table of ["records", "ixs"]) {
        for (const event of ["insert", "update", "delete"]) {
          db.exec(`DROP TRIGGER ${table}_snaps_${event}`)
          db.exec(`DROP TRIGGER ${table}_snapd_${event}`)
        }
      }
      db.exec("DROP TABLE snaps")
      db.exec("DROP TABLE snapshots")
      db.exec("DROP TABLE snapd")
    })
    const first = await reopen()
    expect(first.stats.snapshotsRead).toBe(0)
    expect(first.stats.indexKeysRebuilt).toBe(0)
    expect(first.answers).toEqual(await expected())
    const second = await reopen()
    expect(second.stats.snapshotsRead).toBe(STORES)
    expect(second.answers).toEqual(first.answers)
  })

  it("no snapshot of a store a readwrite transaction is still running on at the close", async () => {
    await session((o) => fill(o.idb.factory), "crash")
    expect(snapCount()).toBe(0)
    const opened = await openDurable()
    const db = await openDb(opened.idb.factory, DB, 1)
    const tx = db.transaction(["ob", "kv"], "readwrite")
    const outcome = done(tx).then(() => "complete", () => "abort")
    // A readonly transaction changes nothing: it does not hold the close back.
    const ro = db.transaction("bin", "readonly")
    const roDone = done(ro)
    const count = request(ro.objectStore("bin").count())
    tx.objectStore("ob").put(rec(N + 5))
    tx.objectStore("kv").delete("k0")
    // The last request has run (the trees are changed), the transaction has not committed yet.
    await request(tx.objectStore("ob").delete(["!r0", "s00"]))
    expect(await count).toBe(5)
    opened.close()
    expect(opened.file.stats.snapshotsWritten).toBe(STORES - 2)
    expect(await outcome).toBe("abort")
    await roDone
    expect(snapCount()).toBe(STORES - 2)
    const got = await reopen()
    expect(got.stats.snapshotsRead).toBe(STORES - 2)
    expect(got.answers).toEqual(await expected())
  })
})
