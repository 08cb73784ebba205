// installation_id (reference §3.1), the derived store key with its pinned vector (§3.2) and the
// passphrase resolution order with the interrupted-rekey gate (§3.3, §4.4).
import { Effect, Either, Option, Redacted } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { INTERRUPTED_REKEY_PREFIX } from "../../src/domain/storePassphrase.js"
import { deriveStorePassphrase, readOrCreateInstallationId } from "../../src/layers/StorePassphraseLive.js"
import { daemonResolve, matrixConfig, PASSWORD, tempRoot } from "../support/rekey-fixtures.js"

const iidPath = (root: string) => path.join(root, "installation_id")

describe("store key derivation", () => {
  it("matches the reference's pinned HKDF vector", () => {
    expect(deriveStorePassphrase("correct horse battery staple", "installation-00000000-0000-0000-0000-000000000000"))
      .toBe(
        "c812a97783aa8a0256aa4607a57f3652bf183a9eb7fa422cfaf7c19da935b44b"
      )
  })

  it("depends on both the password and the installation id", () => {
    const a = deriveStorePassphrase("pw", "a".repeat(64))
    expect(a).toMatch(/^[0-9a-f]{64}$/)
    expect(deriveStorePassphrase("pw2", "a".repeat(64))).not.toBe(a)
    expect(deriveStorePassphrase("pw", "b".repeat(64))).not.toBe(a)
  })
})

describe("installation_id", () => {
  it("is created once as 64 lowercase hex + newline, mode 0600, and read back unchanged", async () => {
    const root = tempRoot(null)
    const first = await Effect.runPromise(readOrCreateInstallationId(root))
    expect(first).toMatch(/^[0-9a-f]{64}$/)
    expect(fs.readFileSync(iidPath(root), "utf8")).toBe(`${first}\n`)
    expect(fs.statSync(iidPath(root)).mode & 0o777).toBe(0o600)
    expect(await Effect.runPromise(readOrCreateInstallationId(root))).toBe(first)
    // no temp files are left behind
    expect(fs.readdirSync(root)).toEqual(["installation_id"])
  })

  it("racing creators in separate processes converge on one value", async () => {
    const root = tempRoot(null)
    const script = `
      import * as crypto from "node:crypto"; import * as fs from "node:fs"; import * as path from "node:path"
      const { readOrCreateInstallationId } = await import(${
      JSON.stringify(path.resolve("dist/src/layers/StorePassphraseLive.js"))
    })
      const { Effect } = await import("effect")
      process.stdout.write(await Effect.runPromise(readOrCreateInstallationId(process.env.IID_ROOT)))
    `
    const runs = Array.from({ length: 6 }, () =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
          env: { ...process.env, IID_ROOT: root },
          stdio: ["ignore", "pipe", "pipe"]
        })
        let out = ""
        let err = ""
        child.stdout.on("data", (d: Buffer) => (out += d.toString()))
        child.stderr.on("data", (d: Buffer) => (err += d.toString()))
        child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(err))))
      }))
    const ids = await Promise.all(runs)
    expect(new Set(ids).size).toBe(1)
    expect(ids[0]).toMatch(/^[0-9a-f]{64}$/)
    expect(fs.readFileSync(iidPath(root), "utf8")).toBe(`${ids[0]}\n`)
    expect(fs.readdirSync(root)).toEqual(["installation_id"])
  })

  it("refuses a malformed or empty file with a message that says how to recover, and never rewrites it", async () => {
    const root = tempRoot(null)
    for (
      const [content, expected] of [
        ["NOT-HEX\n", "not the expected format (64 lowercase ASCII-hex chars)"],
        [`${"A".repeat(64)}\n`, "not the expected format"],
        ["  \n", "is empty"]
      ] as const
    ) {
      fs.writeFileSync(iidPath(root), content)
      const result = await Effect.runPromise(Effect.either(readOrCreateInstallationId(root)))
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left.kind).toBe("installation-id")
        expect(result.left.message).toContain(expected)
        expect(result.left.message).toContain("remove it to let cara mint a fresh id")
      }
      expect(fs.readFileSync(iidPath(root), "utf8")).toBe(content)
    }
  })

  it("refuses a symlink", async () => {
    const root = tempRoot(null)
    fs.writeFileSync(path.join(root, "elsewhere"), `${"a".repeat(64)}\n`)
    fs.symlinkSync(path.join(root, "elsewhere"), iidPath(root))
    const result = await Effect.runPromise(Effect.either(readOrCreateInstallationId(root)))
    expect(Either.isLeft(result) && result.left.message).toContain("symbolic link")
  })
})

