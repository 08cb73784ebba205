// Crash injection for `rekey-store --new` over real store files: the executor is stopped after every
// durable step it can take (each passphrase-file write is split between "temp written" and "renamed into
// place", each removal, each store re-wrap), and run again. After every crash:
//   - each store opens with a secret that is still available (pinned, pending or derived),
//   - the daemon's resolution either refuses with interrupted-rekey or yields a passphrase that opens every
//     store (it never opens with the wrong key),
//   - the data keys never change (only their wrapping does).
// And a final rerun always ends with every store on the pinned passphrase and no pending or marker file.
import { Effect, Either, Exit, Option, Redacted } from "effect"
import fc from "fast-check"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CRYPTO_FILE, STATE_FILE } from "../../src/layers/CryptoStoreLive.js"
import { SqliteFile } from "../../src/layers/durable-idb/sqliteFile.js"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import { deriveStorePassphrase } from "../../src/layers/StorePassphraseLive.js"
import { type KeyedStore, runRekey, sqliteStores, stateDirFiles } from "../../src/programs/rekeyStore.js"
import { daemonResolve, PASSWORD, tempRoot } from "../support/rekey-fixtures.js"

const IID = "0123456789abcdef".repeat(4)
const DERIVED = deriveStorePassphrase(PASSWORD, IID)
const PINNED = "feedface".repeat(8)
const ENV = { CARAPACE_CONFIG_PASSWORD: PASSWORD }
const STORES = [[CRYPTO_FILE, "crypto"], [STATE_FILE, "state"]] as const

type Mode = "derived" | "pinned"

let templates: string
const dataKeys = new Map<string, string>() // `${mode}/${role}` -> hex
const roots: Array<string> = []

beforeAll(async () => {
  // One store file per (mode, role), copied into each scenario: the same wrapped records (same salts)
  // let the in-process KDF cache answer most probes.
  templates = fs.mkdtempSync(path.join(os.tmpdir(), "cara-rekey-tpl-"))
  for (const mode of ["derived", "pinned"] as const) {
    for (const [, role] of STORES) {
      const file = path.join(templates, `${mode}-${role}.sqlite3`)
      const f = await SqliteFile.open(file, role, {
        encrypted: true,
        passphrase: mode === "derived" ? DERIVED : PINNED
      })
      dataKeys.set(`${mode}/${role}`, f.dataKey!.toString("hex"))
      f.close()
    }
  }
})
afterAll(() => {
  for (const r of [templates, ...roots]) fs.rmSync(r, { recursive: true, force: true })
})

const setUp = (mode: Mode, which: ReadonlyArray<"crypto" | "state">) => {
  const root = tempRoot()
  roots.push(root)
  fs.writeFileSync(path.join(root, "installation_id"), `${IID}\n`, { mode: 0o600 })
  fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
  for (const [rel, role] of STORES) {
    if (which.includes(role)) fs.copyFileSync(path.join(templates, `${mode}-${role}.sqlite3`), path.join(root, rel))
  }
  if (mode === "pinned") fs.writeFileSync(path.join(root, "matrix/store_passphrase"), `${PINNED}\n`, { mode: 0o600 })
  return root
}

class SimulatedCrash extends Error {}

/** One run of the executor that stops dead at its `crashAt`-th durable step (undefined: no crash). */
const runOnce = async (root: string, crashAt: number | undefined) => {
  let ticks = 0
  let crashed = false
  const tick = () => {
    ticks++
    if (crashAt !== undefined && ticks === crashAt) {
      crashed = true
      throw new SimulatedCrash(`crash at step ${crashAt}`)
    }
  }
  const program = Effect.gen(function*() {
    const stateDir = yield* makeStateDir(root, {
      // Between the two halves of an atomic write: the temp file is complete and synced, the rename has
      // not happened. A real crash leaves the temp behind; keep a copy of it like one would.
      rename: async (from, to) => {
        try {
          tick()
        } catch (e) {
          fs.linkSync(from, path.join(path.dirname(from), `${path.basename(from)}.crashed`))
          throw e
        }
        await fs.promises.rename(from, to)
      }
    })
    const files = stateDirFiles(stateDir)
    const stores = sqliteStores(stateDir).map((s): KeyedStore => ({
      ...s,
      rewrap: (from, to) => Effect.suspend(() => (tick(), s.rewrap(from, to)))
    }))
    return yield* runRekey({
      stateDir,
      stores,
      files: { write: files.write, remove: (rel) => Effect.suspend(() => (tick(), files.remove(rel))) },
      derived: Option.some(Effect.succeed(Redacted.make(DERIVED)))
    })
  })
  const exit = await Effect.runPromiseExit(
    program.pipe(Effect.catchAllDefect((d) => (d instanceof SimulatedCrash ? Effect.fail(d) : Effect.die(d))))
  )
  return { exit, crashed, ticks }
}

const opens = async (file: string, role: string, passphrase: string) => {
  try {
    const f = await SqliteFile.open(file, role, { encrypted: true, passphrase })
    const key = f.dataKey!.toString("hex")
    f.close()
    return key
  } catch {
    return undefined
  }
}

const readOpt = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, "utf8").trim() : undefined)

