// Child process for the CryptoStore crash and lock tests (bundled by the test with esbuild, run on Node 24).
//
//   write <root>   opens the store and commits batches forever; after each `complete` it prints
//                  `ack <seq>` (stdout to a pipe is synchronous on Linux, so a printed ack was acknowledged)
//   hold <root>    opens the store, prints `ready <pid>`, and waits to be killed
import { Effect } from "effect"
import { makeCryptoStore } from "../../src/layers/CryptoStoreLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { openDb, passphrase, request } from "./cryptostore-child.idb.js"

export const CRASH_DB = "cara::matrix-sdk-crypto"
export const BATCH = 10

const [mode, root] = process.argv.slice(2)
if (root === undefined || (mode !== "write" && mode !== "hold")) {
  process.stderr.write("usage: cryptostore-child write|hold <root>\n")
  process.exit(2)
}

const say = (line: string) => process.stdout.write(`${line}\n`)

const program = Effect.scoped(
  Effect.gen(function*() {
    const store = yield* makeCryptoStore({ secret: passphrase("crash-test passphrase"), installGlobal: false })
    if (mode === "hold") {
      say(`ready ${process.pid}`)
      return yield* Effect.never
    }
    yield* Effect.promise(async () => {
      const db = await openDb(store.indexedDB, CRASH_DB, 1, (d) => {
        const items = d.createObjectStore("items", { keyPath: ["seq", "i"] })
        items.createIndex("by_seq", "seq")
        d.createObjectStore("meta")
      })
      let seq = ((await request(db.transaction("meta").objectStore("meta").get("seq"))) as number | undefined) ?? 0
      say(`ready ${seq}`)
      for (;;) {
        seq++
        const tx = db.transaction(["items", "meta"], "readwrite")
        const items = tx.objectStore("items")
        for (let i = 0; i < BATCH; i++) {
          items.put({ seq, i, payload: new Uint8Array(2048).fill(seq % 251) })
        }
        tx.objectStore("meta").put(seq, "seq")
        const current = seq
        await new Promise<void>((resolve, reject) => {
          tx.oncomplete = () => {
            say(`ack ${current}`)
            resolve()
          }
          tx.onabort = () => reject(tx.error)
        })
      }
    })
  })
).pipe(Effect.provide(StateDirAt(root)))

Effect.runPromise(program).catch((e: unknown) => {
  process.stderr.write(`child failed: ${e instanceof Error ? e.message : String(e)}\n`)
  process.exit(1)
})
