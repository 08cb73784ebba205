// The store as an operator sees it: passphrase handling, the wrapped data key and its re-wrap,
// encryption at rest, one owner at a time, file modes, and the process-wide IndexedDB router.
import { Effect, Option, Redacted } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeEach, describe, expect, it } from "vitest"
import { rewrapCryptoStore } from "../../src/layers/CryptoStoreLive.js"
import { installIndexedDbRouter } from "../../src/layers/durable-idb/router.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { CryptoStore } from "../../src/services/CryptoStore.js"
import {
  done,
  openDb,
  openFailure,
  passphrase,
  request,
  storeLayer,
  withStore
} from "../support/cryptostore-child.idb.js"
import { tmpDir } from "../support/tmp.js"

let root: string
beforeEach(() => {
  root = tmpDir("cara-cs-store-")
})

const DB = "cara::matrix-sdk-crypto"
const SECRET_USER = "@tracked-user-7f3a:example.org"

const seed = (root: string, options = {}) =>
  withStore(root, options, async (s) => {
    const db = await openDb(s.indexedDB, DB, 1, (d) => d.createObjectStore("tracked_users"))
    const tx = db.transaction("tracked_users", "readwrite")
    tx.objectStore("tracked_users").put({ user: SECRET_USER, dirty: false }, SECRET_USER)
    await done(tx)
    db.close()
    return s.storageKey.pipe(Option.map((k) => Buffer.from(Redacted.value(k)).toString("hex")), Option.getOrUndefined)
  })

const readBack = (root: string, options = {}) =>
  withStore(root, options, async (s) => {
    const db = await openDb(s.indexedDB, DB)
    const value = await request(db.transaction("tracked_users").objectStore("tracked_users").get(SECRET_USER))
    db.close()
    return value
  })

const digestOf = (dir: string) => {
  const h = crypto.createHash("sha256")
  for (const f of fs.readdirSync(dir).sort()) h.update(f).update(fs.readFileSync(path.join(dir, f)))
  return h.digest("hex")
}

const allBytes = (dir: string) => Buffer.concat(fs.readdirSync(dir).map((f) => fs.readFileSync(path.join(dir, f))))

describe("store passphrase and data key", () => {
  it("hands out a stable 32-byte storage key and reopens with the same passphrase", async () => {
    const key1 = await seed(root)
    expect(key1).toMatch(/^[0-9a-f]{64}$/)
    const key2 = await withStore(
      root,
      {},
      async (s) => Buffer.from(Redacted.value(Option.getOrThrow(s.storageKey))).toString("hex")
    )
    expect(key2).toBe(key1)
    expect(await readBack(root)).toEqual({ user: SECRET_USER, dirty: false })
  })

  it("refuses a wrong passphrase with encrypted-store-passphrase-mismatch and leaves the files untouched", async () => {
    await seed(root)
    const before = digestOf(path.join(root, "matrix"))
    const err = await openFailure(root, { secret: passphrase("wrong passphrase") })
    expect(err?._tag).toBe("CryptoStoreError")
    expect(err?.kind).toBe("encrypted-store-passphrase-mismatch")
    expect(err?.message).not.toContain("wrong passphrase")
    expect(digestOf(path.join(root, "matrix"))).toBe(before)
    expect(await readBack(root)).toEqual({ user: SECRET_USER, dirty: false })
  })

  it("fails with missing-store-secret without a passphrase, or an encrypted store opened as unencrypted", async () => {
    const none = await openFailure(root, { secret: { encrypted: true, passphrase: Option.none() } })
    expect(none?.kind).toBe("missing-store-secret")
    expect(fs.existsSync(path.join(root, "matrix", "matrix-sdk-crypto.sqlite3"))).toBe(false)
    const empty = await openFailure(root, { secret: passphrase("  ") })
    expect(empty?.kind).toBe("missing-store-secret")
    await seed(root)
    const plain = await openFailure(root, { secret: { encrypted: false } })
    expect(plain?.kind).toBe("missing-store-secret")
  })

  it("encrypts names, keys and values at rest; an unencrypted store does not (control)", async () => {
    await seed(root)
    const bytes = allBytes(path.join(root, "matrix"))
    expect(bytes.includes(Buffer.from("tracked-user-7f3a"))).toBe(false)
    expect(bytes.includes(Buffer.from("tracked_users"))).toBe(false)
    expect(bytes.includes(Buffer.from("matrix-sdk-crypto"))).toBe(false)

    const plainRoot = path.join(root, "plain")
    await seed(plainRoot, { secret: { encrypted: false } })
    expect(allBytes(path.join(plainRoot, "matrix")).includes(Buffer.from("tracked-user-7f3a"))).toBe(true)
    const asEncrypted = await openFailure(plainRoot, {})
    expect(asEncrypted?.kind).toBe("encrypted-state-io")
  })

  it("re-wraps the data key under a new passphrase: the old one stops working, data and storage key stay", async () => {
    const key = await seed(root)
    const cryptoFile = path.join(root, "matrix", "matrix-sdk-crypto.sqlite3")
    await withStore(root, {}, (s) => Effect.runPromise(s.rewrap(Redacted.make("the new passphrase"))))
    expect((await openFailure(root, {}))?.kind).toBe("encrypted-store-passphrase-mismatch")
    const newSecret = { secret: passphrase("the new passphrase") }
    expect(await readBack(root, newSecret)).toEqual({ user: SECRET_USER, dirty: false })
    const key2 = await withStore(
      root,
      newSecret,
      async (s) => Buffer.from(Redacted.value(Option.getOrThrow(s.storageKey))).toString("hex")
    )
    expect(key2).toBe(key)
    expect(fs.statSync(cryptoFile).size).toBeGreaterThan(0)
  })

  it("re-wraps offline, idempotently (a rerun after an interruption finishes the job)", async () => {
    await seed(root)
    const run = rewrapCryptoStore(Redacted.make("correct horse battery staple"), Redacted.make("rotated")).pipe(
      Effect.provide(StateDirAt(root))
    )
    await Effect.runPromise(run)
    await Effect.runPromise(run) // second run: both files already open with the new passphrase
    expect(await readBack(root, { secret: passphrase("rotated") })).toEqual({ user: SECRET_USER, dirty: false })
    expect((await openFailure(root, {}))?.kind).toBe("encrypted-store-passphrase-mismatch")
  })
})