/** The invariants that must hold in every state a crash can leave. */
const checkInvariants = async (root: string, mode: Mode, context: string) => {
  const F = readOpt(path.join(root, "matrix/store_passphrase"))
  const P = readOpt(path.join(root, "matrix/store_passphrase.pending"))
  const M = fs.existsSync(path.join(root, "matrix/store_passphrase.rekeying"))
  const available = [F, P, DERIVED].filter((x): x is string => x !== undefined)
  const resolved = await daemonResolve(root, ENV)
  for (const [rel, role] of STORES) {
    const file = path.join(root, rel)
    if (!fs.existsSync(file)) continue
    let key: string | undefined
    for (const candidate of available) {
      key ??= await opens(file, role, candidate)
    }
    expect(key, `${context}: ${role} opens with no available secret`).toBeDefined()
    expect(key, `${context}: ${role}'s data key changed`).toBe(dataKeys.get(`${mode}/${role}`))
    if (P !== undefined || M) {
      expect(Either.isLeft(resolved) && resolved.left.kind, context).toBe("interrupted-rekey")
    } else {
      expect(Either.isRight(resolved), context).toBe(true)
      if (Either.isRight(resolved)) {
        const p = Redacted.value(Option.getOrThrow(resolved.right).passphrase)
        expect(await opens(file, role, p), `${context}: the daemon's passphrase does not open ${role}`).toBe(
          dataKeys.get(`${mode}/${role}`)
        )
      }
    }
  }
}

/** Runs with the given crashes, checks after each, then a clean rerun; returns the final pinned value. */
const scenario = async (mode: Mode, which: ReadonlyArray<"crypto" | "state">, crashes: ReadonlyArray<number>) => {
  const root = setUp(mode, which)
  const label = `${mode} [${which.join(",")}] crashes ${crashes.join(",")}`
  for (const k of crashes) {
    const { crashed, exit } = await runOnce(root, k)
    // Either it crashed where told, or it finished before reaching that step.
    expect(crashed || Exit.isSuccess(exit), `${label}: ${JSON.stringify(exit)}`).toBe(true)
    await checkInvariants(root, mode, `${label} after crash at ${k}`)
  }
  const final = await runOnce(root, undefined)
  expect(Exit.isSuccess(final.exit), `${label}: final run ${JSON.stringify(final.exit)}`).toBe(true)
  expect(fs.existsSync(path.join(root, "matrix/store_passphrase.pending")), label).toBe(false)
  expect(fs.existsSync(path.join(root, "matrix/store_passphrase.rekeying")), label).toBe(false)
  const F = readOpt(path.join(root, "matrix/store_passphrase"))!
  expect(F).toMatch(/^[0-9a-f]{64}$/)
  expect(F).not.toBe(mode === "pinned" ? PINNED : DERIVED)
  expect(fs.statSync(path.join(root, "matrix/store_passphrase")).mode & 0o777).toBe(0o600)
  for (const [rel, role] of STORES) {
    if (!which.includes(role)) {
      expect(fs.existsSync(path.join(root, rel)), `${label}: a missing store was created`).toBe(false)
      continue
    }
    expect(await opens(path.join(root, rel), role, F), `${label}: ${role} on the pinned passphrase`).toBe(
      dataKeys.get(`${mode}/${role}`)
    )
  }
  await checkInvariants(root, mode, `${label} at the end`)
  return root
}

describe("rekey-store under crash injection", () => {
  it("counts its durable steps: a clean rotation of two stores takes 7 (crash points 1..8 cover all of them)", async () => {
    const root = setUp("derived", ["crypto", "state"])
    roots.push(root)
    const { exit, ticks } = await runOnce(root, undefined)
    expect(Exit.isSuccess(exit)).toBe(true)
    // pending (rename), marker (rename), 2 rewraps, promote (rename), remove pending, remove marker
    expect(ticks).toBe(7)
  })

  for (const mode of ["derived", "pinned"] as const) {
    it(`${mode} mode: a crash after every durable step, then a rerun, always completes safely`, async () => {
      for (let k = 1; k <= 8; k++) await scenario(mode, ["crypto", "state"], [k])
    }, 120_000)
  }

  it("property: any store set, either mode, several crashes in a row", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Mode>("derived", "pinned"),
        fc.constantFrom<ReadonlyArray<"crypto" | "state">>(["crypto"], ["state"], ["crypto", "state"]),
        fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 4 }),
        async (mode, which, crashes) => {
          await scenario(mode, which, crashes)
        }
      ),
      { numRuns: 12 }
    )
  }, 180_000)

  it("reports one progress line per durable step it starts (never a passphrase)", async () => {
    const root = setUp("derived", ["crypto", "state"])
    const lines: Array<string> = []
    const stateDir = await Effect.runPromise(makeStateDir(root))
    const result = await Effect.runPromise(runRekey({
      stateDir,
      stores: sqliteStores(stateDir),
      files: stateDirFiles(stateDir),
      derived: Option.some(Effect.succeed(Redacted.make(DERIVED))),
      progress: (line) => Effect.sync(() => void lines.push(line))
    }))
    expect(result).toMatchObject({ recovered: false, storeCount: 2 })
    expect(lines).toEqual([
      `writing the new passphrase to ${path.join(root, "matrix/store_passphrase.pending")}`,
      `writing the rekey marker ${path.join(root, "matrix/store_passphrase.rekeying")}`,
      "re-wrapping the key of matrix-sdk-crypto.sqlite3",
      "re-wrapping the key of matrix-sdk-state.sqlite3",
      `pinning the new passphrase at ${path.join(root, "matrix/store_passphrase")}`
    ])
    const pinned = readOpt(path.join(root, "matrix/store_passphrase"))!
    expect(lines.join("\n")).not.toContain(pinned)
  })

  it("a second run later rotates again to another fresh passphrase", async () => {
    const root = await scenario("derived", ["crypto", "state"], [])
    const first = readOpt(path.join(root, "matrix/store_passphrase"))
    const again = await runOnce(root, undefined)
    expect(Exit.isSuccess(again.exit)).toBe(true)
    const second = readOpt(path.join(root, "matrix/store_passphrase"))!
    expect(second).not.toBe(first)
    expect(await opens(path.join(root, CRYPTO_FILE), "crypto", second)).toBe(dataKeys.get("derived/crypto"))
  }, 60_000)
})
