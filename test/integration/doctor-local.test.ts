import { afterEach, beforeEach, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { encodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/recovery-key.js"
import { calculateKeyCheck } from "matrix-js-sdk/lib/secret-storage.js"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { DOCTOR_CHECKS, type DoctorReport, exitCodeOf, renderDoctor, runDoctor } from "../../src/programs/doctor.js"
import { cleanEnv, runCli } from "../support/cli.js"
import { tmpDir } from "../support/tmp.js"

const TOKEN = "syt_doctor_test_token_value"
// the recovery key on disk and the homeserver's description of it (the SDK's own key check)
const RAW = new Uint8Array(32).fill(5)
const RECOVERY_KEY = encodeRecoveryKey(RAW)!
const KEY_INFO = { algorithm: "m.secret_storage.v1.aes-hmac-sha2", ...(await calculateKeyCheck(RAW)) }

interface FakeHomeserver {
  readonly url: string
  /** What whoami answers (a revoked token = 401). */
  tokenValid: boolean
  readonly close: () => Promise<void>
}

/** A loopback stand-in for the four client-server endpoints doctor calls. */
const fakeHomeserver = (): Promise<FakeHomeserver> =>
  new Promise((resolve) => {
    const state = { tokenValid: true }
    const server = http.createServer((req, res) => {
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" })
        res.end(JSON.stringify(body))
      }
      const authed = req.headers.authorization === `Bearer ${TOKEN}` && state.tokenValid
      if (req.url === "/_matrix/client/versions") return send(200, { versions: ["v1.11", "v1.12"] })
      if (!authed) return send(401, { errcode: "M_UNKNOWN_TOKEN", error: "Invalid access token" })
      if (req.url === "/_matrix/client/v3/account/whoami") {
        return send(200, { user_id: "@cara:example.com", device_id: "DEV1" })
      }
      if (req.url === "/_matrix/client/v3/keys/query") {
        return send(200, { master_keys: { "@cara:example.com": { keys: {} } }, device_keys: {} })
      }
      const ad = "/_matrix/client/v3/user/%40cara%3Aexample.com/account_data/"
      if (req.url === `${ad}m.secret_storage.default_key`) {
        return send(200, { key: "KID" })
      }
      if (req.url === `${ad}m.secret_storage.key.KID`) return send(200, KEY_INFO)
      if (req.url === "/_matrix/client/v3/room_keys/version") {
        return send(200, { version: "3", algorithm: "m.megolm_backup.v1.curve25519-aes-sha2" })
      }
      send(404, { errcode: "M_UNRECOGNIZED" })
    })
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as AddressInfo).port
      resolve({
        url: `http://127.0.0.1:${port}`,
        get tokenValid() {
          return state.tokenValid
        },
        set tokenValid(v: boolean) {
          state.tokenValid = v
        },
        close: () => new Promise((r) => server.close(() => r()))
      })
    })
  })

const writeConfig = (dir: string, homeserverUrl: string, extra = "") =>
  fs.writeFileSync(
    path.join(dir, "carapace.json5"),
    `{
  // doctor test
  gateway: { bind: "loopback", port: 18789, auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
  matrix: {
    enabled: true,
    homeserverUrl: "${homeserverUrl}",
    userId: "@cara:example.com",
    accessToken: "\${MATRIX_ACCESS_TOKEN}",
    deviceId: "DEV1",
    autoJoin: { allowUsers: ["@you:example.com"] },${extra}
  },
  anthropic: { apiKey: "\${ANTHROPIC_API_KEY}" },
  agents: { default: { model: "anthropic:claude-sonnet-4-6" } },
}
`,
    { mode: 0o600 }
  )

const byCheck = (r: DoctorReport, check: string) => r.findings.filter((f) => f.check === check)

let dir: string
let hs: FakeHomeserver
let env: Record<string, string>

beforeEach(async () => {
  dir = tmpDir("cara-doctor-")
  fs.chmodSync(dir, 0o700)
  hs = await fakeHomeserver()
  env = {
    CARAPACE_STATE_DIR: dir,
    CARAPACE_CONFIG_PASSWORD: "doctor-test-password",
    CARAPACE_GATEWAY_TOKEN: "g".repeat(64),
    MATRIX_ACCESS_TOKEN: TOKEN,
    ANTHROPIC_API_KEY: "sk-ant-doctor-test"
  }
  writeConfig(dir, hs.url)
  fs.mkdirSync(path.join(dir, "matrix"), { mode: 0o700 })
  fs.writeFileSync(path.join(dir, "matrix", "recovery_key"), `${RECOVERY_KEY}\n`, { mode: 0o600 })
})

