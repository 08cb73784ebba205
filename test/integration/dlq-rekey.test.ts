// rekey-store with a non-empty DLQ (reference §4.5): the DLQ is one more keyed store of the rotation, so it
// moves to the new passphrase in the same state machine as the SQLite stores. A crash after any durable step
// leaves a DLQ that opens with a passphrase still on disk (or derivable), and a rerun completes the move.
import { Effect, Exit, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { decodeLine, deriveDlqKey, deriveLegacyDlqKey, type DlqRecord, encodeLine } from "../../src/domain/dlq.js"
import { CRYPTO_FILE, STATE_FILE } from "../../src/layers/CryptoStoreLive.js"
import { dlqKeyedStore } from "../../src/layers/DlqLive.js"
import { SqliteFile } from "../../src/layers/durable-idb/sqliteFile.js"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import { deriveStorePassphrase } from "../../src/layers/StorePassphraseLive.js"
import {
  type KeyedStore,
  type RekeyFiles,
  runRekey,
  sqliteStores,
  stateDirFiles
} from "../../src/programs/rekeyStore.js"
import { cleanEnv, runCli } from "../support/cli.js"
import { legacyLine } from "../support/dlq-fixtures.js"
import { BASE_ENV, matrixConfig, PASSWORD, tempRoot } from "../support/rekey-fixtures.js"

const IID = "0123456789abcdef".repeat(4)
const DERIVED = deriveStorePassphrase(PASSWORD, IID)
const roots: Array<string> = []
afterAll(() => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true })
})

const rec = (n: number): DlqRecord => ({
  eventId: `$e${n}:example.org`,
  roomId: "!r:example.org",
  senderId: "@alice:example.org",
  text: `dead letter ${n}`,
  receivedAt: n
})

const setUp = async () => {
  const root = tempRoot(matrixConfig())
  roots.push(root)
  fs.writeFileSync(path.join(root, "installation_id"), `${IID}\n`, { mode: 0o600 })
  fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
  for (const [rel, role] of [[CRYPTO_FILE, "crypto"], [STATE_FILE, "state"]] as const) {
    const f = await SqliteFile.open(path.join(root, rel), role, { encrypted: true, passphrase: DERIVED })
    f.close()
  }
  const k = deriveDlqKey(DERIVED, IID)
  fs.writeFileSync(
    path.join(root, "matrix/inbound_dlq.jsonl"),
    [1, 2, 3].map((n) => encodeLine(rec(n), k)).join("\n") + "\n",
    { mode: 0o600 }
  )
  return root
}

const readFileOpt = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, "utf8").trim() : undefined)

/** Every DLQ record, decoded under the key of `passphrase`; undefined if any line does not decode. */
const dlqUnder = (root: string, passphrase: string) => {
  const k = deriveDlqKey(passphrase, IID)
  const out: Array<DlqRecord> = []
  for (
    const l of fs.readFileSync(path.join(root, "matrix/inbound_dlq.jsonl"), "utf8").split("\n").filter((x) => x !== "")
  ) {
    const d = decodeLine(l, k)
    if (d._tag !== "Record") return undefined
    out.push(d.record)
  }
  return out
}

class Crash extends Error {}

const runWithCrash = (root: string, crashAt: number | undefined) =>
  Effect.runPromiseExit(
    Effect.gen(function*() {
      const sd = yield* makeStateDir(root)
      let ticks = 0
      const tick = Effect.suspend(
        () => (++ticks === crashAt ? Effect.die(new Crash(`crash at ${crashAt}`)) : Effect.void)
      )
      const wrapStore = (s: KeyedStore): KeyedStore => ({
        ...s,
        rewrap: (a, b) => Effect.zipRight(s.rewrap(a, b), tick)
      })
      const base = stateDirFiles(sd)
      const files: RekeyFiles = {
        write: (r, c) => Effect.zipRight(base.write(r, c), tick),
        remove: (r) => Effect.zipRight(base.remove(r), tick)
      }
      return yield* runRekey({
        stateDir: sd,
        stores: [...sqliteStores(sd), dlqKeyedStore(sd, Effect.succeed(IID))].map(wrapStore),
        files,
        derived: Option.some(Effect.succeed(Redacted.make(DERIVED)))
      })
    })
  )

