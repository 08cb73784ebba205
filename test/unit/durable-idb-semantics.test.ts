// The IndexedDB semantics the Rust crypto store and matrix-js-sdk rely on, on records served from
// SQLite on demand: one script of reads and writes runs against plain in-memory fake-indexeddb and
// against the durable store (reopened before every phase, with a value cache of two entries, so nearly
// every value is read back from SQLite), and every answer must be the same. Covers out-of-line and
// keyPath stores, compound keys, unique and multiEntry indexes, key ranges with open and closed bounds,
// cursors both ways with continue / continue(key) / advance, count, getAll / getAllKeys with limits,
// delete by range, clear, overwrites (index upkeep from the old on-demand value), constraint errors,
// aborts rolling back over on-demand records, and versionchange upgrades (createIndex over stored
// records, deleteObjectStore, createObjectStore, a store rename).
import { IDBFactory, IDBKeyRange } from "fake-indexeddb"
import * as fs from "node:fs"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { beforeEach, describe, expect, it } from "vitest"
import { compareKeys, type DurableIdb, openDurableIdb } from "../../src/layers/durable-idb/durableIdb.js"
import { databasesOf, type IdbFactory, type RawObjectStore } from "../../src/layers/durable-idb/internals.js"
import { LazyRecord } from "../../src/layers/durable-idb/lazyRecords.js"
import { SqliteFile } from "../../src/layers/durable-idb/sqliteFile.js"
import { type Db, done, openDb, request } from "../support/cryptostore-child.idb.js"
import { tmpDir } from "../support/tmp.js"

const DB = "cara::semantics"
const SECRET = { encrypted: true as const, passphrase: "semantics passphrase" }

let root: string
beforeEach(() => {
  root = tmpDir("cara-didb-sem-")
})

interface Opened {
  readonly idb: DurableIdb
  readonly close: () => void
}

export const openDurable = async (file: string, cacheEntries = 2): Promise<Opened> => {
  const f = await SqliteFile.open(file, "crypto", SECRET)
  const idb = await openDurableIdb([f], () => f, { cacheEntries })
  return {
    idb,
    close: () => {
      idb.detach()
      f.close()
    }
  }
}

const rawStore = (factory: IdbFactory, store: string): RawObjectStore => {
  const s = databasesOf(factory).get(DB)?.rawObjectStores.get(store)
  if (s === undefined) throw new Error(`no store ${store}`)
  return s
}

const KV_KEYS: ReadonlyArray<unknown> = [
  -1,
  0,
  1.5,
  10,
  "a",
  "ab",
  "b",
  "z",
  new Date(1000),
  [1, "x"],
  [1, "y"],
  [2],
  new Uint8Array([1, 2]).buffer,
  new Uint8Array([1, 2, 3]).buffer
]

const obRecord = (i: number, gen = 0) => ({
  room: `!r${i % 3}`,
  id: `s${String(i).padStart(2, "0")}`,
  sender: `@u${i % 4}`,
  tags: [`t${i % 5}`, `t${(i + 1) % 5}`],
  uid: i,
  gen,
  payload: new Uint8Array(64).fill(i)
})

/** Walks a cursor, stepping with continue(), advance(2) or one continue(key) jump; collects what it saw. */
const walk = (source: any, range: unknown, dir: string, step: "continue" | "advance" | "jump", keysOnly = false) =>
  new Promise<Array<unknown>>((resolve, reject) => {
    const out: Array<unknown> = []
    const req = keysOnly ? source.openKeyCursor(range, dir) : source.openCursor(range, dir)
    let jumped = false
    req.onerror = () => reject(req.error)
    req.onsuccess = () => {
      const c = req.result
      if (c === null) return resolve(out)
      out.push(keysOnly ? [c.key, c.primaryKey] : [c.key, c.primaryKey, c.value])
      if (step === "advance") c.advance(2)
      else if (step === "jump" && !jumped && typeof c.key === "string" && dir.startsWith("next")) {
        jumped = true
        c.continue(`${c.key}~`)
      } else c.continue()
    }
  })

const RANGES = (): Array<unknown> => [
  undefined,
  IDBKeyRange.only("a"),
  IDBKeyRange.bound(0, "b", true, false),
  IDBKeyRange.bound(-1, 10, false, true),
  IDBKeyRange.lowerBound("ab", true),
  IDBKeyRange.upperBound([1, "y"]),
  IDBKeyRange.lowerBound(new Date(0))
]

