// The index keys stored beside each record (the `ixs` table): an open rebuilds keys and index entries
// from them without reading a value; stores written before the table (old format), mixed stores, rows an
// older writer changed behind the table's back (a downgrade), index lists changed by a versionchange, and
// damaged index-key blobs all still give exactly the answers of in-memory fake-indexeddb.
import { IDBFactory, IDBKeyRange } from "fake-indexeddb"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { beforeEach, describe, expect, it } from "vitest"
import { type DurableIdb, openDurableIdb } from "../../src/layers/durable-idb/durableIdb.js"
import type { IdbFactory } from "../../src/layers/durable-idb/internals.js"
import { SqliteFile, type StoreSecret } from "../../src/layers/durable-idb/sqliteFile.js"
import { type Db, done, openDb, request } from "../support/cryptostore-child.idb.js"
import { tmpDir } from "../support/tmp.js"

const DB = "cara::ixs"
const ENCRYPTED: StoreSecret = { encrypted: true, passphrase: "index keys passphrase" }
const PLAIN: StoreSecret = { encrypted: false }
const N = 24

let file: string
beforeEach(() => {
  file = path.join(tmpDir("cara-didb-ixs-"), "crypto.sqlite3")
})

interface Opened {
  readonly idb: DurableIdb
  readonly file: SqliteFile
  readonly close: () => void
}

