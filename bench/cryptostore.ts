// CryptoStore benchmark; prints one JSON object.
//   commit overhead: median time of a small readwrite IndexedDB transaction on the durable store, minus
//                    the same on plain in-memory fake-indexeddb
//   5,000 Megolm sessions: import into the durable store, then reopen in a fresh process: time to open
//                    the store (unwrap + rebuild) and to init the OlmMachine on it, the RSS and live heap
//                    once ready (after a full GC), and the RSS after exporting every session
//                    (BENCH_SESSIONS=50000 for the issue #19 target: RSS <= 200 MB, ready <= 1.5 s)
//   on-disk size of the store files
// Run: `node_modules/.bin/vite-node bench/cryptostore.ts` (or any TS runner). The fresh-process part
// bundles this file with esbuild and runs the bundle on the same Node.
// Knobs: BENCH_SESSIONS, BENCH_COMMITS, BENCH_EXPORT=0 (count sessions from the keys instead of exporting),
//   BENCH_KEEP=1 (keep the work directory; its `sessions` directory is a reusable store),
//   BENCH_REOPEN=<dir> (only the reopen step, on a fresh copy of a kept `sessions` directory: the 50,000-session
//   store takes minutes to build), BENCH_REOPEN_RUNS (reopen runs, each on its own copy; default 1),
//   BENCH_REOPEN_SAME=1 (all runs on one copy: an older store's first open upgrades it, later runs read the result,
//   including the store snapshots the run before wrote at its clean close; closeMs is that close),
//   BENCH_CHILD_FLAGS (Node flags of the reopen child, e.g. "--max-semi-space-size=2" as the daemon sets it,
//   or "--cpu-prof --cpu-prof-dir=/tmp/prof"),
//   BENCH_REOPEN_CRASH=<n> (before each reopen run, a child opens the store as the daemon does, writes n new
//   Megolm sessions (shareRoomKey in n new rooms: outbound and inbound sessions) and SIGKILLs itself, so the
//   reopen is the start after a crash; with BENCH_REOPEN_SAME=1 each run's clean close comes before the next crash).
import * as wasm from "@matrix-org/matrix-sdk-crypto-wasm"
import { Effect, Option, Redacted } from "effect"
import { IDBFactory } from "fake-indexeddb"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { makeCryptoStore } from "../src/layers/CryptoStoreLive.js"
import { StateDirAt } from "../src/layers/StateDirLive.js"
import type { CryptoStoreShape, IdbFactory } from "../src/services/CryptoStore.js"

const SESSIONS = Number(process.env["BENCH_SESSIONS"] ?? 5000)
const COMMITS = Number(process.env["BENCH_COMMITS"] ?? 400)
const PASS = "bench passphrase"

const withStore = <A>(root: string, body: (s: CryptoStoreShape) => Promise<A>) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function*() {
        const s = yield* makeCryptoStore({
          secret: { encrypted: true, passphrase: Option.some(Redacted.make(PASS)) },
          installGlobal: true
        })
        return yield* Effect.promise(() => body(s))
      })
    ).pipe(Effect.provide(StateDirAt(root)))
  )

/** The bench account's OlmMachine over the store (the Rust store opened with the store's key). */
const benchMachine = async (s: CryptoStoreShape) =>
  wasm.OlmMachine.initFromStore(
    new wasm.UserId("@bench:example.org"),
    new wasm.DeviceId("BENCH"),
    await wasm.StoreHandle.openWithKey(s.cryptoDatabasePrefix, Redacted.value(Option.getOrThrow(s.storageKey)))
  )

const median = (xs: Array<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? 0
}

const commitTimes = async (factory: IdbFactory, n: number): Promise<Array<number>> => {
  const db: any = await new Promise((resolve, reject) => {
    const req = factory.open("cara::bench", 1)
    req.onupgradeneeded = () => req.result.createObjectStore("s")
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
  })
  const payload = new Uint8Array(1024).fill(7)
  const times: Array<number> = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    const tx = db.transaction("s", "readwrite")
    tx.objectStore("s").put({ i, payload }, `k${i % 50}`)
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve()
      tx.onabort = () => reject(tx.error)
    })
    times.push(performance.now() - t0)
  }
  db.close()
  return times
}

const dirBytes = (dir: string) => {
  const out: Record<string, number> = {}
  for (const f of fs.readdirSync(dir)) if (!f.endsWith(".owner")) out[f] = fs.statSync(path.join(dir, f)).size
  return out
}