afterEach(async () => {
  await hs.close()
})

describe("cara doctor", () => {
  it.effect("a recovery_key that does not open the homeserver's secret storage is an error, not ok", () =>
    Effect.gen(function*() {
      for (const wrong of [encodeRecoveryKey(new Uint8Array(32).fill(6))!, "garbage, not a key"]) {
        fs.writeFileSync(path.join(dir, "matrix", "recovery_key"), `${wrong}\n`, { mode: 0o600 })
        const r = yield* runDoctor({ env })
        const f = r.findings.find((x) => x.check === "cross-signing")
        expect(f?.status, JSON.stringify(f)).toBe("error")
        expect(f?.kind).toBe("recovery-key-restore-failed")
        expect(f?.message).toContain("reason=wrong-key")
        expect(f?.remediation).toContain("cara matrix recovery-key restore")
        expect(JSON.stringify(r)).not.toContain(wrong)
      }
    }))

  it.effect("a healthy installation: every check ok or skipped, exit 0", () =>
    Effect.gen(function*() {
      const report = yield* runDoctor({ env })
      const bad = report.findings.filter((f) => f.status === "warn" || f.status === "error")
      expect(bad).toEqual([])
      expect(report.exitCode).toBe(0)
      // Every documented check reports, in order.
      expect([...new Set(report.findings.map((f) => f.check))]).toEqual([...DOCTOR_CHECKS])
      expect(byCheck(report, "token")[0]?.message).toContain("@cara:example.com (device DEV1)")
      expect(byCheck(report, "cross-signing")[0]?.status).toBe("ok")
      expect(byCheck(report, "backup")[0]?.message).toContain("version 3")
      // No secret reaches the report.
      const text = renderDoctor(report, false) + renderDoctor(report, true)
      for (const secret of Object.values(env).filter((v) => v !== dir)) expect(text).not.toContain(secret)
    }))

  it.effect("broken: loose modes, an interrupted rekey, a revoked token and a stale cleanup journal; each with a remediation, exit 2", () =>
    Effect.gen(function*() {
      fs.chmodSync(path.join(dir, "matrix", "recovery_key"), 0o644)
      fs.writeFileSync(path.join(dir, "matrix", "store_passphrase.rekeying"), "rekeying\n", { mode: 0o600 })
      fs.writeFileSync(path.join(dir, "matrix", "recovery_key.cleanup"), JSON.stringify({ phase: "started" }), {
        mode: 0o600
      })
      hs.tokenValid = false
      const report = yield* runDoctor({ env })
      expect(report.exitCode).toBe(2)
      const modes = byCheck(report, "file-modes")[0]!
      expect(modes.status).toBe("error")
      expect(modes.message).toContain(`${path.join(dir, "matrix", "recovery_key")} (644, expected 600)`)
      const rekey = byCheck(report, "rekey")[0]!
      expect(rekey).toMatchObject({ status: "error", kind: "interrupted-rekey" })
      expect(rekey.remediation).toContain("cara matrix rekey-store --new")
      expect(byCheck(report, "recovery")[0]).toMatchObject({ status: "error", kind: "recovery-state-io" })
      const token = byCheck(report, "token")[0]!
      expect(token).toMatchObject({ status: "error", kind: "auth-token-revoked" })
      expect(token.message).toContain("M_UNKNOWN_TOKEN")
      for (const f of report.findings.filter((x) => x.status === "error" || x.status === "warn")) {
        expect(f.remediation?.length ?? 0).toBeGreaterThan(10)
      }
    }))

  it.effect("config errors and a missing password are findings, not crashes; unreachable homeserver is an error", () =>
    Effect.gen(function*() {
      writeConfig(dir, "http://127.0.0.1:9", `\n    password: "\${MATRIX_PASSWORD}",`)
      const { MATRIX_ACCESS_TOKEN: _t, CARAPACE_CONFIG_PASSWORD: _p, ...rest } = env
      const report = yield* runDoctor({ env: { ...rest, MATRIX_PASSWORD: "pw" }, timeoutMs: 3000 })
      expect(report.exitCode).toBe(2)
      expect(byCheck(report, "config")[0]).toMatchObject({ status: "error", kind: "config-invalid" })
      expect(byCheck(report, "config")[0]?.message).toContain(".matrix.accessToken")
      expect(byCheck(report, "config-password")[0]?.status).toBe("warn")
      // With config errors, the homeserver checks are skipped rather than guessed.
      expect(byCheck(report, "homeserver")[0]?.status).toBe("skip")
    }))

  it.effect("an unreachable homeserver is an error naming the URL", () =>
    Effect.gen(function*() {
      writeConfig(dir, "http://127.0.0.1:9")
      const report = yield* runDoctor({ env, timeoutMs: 3000 })
      const home = byCheck(report, "homeserver")[0]!
      expect(home.status).toBe("error")
      expect(home.message).toContain("http://127.0.0.1:9")
      expect(byCheck(report, "token")[0]?.status).toBe("skip")
    }))

  it("exit code is the worst finding", () => {
    expect(exitCodeOf([{ check: "a", status: "ok", message: "" }, { check: "b", status: "skip", message: "" }])).toBe(0)
    expect(exitCodeOf([{ check: "a", status: "warn", message: "", remediation: "x" }])).toBe(1)
    expect(
      exitCodeOf([{ check: "a", status: "warn", message: "", remediation: "x" }, {
        check: "b",
        status: "error",
        message: "",
        remediation: "y"
      }])
    ).toBe(2)
  })

  it("the built CLI: `cara doctor --json --offline` prints the report and exits with its code", () => {
    const healthy = runCli(["doctor", "--json", "--offline"], cleanEnv(dir, env))
    expect(healthy.stderr).toBe("")
    const report = JSON.parse(healthy.stdout) as DoctorReport
    expect(report.findings.find((f) => f.check === "homeserver")).toMatchObject({
      status: "skip",
      message: "--offline"
    })
    expect(healthy.status).toBe(0)
    fs.chmodSync(path.join(dir, "carapace.json5"), 0o644)
    const broken = runCli(["doctor", "--offline"], cleanEnv(dir, env))
    expect(broken.status).toBe(2)
    expect(broken.stdout).toMatch(/ERROR file-modes: .*carapace\.json5 \(644, expected 600\)/)
    expect(broken.stdout).toContain("-> chmod 600")
  })
})