const openDurable = async (secret: StoreSecret = ENCRYPTED): Promise<Opened> => {
  const f = await SqliteFile.open(file, "crypto", secret)
  // No snapshots at close: these tests are about the `ixs` path (durable-idb-snapshot.test.ts covers those).
  const idb = await openDurableIdb([f], () => f, { cacheEntries: 2, snapshotAtClose: false })
  return {
    idb,
    file: f,
    close: () => {
      idb.detach()
      f.close()
    }
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

const rec = (i: number, gen = 0) => ({
  room: `!r${i % 3}`,
  id: `s${String(i).padStart(2, "0")}`,
  sender: `@u${i % 4}`,
  tags: [`t${i % 5}`, `t${(i + 1) % 5}`],
  uid: i,
  gen
})

const V1 = (db: Db) => {
  const ob = db.createObjectStore("ob", { keyPath: ["room", "id"] })
  ob.createIndex("by_sender", "sender")
  ob.createIndex("by_tag", "tags", { multiEntry: true })
  ob.createIndex("by_uid", "uid", { unique: true })
  db.createObjectStore("kv")
}

const fill = async (f: IdbFactory) => {
  const db = await openDb(f, DB, 1, V1)
  const tx = db.transaction(["ob", "kv"], "readwrite")
  for (let i = 0; i < N; i++) tx.objectStore("ob").put(rec(i))
  for (let i = 0; i < 5; i++) tx.objectStore("kv").put({ i }, i % 2 === 0 ? `k${i}` : i)
  await done(tx)
  db.close()
}

/** Reads that only index entries and keys answer (plus the values they lead to). */
const answers = async (f: IdbFactory, version = 1): Promise<Array<unknown>> => {
  const db = await openDb(f, DB, version)
  const tx = db.transaction(["ob", "kv"], "readonly")
  const ob = tx.objectStore("ob")
  const out: Array<unknown> = [[...ob.indexNames]]
  out.push(await request(ob.getAllKeys()), await request(ob.count(IDBKeyRange.lowerBound(["!r1"]))))
  out.push(await request(tx.objectStore("kv").getAllKeys()))
  for (const name of ob.indexNames as Iterable<string>) {
    const index = ob.index(name)
    out.push(name, await request(index.getAllKeys()), await request(index.count()))
  }
  if ([...ob.indexNames].includes("by_sender")) {
    const bySender = ob.index("by_sender")
    out.push(
      await request(bySender.getAllKeys(IDBKeyRange.bound("@u1", "@u3", false, true))),
      await request(bySender.count("@u2"))
    )
  }
  if ([...ob.indexNames].includes("by_tag")) out.push(await request(ob.index("by_tag").getAll("t3")))
  if ([...ob.indexNames].includes("by_gen")) out.push(await request(ob.index("by_gen").getAllKeys(1)))
  await done(tx)
  db.close()
  return out
}

const reopenAnswers = async (version = 1, secret: StoreSecret = ENCRYPTED) => {
  const opened = await openDurable(secret)
  try {
    const rebuilt = opened.file.stats.indexKeysRebuilt
    // The open itself read no value through the on-demand records.
    const readsAtOpen = opened.idb.cacheStats().reads
    return { rebuilt, readsAtOpen, answers: await answers(opened.idb.factory, version) }
  } finally {
    opened.close()
  }
}

const expected = async (version = 1, upgrade?: (f: IdbFactory) => Promise<void>) => {
  const memory = new IDBFactory()
  await fill(memory)
  if (upgrade !== undefined) await upgrade(memory)
  return answers(memory, version)
}

const writeDurable = async (body: (f: IdbFactory) => Promise<void>, secret: StoreSecret = ENCRYPTED) => {
  const opened = await openDurable(secret)
  try {
    await body(opened.idb.factory)
  } finally {
    opened.close()
  }
}

const ixsCount = () => onFile((db) => (db.prepare("SELECT count(*) AS n FROM ixs").get() as { n: number }).n)

describe("index keys stored beside each record", () => {
  it("a new store has an ixs row per record and reopens from them alone, encrypted or not", async () => {
    for (const secret of [ENCRYPTED, PLAIN]) {
      file = path.join(tmpDir("cara-didb-ixs-"), "crypto.sqlite3")
      await writeDurable(fill, secret)
      expect(ixsCount()).toBe(N + 5)
      const got = await reopenAnswers(1, secret)
      expect(got.rebuilt).toBe(0)
      expect(got.readsAtOpen).toBe(0)
      expect(got.answers).toEqual(await expected())
    }
  })

  it("opens a store written before the ixs table (old format), writes the index keys back once", async () => {
    await writeDurable(fill)
    // What an older cara leaves: no ixs table and no triggers.
    onFile((db) => {
      for (const t of ["records_ixs_insert", "records_ixs_update", "records_ixs_delete"]) db.exec(`DROP TRIGGER ${t}`)
      db.exec("DROP TABLE ixs")
    })
    const first = await reopenAnswers()
    expect(first.rebuilt).toBe(N + 5)
    expect(first.answers).toEqual(await expected())
    expect(ixsCount()).toBe(N + 5)
    const second = await reopenAnswers()
    expect(second.rebuilt).toBe(0)
    expect(second.answers).toEqual(first.answers)
  })

  it("opens a mixed store: records with and without index keys", async () => {
    await writeDurable(fill)
    onFile((db) => db.exec("DELETE FROM ixs WHERE id IN (SELECT id FROM ixs ORDER BY id LIMIT 12)"))
    const missing = N + 5 - ixsCount()
    expect(missing).toBe(12)
    const got = await reopenAnswers()
    expect(got.rebuilt).toBe(missing)
    expect(got.answers).toEqual(await expected())
    expect(ixsCount()).toBe(N + 5)
  })

  it("a writer that does not know the table (an older cara after a downgrade) cannot leave stale index keys", async () => {
    // The sealed row of one record as it was (sender @u0), then the record moved to another sender.
    await writeDurable(fill)
    const before = onFile((db) =>
      db.prepare("SELECT id, data FROM records").all() as Array<{ id: Uint8Array; data: Uint8Array }>
    )
    await writeDurable(async (f) => {
      const db = await openDb(f, DB, 1)
      const tx = db.transaction("ob", "readwrite")
      for (let i = 0; i < N; i++) tx.objectStore("ob").put({ ...rec(i), sender: "@moved", tags: ["t9"] })
      await done(tx)
      db.close()
    })
    // The older code's writes, verbatim: its upsert (data only) and its even older INSERT OR REPLACE.
    onFile((db) => {
      const upsert = db.prepare(
        "INSERT INTO records (id, db, store, data) VALUES (?, (SELECT db FROM records WHERE id = ?), (SELECT store FROM records WHERE id = ?), ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data"
      )
      const replace = db.prepare(
        "INSERT OR REPLACE INTO records (id, db, store, data) SELECT id, db, store, ? FROM records WHERE id = ?"
      )
      before.forEach((r, i) => (i % 2 === 0 ? upsert.run(r.id, r.id, r.id, r.data) : replace.run(r.data, r.id)))
    })
    expect(ixsCount()).toBe(0)
    const got = await reopenAnswers()
    expect(got.rebuilt).toBe(N + 5)
    expect(got.answers).toEqual(await expected())
  })

  it("createIndex and deleteIndex on a populated store re-index every row in the versionchange", async () => {
    const addGen = async (f: IdbFactory) => {
      const db = await openDb(f, DB, 2, (_d: Db, tx: any) => tx.objectStore("ob").createIndex("by_gen", "gen"))
      const tx = db.transaction("ob", "readwrite")
      tx.objectStore("ob").put(rec(3, 1))
      await done(tx)
      db.close()
    }
    const dropTag = async (f: IdbFactory) => {
      await addGen(f)
      const db = await openDb(f, DB, 3, (_d: Db, tx: any) => tx.objectStore("ob").deleteIndex("by_tag"))
      db.close()
    }
    await writeDurable(fill)
    await writeDurable(addGen)
    const v2 = await reopenAnswers(2)
    expect(v2.rebuilt).toBe(0)
    expect(v2.answers).toEqual(await expected(2, addGen))
    await writeDurable(async (f) => {
      const db = await openDb(f, DB, 3, (_d: Db, tx: any) => tx.objectStore("ob").deleteIndex("by_tag"))
      db.close()
    })
    const v3 = await reopenAnswers(3)
    expect(v3.rebuilt).toBe(0)
    expect(v3.answers).toEqual(await expected(3, dropTag))
  })

  it("index keys computed for another index list are not used: the value is read instead", async () => {
    await writeDurable(fill)
    const f = await SqliteFile.open(file, "crypto", ENCRYPTED)
    try {
      // A record whose stored index keys name another index list (and say something else).
      f.commit([{
        db: DB,
        stores: [{
          name: "ob",
          cleared: false,
          puts: [[["!r0", "s00"], rec(0), { signature: "other-list", keys: ["@wrong", ["t7"], 99] }]],
          deletes: []
        }]
      }])
    } finally {
      f.close()
    }
    const got = await reopenAnswers()
    expect(got.rebuilt).toBe(1)
    expect(got.answers).toEqual(await expected())
  })

  it("a truncated or damaged index-key blob falls back to the value, never to a wrong index", async () => {
    for (const secret of [ENCRYPTED, PLAIN]) {
      file = path.join(tmpDir("cara-didb-ixs-"), "crypto.sqlite3")
      await writeDurable(fill, secret)
      onFile((db) => {
        const rows = db.prepare("SELECT store, id, ix FROM ixs").all() as Array<
          { store: Uint8Array; id: Uint8Array; ix: Uint8Array }
        >
        const set = db.prepare("UPDATE ixs SET ix = ? WHERE store = ? AND id = ?")
        const flipped = Buffer.from(rows[1]!.ix)
        flipped[flipped.length - 12]! ^= 0x40
        set.run(Buffer.from(rows[0]!.ix).subarray(0, 20), rows[0]!.store, rows[0]!.id)
        set.run(flipped, rows[1]!.store, rows[1]!.id)
        set.run(Buffer.alloc(0), rows[2]!.store, rows[2]!.id)
        set.run(Buffer.from([9, 1, 2, 3]), rows[3]!.store, rows[3]!.id)
        // Another record's blob: bound to its own row id, so it does not open here.
        set.run(rows[5]!.ix, rows[4]!.store, rows[4]!.id)
      })
      const got = await reopenAnswers(1, secret)
      expect(got.rebuilt).toBe(5)
      expect(got.answers).toEqual(await expected())
    }
  })

  it("a damaged index-key blob over a damaged value is a damaged store, not a silent gap", async () => {
    await writeDurable(fill)
    onFile((db) => {
      const row = db.prepare("SELECT store, id FROM ixs LIMIT 1").get() as { store: Uint8Array; id: Uint8Array }
      // The value damaged in place (the trigger drops the ixs row), then a damaged ixs row put back.
      db.prepare("UPDATE records SET data = substr(data, 1, 40) WHERE id = ?").run(row.id)
      db.prepare("INSERT INTO ixs (store, id, ix) VALUES (?, ?, x'01')").run(row.store, row.id)
    })
    await expect(openDurable()).rejects.toMatchObject({ kind: "crypto-store-corrupt" })
  })
})