/** Records in the Rust store's inbound group session store (from the keys: no value is read). */
const inboundSessionCount = async (factory: IdbFactory, prefix: string): Promise<number> => {
  const db: any = await new Promise((resolve, reject) => {
    const req = factory.open(`${prefix}::matrix-sdk-crypto`)
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
  })
  const name = [...db.objectStoreNames].find((n: string) => n.startsWith("inbound_group_sessions"))
  const n: number = name === undefined ? -1 : await new Promise((resolve, reject) => {
    const req = db.transaction(name).objectStore(name).count()
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
  })
  db.close()
  return n
}

/** Bytes this process has handed to write() so far (Linux /proc/self/io `wchar`; -1 elsewhere). */
const writtenChars = (): number => {
  try {
    const m = /^wchar: (\d+)$/m.exec(fs.readFileSync("/proc/self/io", "utf8"))
    return m === null ? -1 : Number(m[1])
  } catch {
    return -1
  }
}

/** RSS and live heap after a full GC (the child runs with --expose-gc). */
const memoryFigures = () => {
  ;(globalThis as { gc?: () => void }).gc?.()
  const m = process.memoryUsage()
  return {
    rssMB: Math.round(m.rss / 1048576),
    heapUsedMB: Math.round(m.heapUsed / 1048576),
    heapTotalMB: Math.round(m.heapTotal / 1048576),
    externalMB: Math.round(m.external / 1048576)
  }
}

const reopen = async (root: string) => {
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  let released = 0
  let releasedIo = { wchar: 0, cpu: process.cpuUsage() }
  const figures = await withStore(root, async (s) => {
    const opened = performance.now()
    const m = await benchMachine(s)
    const ready = performance.now()
    const cpu = process.cpuUsage(cpu0)
    const atReady = memoryFigures()
    process.stderr.write(
      `ready ${
        JSON.stringify({
          totalMs: Math.round(ready - t0),
          totalCpuMs: Math.round((cpu.user + cpu.system) / 1000),
          ...atReady
        })
      }\n`
    )
    // BENCH_EXPORT=0 skips the export (slow at 50,000 sessions): the count then comes from the store's keys.
    const count = process.env["BENCH_EXPORT"] === "0"
      ? await inboundSessionCount(s.indexedDB, s.cryptoDatabasePrefix)
      : (JSON.parse(await m.exportRoomKeys(() => true)) as Array<unknown>).length
    m.close()
    released = performance.now()
    releasedIo = { wchar: writtenChars(), cpu: process.cpuUsage() }
    return {
      storeOpenMs: Math.round(opened - t0),
      olmMachineInitMs: Math.round(ready - opened),
      totalMs: Math.round(ready - t0),
      // CPU time of the same span: the wall figures suffer on a loaded machine, this much less
      totalCpuMs: Math.round((cpu.user + cpu.system) / 1000),
      // ready: the store open and the OlmMachine initialised on it, after a full GC
      rssReadyMB: atReady.rssMB,
      heapUsedReadyMB: atReady.heapUsedMB,
      heapTotalReadyMB: atReady.heapTotalMB,
      externalReadyMB: atReady.externalMB,
      // after exporting every session (which reads them all once): the historical figure
      rssMB: Math.round(process.memoryUsage().rss / 1048576),
      sessionsFound: count
    }
  })
  // The store's close (the scope's release): detach with its snapshots, checkpoint, close the files.
  // closeWrittenKB: bytes the process handed to write() during the close (/proc/self/io wchar; the WAL's
  // frames and the checkpoint's pages), closeCpuMs its CPU time.
  const closeMs = Math.round(performance.now() - released)
  const closeCpu = process.cpuUsage(releasedIo.cpu)
  const closeWrittenKB = Math.round((writtenChars() - releasedIo.wchar) / 1024)
  const closeCpuMs = Math.round((closeCpu.user + closeCpu.system) / 1000)
  process.stdout.write(JSON.stringify({ ...figures, closeMs, closeCpuMs, closeWrittenKB }))
}

/** BENCH_REOPEN_CRASH: a daemon-like run that writes `n` new sessions, then dies by SIGKILL (no clean stop). */
const writeThenCrash = async (root: string, n: number, tag: string) => {
  await withStore(root, async (s) => {
    const m = await benchMachine(s)
    for (let i = 0; i < n; i++) {
      await m.shareRoomKey(new wasm.RoomId(`!crash-${tag}-${i}:example.org`), [], new wasm.EncryptionSettings())
    }
    process.stderr.write(`wrote ${n} sessions\n`)
    process.kill(process.pid, "SIGKILL")
  })
}