const OB_RANGES = (): Array<unknown> => [
  undefined,
  IDBKeyRange.bound(["!r1", "s04"], ["!r1", "s19"], true, true),
  IDBKeyRange.lowerBound(["!r2"]),
  IDBKeyRange.upperBound(["!r0", "s12"], true)
]

/** Every read the script checks, on both stores and on every index. */
const queries = async (db: Db): Promise<Array<unknown>> => {
  const out: Array<unknown> = []
  const tx = db.transaction(["kv", "ob"], "readonly")
  const kv = tx.objectStore("kv")
  const ob = tx.objectStore("ob")
  for (const k of KV_KEYS) out.push(await request(kv.get(k)))
  for (const r of RANGES()) {
    out.push(
      await request(kv.count(r)),
      await request(kv.getAll(r)),
      await request(kv.getAll(r, 3)),
      await request(kv.getAllKeys(r, 2))
    )
    for (const dir of ["next", "prev"]) {
      for (const step of ["continue", "advance", "jump"] as const) out.push(await walk(kv, r, dir, step))
    }
  }
  for (const r of OB_RANGES()) {
    out.push(await request(ob.count(r)), await request(ob.getAll(r, 5)), await walk(ob, r, "prev", "advance", true))
  }
  const bySender = ob.index("by_sender")
  const byTag = ob.index("by_tag")
  const byUid = ob.index("by_uid")
  for (const dir of ["next", "prev", "nextunique", "prevunique"]) {
    out.push(await walk(bySender, IDBKeyRange.bound("@u1", "@u3", false, true), dir, "continue"))
    out.push(await walk(byTag, undefined, dir, dir.startsWith("next") ? "jump" : "advance"))
  }
  out.push(
    await request(bySender.get("@u2")),
    await request(bySender.getKey("@u2")),
    await request(bySender.getAll("@u3", 4)),
    await request(bySender.getAllKeys()),
    await request(bySender.count("@u0")),
    await request(byTag.getAll("t3")),
    await request(byTag.count()),
    await request(byUid.get(7)),
    await request(byUid.getAll(IDBKeyRange.bound(5, 9, true, false))),
    await walk(byUid, IDBKeyRange.upperBound(6), "prev", "continue", true)
  )
  await done(tx)
  return out
}

const V1 = (db: Db) => {
  db.createObjectStore("kv")
  const ob = db.createObjectStore("ob", { keyPath: ["room", "id"] })
  ob.createIndex("by_sender", "sender")
  ob.createIndex("by_tag", "tags", { multiEntry: true })
  ob.createIndex("by_uid", "uid", { unique: true })
  db.createObjectStore("gone")
}

const setup = async (f: IdbFactory) => {
  const db = await openDb(f, DB, 1, V1)
  const tx = db.transaction(["kv", "ob", "gone"], "readwrite")
  KV_KEYS.forEach((k, i) =>
    tx.objectStore("kv").put({ i, blob: new Uint8Array([i, i + 1]), at: new Date(i * 1000) }, k)
  )
  for (let i = 0; i < 30; i++) tx.objectStore("ob").put(obRecord(i))
  tx.objectStore("gone").put("bye", 1)
  await done(tx)
  const out = await queries(db)
  db.close()
  return out
}

/** Overwrites (the old index entries come from the on-demand value), cursor edits, range deletes, clear. */
const mutate = async (f: IdbFactory) => {
  const db = await openDb(f, DB, 1)
  const tx = db.transaction(["kv", "ob", "gone"], "readwrite")
  const ob = tx.objectStore("ob")
  for (const i of [1, 4, 7]) ob.put({ ...obRecord(i, 1), sender: "@moved", tags: ["t9"] })
  ob.delete(IDBKeyRange.bound(["!r2", "s05"], ["!r2", "s20"]))
  tx.objectStore("kv").delete(IDBKeyRange.bound("a", "b", false, true))
  tx.objectStore("kv").put({ replaced: true }, 10)
  tx.objectStore("gone").clear()
  await new Promise<void>((resolve, reject) => {
    const req = ob.index("by_sender").openCursor("@u3")
    req.onerror = () => reject(req.error)
    req.onsuccess = () => {
      const c = req.result
      if (c === null) return resolve()
      if (c.value.uid % 2 === 1) c.delete()
      else c.update({ ...c.value, sender: "@u0", tags: [...c.value.tags, "edited"] })
      c.continue()
    }
  })
  await done(tx)
  const out = await queries(db)
  db.close()
  return out
}

const failing = (tx: any, body: () => void) =>
  new Promise<string>((resolve) => {
    tx.onabort = () => resolve(String(tx.error?.name))
    tx.oncomplete = () => resolve("complete")
    body()
  })

