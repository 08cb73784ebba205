// Crash safety and stale locks with real child processes: a writer is SIGKILLed at random moments,
// 20 rounds; after each, the store opens, every acknowledged batch is there, and every batch is
// all-or-nothing. A killed owner's lock does not block the next opener; a live owner's pid is named.
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { bundleChild } from "../support/bundleChild.js"
import { openDb, openFailure, passphrase, request, withStore } from "../support/cryptostore-child.idb.js"

const NODE = process.execPath
let work: string
let childJs: string
let cleanup: () => void

beforeAll(async () => {
  ;({ work, childJs, cleanup } = await bundleChild("test/support/cryptostore-child.ts", "cara-cs-crash-"))
})
afterAll(() => cleanup())

interface Child {
  readonly proc: ChildProcess
  readonly lines: Array<string>
  readonly exited: Promise<void>
  waitFor(pred: (line: string) => boolean): Promise<string>
}

const startChild = (mode: "write" | "hold", root: string): Child => {
  const proc = spawn(NODE, [childJs, mode, root], { stdio: ["ignore", "pipe", "pipe"] })
  const lines: Array<string> = []
  const waiters: Array<{ pred: (l: string) => boolean; resolve: (l: string) => void }> = []
  let stderr = ""
  let buf = ""
  proc.stdout!.on("data", (chunk: Buffer) => {
    buf += chunk.toString("utf8")
    let i
    while ((i = buf.indexOf("\n")) !== -1) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      lines.push(line)
      for (const w of waiters.splice(0)) {
        if (w.pred(line)) w.resolve(line)
        else waiters.push(w)
      }
    }
  })
  proc.stderr!.on("data", (c: Buffer) => (stderr += c.toString("utf8")))
  const exited = new Promise<void>((resolve) => proc.on("exit", () => resolve()))
  return {
    proc,
    lines,
    exited,
    waitFor: (pred) =>
      new Promise((resolve, reject) => {
        const hit = lines.find(pred)
        if (hit !== undefined) return resolve(hit)
        waiters.push({ pred, resolve })
        void exited.then(() => reject(new Error(`child exited before the expected line; stderr: ${stderr}`)))
      })
  }
}

const SECRET = { secret: passphrase("crash-test passphrase") }

/** seq -> number of items present, and the stored high-water mark. */
const inspect = (root: string) =>
  withStore(root, SECRET, async (s) => {
    const names = (await s.indexedDB.databases()).map((d) => d.name)
    if (!names.includes("cara::matrix-sdk-crypto")) return { counts: new Map<number, number>(), mark: 0 }
    const db = await openDb(s.indexedDB, "cara::matrix-sdk-crypto")
    const tx = db.transaction(["items", "meta"])
    const keys = await request<Array<[number, number]>>(tx.objectStore("items").getAllKeys())
    const mark = ((await request(tx.objectStore("meta").get("seq"))) as number | undefined) ?? 0
    const bySeqIndex = await request<number>(tx.objectStore("items").index("by_seq").count())
    db.close()
    const counts = new Map<number, number>()
    for (const [seq] of keys) counts.set(seq, (counts.get(seq) ?? 0) + 1)
    expect(bySeqIndex).toBe(keys.length) // the index was rebuilt with every record
    return { counts, mark }
  })

describe("crash safety", () => {
  it("loses no acknowledged write over 20 random SIGKILLs, and the store always opens", async () => {
    const root = path.join(work, "store")
    let highestAck = 0
    let killedWhileWriting = 0
    for (let round = 0; round < 20; round++) {
      const child = startChild("write", root)
      // Half the rounds die early (during open or the rebuild), half in the middle of the writes.
      const early = round % 2 === 0
      if (early) {
        await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * 250)))
      } else {
        await child.waitFor((l) => l.startsWith("ack "))
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 150)))
        killedWhileWriting++
      }
      child.proc.kill("SIGKILL")
      await child.exited
      for (const line of child.lines) {
        if (line.startsWith("ack ")) highestAck = Math.max(highestAck, Number(line.slice(4)))
      }

      const { counts, mark } = await inspect(root)
      for (let seq = 1; seq <= highestAck; seq++) expect([round, seq, counts.get(seq)]).toEqual([round, seq, 10])
      for (const [seq, n] of counts) expect([round, seq, n]).toEqual([round, seq, 10]) // all-or-nothing
      expect(mark).toBeGreaterThanOrEqual(highestAck)
      expect(counts.size).toBe(mark)
    }
    expect(killedWhileWriting).toBe(10)
    expect(highestAck).toBeGreaterThan(10)
  }, 240_000)
})

describe("owner lock across processes", () => {
  it("names a live holder's pid, and a SIGKILLed holder does not block the next start", async () => {
    const root = path.join(work, "lock")
    const holder = startChild("hold", root)
    const ready = await holder.waitFor((l) => l.startsWith("ready "))
    expect(ready).toBe(`ready ${holder.proc.pid}`)
    const refused = await openFailure(root, SECRET)
    expect(refused?.kind).toBe("store-locked")
    expect(refused && "holderPid" in refused ? refused.holderPid : undefined).toBe(holder.proc.pid)
    holder.proc.kill("SIGKILL")
    await holder.exited
    // the dead holder's owner file is still there; the kernel lock is gone
    expect(fs.existsSync(path.join(root, "matrix", "matrix-sdk-crypto.sqlite3.owner"))).toBe(true)
    expect(await openFailure(root, SECRET)).toBeUndefined()
  }, 60_000)
})