/** Bundles this file (once per work directory) and runs its reopen step on `storeRoot` in a fresh process. */
const reopenInChild = async (work: string, storeRoot: string, crash = 0): Promise<Record<string, number>> => {
  const bundle = path.join(work, "bench.mjs")
  if (!fs.existsSync(bundle)) {
    const { build } = await import("esbuild")
    await build({
      entryPoints: [fileURLToPath(import.meta.url)],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node24",
      packages: "external",
      outfile: bundle,
      logLevel: "silent"
    })
    fs.symlinkSync(
      path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "node_modules"),
      path.join(work, "node_modules")
    )
  }
  const flags = (process.env["BENCH_CHILD_FLAGS"] ?? "").split(/\s+/).filter((f) => f !== "")
  if (crash > 0) {
    const writer = spawnSync(process.execPath, [bundle, "crash", storeRoot, String(crash), String(Date.now())], {
      encoding: "utf8"
    })
    if (writer.signal !== "SIGKILL") throw new Error(`crash writer did not die by SIGKILL: ${writer.stderr}`)
  }
  const child = spawnSync(process.execPath, [...flags, "--expose-gc", bundle, "reopen", storeRoot], {
    encoding: "utf8"
  })
  if (child.status !== 0) throw new Error(`reopen child failed: ${child.stderr}`)
  return JSON.parse(child.stdout) as Record<string, number>
}

/** BENCH_REOPEN: the reopen step only, on fresh copies of a kept store (the original is never opened). */
const reopenOnly = async (source: string) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "cara-bench-cs-"))
  try {
    const runs: Array<Record<string, number>> = []
    // BENCH_REOPEN_SAME=1: every run on one copy (an older store's first open upgrades it; later runs see the result)
    const same = process.env["BENCH_REOPEN_SAME"] === "1"
    for (let i = 0; i < Number(process.env["BENCH_REOPEN_RUNS"] ?? 1); i++) {
      const storeRoot = path.join(work, same ? "sessions" : `sessions-${i}`)
      if (!same || i === 0) fs.cpSync(source, storeRoot, { recursive: true })
      runs.push(await reopenInChild(work, storeRoot, Number(process.env["BENCH_REOPEN_CRASH"] ?? 0)))
      if (!same) fs.rmSync(storeRoot, { recursive: true, force: true })
    }
    const flags = process.env["BENCH_CHILD_FLAGS"] ?? ""
    process.stdout.write(`${JSON.stringify({ bench: "cryptostore-reopen", node: process.version, flags, runs })}\n`)
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}

const main = async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "cara-bench-cs-"))
  try {
    // 1. commit overhead
    const memory = await commitTimes(new IDBFactory(), COMMITS)
    const commitRoot = path.join(work, "commit")
    const durable = await withStore(commitRoot, (s) => commitTimes(s.indexedDB, COMMITS))
    const commit = {
      transactions: COMMITS,
      medianMsMemory: +median(memory).toFixed(3),
      medianMsDurable: +median(durable).toFixed(3),
      medianOverheadMs: +(median(durable) - median(memory)).toFixed(3)
    }

    // 2. 5,000 Megolm sessions: generate in memory, import into the durable store
    const gen = await wasm.OlmMachine.initialize(new wasm.UserId("@gen:example.org"), new wasm.DeviceId("GEN"))
    for (let i = 0; i < SESSIONS; i++) {
      await gen.shareRoomKey(new wasm.RoomId(`!r${i}:example.org`), [], new wasm.EncryptionSettings())
    }
    const exported = await gen.exportRoomKeys(() => true)
    gen.close()
    const storeRoot = path.join(work, "sessions")
    const importMs = await withStore(storeRoot, async (s) => {
      const m = await benchMachine(s)
      const t0 = performance.now()
      await m.importExportedRoomKeys(exported, () => {})
      const ms = performance.now() - t0
      m.close()
      return Math.round(ms)
    })

    // 3. reopen in a fresh process
    const reopened = await reopenInChild(work, storeRoot)
    const disk = dirBytes(path.join(storeRoot, "matrix"))
    const total = Object.values(disk).reduce((a, b) => a + b, 0)
    process.stdout.write(
      `${
        JSON.stringify({
          bench: "cryptostore",
          node: process.version,
          commit,
          sessions: SESSIONS,
          importMs,
          reopen: reopened,
          diskBytes: { ...disk, total },
          bytesPerSession: Math.round(total / SESSIONS)
        })
      }\n`
    )
  } finally {
    if (process.env["BENCH_KEEP"] === undefined) fs.rmSync(work, { recursive: true, force: true })
    else process.stderr.write(`kept ${work}\n`)
  }
}

if (process.argv[2] === "reopen" && process.argv[3] !== undefined) await reopen(process.argv[3])
else if (process.argv[2] === "crash" && process.argv[3] !== undefined) {
  await writeThenCrash(process.argv[3], Number(process.argv[4]), process.argv[5] ?? "0")
} else if (process.env["BENCH_REOPEN"] !== undefined) await reopenOnly(process.env["BENCH_REOPEN"])
else await main()