/** Constraint errors and aborts over on-demand records leave the committed state as it was. */
const aborts = async (f: IdbFactory) => {
  const db = await openDb(f, DB, 1)
  const out: Array<unknown> = []
  let tx = db.transaction(["ob"], "readwrite")
  out.push(await failing(tx, () => tx.objectStore("ob").add(obRecord(0, 5)))) // same primary key
  tx = db.transaction(["ob"], "readwrite")
  out.push(await failing(tx, () => tx.objectStore("ob").put({ ...obRecord(40), uid: 8 }))) // same unique index key
  tx = db.transaction(["kv", "ob"], "readwrite")
  out.push(
    await failing(tx, () => {
      tx.objectStore("ob").put({ ...obRecord(2, 9), sender: "@aborted" })
      tx.objectStore("ob").delete(["!r0", "s00"])
      tx.objectStore("kv").clear()
      tx.objectStore("kv").put("new", "fresh")
      tx.abort()
    })
  )
  out.push(await queries(db))
  db.close()
  return out
}

/** A versionchange: an index over stored records, a store deleted, one created, one renamed. */
const upgrade = async (f: IdbFactory) => {
  const db = await openDb(f, DB, 2, (d, tx) => {
    tx.objectStore("ob").createIndex("by_gen", "gen")
    d.deleteObjectStore("gone")
    d.createObjectStore("fresh", { autoIncrement: true }).put({ born: "in upgrade" })
    tx.objectStore("kv").name = "kv-renamed"
    d.createObjectStore("kv").put({ second: "kv" }, "only")
  })
  const tx = db.transaction(["ob", "kv-renamed", "kv", "fresh"], "readonly")
  const out = [
    [...db.objectStoreNames],
    await request(tx.objectStore("ob").index("by_gen").getAllKeys(1)),
    await request(tx.objectStore("kv-renamed").getAll()),
    await request(tx.objectStore("kv").getAll()),
    await request(tx.objectStore("fresh").getAll())
  ]
  await done(tx)
  db.close()
  return out
}

const afterUpgrade = async (f: IdbFactory) => {
  const db = await openDb(f, DB, 2)
  const tx = db.transaction(["ob", "kv-renamed", "kv", "fresh"], "readonly")
  const out = [
    db.version,
    [...db.objectStoreNames],
    await request(tx.objectStore("ob").index("by_gen").count(0)),
    await request(tx.objectStore("kv-renamed").getAllKeys()),
    await request(tx.objectStore("kv-renamed").get(10)),
    await request(tx.objectStore("kv").getAll()),
    await request(tx.objectStore("fresh").getAllKeys())
  ]
  await done(tx)
  db.close()
  return out
}

const PHASES = [setup, mutate, aborts, upgrade, afterUpgrade]