describe("store passphrase resolution", () => {
  const value = (r: Awaited<ReturnType<typeof daemonResolve>>) =>
    Either.isRight(r) ? Option.map(r.right, (p) => [p.source, Redacted.value(p.passphrase)] as const) : r.left

  it("encrypted=false resolves to none, even with a passphrase configured", async () => {
    const root = tempRoot(matrixConfig(`encrypted: false, storePassphrase: "ignored",`))
    expect(value(await daemonResolve(root, { CARAPACE_CONFIG_PASSWORD: PASSWORD }))).toEqual(Option.none())
  })

  it("no matrix section resolves to none", async () => {
    const root = tempRoot(`{ gateway: { port: 0 } }`)
    expect(value(await daemonResolve(root, { CARAPACE_CONFIG_PASSWORD: PASSWORD }))).toEqual(Option.none())
  })

  it("an explicit passphrase (config, then MATRIX_STORE_PASSPHRASE) is used verbatim, trimmed, and ignores rekey files", async () => {
    const root = tempRoot(matrixConfig(`storePassphrase: "  from-config  ",`))
    fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
    fs.writeFileSync(path.join(root, "matrix/store_passphrase.pending"), "x\n")
    expect(value(await daemonResolve(root, { CARAPACE_CONFIG_PASSWORD: PASSWORD }))).toEqual(
      Option.some(["explicit", "from-config"])
    )

    const envRoot = tempRoot()
    expect(value(await daemonResolve(envRoot, { MATRIX_STORE_PASSPHRASE: "from-env" }))).toEqual(
      Option.some(["explicit", "from-env"])
    )
  })

  it("derives from CARAPACE_CONFIG_PASSWORD and the installation id when nothing is pinned", async () => {
    const root = tempRoot()
    const r = value(await daemonResolve(root, { CARAPACE_CONFIG_PASSWORD: PASSWORD }))
    const iid = fs.readFileSync(iidPath(root), "utf8").trim()
    expect(r).toEqual(Option.some(["derived", deriveStorePassphrase(PASSWORD, iid)]))
  })

  it("a pinned store_passphrase wins over the derived key and needs no password", async () => {
    const root = tempRoot()
    fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
    fs.writeFileSync(path.join(root, "matrix/store_passphrase"), "ab".repeat(32) + "\n", { mode: 0o600 })
    expect(value(await daemonResolve(root, {}))).toEqual(Option.some(["pinned-file", "ab".repeat(32)]))
    fs.writeFileSync(path.join(root, "matrix/store_passphrase"), " \n")
    const empty = value(await daemonResolve(root, {}))
    expect(empty).toMatchObject({ kind: "encrypted-state-io" })
    expect((empty as { message: string }).message).toContain("is empty")
  })

  it("no key source at all fails with missing-store-secret", async () => {
    const root = tempRoot()
    const r = value(await daemonResolve(root, {}))
    expect(r).toMatchObject({ kind: "missing-store-secret" })
    expect((r as { message: string }).message).toContain("CARAPACE_CONFIG_PASSWORD or MATRIX_STORE_PASSPHRASE")
  })

  it("a corrupt installation_id fails derivation with installation-id", async () => {
    const root = tempRoot()
    fs.writeFileSync(iidPath(root), "garbage\n")
    const r = value(await daemonResolve(root, { CARAPACE_CONFIG_PASSWORD: PASSWORD }))
    expect(r).toMatchObject({ kind: "installation-id" })
  })

  for (
    const files of [["pending"], ["rekeying"], ["pending", "rekeying"], ["pending", "final"], ["rekeying", "final"]]
  ) {
    it(`refuses with interrupted-rekey when ${files.join(" + ")} ${files.length === 1 ? "is" : "are"} present`, async () => {
      const root = tempRoot()
      fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
      for (const f of files) {
        const name = f === "final" ? "store_passphrase" : `store_passphrase.${f}`
        fs.writeFileSync(path.join(root, "matrix", name), f === "rekeying" ? "rekeying\n" : "cd".repeat(32) + "\n")
      }
      const r = value(await daemonResolve(root, { CARAPACE_CONFIG_PASSWORD: PASSWORD }))
      expect(r).toMatchObject({ kind: "interrupted-rekey" })
      const message = (r as { message: string }).message
      expect(message.startsWith(INTERRUPTED_REKEY_PREFIX)).toBe(true)
      expect(message).toContain(path.join(root, "matrix/store_passphrase.pending"))
      expect(message).toContain(path.join(root, "matrix/store_passphrase.rekeying"))
      expect(message).toContain("cara matrix rekey-store --new")
    })
  }
})
