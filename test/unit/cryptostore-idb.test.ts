// The IndexedDB semantics matrix-js-sdk and crypto-wasm rely on, across a close and reopen of the
// durable store: indexes, compound keys, key generators, cursors, clear, range deletes, versionchange
// upgrades, deleteDatabase; aborted transactions write nothing; a commit is on disk before `complete`.
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeEach, describe, expect, it } from "vitest"
import { deleteDb, done, openDb, request, withStore } from "../support/cryptostore-child.idb.js"
import { tmpDir } from "../support/tmp.js"

let root: string
beforeEach(() => {
  root = tmpDir("cara-cs-idb-")
})

const DB = "cara::matrix-sdk-crypto"

describe("durable IndexedDB across a restart", () => {
  it("keeps records, indexes, compound keys and cursor edits", async () => {
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB, 1, (d) => {
        const sessions = d.createObjectStore("sessions", { keyPath: ["room", "id"] })
        sessions.createIndex("by_sender", "sender", { unique: false })
        sessions.createIndex("by_tag", "tags", { multiEntry: true })
        d.createObjectStore("kv")
      })
      const tx = db.transaction(["sessions", "kv"], "readwrite")
      const os1 = tx.objectStore("sessions")
      for (let i = 0; i < 20; i++) {
        os1.put({
          room: `!r${i % 3}`,
          id: `s${i}`,
          sender: i % 2 === 0 ? "@a:x" : "@b:x",
          tags: [`t${i % 4}`, "all"],
          blob: new Uint8Array([i, 1, 2])
        })
      }
      tx.objectStore("kv").put({ n: 1 }, "plain")
      tx.objectStore("kv").put("binary-keyed", new Uint8Array([9, 9]).buffer)
      tx.objectStore("kv").put("date-keyed", new Date(5000))
      await done(tx)

      // cursor update + cursor delete in one transaction
      const tx2 = db.transaction("sessions", "readwrite")
      const cursorReq = tx2.objectStore("sessions").index("by_sender").openCursor("@b:x")
      cursorReq.onsuccess = () => {
        const c = cursorReq.result
        if (!c) return
        if (c.value.id === "s1") c.delete()
        else c.update({ ...c.value, sender: "@c:x" })
        c.continue()
      }
      await done(tx2)
      db.close()
    })

    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB)
      expect(db.version).toBe(1)
      expect([...db.objectStoreNames]).toEqual(["kv", "sessions"])
      const tx = db.transaction(["sessions", "kv"], "readonly")
      const sessions = tx.objectStore("sessions")
      expect(sessions.keyPath).toEqual(["room", "id"])
      expect([...sessions.indexNames]).toEqual(["by_sender", "by_tag"])
      expect(await request(sessions.count())).toBe(19)
      expect(await request(sessions.index("by_sender").count("@a:x"))).toBe(10)
      expect(await request(sessions.index("by_sender").count("@b:x"))).toBe(0)
      expect(await request(sessions.index("by_sender").count("@c:x"))).toBe(9)
      expect(await request(sessions.index("by_tag").count("all"))).toBe(19)
      expect(await request(sessions.index("by_tag").count("t0"))).toBe(5)
      const one = await request<{ blob: Uint8Array; sender: string }>(sessions.get(["!r1", "s4"]))
      expect(one.sender).toBe("@a:x")
      expect(Array.from(one.blob)).toEqual([4, 1, 2])
      expect(await request(sessions.get(["!r1", "s1"]))).toBeUndefined()
      const kv = tx.objectStore("kv")
      expect(await request(kv.get("plain"))).toEqual({ n: 1 })
      expect(await request(kv.get(new Uint8Array([9, 9]).buffer))).toBe("binary-keyed")
      expect(await request(kv.get(new Date(5000)))).toBe("date-keyed")
      db.close()
    })
  })

  it("continues autoIncrement key generators where they were, also past deleted keys", async () => {
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB, 1, (d) => {
        d.createObjectStore("queue", { autoIncrement: true })
        d.createObjectStore("inline", { keyPath: "seq", autoIncrement: true })
      })
      const tx = db.transaction(["queue", "inline"], "readwrite")
      for (let i = 0; i < 5; i++) {
        tx.objectStore("queue").add(`m${i}`)
        tx.objectStore("inline").add({ body: `m${i}` })
      }
      await done(tx)
      const tx2 = db.transaction(["queue", "inline"], "readwrite")
      tx2.objectStore("queue").delete(5)
      tx2.objectStore("queue").delete(4)
      tx2.objectStore("inline").delete(IDBKeyRangeBound(4, 5))
      await done(tx2)
      db.close()
    })
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB)
      const tx = db.transaction(["queue", "inline"], "readwrite")
      const k1 = await request(tx.objectStore("queue").add("next"))
      const k2 = await request(tx.objectStore("inline").add({ body: "next" }))
      expect(k1).toBe(6)
      expect(k2).toBe(6)
      expect(await request(tx.objectStore("inline").getAllKeys())).toEqual([1, 2, 3, 6])
      await done(tx)
      db.close()
    })
  })

  it("persists versionchange upgrades: new stores and indexes, deleted stores, data written in the upgrade", async () => {
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB, 1, (d) => {
        d.createObjectStore("old").put("x", "k")
        d.createObjectStore("keep", { keyPath: "id" }).put({ id: 1, v: "a" })
      })
      db.close()
      const db2 = await openDb(s.indexedDB, DB, 2, (d, tx, oldVersion) => {
        expect(oldVersion).toBe(1)
        d.deleteObjectStore("old")
        tx.objectStore("keep").createIndex("by_v", "v", { unique: true })
        d.createObjectStore("added").put("seeded", "k")
      })
      db2.close()
    })
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB)
      expect(db.version).toBe(2)
      expect([...db.objectStoreNames]).toEqual(["added", "keep"])
      const tx = db.transaction(["added", "keep"], "readwrite")
      expect(await request(tx.objectStore("added").get("k"))).toBe("seeded")
      expect(await request(tx.objectStore("keep").index("by_v").get("a"))).toEqual({ id: 1, v: "a" })
      // the restored unique index still enforces uniqueness
      const dup = tx.objectStore("keep").add({ id: 2, v: "a" })
      await expect(request(dup)).rejects.toMatchObject({ name: "ConstraintError" })
      await done(tx) // the helper prevents the default abort: the rest of the transaction commits
      expect(await request(db.transaction("keep").objectStore("keep").count())).toBe(1)
      db.close()
    })
  })

  it("persists clear(), range deletes and deleteDatabase", async () => {
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB, 1, (d) => {
        d.createObjectStore("a")
        d.createObjectStore("b")
      })
      const tx = db.transaction(["a", "b"], "readwrite")
      for (let i = 0; i < 10; i++) {
        tx.objectStore("a").put(i, i)
        tx.objectStore("b").put(i, i)
      }
      await done(tx)
      const tx2 = db.transaction(["a", "b"], "readwrite")
      tx2.objectStore("a").clear()
      tx2.objectStore("a").put("after-clear", 100)
      tx2.objectStore("b").delete(IDBKeyRangeBound(2, 7))
      await done(tx2)
      db.close()
      const other = await openDb(
        s.indexedDB,
        "cara::matrix-sdk-crypto-meta",
        1,
        (d) => d.createObjectStore("m").put(1, 1)
      )
      other.close()
      await deleteDb(s.indexedDB, "cara::matrix-sdk-crypto-meta")
    })
    await withStore(root, {}, async (s) => {
      const names = (await s.indexedDB.databases()).map((d) => d.name)
      expect(names).toEqual([DB])
      const db = await openDb(s.indexedDB, DB)
      const tx = db.transaction(["a", "b"], "readonly")
      expect(await request(tx.objectStore("a").getAllKeys())).toEqual([100])
      expect(await request(tx.objectStore("b").getAllKeys())).toEqual([0, 1, 8, 9])
      db.close()
    })
  })

  it("writes nothing for an aborted transaction, and the database stays usable", async () => {
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB, 1, (d) => d.createObjectStore("a"))
      const ok = db.transaction("a", "readwrite")
      ok.objectStore("a").put("kept", "k0")
      await done(ok)
      const tx = db.transaction("a", "readwrite")
      tx.objectStore("a").put("lost", "k1")
      tx.objectStore("a").put("overwritten?", "k0")
      const aborted = done(tx)
      tx.objectStore("a").get("k1").onsuccess = () => tx.abort()
      await expect(aborted).rejects.toBeDefined()
      const commitsAfterAbort = (await import("effect").then(({ Effect }) => Effect.runPromise(s.stats))).commits
      expect(commitsAfterAbort).toBe(2) // the upgrade and `ok`, not the aborted one
      db.close()
    })
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB)
      const tx = db.transaction("a", "readonly")
      expect(await request(tx.objectStore("a").getAll())).toEqual(["kept"])
      db.close()
    })
  })

  it("turns a commit whose disk write fails into an abort: memory rolled back, nothing acknowledged", async () => {
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB, 1, (d) => d.createObjectStore("a"))
      const ok = db.transaction("a", "readwrite")
      ok.objectStore("a").put("kept", "k0")
      await done(ok)
      // fake-indexeddb accepts a SharedArrayBuffer, node:v8 cannot serialize one: a real write failure.
      const bad = db.transaction("a", "readwrite")
      bad.objectStore("a").put("also lost", "k1")
      bad.objectStore("a").put({ shared: new SharedArrayBuffer(8) }, "k2")
      bad.objectStore("a").put("replaced?", "k0")
      let completed = false
      bad.oncomplete = () => (completed = true)
      const error = await new Promise<unknown>((resolve) => (bad.onabort = () => resolve(bad.error)))
      expect(completed).toBe(false)
      expect((error as DOMException).name).toBe("UnknownError")
      const { Effect } = await import("effect")
      const stats = await Effect.runPromise(s.stats)
      expect(stats.failedCommits).toBe(1)
      expect(stats.lastError).toMatch(/could not be cloned/)
      // memory matches the disk again, and the store keeps working
      expect(await request(db.transaction("a").objectStore("a").getAll())).toEqual(["kept"])
      const after = db.transaction("a", "readwrite")
      after.objectStore("a").put("later", "k3")
      await done(after)
      db.close()
    })
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB)
      expect(await request(db.transaction("a").objectStore("a").getAll())).toEqual(["kept", "later"])
      db.close()
    })
  })

  it("has the transaction in the files before `complete` reaches the caller", async () => {
    const snapshot = path.join(root, "snapshot")
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB, 1, (d) => d.createObjectStore("a"))
      const tx = db.transaction("a", "readwrite")
      tx.objectStore("a").put("acknowledged", "k")
      await new Promise<void>((resolve) => {
        tx.oncomplete = () => {
          // Copy the files as they are at the moment the caller learns of the commit.
          fs.mkdirSync(path.join(snapshot, "matrix"), { recursive: true, mode: 0o700 })
          for (const f of fs.readdirSync(path.join(root, "matrix"))) {
            if (f.endsWith(".owner")) continue
            fs.copyFileSync(path.join(root, "matrix", f), path.join(snapshot, "matrix", f))
          }
          resolve()
        }
      })
      db.close()
    })
    await withStore(snapshot, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB)
      expect(await request(db.transaction("a").objectStore("a").get("k"))).toBe("acknowledged")
      db.close()
    })
  })

  it("keeps the crypto prefix in the crypto file and everything else in the state file", async () => {
    await withStore(root, { cryptoDatabasePrefix: "bot" }, async (s) => {
      const c = await openDb(s.indexedDB, "bot::matrix-sdk-crypto", 1, (d) => d.createObjectStore("x").put(1, 1))
      const st = await openDb(
        s.indexedDB,
        `matrix-js-sdk:${s.syncStoreName}`,
        1,
        (d) => d.createObjectStore("sync").put(2, 2)
      )
      c.close()
      st.close()
    })
    // Each file on its own still opens and holds only its databases: move the state file away.
    fs.renameSync(path.join(root, "matrix", "matrix-sdk-state.sqlite3"), path.join(root, "state-aside.sqlite3"))
    await withStore(root, { cryptoDatabasePrefix: "bot" }, async (s) => {
      expect((await s.indexedDB.databases()).map((d) => d.name)).toEqual(["bot::matrix-sdk-crypto"])
    })
  })
})

// IDBKeyRange from fake-indexeddb (this project does not load DOM typings)
import { IDBKeyRange } from "fake-indexeddb"
const IDBKeyRangeBound = (lo: number, hi: number) => IDBKeyRange.bound(lo, hi)