describe("durable IndexedDB with values on demand", () => {
  it("answers every read of the script exactly as in-memory fake-indexeddb, across reopens", async () => {
    const memory = new IDBFactory()
    const file = path.join(root, "crypto.sqlite3")
    for (const phase of PHASES) {
      const expected = await phase(memory)
      const opened = await openDurable(file)
      try {
        // Reopened from disk: no value is held in memory before something reads it.
        if (phase !== setup) {
          for (const r of rawStore(opened.idb.factory, "ob").records.values()) expect(r).toBeInstanceOf(LazyRecord)
        }
        expect(await phase(opened.idb.factory), phase.name).toEqual(expected)
        const cache = opened.idb.cacheStats()
        expect(cache.entries).toBeLessThanOrEqual(2)
        if (phase !== setup) expect(cache.reads, phase.name).toBeGreaterThan(phase === afterUpgrade ? 1 : 10)
      } finally {
        opened.close()
      }
    }
  })

  it("orders keys for the bulk load exactly as IndexedDB does", () => {
    const keys: Array<unknown> = [
      ...KV_KEYS,
      -0,
      -Infinity,
      Infinity,
      2,
      "",
      "\u{1F600}",
      "\uFFFF",
      "A",
      "aa",
      new Date(-5),
      new Date(1000),
      [],
      [[]],
      [1],
      [1, 2],
      [1, "x", 0],
      ["a", 1],
      [new Date(0)],
      [new Uint8Array([1]).buffer],
      new ArrayBuffer(0)
    ]
    const cmp = new IDBFactory()
    for (const a of keys) {
      for (const b of keys) expect(compareKeys(a, b), `${String(a)} vs ${String(b)}`).toBe(cmp.cmp(a, b))
    }
  })

  it("drops committed values from memory and reads them back through a bounded cache", async () => {
    const file = path.join(root, "crypto.sqlite3")
    const opened = await openDurable(file, 16)
    try {
      const db = await openDb(opened.idb.factory, DB, 1, V1)
      const tx = db.transaction("kv", "readwrite")
      for (let i = 0; i < 300; i++) tx.objectStore("kv").put({ i, blob: new Uint8Array(4096).fill(i % 256) }, i)
      // Pending writes are ordinary records until the commit.
      expect(rawStore(opened.idb.factory, "kv").records.get(5)).not.toBeInstanceOf(LazyRecord)
      await done(tx)
      expect(rawStore(opened.idb.factory, "kv").records.get(5)).toBeInstanceOf(LazyRecord)

      const read = db.transaction("kv").objectStore("kv")
      const all = await request<Array<{ i: number; blob: Uint8Array }>>(read.getAll())
      expect(all.map((v) => v.i)).toEqual(Array.from({ length: 300 }, (_, i) => i))
      expect(all[299]!.blob[0]).toBe(299 % 256)
      const stats = opened.idb.cacheStats()
      expect(stats.reads).toBe(300)
      expect(stats.entries).toBe(16)
      // A hot record is served from the cache, as a fresh copy every time.
      const a = await request<{ blob: Uint8Array }>(db.transaction("kv").objectStore("kv").get(299))
      a.blob[0] = 1
      const b = await request<{ blob: Uint8Array }>(db.transaction("kv").objectStore("kv").get(299))
      expect(b.blob[0]).toBe(299 % 256)
      expect(opened.idb.cacheStats().hits).toBe(2)
      expect(opened.idb.cacheStats().reads).toBe(300)
      db.close()
    } finally {
      opened.close()
    }
  })
})

