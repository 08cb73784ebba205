// A child rewriting every on-demand record per transaction is SIGKILLed at random moments (mostly
// mid-commit: the commit's fsync is most of its time). After each kill the store opens and holds one
// generation whole: every record, the index over them and the meta row agree, and it is the last
// acknowledged generation or the one after it (committed, not yet acknowledged) — never a mix. Each
// inspection closes cleanly, so the next run starts from snapshots and its kill leaves a delta beside them:
// `meta` and `many` (a subset of it rewritten or deleted per generation) open from snapshot plus delta.
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { openDurableIdb } from "../../src/layers/durable-idb/durableIdb.js"
import { SqliteFile } from "../../src/layers/durable-idb/sqliteFile.js"
import { bundleChild } from "../support/bundleChild.js"
import { done, openDb, request } from "../support/cryptostore-child.idb.js"
import {
  CRASH_DB,
  CRASH_RECORDS,
  CRASH_SECRET,
  crashConstant,
  crashRecord,
  crashSchema,
  MANY_RECORDS,
  manyHeld
} from "../support/durable-idb-crash-child.js"

let work: string
let childJs: string
let cleanup: () => void

beforeAll(async () => {
  ;({ work, childJs, cleanup } = await bundleChild("test/support/durable-idb-crash-child.ts", "cara-didb-crash-"))
})
afterAll(() => cleanup())

/** Runs the child until `acks` more acknowledgements, plus a random delay, then SIGKILLs it. */
const runAndKill = (file: string, acks: number, delayMs: number) =>
  new Promise<number>((resolve, reject) => {
    const proc = spawn(process.execPath, [childJs, file], { stdio: ["ignore", "pipe", "pipe"] })
    let last = -1
    let seen = 0
    let buf = ""
    let stderr = ""
    let killing = false
    proc.stdout.on("data", (c: Buffer) => {
      buf += c.toString("utf8")
      let i
      while ((i = buf.indexOf("\n")) !== -1) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (line.startsWith("bad")) reject(new Error(`child read a stale value: ${line}`))
        if (!line.startsWith("ack ")) continue
        last = Number(line.slice(4))
        if (++seen === acks && !killing) {
          killing = true
          setTimeout(() => proc.kill("SIGKILL"), delayMs)
        }
      }
    })
    proc.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")))
    proc.on("exit", (code, signal) => {
      if (signal === "SIGKILL") resolve(last)
      else reject(new Error(`child exited ${String(code)}: ${stderr}`))
    })
  })

/** The generation the store holds, checking that everything in it agrees. */
const inspect = async (file: string, round: number) => {
  const f = await SqliteFile.open(file, "crypto", CRASH_SECRET)
  try {
    const idb = await openDurableIdb([f], () => f)
    // After the first round, each open follows a clean close (the previous inspect's) and a run killed
    // after at least one commit: `meta` (one record written) and `many` (a few records per generation)
    // open from their snapshots plus the delta, `recs` (every record written: over the delta's limit) from `ixs`.
    expect(f.stats.snapshotsRead).toBe(round === 0 ? 0 : 2)
    if (round === 0) expect(f.stats.snapshotDeltaRows).toBe(0)
    else expect(f.stats.snapshotDeltaRows).toBeGreaterThan(1)
    const db = await openDb(idb.factory, CRASH_DB, 1, crashSchema)
    const tx = db.transaction(["recs", "meta", "many"])
    const gen = (await request(tx.objectStore("meta").get("gen"))) as number
    const constant = await request(tx.objectStore("meta").get("constant"))
    const all = await request<Array<{ id: number; gen: number; payload: Uint8Array }>>(tx.objectStore("recs").getAll())
    const byGen = await request<number>(tx.objectStore("recs").index("by_gen").count(gen))
    const indexed = await request<number>(tx.objectStore("recs").index("by_gen").count())
    const many = tx.objectStore("many")
    const manyAll = await request<Array<unknown>>(many.getAll())
    const manyByGen = await request<Array<number>>(many.index("by_gen").getAllKeys())
    const manyAtGen = await request<number>(many.index("by_gen").count(gen))
    await done(tx)
    db.close()
    idb.detach()
    const expected = Array.from({ length: CRASH_RECORDS + (gen % 2 === 0 ? 1 : 0) }, (_, id) => crashRecord(id, gen))
    expect(all).toEqual(expected)
    // re-put unchanged by every generation (skipped by the store after the first): always there, always whole
    expect(constant).toEqual(crashConstant())
    expect(byGen).toBe(expected.length)
    expect(indexed).toBe(expected.length)
    // `many` as generation `gen` left it: records and the index over them.
    const manyExpected = Array.from({ length: MANY_RECORDS }, (_, id) => manyHeld(id, gen)).filter((r) =>
      r !== undefined
    )
    expect(manyAll).toEqual(manyExpected)
    const byGenOrder = [...manyExpected].sort((a, b) => a.gen - b.gen || a.id - b.id)
    expect(manyByGen).toEqual(byGenOrder.map((r) => r.id))
    expect(manyAtGen).toBe(manyExpected.filter((r) => r.gen === gen).length)
    return gen
  } finally {
    f.close()
  }
}

describe("durable IndexedDB crash safety with values on demand", () => {
  it("holds one whole generation after each of 12 SIGKILLs, never less than acknowledged", async () => {
    const file = path.join(work, "crypto.sqlite3")
    let held = -1
    for (let round = 0; round < 12; round++) {
      const acked = await runAndKill(file, 1 + (round % 4), Math.floor(Math.random() * 60))
      const gen = await inspect(file, round)
      expect(gen).toBeGreaterThanOrEqual(acked)
      expect(gen).toBeLessThanOrEqual(acked + 1)
      expect(gen).toBeGreaterThan(held)
      held = gen
    }
  }, 240_000)
})
