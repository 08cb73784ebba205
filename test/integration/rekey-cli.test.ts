// `cara matrix rekey-store --new` as an operator runs it (the built CLI in a child process): the result
// (text and --json), the audit events, and each refusal with its message and kind.
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CRYPTO_FILE, STATE_FILE } from "../../src/layers/CryptoStoreLive.js"
import { SqliteFile } from "../../src/layers/durable-idb/sqliteFile.js"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import { acquireRekeyLock, deriveStorePassphrase } from "../../src/layers/StorePassphraseLive.js"
import { cleanEnv, runCli } from "../support/cli.js"
import { BASE_ENV, matrixConfig, PASSWORD, tempRoot } from "../support/rekey-fixtures.js"

const IID = "abcdef0123456789".repeat(4)
const roots: Array<string> = []
afterAll(() => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true })
})

/** A state dir with both stores created under the derived passphrase. */
const populated = async (config = matrixConfig()) => {
  const root = tempRoot(config)
  roots.push(root)
  fs.writeFileSync(path.join(root, "installation_id"), `${IID}\n`, { mode: 0o600 })
  fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
  for (const [rel, role] of [[CRYPTO_FILE, "crypto"], [STATE_FILE, "state"]] as const) {
    const f = await SqliteFile.open(path.join(root, rel), role, {
      encrypted: true,
      passphrase: deriveStorePassphrase(PASSWORD, IID)
    })
    f.close()
  }
  return root
}

const env = (root: string, extra: Record<string, string> = {}) =>
  cleanEnv(root, { ...BASE_ENV, CARAPACE_CONFIG_PASSWORD: PASSWORD, ...extra })
const rekey = (root: string, args: ReadonlyArray<string> = ["--new"], e = env(root)) =>
  runCli(["matrix", "rekey-store", ...args], e)

const auditEvents = (root: string) =>
  fs.existsSync(path.join(root, "audit.jsonl"))
    ? fs.readFileSync(path.join(root, "audit.jsonl"), "utf8").trim().split("\n").map((l) =>
      JSON.parse(l) as { ts: string; event: string; data: Record<string, unknown> }
    )
    : []

beforeAll(() => {
  if (!fs.existsSync("dist/cli/bin.js")) throw new Error("run `npm run build` first")
})