describe("ownership and files", () => {
  it("refuses a second opener with store-locked naming the holder pid, and opens again after close", async () => {
    await withStore(root, {}, async () => {
      const err = await openFailure(root, {})
      expect(err?.kind).toBe("store-locked")
      expect(err && "holderPid" in err ? err.holderPid : undefined).toBe(process.pid)
      expect(err?.message).toContain(String(process.pid))
    })
    expect(await openFailure(root, {})).toBeUndefined()
    expect(fs.existsSync(path.join(root, "matrix", "matrix-sdk-crypto.sqlite3.owner"))).toBe(false)
  })

  it("creates the matrix dir 0700 and the store files (and their WAL) 0600", async () => {
    await withStore(root, {}, async (s) => {
      const db = await openDb(s.indexedDB, DB, 1, (d) => d.createObjectStore("a").put(1, 1))
      db.close()
      const dir = path.join(root, "matrix")
      expect(fs.statSync(dir).mode & 0o777).toBe(0o700)
      const files = fs.readdirSync(dir)
      expect(files).toContain("matrix-sdk-crypto.sqlite3")
      expect(files).toContain("matrix-sdk-crypto.sqlite3-wal")
      expect(files).toContain("matrix-sdk-state.sqlite3")
      for (const f of files) expect([f, fs.statSync(path.join(dir, f)).mode & 0o777]).toEqual([f, 0o600])
    })
  })
})

describe("the CryptoStore layer", () => {
  it("serves the service tag for the layer's life; flush moves the WAL into the file", async () => {
    const walSize = () => fs.statSync(path.join(root, "matrix", "matrix-sdk-crypto.sqlite3-wal")).size
    const program = Effect.gen(function*() {
      const store = yield* CryptoStore
      yield* Effect.promise(async () => {
        const db = await openDb(store.indexedDB, DB, 1, (d) => d.createObjectStore("a").put("v", "k"))
        db.close()
      })
      const before = walSize()
      yield* store.flush
      return { before, after: walSize(), prefix: store.cryptoDatabasePrefix, sync: store.syncStoreName }
    })
    const r = await Effect.runPromise(Effect.provide(program, storeLayer(root, {})))
    expect(r.before).toBeGreaterThan(0)
    expect(r.after).toBe(0)
    expect([r.prefix, r.sync]).toEqual(["cara", "cara-sync"])
    // released with the layer: the next opener gets it
    expect(await openFailure(root, {})).toBeUndefined()
  })
})

describe("globalThis.indexedDB router", () => {
  it("gives each store in a process its own databases and leaves other names to an in-memory fallback", async () => {
    const router = installIndexedDbRouter()
    expect((globalThis as { indexedDB?: unknown }).indexedDB).toBe(router)
    const bobRoot = path.join(root, "bob")
    await withStore(
      root,
      { installGlobal: true, cryptoDatabasePrefix: "alice", syncStoreName: "alice-sync" },
      async () => {
        await withStore(
          bobRoot,
          { installGlobal: true, cryptoDatabasePrefix: "bob", syncStoreName: "bob-sync" },
          async (bob) => {
            const g = (globalThis as unknown as { indexedDB: typeof router }).indexedDB
            const a = await openDb(g, "alice::matrix-sdk-crypto", 1, (d) => d.createObjectStore("s").put("A", 1))
            const b = await openDb(g, "bob::matrix-sdk-crypto", 1, (d) => d.createObjectStore("s").put("B", 1))
            const h = await openDb(g, "human::matrix-sdk-crypto", 1, (d) => d.createObjectStore("s").put("H", 1))
            a.close()
            b.close()
            h.close()
            expect((await bob.indexedDB.databases()).map((d) => d.name)).toEqual(["bob::matrix-sdk-crypto"])
            // an overlapping claim is refused
            const clash = await openFailure(path.join(root, "third"), {
              installGlobal: true,
              cryptoDatabasePrefix: "bob"
            })
            expect(clash?.kind).toBe("encrypted-state-io")
          }
        )
      }
    )
    expect(fs.readdirSync(path.join(root, "third", "matrix")).filter((f) => f.endsWith(".owner"))).toEqual([])
    const alice = await withStore(
      root,
      { cryptoDatabasePrefix: "alice" },
      async (s) => (await s.indexedDB.databases()).map((d) => d.name)
    )
    const bob = await withStore(
      bobRoot,
      { cryptoDatabasePrefix: "bob" },
      async (s) => (await s.indexedDB.databases()).map((d) => d.name)
    )
    expect(alice).toEqual(["alice::matrix-sdk-crypto"])
    expect(bob).toEqual(["bob::matrix-sdk-crypto"])
    // after both scopes closed, their names fall back to the in-memory factory
    expect(router.pick("alice::matrix-sdk-crypto")).toBe(router.fallback)
  })
})
