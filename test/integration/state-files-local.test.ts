// Issue 16, point 1: a state file that exists but is not what it should be (0 bytes, 1 byte, garbage,
// truncated, the wrong schema), or that is missing while other state shows it must exist, makes the daemon
// refuse to start with a kind naming the file, `cara doctor` report the same, and nothing is written. The
// first start on an empty state dir still works, and a creation interrupted by a crash leaves no half file.
import { Effect, Either, Layer, Option } from "effect"
import { spawnSync } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { DLQ_FILE } from "../../src/domain/dlq.js"
import { StateFileError } from "../../src/domain/stateFiles.js"
import { loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { CRYPTO_FILE, STATE_FILE } from "../../src/layers/CryptoStoreLive.js"
import { SqliteFile } from "../../src/layers/durable-idb/sqliteFile.js"
import { LEDGER_FILE, openLedger } from "../../src/layers/InboundLive.js"
import { DATABASE_FILE, SessionsLive } from "../../src/layers/SessionsLive.js"
import { createSqliteAtomically } from "../../src/layers/sqliteState.js"
import { makeStateDir, StateDirAt } from "../../src/layers/StateDirLive.js"
import { stateFileProblems } from "../../src/layers/StateFilesCheck.js"
import { runDoctor } from "../../src/programs/doctor.js"
import { Sessions } from "../../src/services/Sessions.js"
import { StateDir } from "../../src/services/StateDir.js"
import { runCli } from "../support/cli.js"
import { daemonResolve } from "../support/rekey-fixtures.js"
import { tmpDir } from "../support/tmp.js"

const PASSWORD = "state-files-test-password"
const IID = `${"3f".repeat(32)}\n`

const config = (extra = "") =>
  `{
  // state-files test
  gateway: { port: 0, bind: "loopback", auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
  matrix: {
    enabled: true,
    homeserverUrl: "http://127.0.0.1:9",
    userId: "@bot:example.org",
    accessToken: "\${MATRIX_ACCESS_TOKEN}",
    deviceId: "BOTDEVICE",
    ${extra}
  },
  anthropic: { apiKey: "sk-ant-state-files-test" },
  agents: { default: { model: "anthropic:claude-test" } },
}
`

let root: string
let env: Record<string, string>
beforeEach(() => {
  root = tmpDir("cara-state-files-")
  fs.chmodSync(root, 0o700)
  fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
  fs.writeFileSync(path.join(root, "carapace.json5"), config(), { mode: 0o600 })
  fs.writeFileSync(path.join(root, "installation_id"), IID, { mode: 0o600 })
  env = {
    PATH: process.env["PATH"] ?? "",
    HOME: process.env["HOME"] ?? "",
    CARAPACE_STATE_DIR: root,
    CARAPACE_CONFIG_PASSWORD: PASSWORD,
    CARAPACE_GATEWAY_TOKEN: "g".repeat(64),
    MATRIX_ACCESS_TOKEN: "syt_state_files_test"
  }
})
afterEach(() => {
})

const problems = () =>
  Effect.runPromise(Effect.gen(function*() {
    const sd = yield* makeStateDir(root)
    const snap = yield* loadConfigSnapshot(env).pipe(Effect.provideService(StateDir, sd))
    return yield* stateFileProblems(sd.root, sd.resolve, snap.config)
  }))

/** Adds a filler table to a valid file, so that half of it is a truncated database (and not a short one). */
const grow = (file: string) => {
  const db = new DatabaseSync(file)
  db.exec("CREATE TABLE filler (x BLOB)")
  const ins = db.prepare("INSERT INTO filler (x) VALUES (?)")
  for (let i = 0; i < 64; i++) ins.run(crypto.randomBytes(2048))
  db.close()
}

interface FileClass {
  readonly name: string
  readonly rel: string
  readonly kind: string
  /** Creates a valid file the way the daemon does. */
  readonly create: (file: string) => Promise<void>
  /** Opens it the way the daemon does; resolves to the refusal's kind (undefined: it opened). */
  readonly open: (file: string) => Promise<string | undefined>
}

const kindOf = (e: unknown) => (e as { kind?: string }).kind ?? String(e)

const storeClass = (name: string, rel: string, role: "crypto" | "state", kind: string): FileClass => ({
  name,
  rel,
  kind,
  create: async (file) => (await SqliteFile.open(file, role, { encrypted: false })).close(),
  open: async (file) => {
    try {
      ;(await SqliteFile.open(file, role, { encrypted: false })).close()
      return undefined
    } catch (e) {
      return kindOf(e)
    }
  }
})

/** Opens the history as the daemon does; the refusal's kind, or undefined when it opened. */
const sessionsOpen = (dir: string) =>
  Effect.runPromise(
    Effect.scoped(Effect.provide(
      Effect.flatMap(Sessions, (s) => s.history("!a:hs", 1)),
      SessionsLive.pipe(Layer.provide(StateDirAt(dir)))
    )).pipe(
      Effect.match({
        onFailure: (e) => e.kind as string | undefined,
        onSuccess: () => undefined
      })
    )
  )

const CLASSES: ReadonlyArray<FileClass> = [
  storeClass("the crypto store", CRYPTO_FILE, "crypto", "crypto-store-corrupt"),
  storeClass("the sync-state store", STATE_FILE, "state", "state-store-corrupt"),
  {
    name: "the inbound ledger",
    rel: LEDGER_FILE,
    kind: "inbound-ledger-corrupt",
    create: async (file) => openLedger(file).close(),
    open: async (file) => {
      try {
        openLedger(file).close()
        return undefined
      } catch (e) {
        expect(e).toBeInstanceOf(StateFileError)
        return kindOf(e)
      }
    }
  },
  {
    name: "carapace.sqlite",
    rel: DATABASE_FILE,
    kind: "session-history-corrupt",
    create: async () => {
      expect(await sessionsOpen(root)).toBeUndefined()
    },
    open: () => sessionsOpen(root)
  }
]

const DAMAGE: ReadonlyArray<{ readonly name: string; readonly make: (valid: Buffer) => Buffer }> = [
  { name: "0 bytes", make: () => Buffer.alloc(0) },
  { name: "1 byte", make: () => Buffer.from("x") },
  { name: "garbage", make: () => crypto.randomBytes(8192) },
  { name: "truncated", make: (valid) => valid.subarray(0, Math.floor(valid.length / 2)) },
  {
    name: "another SQLite database",
    make: () => {
      const f = path.join(os.tmpdir(), `cara-other-${process.pid}-${crypto.randomUUID()}.sqlite`)
      const db = new DatabaseSync(f)
      db.exec("CREATE TABLE other (x TEXT); INSERT INTO other VALUES ('not ours')")
      db.close()
      const bytes = fs.readFileSync(f)
      fs.rmSync(f)
      return bytes
    }
  }
]

/** The file and every sibling that shares its name (WAL, journal, temporaries), byte for byte. */
const snapshot = (file: string) =>
  fs.readdirSync(path.dirname(file)).filter((n) => n.includes(path.basename(file))).sort().map((
    n
  ) => [n, fs.readFileSync(path.join(path.dirname(file), n)).toString("base64")])

describe("a damaged state file is refused, named and left untouched", () => {
  for (const c of CLASSES) {
    for (const d of DAMAGE) {
      it(`${c.name}, ${d.name}: ${c.kind} from the start-up check and from the opener; no byte changes`, async () => {
        const file = path.join(root, c.rel)
        await c.create(file)
        expect(await c.open(file)).toBeUndefined() // the daemon's own file opens
        grow(file)
        const valid = fs.readFileSync(file)
        fs.writeFileSync(file, d.make(valid), { mode: 0o600 })
        const before = snapshot(file)

        const found = await problems()
        expect(found.map((p) => [p.kind, p.path])).toContainEqual([c.kind, file])
        expect(found.find((p) => p.kind === c.kind)!.message).toMatch(/left untouched/)
        expect(await c.open(file)).toBe(c.kind)
        expect(snapshot(file)).toEqual(before)
      })
    }
  }

  it(
    "the daemon process exits non-zero with the kind and the file, not an unexpected failure, for each class",
    async () => {
      for (const c of CLASSES) {
        fs.rmSync(path.join(root, "matrix"), { recursive: true, force: true })
        fs.rmSync(path.join(root, DATABASE_FILE), { force: true })
        fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
        const file = path.join(root, c.rel)
        const garbage = crypto.randomBytes(4096)
        fs.writeFileSync(file, garbage, { mode: 0o600 })
        const r = runCli([], env)
        expect(r.status, r.stderr).toBe(1)
        expect(r.stderr).toContain(`[${c.kind}]`)
        expect(r.stderr).toContain(file)
        expect(r.stderr).not.toContain("unexpected failure")
        expect(r.stdout + r.stderr).not.toContain("ready: gateway listening")
        expect(fs.readFileSync(file).equals(garbage)).toBe(true)
      }
    },
    120_000
  )

  it("cara doctor reports each class in its stores check with the kind, exit 2", async () => {
    for (const c of CLASSES) {
      fs.rmSync(path.join(root, "matrix"), { recursive: true, force: true })
      fs.rmSync(path.join(root, DATABASE_FILE), { force: true })
      fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
      const file = path.join(root, c.rel)
      fs.writeFileSync(file, "", { mode: 0o600 })
      const report = await Effect.runPromise(runDoctor({ env, offline: true }))
      const stores = report.findings.filter((f) => f.check === "stores")
      expect(stores, c.name).toContainEqual(expect.objectContaining({ status: "error", kind: c.kind }))
      expect(stores.find((f) => f.kind === c.kind)!.message).toContain(file)
      expect(report.exitCode).toBe(2)
      expect(fs.statSync(file).size).toBe(0)
    }
  })

  it("a 0-byte carapace.sqlite with Matrix disabled still refuses the daemon (the history is always opened)", () => {
    fs.writeFileSync(
      path.join(root, "carapace.json5"),
      `{ gateway: { port: 0, bind: "loopback", auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } } }`
    )
    fs.writeFileSync(path.join(root, DATABASE_FILE), "", { mode: 0o600 })
    const r = runCli([], env)
    expect(r.status, r.stderr).toBe(1)
    expect(r.stderr).toContain("[session-history-corrupt]")
    expect(r.stderr).toContain("it is empty (0 bytes)")
  }, 60_000)
})

describe("a store whose rows do not decode", () => {
  it("is crypto-store-corrupt at load, and the damaged row is left as it was", async () => {
    const file = path.join(root, CRYPTO_FILE)
    const f = await SqliteFile.open(file, "crypto", { encrypted: false })
    f.commit([{
      db: "cara::matrix-sdk-crypto",
      schema: {
        name: "cara::matrix-sdk-crypto",
        version: 1,
        stores: [{ name: "core", keyPath: null, autoIncrement: false, keyGenerator: null, indexes: [] }]
      },
      stores: [{ name: "core", cleared: false, puts: [["account", { pickled: "x" }]], deletes: [] }]
    }])
    f.close()
    const garbage = crypto.randomBytes(64)
    const raw = new DatabaseSync(file)
    raw.prepare("UPDATE records SET data = ?").run(garbage)
    raw.close()

    const reopened = await SqliteFile.open(file, "crypto", { encrypted: false })
    try {
      expect(() => reopened.load()).toThrow(expect.objectContaining({ kind: "crypto-store-corrupt", path: file }))
    } finally {
      reopened.close()
    }
    const check = new DatabaseSync(file)
    expect(Buffer.from((check.prepare("SELECT data FROM records").get() as { data: Uint8Array }).data).equals(garbage))
      .toBe(true)
    check.close()
  })
})

describe("installation_id", () => {
  const iid = () => path.join(root, "installation_id")

  it(
    "deleted while a derived-key store exists: installation-id-missing everywhere, and no new id is minted",
    async () => {
      await SqliteFile.open(path.join(root, CRYPTO_FILE), "crypto", { encrypted: false }).then((f) => f.close())
      fs.rmSync(iid())

      expect((await problems()).map((p) => p.kind)).toEqual(["installation-id-missing"])
      const resolved = await daemonResolve(root, env)
      expect(Either.isLeft(resolved) && resolved.left.kind).toBe("installation-id-missing")
      expect(Either.isLeft(resolved) && resolved.left.message).toContain(path.join(root, CRYPTO_FILE))
      const r = runCli([], env)
      expect(r.status, r.stderr).toBe(1)
      expect(r.stderr).toContain("[installation-id-missing]")
      expect(r.stderr).toContain("Restore installation_id from a backup")
      const report = await Effect.runPromise(runDoctor({ env, offline: true }))
      expect(report.findings).toContainEqual(
        expect.objectContaining({ check: "stores", status: "error", kind: "installation-id-missing" })
      )
      expect(fs.existsSync(iid())).toBe(false)
    },
    60_000
  )

  it("deleted while the DLQ holds records: refused even with a pinned store passphrase", async () => {
    fs.writeFileSync(path.join(root, "matrix", "store_passphrase"), `${"ab".repeat(32)}\n`, { mode: 0o600 })
    fs.writeFileSync(path.join(root, DLQ_FILE), "{\"version\":2}\n", { mode: 0o600 })
    fs.rmSync(iid())
    const found = await problems()
    expect(found.map((p) => [p.kind, p.message.includes(path.join(root, DLQ_FILE))])).toEqual([[
      "installation-id-missing",
      true
    ]])
    expect(fs.existsSync(iid())).toBe(false)
  })

  it("with a pinned passphrase and no DLQ the stores do not depend on it: a new one is minted", async () => {
    fs.writeFileSync(path.join(root, "matrix", "store_passphrase"), `${"ab".repeat(32)}\n`, { mode: 0o600 })
    await SqliteFile.open(path.join(root, CRYPTO_FILE), "crypto", { encrypted: false }).then((f) => f.close())
    fs.rmSync(iid())
    expect(await problems()).toEqual([])
  })

  it("a first start on an empty state dir mints it", async () => {
    fs.rmSync(iid())
    expect(await problems()).toEqual([])
    const resolved = await daemonResolve(root, env)
    expect(Either.isRight(resolved) && Option.isSome(resolved.right) && resolved.right.value.source).toBe("derived")
    expect(fs.readFileSync(iid(), "utf8")).toMatch(/^[0-9a-f]{64}\n$/)
  })

  it("malformed: the start-up check names it (installation-id); an empty pinned store_passphrase is named too", async () => {
    fs.writeFileSync(iid(), "not-an-id\n")
    fs.writeFileSync(path.join(root, "matrix", "store_passphrase"), "\n", { mode: 0o600 })
    const found = await problems()
    expect(found.map((p) => [p.kind, p.path])).toEqual([
      ["installation-id", iid()],
      ["encrypted-state-io", path.join(root, "matrix", "store_passphrase")]
    ])
  })
})

describe("creation is atomic, so a half-written first start cannot leave a file that passes for new", () => {
  it("a first start on an empty state dir creates every file complete, with no temporaries left", async () => {
    fs.rmSync(path.join(root, "matrix"), { recursive: true, force: true })
    fs.mkdirSync(path.join(root, "matrix"), { mode: 0o700 })
    for (const c of CLASSES) {
      const file = path.join(root, c.rel)
      await c.create(file)
      expect(await c.open(file)).toBeUndefined()
      expect(fs.statSync(file).mode & 0o777).toBe(0o600)
    }
    expect(await problems()).toEqual([])
    const leftovers = [...fs.readdirSync(root), ...fs.readdirSync(path.join(root, "matrix"))].filter((n) =>
      n.includes(".creating.")
    )
    expect(leftovers).toEqual([])
  })

  it("a process killed in the middle of creating a store leaves no store file; the next open creates it and clears the temporary", async () => {
    const file = path.join(root, CRYPTO_FILE)
    const child = spawnSync(process.execPath, [
      "--input-type=module",
      "-e",
      `const { createSqliteAtomically } = await import(${
        JSON.stringify(path.resolve("dist/src/layers/sqliteState.js"))
      })
      createSqliteAtomically(process.env.FILE, (db) => { db.exec("CREATE TABLE kv (key TEXT)"); process.kill(process.pid, "SIGKILL") })`
    ], { env: { ...process.env, FILE: file }, encoding: "utf8" })
    expect(child.signal).toBe("SIGKILL")
    expect(fs.existsSync(file)).toBe(false)
    expect(fs.readdirSync(path.join(root, "matrix")).some((n) => n.includes(".creating."))).toBe(true)
    expect(await problems()).toEqual([])
    ;(await SqliteFile.open(file, "crypto", { encrypted: false })).close()
    expect(fs.readdirSync(path.join(root, "matrix")).filter((n) => n.includes(".creating."))).toEqual([])
    expect(await problems()).toEqual([])
  })

  it("createSqliteAtomically never replaces a file that is already there", () => {
    const file = path.join(root, "matrix", "x.sqlite")
    fs.writeFileSync(file, "keep me")
    expect(createSqliteAtomically(file, (db) => db.exec("CREATE TABLE t (x)"))).toBe(false)
    expect(fs.readFileSync(file, "utf8")).toBe("keep me")
  })
})
