// Snapshot + delta (sqliteFile.ts `snapshots` / `snapd`, snapshot.ts): a clean close writes a snapshot per
// store; later writes, by this code or any writer of the file, are noted in `snapd` by triggers in their
// own SQLite transaction, and an open after a crash (no clean close since) applies them to the snapshot.
// Every case answers exactly as in-memory fake-indexeddb given the same steps: ranges, counts, index
// lookups, cursors. A delta over its limit, a delta row that does not open or a record without a usable
// `ixs` row make the open read `ixs` instead; so does a file whose delta triggers went missing.
import { IDBFactory, IDBKeyRange } from "fake-indexeddb"
import * as fs from "node:fs"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { beforeEach, describe, expect, it } from "vitest"
import { openDurableIdb } from "../../src/layers/durable-idb/durableIdb.js"
import type { IdbFactory } from "../../src/layers/durable-idb/internals.js"
import { deltaLimit, SqliteFile, type StoreSecret } from "../../src/layers/durable-idb/sqliteFile.js"
import { type Db, done, openDb, request } from "../support/cryptostore-child.idb.js"
import { tmpDir } from "../support/tmp.js"

const DB = "cara::delta"
const ENCRYPTED: StoreSecret = { encrypted: true, passphrase: "delta passphrase" }
const PLAIN: StoreSecret = { encrypted: false }
const N = 120
/** Object stores: ob, kv, log (autoIncrement). */
const STORES = 3

let file: string
beforeEach(() => {
  file = path.join(tmpDir("cara-didb-delta-"), "crypto.sqlite3")
})

type Step = (f: IdbFactory) => Promise<void>

const rec = (i: number, gen = 0) => ({
  room: `!r${i % 4}`,
  id: `s${String(i).padStart(3, "0")}`,
  sender: `@u${i % 5}`,
  tags: [`t${i % 6}`, `t${(i + 2) % 6}`],
  uid: i,
  gen
})

const schema = (db: Db) => {
  const ob = db.createObjectStore("ob", { keyPath: ["room", "id"] })
  ob.createIndex("by_sender", "sender")
  ob.createIndex("by_tag", "tags", { multiEntry: true })
  ob.createIndex("by_uid", "uid", { unique: true })
  db.createObjectStore("kv")
  db.createObjectStore("log", { autoIncrement: true }).createIndex("by_n", "n")
}

/** Runs `body` in one readwrite transaction over `stores`. */
const write = (stores: Array<string>, body: (tx: any) => void): Step => async (f) => {
  const db = await openDb(f, DB, 1, schema)
  const tx = db.transaction(stores, "readwrite")
  body(tx)
  await done(tx)
  db.close()
}

const fill = write(["ob", "kv", "log"], (tx) => {
  for (let i = 0; i < N; i++) tx.objectStore("ob").put(rec(i))
  for (let i = 0; i < 8; i++) tx.objectStore("kv").put({ i }, i % 2 === 0 ? `k${i}` : i)
  for (let i = 0; i < 10; i++) tx.objectStore("log").put({ n: i % 3 })
})

/** Overwrites that change index keys (sender, the multiEntry tags, a unique uid handed on), deletes, new records. */
const edit = write(["ob", "log"], (tx) => {
  const ob = tx.objectStore("ob")
  for (let i = 0; i < N; i += 10) ob.put({ ...rec(i, 1), sender: "@moved", tags: ["t9", `t${i % 6}`] })
  // uid 7 moves from record 7 (deleted) to a new record; record 8 takes uid 1000
  ob.delete(["!r3", "s007"])
  ob.put({ ...rec(N + 3), uid: 7 })
  ob.put({ ...rec(8, 2), uid: 1000 })
  ob.delete(IDBKeyRange.bound(["!r1", "s020"], ["!r1", "s060"]))
  ob.put(rec(N + 1))
  tx.objectStore("log").put({ n: 9 })
  tx.objectStore("log").delete(2)
})

/** A second run's writes, some to records the first one wrote already. */
const editAgain = write(["ob", "kv"], (tx) => {
  const ob = tx.objectStore("ob")
  ob.put({ ...rec(10, 3), sender: "@again" })
  ob.delete(["!r0", "s020"])
  ob.put(rec(21))
  ob.delete(["!r3", "s123"])
  tx.objectStore("kv").put({ changed: true }, "k2")
})

