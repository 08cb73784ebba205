// `cara matrix recovery-key show|restore` as an operator runs them (the built CLI in a child process).
import { Effect, Exit, Scope } from "effect"
import { encodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/recovery-key.js"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import { acquireRekeyLock } from "../../src/layers/StorePassphraseLive.js"
import { cleanEnv, runCli } from "../support/cli.js"
import { BASE_ENV, matrixConfig, PASSWORD, tempRoot } from "../support/rekey-fixtures.js"

const roots: Array<string> = []
afterAll(() => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true })
})
beforeAll(() => {
  if (!fs.existsSync("dist/cli/bin.js")) throw new Error("run `npm run build` first")
})

const KEY = encodeRecoveryKey(new Uint8Array(32).fill(7))!
const root = (config = matrixConfig()) => {
  const r = tempRoot(config)
  roots.push(r)
  fs.mkdirSync(path.join(r, "matrix"), { mode: 0o700 })
  return r
}
const env = (r: string) => cleanEnv(r, { ...BASE_ENV, CARAPACE_CONFIG_PASSWORD: PASSWORD })
const rk = (r: string, args: ReadonlyArray<string>, input?: string) =>
  runCli(["matrix", "recovery-key", ...args], env(r), input)

describe("cara matrix recovery-key show", () => {
  it("refuses a non-terminal stdout without the flag, and prints only the key with it", () => {
    const r = root()
    fs.writeFileSync(path.join(r, "matrix/recovery_key"), `${KEY}\n`, { mode: 0o600 })
    const refused = rk(r, ["show"])
    expect(refused.status).not.toBe(0)
    expect(refused.stdout).toBe("")
    expect(refused.stderr).toContain("refuses non-terminal stdout; rerun with --allow-non-terminal")
    expect(refused.stderr).not.toContain(KEY)
    const shown = rk(r, ["show", "--allow-non-terminal"])
    expect(shown.status).toBe(0)
    expect(shown.stdout).toBe(`${KEY}\n`)
  })

  it("says where the key should be when it is missing, and refuses encrypted=false", () => {
    const r = root()
    const missing = rk(r, ["show", "--allow-non-terminal"])
    expect(missing.status).not.toBe(0)
    expect(missing.stderr).toContain(`Matrix recovery key unavailable at ${path.join(r, "matrix/recovery_key")}`)
    const plain = root(matrixConfig("encrypted: false,"))
    const gated = rk(plain, ["show", "--allow-non-terminal"])
    expect(gated.stderr).toContain("requires matrix.encrypted=true")
    expect(gated.stderr).toContain("[recovery-config-precondition]")
  })
})

describe("cara matrix recovery-key restore", () => {
  it("stores a key from stdin (canonical form, 0600) and tells the operator to restart", () => {
    const r = root()
    const res = rk(r, ["restore", "--stdin"], `  ${KEY.replaceAll(" ", "\n")}\n`)
    expect(res.stderr).not.toContain("cara:")
    expect(res.stderr).not.toContain(KEY)
    expect(res.status).toBe(0)
    const K = path.join(r, "matrix/recovery_key")
    expect(res.stdout).toContain(`Matrix recovery key restored at ${K}`)
    expect(res.stdout).toContain("Restart")
    expect(res.stdout).not.toContain(KEY)
    expect(fs.readFileSync(K, "utf8")).toBe(`${KEY}\n`)
    expect(fs.statSync(K).mode & 0o777).toBe(0o600)
    // a second restore refuses to overwrite
    const again = rk(r, ["restore", "--stdin"], KEY)
    expect(again.status).not.toBe(0)
    expect(again.stderr).toContain("already exists")
  })

  it("refuses an oversize key file, a malformed key and an empty one", () => {
    const r = root()
    const big = path.join(r, "big.txt")
    fs.writeFileSync(big, `${KEY}\n${" ".repeat(5000)}`)
    const oversize = rk(r, ["restore", "--key-file", big])
    expect(oversize.status).not.toBe(0)
    expect(oversize.stderr).toContain("exceeds 4096 bytes")
    const bad = rk(r, ["restore", "--stdin"], "not a recovery key")
    expect(bad.stderr).toContain("must be 12 base58 groups of four characters")
    const empty = rk(r, ["restore", "--stdin"], "\n")
    expect(empty.stderr).toContain("Matrix recovery key cannot be empty")
    expect(fs.existsSync(path.join(r, "matrix/recovery_key"))).toBe(false)
  })

  it("refuses while the daemon holds the maintenance lock", async () => {
    const r = root()
    const scope = Effect.runSync(Scope.make())
    await Effect.runPromise(
      Scope.extend(Effect.flatMap(makeStateDir(r), (sd) => acquireRekeyLock(sd, "daemon")), scope)
    )
    try {
      const res = rk(r, ["restore", "--stdin"], KEY)
      expect(res.status).not.toBe(0)
      expect(res.stderr).toContain("Matrix recovery-key restore refused:")
      expect(fs.existsSync(path.join(r, "matrix/recovery_key"))).toBe(false)
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })

  it("removes stale rotation artifacts through the cleanup journal", () => {
    const r = root()
    for (const f of ["recovery_key.rotating", "recovery_key.minting", "recovery_key.pending"]) {
      fs.writeFileSync(path.join(r, "matrix", f), "stale\n")
    }
    const res = rk(r, ["restore", "--stdin"], KEY)
    expect(res.status).toBe(0)
    for (const f of ["recovery_key.rotating", "recovery_key.minting", "recovery_key.pending", "recovery_key.cleanup"]) {
      expect(fs.existsSync(path.join(r, "matrix", f))).toBe(false)
    }
    const audit = fs.readFileSync(path.join(r, "audit.jsonl"), "utf8")
    expect(audit).toContain("matrix_recovery_key_restore_cleanup_anchored")
    expect(audit).not.toContain(KEY)
  })
})