describe("durable IndexedDB writes only what changed", () => {
  const KV = (db: Db) => {
    db.createObjectStore("kv")
    db.createObjectStore("other")
  }
  const walBytes = (file: string) => (fs.existsSync(`${file}-wal`) ? fs.statSync(`${file}-wal`).size : 0)
  const value = (i: number, gen = 0) => ({ i, gen, blob: new Uint8Array(2048).fill(i % 256), at: new Date(i) })

  const openFile = async (file: string) => {
    const f = await SqliteFile.open(file, "crypto", SECRET)
    const idb = await openDurableIdb([f], () => f, { cacheEntries: 0 })
    const db = await openDb(idb.factory, DB, 1, KV)
    const put = async (entries: ReadonlyArray<readonly [string, number, number]>) => {
      const tx = db.transaction(["kv", "other"], "readwrite")
      for (const [store, i, gen] of entries) tx.objectStore(store).put(value(i, gen), i)
      await done(tx)
    }
    const get = (store: string, i: number) =>
      request<ReturnType<typeof value>>(db.transaction(store).objectStore(store).get(i))
    return {
      f,
      idb,
      db,
      put,
      get,
      close: () => {
        db.close()
        idb.detach()
        f.close()
      }
    }
  }

  it("an unchanged put writes nothing; a changed put among unchanged ones is written and durable", async () => {
    const file = path.join(root, "crypto.sqlite3")
    const s = await openFile(file)
    try {
      await s.put([["kv", 1, 0], ["kv", 2, 0], ["other", 3, 0]])
      expect(s.f.stats).toMatchObject({ rowsWritten: 3, unchangedPuts: 0 })
      const commits = s.f.stats.commits
      s.f.checkpoint()
      expect(walBytes(file)).toBe(0)

      // The same keys and values again (new objects, equal contents; each seal would have a fresh nonce).
      await s.put([["kv", 1, 0], ["kv", 2, 0], ["other", 3, 0]])
      expect(s.f.stats).toMatchObject({ commits, rowsWritten: 3, unchangedPuts: 3 })
      expect(walBytes(file)).toBe(0)
      expect(s.idb.stats.failedCommits).toBe(0)

      // One changed value among unchanged ones: one commit, one row.
      await s.put([["kv", 1, 0], ["kv", 2, 1], ["other", 3, 0]])
      expect(s.f.stats).toMatchObject({ commits: commits + 1, rowsWritten: 4, unchangedPuts: 5 })
      expect(walBytes(file)).toBeGreaterThan(0)
      expect((await s.get("kv", 2)).gen).toBe(1)
    } finally {
      s.close()
    }
    const again = await openFile(file)
    try {
      expect((await again.get("kv", 1)).gen).toBe(0)
      expect((await again.get("kv", 2)).gen).toBe(1)
      expect((await again.get("kv", 2)).blob[0]).toBe(2)
      expect((await again.get("other", 3)).i).toBe(3)
    } finally {
      again.close()
    }
  })

  it.each([["encrypted", SECRET], ["unencrypted", { encrypted: false } as const]] as const)(
    "writes a changed value of the same or of another length, skips an equal one (%s store)",
    async (_, secret) => {
      const file = path.join(root, `lengths-${secret.encrypted ? "sealed" : "plain"}.sqlite3`)
      const open = async () => {
        const f = await SqliteFile.open(file, "crypto", secret)
        const idb = await openDurableIdb([f], () => f, { cacheEntries: 0 })
        const db = await openDb(idb.factory, DB, 1, KV)
        const put = async (s: string) => {
          const tx = db.transaction("kv", "readwrite")
          tx.objectStore("kv").put({ s }, 1)
          await done(tx)
        }
        const get = () => request<{ s: string }>(db.transaction("kv").objectStore("kv").get(1))
        const close = () => {
          db.close()
          idb.detach()
          f.close()
        }
        return { f, put, get, close }
      }
      const s = await open()
      try {
        const schemaCommits = s.f.stats.commits // the versionchange that created the stores
        await s.put("aaaa")
        await s.put("bbbb") // same serialized length, other bytes
        await s.put("bbbbbbbb") // another length
        await s.put("bbbbbbbb") // equal
        expect(s.f.stats).toMatchObject({ commits: schemaCommits + 3, rowsWritten: 3, unchangedPuts: 1 })
        expect((await s.get()).s).toBe("bbbbbbbb")
      } finally {
        s.close()
      }
      const again = await open()
      try {
        expect((await again.get()).s).toBe("bbbbbbbb")
        await again.put("bbbb")
        expect(again.f.stats).toMatchObject({ rowsWritten: 1, unchangedPuts: 0 })
      } finally {
        again.close()
      }
      const third = await open()
      try {
        expect((await third.get()).s).toBe("bbbb")
      } finally {
        third.close()
      }
    }
  )

  it("writes an equal value again after a delete or a clear (the row is gone, so it is not unchanged)", async () => {
    const file = path.join(root, "crypto.sqlite3")
    const s = await openFile(file)
    try {
      await s.put([["kv", 1, 0], ["kv", 2, 0]])
      const del = s.db.transaction("kv", "readwrite")
      del.objectStore("kv").delete(1)
      await done(del)
      await s.put([["kv", 1, 0]])
      // clear and re-put the same values in one transaction: the clear deletes the rows first
      const tx = s.db.transaction("kv", "readwrite")
      tx.objectStore("kv").clear()
      tx.objectStore("kv").put(value(1), 1)
      tx.objectStore("kv").put(value(2), 2)
      await done(tx)
      expect(s.f.stats.unchangedPuts).toBe(0)
      expect(s.f.stats.rowsWritten).toBe(5)
    } finally {
      s.close()
    }
    const again = await openFile(file)
    try {
      expect((await again.get("kv", 1)).i).toBe(1)
      expect((await again.get("kv", 2)).i).toBe(2)
    } finally {
      again.close()
    }
  })

  it("commits one IndexedDB transaction over several stores as one SQLite transaction, updating rows in place", async () => {
    const file = path.join(root, "crypto.sqlite3")
    const s = await openFile(file)
    const rids = () => {
      const probe = new DatabaseSync(file, { readOnly: true })
      try {
        return (probe.prepare("SELECT rid FROM records ORDER BY rid").all() as Array<{ rid: number }>).map((r) => r.rid)
      } finally {
        probe.close()
      }
    }
    try {
      await s.put([["kv", 1, 0], ["kv", 2, 0], ["other", 3, 0], ["other", 4, 0]])
      const commits = s.f.stats.commits
      await s.put([["kv", 1, 1], ["kv", 2, 1], ["other", 3, 1], ["other", 4, 1]])
      expect(s.f.stats.commits).toBe(commits + 1)
    } finally {
      s.close()
    }
    const before = rids()
    const again = await openFile(file)
    try {
      await again.put([["kv", 1, 2], ["other", 4, 2]])
    } finally {
      again.close()
    }
    // an upsert: the rows keep their rowids (INSERT OR REPLACE would delete and re-insert them, rewriting the indexes)
    expect(rids()).toEqual(before)
    expect(before).toHaveLength(4)
  })
})