const clearKv = write(["kv"], (tx) => {
  tx.objectStore("kv").clear()
  tx.objectStore("kv").put({ after: true }, "k0")
})

/** Writes more records than the delta may hold (deltaLimit of ~N records). */
const editMany = write(["ob"], (tx) => {
  for (let i = 0; i < N; i += 2) tx.objectStore("ob").put({ ...rec(i, 5), sender: "@many" })
})

const addIndex: Step = async (f) => {
  const db = await openDb(f, DB, 2, (_db, tx) => {
    tx.objectStore("ob").createIndex("by_gen", "gen")
    tx.objectStore("ob").deleteIndex("by_sender")
  })
  db.close()
}

const cursorWalk = (req: any, take: (c: any) => unknown): Promise<Array<unknown>> =>
  new Promise((resolve, reject) => {
    const out: Array<unknown> = []
    req.onsuccess = () => {
      const c = req.result
      if (c === null) resolve(out)
      else {
        out.push(take(c))
        c.continue()
      }
    }
    req.onerror = () => reject(req.error)
  })

/** Reads that keys and index entries answer, plus values they lead to, and cursors both ways. */
const answers = async (f: IdbFactory, version: number): Promise<Array<unknown>> => {
  const db = await openDb(f, DB, version)
  const names = ["ob", "kv", "log"]
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
  const indexNames = [...ob.indexNames] as Array<string>
  out.push(await request(ob.count(IDBKeyRange.bound(["!r1"], ["!r3"]))))
  out.push(await request(ob.getAll(IDBKeyRange.bound(["!r0", "s010"], ["!r2", "s050"]))))
  if (indexNames.includes("by_sender")) {
    out.push(await request(ob.index("by_sender").getAllKeys(IDBKeyRange.bound("@moved", "@u2", false, true))))
    out.push(await cursorWalk(ob.index("by_sender").openCursor(null, "prev"), (c) => [c.key, c.primaryKey]))
  }
  out.push(await request(ob.index("by_tag").getAll("t9")), await request(ob.index("by_tag").count("t0")))
  out.push(await cursorWalk(ob.index("by_tag").openKeyCursor(IDBKeyRange.lowerBound("t4"), "nextunique"), (c) => c.key))
  out.push(await request(ob.index("by_uid").get(7)), await request(ob.index("by_uid").getKey(1000)))
  out.push(await cursorWalk(ob.openCursor(IDBKeyRange.upperBound(["!r2"]), "prev"), (c) => c.value))
  if (indexNames.includes("by_gen")) out.push(await request(ob.index("by_gen").getAllKeys(IDBKeyRange.lowerBound(1))))
  out.push(await request(tx.objectStore("kv").getAll()))
  out.push(await request(tx.objectStore("log").index("by_n").getAllKeys(0)))
  await done(tx)
  // The key generator goes on as in memory.
  const wtx = db.transaction("log", "readwrite")
  out.push(await request(wtx.objectStore("log").add({ n: 1 })))
  wtx.abort()
  db.close()
  return out
}

