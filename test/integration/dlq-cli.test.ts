// `cara matrix dlq list|show|replay|purge` against a running daemon process (the built CLI, the real control
// API): records encrypted under the store passphrase on disk, bodies only with --reveal on a terminal, the
// typed purge confirmation, refusals with their kinds, and the counters in /control/channels and /metrics.
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { deriveDlqKey, type DlqRecord, encodeLine, recordId } from "../../src/domain/dlq.js"
import { deriveStorePassphrase } from "../../src/layers/StorePassphraseLive.js"
import { cleanEnv, CLI, runCli, type RunningDaemon, startDaemon, tempStateDir } from "../support/cli.js"

const TOKEN = "dlq-cli-gw-token-8c2e41f0"
const PASSWORD = "dlq cli test password"
const IID = "fedcba9876543210".repeat(4)

// Matrix is enabled (so the DLQ key is the derived store passphrase) but its homeserver is unreachable:
// the runtime fails to authenticate and no dispatcher is registered, while the gateway keeps serving.
const CONFIG = `{
  gateway: { port: 0, bind: "loopback", auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
  matrix: {
    enabled: true,
    homeserverUrl: "http://127.0.0.1:9",
    userId: "@bot:example.org",
    accessToken: "syt_unused_token",
    deviceId: "DLQCLIDEV",
  },
}`

const rec = (n: number): DlqRecord => ({
  eventId: `$dlqcli${n}:example.org`,
  roomId: "!room:example.org",
  senderId: "@alice:example.org",
  text: `secret body number ${n}`,
  receivedAt: Date.UTC(2026, 0, 1, 0, 0, n)
})

let dir = ""
let daemon: RunningDaemon | undefined
let port = 0
const env = (extra: Record<string, string> = {}) =>
  cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN, CARAPACE_CONFIG_PASSWORD: PASSWORD, ...extra })
const cli = (args: ReadonlyArray<string>, input?: string, extra: Record<string, string> = {}) =>
  runCli(["matrix", "dlq", ...args, "--port", String(port)], env(extra), input)
// A fresh connection per request: a kept-alive socket may be closed by the server between two tests.
const get = (url: string, headers: Record<string, string> = {}) =>
  new Promise<string>((resolve, reject) => {
    http.get(url, { agent: false, headers }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (c: string) => (body += c))
      res.on("end", () => resolve(body))
    }).on("error", reject)
  })
const dlqFile = () => path.join(dir, "matrix", "inbound_dlq.jsonl")
const auditEvents = () =>
  fs.readFileSync(path.join(dir, "audit.jsonl"), "utf8").trim().split("\n").map((l) =>
    JSON.parse(l) as { event: string; data: Record<string, unknown> }
  )

beforeAll(async () => {
  dir = tempStateDir()
  fs.writeFileSync(path.join(dir, "carapace.json5"), CONFIG)
  fs.writeFileSync(path.join(dir, "installation_id"), `${IID}\n`, { mode: 0o600 })
  fs.mkdirSync(path.join(dir, "matrix"), { mode: 0o700 })
  const key = deriveDlqKey(deriveStorePassphrase(PASSWORD, IID), IID)
  fs.writeFileSync(dlqFile(), [1, 2, 3].map((n) => encodeLine(rec(n), key)).concat(["{garbage"]).join("\n") + "\n", {
    mode: 0o600
  })
  daemon = await startDaemon(env())
  port = Number(new URL(daemon.baseUrl).port)
}, 60_000)