describe("rekey-store with a non-empty DLQ", () => {
  it("moves the DLQ to the pinned passphrase with the stores; the old key no longer opens it", async () => {
    const root = await setUp()
    const exit = await runWithCrash(root, undefined)
    expect(Exit.isSuccess(exit)).toBe(true)
    if (Exit.isSuccess(exit)) expect(exit.value.steps).toContain("RewrapStore")
    const pinned = readFileOpt(path.join(root, "matrix/store_passphrase"))!
    expect(pinned).toMatch(/^[0-9a-f]{64}$/)
    expect(dlqUnder(root, pinned)).toEqual([rec(1), rec(2), rec(3)])
    expect(dlqUnder(root, DERIVED)).toBeUndefined()
    expect(fs.statSync(path.join(root, "matrix/inbound_dlq.jsonl")).mode & 0o777).toBe(0o600)
  })

  it(
    "a crash after any durable step leaves the DLQ openable, and a rerun finishes with every record under the pinned key",
    async () => {
      // the steps of a clean run: P, M, 3 rewraps, F, remove P, remove M
      for (let crashAt = 1; crashAt <= 8; crashAt++) {
        const root = await setUp()
        const first = await runWithCrash(root, crashAt)
        expect(Exit.isFailure(first), `crash point ${crashAt}`).toBe(true)
        const candidates = [
          readFileOpt(path.join(root, "matrix/store_passphrase.pending")),
          readFileOpt(path.join(root, "matrix/store_passphrase")),
          DERIVED
        ].filter((x): x is string => x !== undefined)
        expect(candidates.some((p) => dlqUnder(root, p) !== undefined), `DLQ openable after crash ${crashAt}`).toBe(
          true
        )
        const second = await runWithCrash(root, undefined)
        expect(Exit.isSuccess(second), `rerun after crash ${crashAt}`).toBe(true)
        const pinned = readFileOpt(path.join(root, "matrix/store_passphrase"))!
        expect(dlqUnder(root, pinned), `records after crash ${crashAt}`).toEqual([rec(1), rec(2), rec(3)])
        expect(fs.existsSync(path.join(root, "matrix/store_passphrase.pending"))).toBe(false)
        expect(fs.existsSync(path.join(root, "matrix/store_passphrase.rekeying"))).toBe(false)
      }
    },
    120_000
  )

  it("a reference-written v1 line under the old passphrase is moved too, as a v2 line", async () => {
    const root = await setUp()
    fs.appendFileSync(
      path.join(root, "matrix/inbound_dlq.jsonl"),
      legacyLine(rec(4), deriveLegacyDlqKey(DERIVED, IID)) + "\n"
    )
    expect(Exit.isSuccess(await runWithCrash(root, undefined))).toBe(true)
    const pinned = readFileOpt(path.join(root, "matrix/store_passphrase"))!
    expect(dlqUnder(root, pinned)).toEqual([rec(1), rec(2), rec(3), rec(4)])
    const last = fs.readFileSync(path.join(root, "matrix/inbound_dlq.jsonl"), "utf8").trim().split("\n").at(-1)!
    expect(JSON.parse(last)).toMatchObject({ version: 2 })
  })

  it("a DLQ line under neither key refuses the rekey before any store is moved", async () => {
    const root = await setUp()
    fs.appendFileSync(
      path.join(root, "matrix/inbound_dlq.jsonl"),
      encodeLine(rec(9), deriveDlqKey("some other passphrase", IID)) + "\n"
    )
    const exit = await runWithCrash(root, undefined)
    expect(Exit.isFailure(exit)).toBe(true)
    expect(JSON.stringify(exit)).toContain("inbound_dlq.jsonl")
    expect(fs.existsSync(path.join(root, "matrix/store_passphrase"))).toBe(false)
    expect(dlqUnder(root, DERIVED)).toBeUndefined()
  })

  it("the CLI (`cara matrix rekey-store --new`) re-protects the DLQ", () => {
    return setUp().then((root) => {
      const r = runCli(
        ["matrix", "rekey-store", "--new"],
        cleanEnv(root, { ...BASE_ENV, CARAPACE_CONFIG_PASSWORD: PASSWORD })
      )
      expect(r.status, r.stderr + r.stdout).toBe(0)
      const pinned = readFileOpt(path.join(root, "matrix/store_passphrase"))!
      expect(dlqUnder(root, pinned)).toEqual([rec(1), rec(2), rec(3)])
    })
  }, 60_000)
})