describe("cara doctor: the stores", () => {
  it.effect("opens existing stores with the resolved key; a different key is encrypted-store-passphrase-mismatch", () =>
    Effect.gen(function*() {
      const { SqliteFile } = yield* Effect.promise(() => import("../../src/layers/durable-idb/sqliteFile.js"))
      for (
        const [name, role] of [["matrix-sdk-crypto.sqlite3", "crypto"], ["matrix-sdk-state.sqlite3", "state"]] as const
      ) {
        const f = yield* Effect.promise(() =>
          SqliteFile.open(path.join(dir, "matrix", name), role, { encrypted: true, passphrase: "store-key-one" })
        )
        f.close()
      }
      const good = yield* runDoctor({ env: { ...env, MATRIX_STORE_PASSPHRASE: "store-key-one" }, offline: true })
      expect(byCheck(good, "stores")[0]).toMatchObject({ status: "ok" })
      expect(byCheck(good, "lock")[0]?.message).toContain("free")
      const bad = yield* runDoctor({ env: { ...env, MATRIX_STORE_PASSPHRASE: "store-key-two" }, offline: true })
      expect(byCheck(bad, "stores")[0]).toMatchObject({ status: "error", kind: "encrypted-store-passphrase-mismatch" })
      expect(bad.exitCode).toBe(2)
      expect(renderDoctor(bad, true)).not.toContain("store-key-two")
    }))
})

describe("cara doctor: the maintenance lock", () => {
  it.scoped("while another process holds the lock, doctor names the holder and does not open the stores", () =>
    Effect.gen(function*() {
      const { makeStateDir } = yield* Effect.promise(() => import("../../src/layers/StateDirLive.js"))
      const { acquireRekeyLock } = yield* Effect.promise(() => import("../../src/layers/StorePassphraseLive.js"))
      const { SqliteFile } = yield* Effect.promise(() => import("../../src/layers/durable-idb/sqliteFile.js"))
      const f = yield* Effect.promise(() =>
        SqliteFile.open(path.join(dir, "matrix", "matrix-sdk-crypto.sqlite3"), "crypto", {
          encrypted: true,
          passphrase: "k"
        })
      )
      f.close()
      const sd = yield* makeStateDir(dir)
      yield* acquireRekeyLock(sd, "daemon")
      const report = yield* runDoctor({ env: { ...env, MATRIX_STORE_PASSPHRASE: "wrong" }, offline: true })
      const lock = byCheck(report, "lock")[0]!
      expect(lock.status).toBe("ok")
      expect(lock.message).toContain(`held by daemon (pid ${process.pid})`)
      // A wrong key would be an error if doctor opened the stores: it must not while they are in use.
      expect(byCheck(report, "stores")[0]?.status).toBe("skip")
    }))
})