describe("cara matrix rekey-store --new", () => {
  it("rotates both stores, pins the new passphrase, prints the result, and audits start and completion", async () => {
    const root = await populated()
    const result = rekey(root)
    expect(result.stderr).not.toContain("cara:")
    expect(result.status).toBe(0)
    const F = path.join(root, "matrix/store_passphrase")
    expect(result.stdout).toContain(`Matrix store rekeyed across 2 store(s); new store passphrase pinned at ${F}`)
    const pinned = fs.readFileSync(F, "utf8")
    expect(pinned).toMatch(/^[0-9a-f]{64}\n$/)
    // the passphrase never reaches the output
    expect(result.stdout + result.stderr).not.toContain(pinned.trim())
    const f = await SqliteFile.open(path.join(root, CRYPTO_FILE), "crypto", {
      encrypted: true,
      passphrase: pinned.trim()
    })
    f.close()

    const events = auditEvents(root)
    expect(events.map((e) => e.event)).toEqual(["matrix_store_rekey_start", "matrix_store_rekey_complete"])
    expect(events[1]!.data).toMatchObject({ sqlite_store_count: 2, recovered: false, pid: expect.any(Number) })
    expect(new Date(events[0]!.ts).toISOString()).toBe(events[0]!.ts)
    expect(fs.readFileSync(path.join(root, "audit.jsonl"), "utf8")).not.toContain(pinned.trim())
    expect(fs.statSync(path.join(root, "audit.jsonl")).mode & 0o777).toBe(0o600)
  })

  it("--json prints one JSON object; a second run rotates again (no password needed once pinned)", async () => {
    const root = await populated()
    const first = rekey(root, ["--new", "--json"])
    expect(first.status).toBe(0)
    expect(JSON.parse(first.stdout)).toEqual({
      ok: true,
      recovered: false,
      storeCount: 2,
      passphrasePath: path.join(root, "matrix/store_passphrase")
    })
    const pinned1 = fs.readFileSync(path.join(root, "matrix/store_passphrase"), "utf8")
    const second = rekey(root, ["--new", "--json"], cleanEnv(root, BASE_ENV))
    expect(second.status).toBe(0)
    expect(JSON.parse(second.stdout)).toMatchObject({ ok: true, storeCount: 2 })
    expect(fs.readFileSync(path.join(root, "matrix/store_passphrase"), "utf8")).not.toBe(pinned1)
  })

  it("finishes an interrupted rotation and says so", async () => {
    const root = await populated()
    // As a crash right after the pending file was written would leave it.
    fs.writeFileSync(path.join(root, "matrix/store_passphrase.pending"), `${"9".repeat(64)}\n`, { mode: 0o600 })
    const result = rekey(root)
    expect(result.status).toBe(0)
    expect(result.stdout).toContain("Finalized the interrupted Matrix store rekey")
    expect(fs.readFileSync(path.join(root, "matrix/store_passphrase"), "utf8")).toBe(`${"9".repeat(64)}\n`)
    expect(fs.existsSync(path.join(root, "matrix/store_passphrase.pending"))).toBe(false)
    expect(auditEvents(root).at(-1)!.data).toMatchObject({ recovered: true })
  })

  it("refuses without --new", async () => {
    const root = await populated()
    const result = rekey(root, [])
    expect(result.status).not.toBe(0)
    expect(result.stderr).toContain("matrix rekey-store currently requires --new [rekey-refused]")
  })

  it("refuses an explicit store passphrase (config or MATRIX_STORE_PASSPHRASE)", async () => {
    const root = await populated(matrixConfig(`storePassphrase: "\${MY_STORE_PASS}",`))
    const viaConfig = rekey(root, ["--new"], env(root, { MY_STORE_PASS: "my-store-pass-1" }))
    expect(viaConfig.status).not.toBe(0)
    expect(viaConfig.stderr).toContain(
      "the store passphrase is set explicitly (matrix.storePassphrase or MATRIX_STORE_PASSPHRASE), so rotate it outside cara"
    )
    expect(viaConfig.stderr).toContain("[rekey-refused]")

    const root2 = await populated()
    const viaEnv = rekey(root2, ["--new"], env(root2, { MATRIX_STORE_PASSPHRASE: "my-store-pass-2" }))
    expect(viaEnv.status).not.toBe(0)
    expect(viaEnv.stderr).toContain("[rekey-refused]")
    expect(fs.existsSync(path.join(root2, "matrix/store_passphrase.pending"))).toBe(false)
  })

  it("refuses matrix.encrypted=false", async () => {
    const root = await populated(matrixConfig("encrypted: false,"))
    const result = rekey(root)
    expect(result.stderr).toContain("matrix rekey-store requires matrix.encrypted=true")
  })

  it("refuses without the old secret, and writes nothing", async () => {
    const root = await populated()
    const result = rekey(root, ["--new"], cleanEnv(root, BASE_ENV))
    expect(result.status).not.toBe(0)
    // The config check already names the missing key source (the machine's own refusal is unit-tested).
    expect(result.stderr).toContain(
      "matrix.encrypted=true requires matrix.storePassphrase, MATRIX_STORE_PASSPHRASE, CARAPACE_CONFIG_PASSWORD"
    )
    expect(fs.readdirSync(path.join(root, "matrix")).sort()).toEqual([
      "matrix-sdk-crypto.sqlite3",
      "matrix-sdk-state.sqlite3"
    ])
  })

  it("refuses the wrong old password without touching a store", async () => {
    const root = await populated()
    const before = fs.readFileSync(path.join(root, CRYPTO_FILE))
    const result = rekey(root, ["--new"], env(root, { CARAPACE_CONFIG_PASSWORD: "not the password" }))
    expect(result.status).not.toBe(0)
    expect(result.stderr).toContain("accept none of the available passphrases")
    expect(result.stderr).toContain("[rekey-refused]")
    expect(fs.readFileSync(path.join(root, CRYPTO_FILE)).equals(before)).toBe(true)
  })

  it("refuses a corrupt installation_id with its message", async () => {
    const root = await populated()
    fs.writeFileSync(path.join(root, "installation_id"), "not-an-id\n")
    const result = rekey(root)
    expect(result.status).not.toBe(0)
    expect(result.stderr).toContain("not the expected format (64 lowercase ASCII-hex chars)")
    expect(result.stderr).toContain("[installation-id]")
    expect(fs.readFileSync(path.join(root, "installation_id"), "utf8")).toBe("not-an-id\n")
  })

  it("refuses while another process holds the maintenance lock, naming it", async () => {
    const root = await populated()
    const scope = await Effect.runPromise(Scope.make())
    await Effect.runPromise(
      Effect.flatMap(makeStateDir(root), (sd) => acquireRekeyLock(sd, "recovery-key")).pipe(Scope.extend(scope))
    )
    try {
      const result = rekey(root)
      expect(result.status).not.toBe(0)
      expect(result.stderr).toContain(`is held by \`cara matrix recovery-key\` (pid ${process.pid})`)
      expect(result.stderr).toContain("[rekey-lock-held]")
      expect(fs.existsSync(path.join(root, "matrix/store_passphrase.pending"))).toBe(false)
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })

  it("refuses with no stores to rekey", () => {
    const root = tempRoot()
    roots.push(root)
    const result = rekey(root)
    expect(result.stderr).toContain("no Matrix stores found under")
    expect(fs.existsSync(path.join(root, "matrix/store_passphrase"))).toBe(false)
  })
})
