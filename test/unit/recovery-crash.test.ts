// Crash injection for the recovery-key executors over real files: mint, rotate and restore-cleanup are
// stopped after every durable step (every file mutation and every homeserver install), and then rerun the
// way the product reruns them (the next daemon start: repair + mint; a rerun of `restore`). After every
// crash the invariants below hold; a fake homeserver stands for secret storage.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit, Option } from "effect"
import { encodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/recovery-key.js"
import { afterAll, describe, expect, it } from "vitest"
import { CLEANUP_FILE, KEY_FILE, MINTING_FILE, PENDING_FILE, ROTATING_FILE } from "../../src/domain/recoveryKey.js"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import {
  type Audit,
  nodeRecoveryFiles,
  type RecoveryFiles,
  type RecoveryServer,
  runMint,
  runRepair,
  runRestoreCleanup,
  runRotate
} from "../../src/layers/RecoveryKeyLive.js"

const roots: Array<string> = []
afterAll(() => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true })
})

const newRoot = () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "cara-recovery-"))
  roots.push(root)
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
        Effect.sync(() => (this.key === undefined ? "None" : Option.isSome(pending) && pending.value === this.key ? "MatchesPending" : "Other")),
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

/** A daemon start after the crash: repair, then mint; returns the exit. */
const daemonStart = async (root: string, server: FakeServer) => {
  const f = await files(root)
  return Effect.runPromiseExit(runRepair(f, noAudit).pipe(Effect.zipRight(runMint(f, server.api(() => {}), noAudit))))
}

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
  it("after a crash at any step, the next start either ends with K opening the server or refuses with K intact", async () => {
    let completed = false
    for (let crashAt = 1; !completed && crashAt <= 12; crashAt++) {
      const root = newRoot()
      const old = freshKey()
      fs.writeFileSync(path.join(root, KEY_FILE), `${old}\n`, { mode: 0o600 })
      const server = new FakeServer(old)
      const tick = ticker(crashAt)
      const f = crashingFiles(await files(root), tick)
      const run = await Effect.runPromiseExit(runRotate(f, server.api(tick)))
      completed = Exit.isSuccess(run)
      // invariant: the key the server holds is on disk as K or N (nothing uploaded that exists nowhere)
      expect([read(root, KEY_FILE), read(root, PENDING_FILE)]).toContain(server.key)
      const start = await daemonStart(root, server)
      if (Exit.isSuccess(start)) {
        expect(read(root, KEY_FILE), `crash at ${crashAt}`).toBe(server.key)
        expect(read(root, ROTATING_FILE)).toBeUndefined()
        expect(read(root, PENDING_FILE)).toBeUndefined()
      } else {
        // fail closed: the marker and both keys are left for inspection, K is never lost
        const text = JSON.stringify(start)
        expect(text).toMatch(/recovery-key-promotion-refused|recovery-state-io/)
        expect(read(root, KEY_FILE)).toBeDefined()
        expect(read(root, ROTATING_FILE)).toBeDefined()
      }
    }
    expect(completed).toBe(true)
  })
})

describe("restore cleanup with crash injection", () => {
  it("rerunning restore after a crash at any step finishes the cleanup; in between the daemon refuses a started journal", async () => {
    let completed = false
    for (let crashAt = 1; !completed && crashAt <= 16; crashAt++) {
      const root = newRoot()
      for (const rel of [ROTATING_FILE, MINTING_FILE, PENDING_FILE]) fs.writeFileSync(path.join(root, rel), "stale\n", { mode: 0o600 })
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
      for (const rel of [ROTATING_FILE, MINTING_FILE, PENDING_FILE, CLEANUP_FILE]) expect(fs.existsSync(path.join(root, rel))).toBe(false)
      expect(Exit.isSuccess(await Effect.runPromiseExit(runRepair(await files(root), noAudit)))).toBe(true)
    }
    expect(completed).toBe(true)
  })
})