afterAll(() => {
  daemon?.child.kill("SIGKILL")
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("cara matrix dlq against a running daemon", () => {
  it("the gauge and the status counter show the records on disk at start", async () => {
    const metrics = await get(`${daemon!.baseUrl}/metrics`)
    expect(metrics).toContain("carapace_matrix_dlq_records 4")
    const channels = JSON.parse(
      await get(`${daemon!.baseUrl}/control/channels`, { authorization: `Bearer ${TOKEN}` })
    ) as {
      channels: Array<{ id: string; extra?: Record<string, unknown> }>
    }
    expect(channels.channels.find((c) => c.id === "matrix")?.extra?.["inboundDlqRecordCount"]).toBe(4)
  })

  it("list --json gives metadata of every decodable record and the undecodable count, never a body", () => {
    const r = cli(["list", "--json"])
    expect(r.status, r.stderr).toBe(0)
    const body = JSON.parse(r.stdout) as { records: Array<Record<string, unknown>>; undecodable: number }
    expect(body.undecodable).toBe(1)
    expect(body.records.map((x) => x["id"])).toEqual([1, 2, 3].map((n) => recordId(rec(n).eventId)))
    expect(body.records[0]).toMatchObject({
      eventId: rec(1).eventId,
      roomId: rec(1).roomId,
      senderId: rec(1).senderId,
      encrypted: true,
      attempts: 0
    })
    expect(r.stdout).not.toContain("secret body")
  })

  it("list (human) names each record and says how many lines are undecodable", () => {
    const r = cli(["list"])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toContain("3 record(s) in the inbound DLQ, 1 undecodable line(s)")
    for (const n of [1, 2, 3]) expect(r.stdout).toContain(recordId(rec(n).eventId))
    expect(r.stdout).not.toContain("secret body")
  })

  it("show hides the body; --reveal to a pipe is refused; --reveal on a terminal prints it", () => {
    const id = recordId(rec(2).eventId)
    const hidden = cli(["show", id])
    expect(hidden.status, hidden.stderr).toBe(0)
    expect(hidden.stdout).toContain(`Event:       ${rec(2).eventId}`)
    expect(hidden.stdout).toContain("hidden; add --reveal")
    expect(hidden.stdout).not.toContain("secret body")
    const piped = cli(["show", id, "--reveal"])
    expect(piped.status).not.toBe(0)
    expect(piped.stderr).toContain("[dlq-reveal-not-terminal]")
    expect(piped.stdout).not.toContain("secret body")
    // a pseudo-terminal for stdout (util-linux `script`)
    const cmd = [process.execPath, CLI, "matrix", "dlq", "show", id, "--reveal", "--port", String(port)].map((a) =>
      `'${a}'`
    ).join(" ")
    const tty = spawnSync("script", ["-qec", cmd, "/dev/null"], { env: env(), encoding: "utf8", timeout: 60_000 })
    expect(tty.status, tty.stdout + tty.stderr).toBe(0)
    expect(tty.stdout).toContain("secret body number 2")
  })

  it("an unknown id is not found; replay without a connected runtime is refused; id and --all together are refused", () => {
    const missing = cli(["show", "0123456789abcdef"])
    expect(missing.status).not.toBe(0)
    expect(missing.stderr).toContain("[dlq-record-not-found]")
    const replay = cli(["replay", "--all"])
    expect(replay.status).not.toBe(0)
    expect(replay.stderr).toContain("503 ServiceUnavailable: ")
    expect(replay.stderr).toContain("[matrix-runtime-unavailable]")
    expect(replay.stderr).toContain("not connected")
    const both = cli(["replay", recordId(rec(1).eventId), "--all"])
    expect(both.status).not.toBe(0)
    expect(both.stderr).toContain("[invalid-arguments]")
    expect(fs.readFileSync(dlqFile(), "utf8").trim().split("\n")).toHaveLength(4)
  })

  it("without the gateway token the call is refused", () => {
    const r = runCli(
      ["matrix", "dlq", "list", "--port", String(port)],
      cleanEnv(dir, { CARAPACE_CONFIG_PASSWORD: PASSWORD })
    )
    expect(r.status).not.toBe(0)
    expect(r.stderr).toMatch(/unauthorized|Unauthorized/)
  })

  it("purge asks for a typed confirmation: a wrong answer purges nothing, the right one purges the record (audited)", () => {
    const id = recordId(rec(1).eventId)
    const wrong = cli(["purge", id], "yes\n")
    expect(wrong.status).not.toBe(0)
    expect(wrong.stderr).toContain(`Type "purge ${id}" to confirm`)
    expect(wrong.stderr).toContain("[dlq-purge-not-confirmed]")
    expect(fs.readFileSync(dlqFile(), "utf8").trim().split("\n")).toHaveLength(4)
    const right = cli(["purge", id], `purge ${id}\n`)
    expect(right.status, right.stderr).toBe(0)
    expect(right.stdout).toContain("Purged 1 record(s)")
    const listed = JSON.parse(cli(["list", "--json"]).stdout) as { records: Array<{ id: string }> }
    expect(listed.records.map((x) => x.id)).toEqual([2, 3].map((n) => recordId(rec(n).eventId)))
    expect(auditEvents()).toContainEqual(
      expect.objectContaining({ event: "matrix_inbound_dlq_purged", data: { count: 1, scope: id } })
    )
  })

  it("purge --all --yes empties the DLQ for scripts", async () => {
    const r = cli(["purge", "--all", "--yes", "--json"])
    expect(r.status, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({ purged: 3 })
    expect(fs.existsSync(dlqFile())).toBe(false)
    expect(cli(["list"]).stdout).toContain("The inbound DLQ is empty.")
    const metrics = await get(`${daemon!.baseUrl}/metrics`)
    expect(metrics).toContain("carapace_matrix_dlq_records 0")
  })
})
