// Crash injection for the recovery-key executors over real files: mint, rotate and restore-cleanup are
// stopped after every durable step (every file mutation and every homeserver install), and then rerun the
// way the product reruns them (the next daemon start: repair + mint; a rerun of `restore`). After every
// crash the invariants below hold; a fake homeserver stands for secret storage.
import { Effect, Exit, Option } from "effect"
import { encodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/recovery-key.js"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { CLEANUP_FILE, KEY_FILE, MINTING_FILE, PENDING_FILE, ROTATING_FILE } from "../../src/domain/recoveryKey.js"
import {
  type Audit,
  nodeRecoveryFiles,
  type RecoveryFiles,
  type RecoveryServer,
  runMint,
  runRepair,
  runRestoreCleanup,
  runRotateCommand
} from "../../src/layers/RecoveryKeyLive.js"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import { tmpDir } from "../support/tmp.js"

const newRoot = () => {
  const root = tmpDir("cara-recovery-")
  fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
  return root
}

let counter = 0
const freshKey = () => {
  const raw = new Uint8Array(32)
  raw[0] = ++counter & 0xff
  raw[1] = (counter >> 8) & 0xff
  raw[2] = Math.floor(Math.random() * 256)
  return encodeRecoveryKey(raw)!
}

/** Secret storage on the "homeserver": the key that opens it (or none). */
class FakeServer {
  key: string | undefined
  installs = 0
  constructor(initial?: string) {
    this.key = initial
  }
  api(tick: () => void): RecoveryServer {
    return {
      probe: (pending) =>
        Effect.sync(() => (this.key === undefined
          ? "None"
          : Option.isSome(pending) && pending.value === this.key
          ? "MatchesPending"
          : "Other")
        ),
      which: (current, pending) =>
        Effect.sync(() =>
          this.key === undefined
            ? "Neither"
            : Option.isSome(current) && current.value === this.key
            ? "Current"
            : Option.isSome(pending) && pending.value === this.key
            ? "Pending"
            : "Neither"
        ),
      install: (key) =>
        Effect.sync(() => {
          this.key = key
          this.installs++
          tick() // after the install: the server has the key, the local run dies
        }),
      generate: Effect.sync(freshKey)
    }
  }
}

class Crash extends Error {}

/** Files whose every mutation counts as a durable step; the `crashAt`-th one completes and then the run dies. */
const crashingFiles = (base: RecoveryFiles, tick: () => void): RecoveryFiles => ({
  ...base,
  write: (rel, c) => Effect.tap(base.write(rel, c), () => Effect.sync(tick)),
  create: (rel, c) => Effect.tap(base.create(rel, c), () => Effect.sync(tick)),
  promote: (a, b, d) => Effect.tap(base.promote(a, b, d), () => Effect.sync(tick)),
  remove: (rel) => Effect.tap(base.remove(rel), () => Effect.sync(tick))
})

const ticker = (crashAt: number | undefined) => {
  let n = 0
  return () => {
    n++
    if (crashAt !== undefined && n === crashAt) throw new Crash(`crash at ${crashAt}`)
  }
}

const noAudit: Audit = () => Effect.void
const read = (root: string, rel: string) => {
  try {
    return fs.readFileSync(path.join(root, rel), "utf8").trim()
  } catch {
    return undefined
  }
}

const files = async (root: string) => nodeRecoveryFiles(await Effect.runPromise(makeStateDir(root)))

/**
 * A daemon start after the crash, as MatrixSyncLive runs it: the repair before any network I/O (which may
 * leave a state for the homeserver to settle), then after the first sync the repair with the homeserver,
 * the restore's key check and the mint.
 */
const daemonStart = async (root: string, server: FakeServer) => {
  const f = await files(root)
  const api = server.api(() => {})
  return Effect.runPromiseExit(
    runRepair(f, noAudit).pipe(
      Effect.zipRight(runRepair(f, noAudit, api)),
      Effect.zipRight(verifyCurrent(root, server)),
      Effect.zipRight(runMint(f, api, noAudit))
    )
  )
}

/** The restore's MAC check, reduced to what it decides: K (when present) opens the homeserver's secret storage. */
const verifyCurrent = (root: string, server: FakeServer) =>
  Effect.suspend(() =>
    read(root, KEY_FILE) === undefined || read(root, KEY_FILE) === server.key
      ? Effect.void
      : Effect.fail(new Error("recovery-key-restore-failed: wrong-key"))
  )

describe("first mint with crash injection", () => {
  it("after a crash at any step, the next start ends with a local key that opens the server's secret storage", async () => {
    for (let crashAt = 1; crashAt <= 8; crashAt++) {
      const root = newRoot()
      const server = new FakeServer()
      const tick = ticker(crashAt)
      const f = crashingFiles(await files(root), tick)
      const first = await Effect.runPromiseExit(runMint(f, server.api(tick), noAudit))
      // invariant: whatever the server holds also exists on disk (as K or N)
      if (server.key !== undefined) expect([read(root, KEY_FILE), read(root, PENDING_FILE)]).toContain(server.key)
      const again = await daemonStart(root, server)
      expect(Exit.isSuccess(again), `crash at ${crashAt}: ${JSON.stringify(again)}`).toBe(true)
      expect(read(root, KEY_FILE)).toBe(server.key)
      expect(read(root, PENDING_FILE)).toBeUndefined()
      expect(read(root, MINTING_FILE)).toBeUndefined()
      expect(server.installs).toBe(1) // never a second secret storage over the first
      if (Exit.isSuccess(first)) break
    }
  })

  it("refuses to mint when the homeserver already has secret storage and there is no local key", async () => {
    const root = newRoot()
    const server = new FakeServer(freshKey())
    const exit = await daemonStart(root, server)
    expect(Exit.isFailure(exit)).toBe(true)
    expect(JSON.stringify(exit)).toContain("recovery-state-probe-failed")
    expect(JSON.stringify(exit)).toContain("cara matrix recovery-key restore")
    expect(fs.existsSync(path.join(root, KEY_FILE))).toBe(false)
    expect(server.installs).toBe(0)
  })
})

describe("rotate with crash injection", () => {
  // The durable steps of one `rotate`, in order (each is a crash point; the count is checked below):
  //   1 R := started{prev}          2 N := new key (no-replace)      3 R := installing{next, prev} (write-ahead)
  //   4 homeserver: new default secret-storage key + backup (N)      5 R := pending_key_written{next, prev}
  //   6 K := N (rename after re-hash)  7 R := final_key_replaced      8 R removed
  // and, in a rerun, every repair step (N removed on rollback, R removed, K := N on roll-forward) is one too.
  const ROTATE_DURABLE_STEPS = 8

  const rotateCommand = (root: string, server: FakeServer, tick: () => void) =>
    Effect.promise(() => files(root)).pipe(
      Effect.flatMap((base) =>
        runRotateCommand(crashingFiles(base, tick), noAudit, server.api(tick), verifyCurrent(root, server))
      )
    )

  /** A fresh installation with K = the server's key, rotated with a crash after durable step `crashAt`. */
  const crashedRotation = async (crashAt: number | undefined) => {
    const root = newRoot()
    const old = freshKey()
    fs.writeFileSync(path.join(root, KEY_FILE), `${old}\n`, { mode: 0o600 })
    const server = new FakeServer(old)
    const exit = await Effect.runPromiseExit(rotateCommand(root, server, ticker(crashAt)))
    // invariant: the key the server holds is on disk as K or N (nothing uploaded that exists nowhere)
    expect([read(root, KEY_FILE), read(root, PENDING_FILE)]).toContain(server.key)
    return { root, server, old, exit }
  }

  const settled = (root: string, server: FakeServer, label: string) => {
    expect(read(root, KEY_FILE), label).toBe(server.key)
    expect(read(root, ROTATING_FILE), label).toBeUndefined()
    expect(read(root, PENDING_FILE), label).toBeUndefined()
  }

  it("has exactly the listed durable steps", async () => {
    let steps = 0
    const { exit, server, old } = await crashedRotation(undefined)
    expect(Exit.isSuccess(exit)).toBe(true)
    expect(server.key).not.toBe(old)
    const root = newRoot()
    fs.writeFileSync(path.join(root, KEY_FILE), `${old}\n`, { mode: 0o600 })
    await Effect.runPromise(rotateCommand(root, new FakeServer(old), () => void steps++))
    expect(steps).toBe(ROTATE_DURABLE_STEPS)
  })

  it("a crash after any durable step is resolved by the next daemon start, with no manual action", async () => {
    for (let crashAt = 1; crashAt <= ROTATE_DURABLE_STEPS; crashAt++) {
      const { root, server, old, exit } = await crashedRotation(crashAt)
      expect(Exit.isFailure(exit), `crash at ${crashAt}`).toBe(true)
      const start = await daemonStart(root, server)
      expect(Exit.isSuccess(start), `crash at ${crashAt}: ${JSON.stringify(start)}`).toBe(true)
      settled(root, server, `crash at ${crashAt}`)
      // the rotation was rolled back before the upload and rolled forward after it
      expect(server.key === old, `crash at ${crashAt}`).toBe(crashAt < 4)
    }
  })

  it("a crash after any durable step is resolved by rerunning rotate, even when the rerun itself crashes at any step", async () => {
    for (let crashAt = 1; crashAt <= ROTATE_DURABLE_STEPS; crashAt++) {
      for (let rerunCrashAt = 1; rerunCrashAt <= ROTATE_DURABLE_STEPS + 3; rerunCrashAt++) {
        const label = `crash at ${crashAt}, rerun crash at ${rerunCrashAt}`
        const { root, server, old } = await crashedRotation(crashAt)
        const rerun = await Effect.runPromiseExit(rotateCommand(root, server, ticker(rerunCrashAt)))
        expect([read(root, KEY_FILE), read(root, PENDING_FILE)], label).toContain(server.key)
        const last = Exit.isSuccess(rerun) ? rerun : await Effect.runPromiseExit(rotateCommand(root, server, () => {}))
        expect(Exit.isSuccess(last), `${label}: ${JSON.stringify(last)}`).toBe(true)
        settled(root, server, label)
        expect(server.key, label).not.toBe(old) // a rerun always ends rotated
        // the daemon starts cleanly on the result
        expect(Exit.isSuccess(await daemonStart(root, server)), label).toBe(true)
      }
    }
  })

  it("a rerun after the upload completes the interrupted rotation instead of rotating twice", async () => {
    const { root, server } = await crashedRotation(4)
    const installed = server.key
    const rerun = await Effect.runPromise(rotateCommand(root, server, () => {}))
    expect(rerun).toEqual({ resumed: true })
    expect(server.key).toBe(installed)
    expect(server.installs).toBe(1)
    settled(root, server, "after upload")
  })
})

describe("restore cleanup with crash injection", () => {
  it("rerunning restore after a crash at any step finishes the cleanup; in between the daemon refuses a started journal", async () => {
    let completed = false
    for (let crashAt = 1; !completed && crashAt <= 16; crashAt++) {
      const root = newRoot()
      for (const rel of [ROTATING_FILE, MINTING_FILE, PENDING_FILE]) {
        fs.writeFileSync(path.join(root, rel), "stale\n", { mode: 0o600 })
      }
      const key = freshKey()
      const tick = ticker(crashAt)
      const f = crashingFiles(await files(root), tick)
      const run = await Effect.runPromiseExit(runRestoreCleanup(f, Option.some(key), noAudit))
      completed = Exit.isSuccess(run)
      if (!completed && fs.existsSync(path.join(root, CLEANUP_FILE))) {
        const j = JSON.parse(fs.readFileSync(path.join(root, CLEANUP_FILE), "utf8")) as { phase: string }
        if (j.phase === "started") {
          const start = await Effect.runPromiseExit(runRepair(await files(root), noAudit))
          expect(JSON.stringify(start)).toContain("is still started")
        }
      }
      // the key is never written before the journal is anchored
      if (fs.existsSync(path.join(root, KEY_FILE)) && !completed) {
        const artifactsLeft = [ROTATING_FILE, MINTING_FILE, PENDING_FILE].some((r) => fs.existsSync(path.join(root, r)))
        if (artifactsLeft) expect(fs.existsSync(path.join(root, CLEANUP_FILE))).toBe(true)
      }
      const rerun = await Effect.runPromiseExit(runRestoreCleanup(await files(root), Option.some(key), noAudit))
      expect(Exit.isSuccess(rerun), `crash at ${crashAt}`).toBe(true)
      expect(read(root, KEY_FILE)).toBe(key)
      for (const rel of [ROTATING_FILE, MINTING_FILE, PENDING_FILE, CLEANUP_FILE]) {
        expect(fs.existsSync(path.join(root, rel))).toBe(false)
      }
      expect(Exit.isSuccess(await Effect.runPromiseExit(runRepair(await files(root), noAudit)))).toBe(true)
    }
    expect(completed).toBe(true)
  })
})