const expected = async (steps: ReadonlyArray<Step>) => {
  const memory = new IDBFactory()
  for (const step of steps) await step(memory)
  return answers(memory, steps.includes(addIndex) ? 2 : 1)
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
const countOf = (table: string) =>
  onFile((db) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n)

/** Opens the store, runs the steps, then closes it cleanly or crashes (the file closed, the factory never detached). */
const session = async (steps: ReadonlyArray<Step>, end: "close" | "crash", secret: StoreSecret = ENCRYPTED) => {
  const f = await SqliteFile.open(file, "crypto", secret)
  const idb = await openDurableIdb([f], () => f, { cacheEntries: 2 })
  const atOpen = { ...f.stats }
  try {
    for (const step of steps) await step(idb.factory)
  } finally {
    if (end === "close") idb.detach()
    f.close()
  }
  return atOpen
}

/** Opens, records what the open read, answers, and crashes (so the delta stays for the next open). */
const reopen = async (version: number, secret: StoreSecret = ENCRYPTED) => {
  const f = await SqliteFile.open(file, "crypto", secret)
  const idb = await openDurableIdb([f], () => f, { cacheEntries: 2 })
  const stats = { ...f.stats }
  const readsAtOpen = idb.cacheStats().reads
  try {
    return { stats, readsAtOpen, answers: await answers(idb.factory, version) }
  } finally {
    f.close()
  }
}

describe("snapshot + delta", () => {
  it("after writes and a crash the open applies the delta to the snapshots, encrypted or not", async () => {
    for (const secret of [ENCRYPTED, PLAIN]) {
      file = path.join(tmpDir("cara-didb-delta-"), "crypto.sqlite3")
      await session([fill], "close", secret)
      expect(countOf("snapshots")).toBe(STORES)
      expect(countOf("snapd")).toBe(0)
      await session([edit], "crash", secret)
      const first = await reopen(1, secret)
      expect(first.stats.snapshotsRead).toBe(STORES)
      // The noted records, and the three inserted since (found by their rowids, not noted).
      expect(first.stats.snapshotDeltaRows).toBe(countOf("snapd") + 3)
      expect(first.stats.snapshotDeltaRows).toBeGreaterThan(10)
      expect(first.stats.indexKeysRebuilt).toBe(0)
      expect(first.readsAtOpen).toBe(0)
      expect(first.answers).toEqual(await expected([fill, edit]))
      // A second run writes some of the same records again and crashes too: the delta grows from the
      // same snapshot, keeping what the snapshot had for the records written twice.
      const atOpen = await session([editAgain], "crash", secret)
      expect(atOpen.snapshotsRead).toBe(STORES)
      const second = await reopen(1, secret)
      expect(second.stats.snapshotsRead).toBe(STORES)
      // one more noted (kv's k2); of the three records inserted since, one is deleted again
      expect(countOf("snapd")).toBe(first.stats.snapshotDeltaRows - 3 + 1)
      expect(second.stats.snapshotDeltaRows).toBe(countOf("snapd") + 2)
      expect(second.answers).toEqual(await expected([fill, edit, editAgain]))
      // A clean close replaces the snapshots and empties the delta; the next open answers the same.
      await session([], "close", secret)
      expect(countOf("snapd")).toBe(0)
      const third = await reopen(1, secret)
      expect(third.stats.snapshotsRead).toBe(STORES)
      expect(third.stats.snapshotDeltaRows).toBe(0)
      expect(third.answers).toEqual(second.answers)
    }
  })

  it("a new record that reuses the snapshot's highest rowid (its record deleted) is noted", async () => {
    const put = (key: string) => write(["kv"], (tx) => tx.objectStore("kv").put({ key }, key))
    const del = (key: string) => write(["kv"], (tx) => tx.objectStore("kv").delete(key))
    const steps = [fill, put("z1"), put("z2")]
    await session(steps, "close")
    const maxrid = () => onFile((db) => (db.prepare("SELECT max(rid) AS n FROM records").get() as { n: number }).n)
    const before = maxrid()
    await session([del("z2"), put("z3")], "crash")
    expect(maxrid()).toBe(before)
    expect(countOf("snapd")).toBe(2)
    const got = await reopen(1)
    expect(got.stats.snapshotsRead).toBe(STORES)
    expect(got.answers).toEqual(await expected([...steps, del("z2"), put("z3")]))
  })

  it("clear() and the records written after it are applied as a delta", async () => {
    await session([fill], "close")
    await session([clearKv, edit], "crash")
    const got = await reopen(1)
    expect(got.stats.snapshotsRead).toBe(STORES)
    expect(got.answers).toEqual(await expected([fill, clearKv, edit]))
  })

  it("a delta over its limit is not applied: that store is read from ixs", async () => {
    await session([fill], "close")
    await session([editMany], "crash")
    const ob = onFile((db) =>
      (db.prepare("SELECT count(*) AS n FROM snapd GROUP BY store ORDER BY n DESC LIMIT 1").get() as { n: number }).n
    )
    expect(ob).toBeGreaterThan(deltaLimit(N))
    const got = await reopen(1)
    expect(got.stats.snapshotsRead).toBe(STORES - 1)
    expect(got.stats.indexKeysRebuilt).toBe(0)
    expect(got.answers).toEqual(await expected([fill, editMany]))
  })

  it("createIndex and deleteIndex after the snapshot: that store is read from ixs", async () => {
    await session([fill], "close")
    await session([edit, addIndex], "crash")
    const got = await reopen(2)
    expect(got.stats.snapshotsRead).toBe(STORES - 1)
    expect(got.answers).toEqual(await expected([fill, edit, addIndex]))
  })

  it("a damaged delta row, or a record without a usable ixs row, falls back to ixs, encrypted or not", async () => {
    const damages = ["flip", "truncate", "swap", "no-ixs", "null-was"] as const
    for (const secret of [ENCRYPTED, PLAIN]) {
      for (const damage of damages) {
        file = path.join(tmpDir("cara-didb-delta-"), "crypto.sqlite3")
        await session([fill], "close", secret)
        await session([edit], "crash", secret)
        onFile((db) => {
          const rows = db.prepare("SELECT store, id, ix FROM snapd WHERE ix IS NOT NULL ORDER BY id").all() as Array<
            { store: Uint8Array; id: Uint8Array; ix: Uint8Array }
          >
          const target = rows.find((r) => rows.filter((o) => Buffer.compare(o.store, r.store) === 0).length > 5)!
          const update = db.prepare("UPDATE snapd SET ix = ? WHERE store = ? AND id = ?")
          const blob = Buffer.from(target.ix)
          if (damage === "flip") blob[Math.floor(blob.length / 2)]! ^= 0x08
          const other = rows.find((r) => r !== target && Buffer.compare(r.store, target.store) === 0)!
          if (damage === "swap") update.run(other.ix, target.store, target.id)
          else if (damage === "truncate") update.run(blob.subarray(0, blob.length - 5), target.store, target.id)
          else if (damage === "flip") update.run(blob, target.store, target.id)
          else if (damage === "null-was") {
            // A deleted record's note loses what the snapshot had: the record count no longer checks out.
            const gone = db.prepare(
              "SELECT d.store, d.id FROM snapd d WHERE d.ix IS NOT NULL AND NOT EXISTS (SELECT 1 FROM records r WHERE r.id = d.id) LIMIT 1"
            ).get() as { store: Uint8Array; id: Uint8Array }
            update.run(null, gone.store, gone.id)
          } else {
            // A record written since whose index keys are gone (e.g. an older cara that does not know ixs).
            const present = db.prepare(
              "SELECT d.id FROM snapd d JOIN ixs x ON x.store = d.store AND x.id = d.id WHERE d.store = ? LIMIT 1"
            ).get(target.store) as { id: Uint8Array }
            const sql = (db.prepare("SELECT sql FROM sqlite_master WHERE name = 'ixs_snapd_delete'").get() as {
              sql: string
            }).sql
            db.exec("DROP TRIGGER ixs_snapd_delete")
            db.prepare("DELETE FROM ixs WHERE store = ? AND id = ?").run(target.store, present.id)
            db.exec(sql)
          }
        })
        const got = await reopen(1, secret)
        expect(got.stats.snapshotsRead, damage).toBe(STORES - 1)
        expect(got.stats.indexKeysRebuilt, damage).toBe(damage === "no-ixs" ? 1 : 0)
        expect(got.answers, damage).toEqual(await expected([fill, edit]))
      }
    }
  })

  it("an older cara's writes and clean close (it knows snaps, not snapd) are noted and never served stale", async () => {
    await session([fill], "close")
    // What an older cara's clean close leaves: its version-1 snapshot per store in `snaps`.
    const ids = onFile((db) => db.prepare("SELECT store FROM snapshots").all() as Array<{ store: Uint8Array }>)
    const writeSnaps = () =>
      onFile((db) => {
        db.exec("DELETE FROM snaps")
        for (const { store } of ids) db.prepare("INSERT INTO snaps (store, snap) VALUES (?, x'01')").run(store)
      })
    writeSnaps()
    // This cara's writes drop the older snapshots of the stores they write (its triggers stay in the file).
    await session([edit], "crash")
    expect(countOf("snaps")).toBe(STORES - 2)
    // The older cara writes with the same SQL as this one (its rows and `ixs` rows), under the file's
    // triggers, then closes cleanly: writes `snaps`, leaves `snapshots` and `snapd` alone.
    const older = await SqliteFile.open(file, "crypto", ENCRYPTED)
    const olderIdb = await openDurableIdb([older], () => older, { snapshotAtClose: false })
    await editAgain(olderIdb.factory)
    olderIdb.detach()
    older.close()
    writeSnaps()
    const got = await reopen(1)
    expect(got.stats.snapshotsRead).toBe(STORES)
    expect(got.answers).toEqual(await expected([fill, edit, editAgain]))
    // This cara's clean close leaves no version-1 snapshot behind.
    await session([], "close")
    expect(countOf("snaps")).toBe(0)
  })

  it("the first start after an upgrade reads the older cara's version-1 snapshots, until a write drops them", async () => {
    for (const secret of [ENCRYPTED, PLAIN]) {
      file = path.join(tmpDir("cara-didb-delta-"), "crypto.sqlite3")
      await session([fill], "close", secret)
      // What the older cara's clean close writes: the same plaintext and binding, version byte 1, in `snaps`.
      onFile((db) => {
        const rows = db.prepare("SELECT store, snap FROM snapshots").all() as Array<
          { store: Uint8Array; snap: Uint8Array }
        >
        for (const { store, snap } of rows) {
          db.prepare("INSERT INTO snaps (store, snap) VALUES (?, ?)").run(
            store,
            Buffer.concat([Buffer.of(1), snap.subarray(1)])
          )
        }
        db.exec("DELETE FROM snapshots")
      })
      const got = await reopen(1, secret)
      expect(got.stats.snapshotsRead).toBe(STORES)
      expect(got.stats.indexKeysRebuilt).toBe(0)
      expect(got.readsAtOpen).toBe(0)
      expect(got.answers).toEqual(await expected([fill]))
      // A write drops its store's version-1 snapshot (the older cara's trigger); after a crash that store
      // is read from `ixs`, the others from their version-1 snapshots still.
      await session([edit], "crash", secret)
      expect(countOf("snaps")).toBe(STORES - 2)
      const after = await reopen(1, secret)
      expect(after.stats.snapshotsRead).toBe(STORES - 2)
      expect(after.answers).toEqual(await expected([fill, edit]))
    }
  })

  it("a file whose delta triggers went missing has its snapshots dropped at the open", async () => {
    await session([fill], "close")
    onFile((db) => {
      db.exec("DROP TRIGGER records_snapd_update")
      // a write nothing notes
      const row = db.prepare("SELECT id, data FROM records ORDER BY rid LIMIT 1").get() as {
        id: Uint8Array
        data: Uint8Array
      }
      db.prepare("UPDATE records SET data = ? WHERE id = ?").run(row.data, row.id)
    })
    const got = await reopen(1)
    expect(got.stats.snapshotsRead).toBe(0)
    expect(got.answers).toEqual(await expected([fill]))
    expect(countOf("snapshots")).toBe(0)
    expect(onFile((db) => db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'records_snapd_update'").get()))
      .toBeDefined()
  })
})

describe("snapshot + delta, random runs", () => {
  const RDB = "cara::delta-random"
  const rschema = (db: Db) => {
    const s = db.createObjectStore("s", { keyPath: "k" })
    s.createIndex("by_a", "a")
    s.createIndex("by_tags", "tags", { multiEntry: true })
    db.createObjectStore("small")
  }
  /** A small deterministic PRNG (mulberry32), so a failing run can be replayed. */
  const prng = (seed: number) => () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  type Op = (tx: any) => void
  /** `n` random operations; `putsOnly`: overwrites and inserts only (the record count may stay the same). */
  const randomOps = (rand: () => number, n: number, putsOnly = false): Array<Op> =>
    Array.from({ length: n }, (): Op => {
      const r = putsOnly ? 0 : rand()
      const n = Math.floor(rand() * 300)
      const key = (i: number) => `k${String(i).padStart(3, "0")}`
      const k = key(n)
      const v = { k, a: Math.floor(rand() * 7), tags: [`t${Math.floor(rand() * 5)}`, `t${Math.floor(rand() * 5)}`] }
      if (r < 0.6) return (tx) => tx.objectStore("s").put(v)
      if (r < 0.85) return (tx) => tx.objectStore("s").delete(k)
      if (r < 0.9) return (tx) => tx.objectStore("s").delete(IDBKeyRange.bound(k, key(n + 12)))
      if (r < 0.97) return (tx) => tx.objectStore("small").put({ r }, Math.floor(r * 1000) % 5)
      return (tx) => tx.objectStore("small").clear()
    })
  const apply = async (f: IdbFactory, transactions: ReadonlyArray<ReadonlyArray<Op>>) => {
    const db = await openDb(f, RDB, 1, rschema)
    for (const ops of transactions) {
      const tx = db.transaction(["s", "small"], "readwrite")
      for (const op of ops) op(tx)
      await done(tx)
    }
    db.close()
  }
  const look = async (f: IdbFactory) => {
    const db = await openDb(f, RDB, 1, rschema)
    const tx = db.transaction(["s", "small"])
    const s = tx.objectStore("s")
    const out = [
      await request(s.getAllKeys()),
      await request(s.index("by_a").getAllKeys()),
      await request(s.index("by_tags").getAllKeys()),
      await request(s.index("by_tags").count("t2")),
      await request(s.index("by_a").getAll(IDBKeyRange.bound(2, 4))),
      await request(tx.objectStore("small").getAll())
    ]
    await done(tx)
    db.close()
    return out
  }

  it("any mix of clean closes and crashes answers as in-memory fake-indexeddb", async () => {
    const rand = prng(19)
    const memory = new IDBFactory()
    // Sessions of a few transactions each: a big one first (most of the store), then small ones.
    // Sessions of a few transactions each: every key first, then small ones; some only overwrite (so a
    // note the triggers missed would not show in the record count).
    const everyKey: Op = (tx) => {
      for (let i = 0; i < 300; i++) tx.objectStore("s").put({ k: `k${String(i).padStart(3, "0")}`, a: i % 7, tags: [] })
    }
    const sessions = Array.from({ length: 16 }, (_, i) => {
      const putsOnly = i % 3 === 1
      return i === 0 ? [[everyKey]] : Array.from(
        { length: 1 + Math.floor(rand() * 4) },
        () => randomOps(rand, 1 + Math.floor(rand() * 30), putsOnly)
      )
    })
    let read = 0
    let deltaRows = 0
    for (const transactions of sessions) {
      const end = rand() < 0.4 ? "close" : "crash"
      const f = await SqliteFile.open(file, "crypto", ENCRYPTED)
      const idb = await openDurableIdb([f], () => f, { cacheEntries: 2 })
      read += f.stats.snapshotsRead
      deltaRows += f.stats.snapshotDeltaRows
      try {
        expect(await look(idb.factory)).toEqual(await look(memory))
        await apply(idb.factory, transactions)
        await apply(memory, transactions)
        expect(await look(idb.factory)).toEqual(await look(memory))
      } finally {
        if (end === "close") idb.detach()
        f.close()
      }
    }
    const last = await SqliteFile.open(file, "crypto", ENCRYPTED)
    const idb = await openDurableIdb([last], () => last)
    try {
      expect(await look(idb.factory)).toEqual(await look(memory))
    } finally {
      last.close()
    }
    // The runs did open from snapshots (with deltas after the crashes), not only from `ixs`.
    expect(read).toBeGreaterThan(4)
    expect(deltaRows).toBeGreaterThan(0)
  })
})

describe("a clean close keeps the snapshots that are still exact", () => {
  /** Each store's sealed snapshot bytes (a rewrite seals with a new random IV, so any rewrite shows). */
  const blobs = () =>
    onFile((
      db
    ) => (db.prepare("SELECT hex(store) AS store, hex(snap) AS snap, maxrid FROM snapshots ORDER BY store")
      .all() as Array<
        { store: string; snap: string; maxrid: number }
      >)
    )
  /** Opens, runs the steps, closes cleanly; the file's stats after the close, and the WAL bytes the close wrote. */
  const closed = async (steps: ReadonlyArray<Step>, secret: StoreSecret = ENCRYPTED) => {
    const f = await SqliteFile.open(file, "crypto", secret)
    const idb = await openDurableIdb([f], () => f, { cacheEntries: 2 })
    try {
      for (const step of steps) await step(idb.factory)
      const wal = walBytes()
      idb.detach()
      return { stats: { ...f.stats }, walWritten: walBytes() - wal }
    } finally {
      f.close()
    }
  }
  const walBytes = () => {
    try {
      return fs.statSync(`${file}-wal`).size
    } catch {
      return 0
    }
  }
  const kvPut = write(["kv"], (tx) => tx.objectStore("kv").put({ late: true }, "k9"))

  it("a close with no writes writes no snapshot bytes, and the next open still uses them, encrypted or not", async () => {
    for (const secret of [ENCRYPTED, PLAIN]) {
      file = path.join(tmpDir("cara-didb-keep-"), "crypto.sqlite3")
      expect((await closed([fill], secret)).stats.snapshotsWritten).toBe(STORES)
      const before = blobs()
      expect(before).toHaveLength(STORES)
      // Reads only (answers aborts its one write), then a clean close.
      const again = await closed([(f) => answers(f, 1).then(() => undefined)], secret)
      expect(again.stats.snapshotsRead).toBe(STORES)
      expect(again.stats.snapshotsWritten).toBe(0)
      expect(again.stats.snapshotsKept).toBe(STORES)
      expect(again.walWritten).toBe(0)
      expect(blobs()).toEqual(before)
      const got = await reopen(1, secret)
      expect(got.stats.snapshotsRead).toBe(STORES)
      expect(got.stats.snapshotDeltaRows).toBe(0)
      expect(got.stats.indexKeysRebuilt).toBe(0)
      expect(got.answers).toEqual(await expected([fill]))
    }
  })

  it("a write to one store rewrites only that store's snapshot; later crashes still apply deltas right", async () => {
    await closed([fill])
    const before = blobs()
    const after = await closed([kvPut])
    expect(after.stats.snapshotsWritten).toBe(1)
    expect(after.stats.snapshotsKept).toBe(STORES - 1)
    const now = blobs()
    const changed = now.filter((row, i) => row.snap !== before[i]!.snap)
    expect(changed).toHaveLength(1)
    expect(now.filter((row, i) => row.maxrid !== before[i]!.maxrid)).toEqual(changed)
    // The kept snapshots keep their own maxrid: records added to them later are found above it.
    await session([edit], "crash")
    const got = await reopen(1)
    expect(got.stats.snapshotsRead).toBe(STORES)
    expect(got.stats.snapshotDeltaRows).toBeGreaterThan(0)
    expect(got.answers).toEqual(await expected([fill, kvPut, edit]))
    // A clean close now rewrites the stores edit wrote (ob, log) and keeps kv's.
    const third = await closed([])
    expect(third.stats.snapshotsWritten).toBe(2)
    expect(third.stats.snapshotsKept).toBe(1)
    expect((await reopen(1)).answers).toEqual(await expected([fill, kvPut, edit]))
  })

  it("a store whose index list changed (no record written) gets a new snapshot", async () => {
    const emptyKv = write(["kv"], (tx) => tx.objectStore("kv").clear())
    await closed([fill, emptyKv])
    const kvIndex: Step = async (f) => {
      const db = await openDb(f, DB, 2, (_db, tx) => {
        tx.objectStore("kv").createIndex("by_x", "x")
      })
      db.close()
    }
    const after = await closed([kvIndex])
    expect(after.stats.snapshotsWritten).toBe(1)
    expect(after.stats.snapshotsKept).toBe(STORES - 1)
    const got = await reopen(2)
    expect(got.stats.snapshotsRead).toBe(STORES)
    const memory = new IDBFactory()
    for (const step of [fill, emptyKv, kvIndex]) await step(memory)
    expect(got.answers).toEqual(await answers(memory, 2))
  })

  it("a snapshot that does not open, or a store deleted, is not kept", async () => {
    await closed([fill])
    onFile((db) =>
      db.exec(
        "UPDATE snapshots SET snap = substr(snap, 1, length(snap) - 1) || x'00' WHERE store = (SELECT store FROM snapshots LIMIT 1)"
      )
    )
    const after = await closed([])
    expect(after.stats.snapshotsWritten).toBe(1)
    expect(after.stats.snapshotsKept).toBe(STORES - 1)
    const dropLog: Step = async (f) => {
      const db = await openDb(f, DB, 2, (d) => d.deleteObjectStore("log"))
      db.close()
    }
    await closed([dropLog])
    expect(blobs()).toHaveLength(STORES - 1)
  })
})
