// The fast starts of the CLI (issue 19 §5) print what the full command tree prints, byte for byte, exit code
// included: `cara [command…] --help` from the table stored at build time (src/cli/helpTable.ts; CARA_HELP_TABLE=off
// is the tree), and the read-only gateway commands without the tree (src/cli/direct.ts; CARA_DIRECT=off) and,
// where it can be sure, without Effect (src/cli/lite.ts; CARA_LITE=off): against a daemon, against a stand-in
// that answers with data (and with answers the lite start must leave to the typed client), and a closed port.
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  cleanEnv,
  moduleTrace,
  runCli,
  runCliAsync,
  type RunningDaemon,
  startDaemon,
  tempStateDir
} from "../support/cli.js"

const TOKEN = "cli-direct-token-8c2f61e0a9d4"
const CONFIG = `{
  gateway: { port: 0, bind: "loopback", auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
}`

let dir = ""
let daemon: RunningDaemon | undefined
let port = 0
let closed = 0

beforeAll(async () => {
  dir = tempStateDir()
  fs.writeFileSync(path.join(dir, "carapace.json5"), CONFIG)
  daemon = await startDaemon(cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN }))
  port = Number(new URL(daemon.baseUrl).port)
  const probe = net.createServer()
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r))
  closed = (probe.address() as net.AddressInfo).port
  await new Promise<void>((r) => probe.close(() => r()))
})

afterAll(() => {
  daemon?.child.kill("SIGKILL")
})

// the daemon's uptime moves between the two runs
const steady = (s: string) =>
  s.replace(/Uptime: +[^\n]*/g, "Uptime: …").replace(/"uptimeSeconds": \d+/g, "\"uptimeSeconds\": 0")

const both = (args: ReadonlyArray<string>, extra: Record<string, string>, off: Record<string, string>) => {
  const fast = runCli(args, cleanEnv(dir, extra))
  const tree = runCli(args, cleanEnv(dir, { ...extra, ...off }))
  return { fast, tree }
}

// Which start answered: bench/_module-trace.mjs lists every module the process loaded; the Effect start of these
// commands is dist/cli/direct-*.js, the one without Effect dist/cli/lite-*.js.
const traceEnv = (env: NodeJS.ProcessEnv) => moduleTrace(dir, env)
const startTaken = (trace: ReturnType<typeof traceEnv>): "lite" | "direct" | "neither" => {
  const urls = trace.loaded()
  const direct = urls.some((u) => /\/dist\/cli\/direct-[A-Z0-9]+\.js$/.test(u))
  const lite = urls.some((u) => /\/dist\/cli\/lite-[A-Z0-9]+\.js$/.test(u))
  return direct ? "direct" : lite ? "lite" : "neither"
}

/** The CLI without blocking this process (the stand-in daemon below answers from it). */
const runAsync = runCliAsync

/** Runs `args` by the lite start (traced) and by the full tree; both outputs, and the start taken. */
const compare = async (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv) => {
  const traced = traceEnv(env)
  const fast = await runAsync(args, traced.env)
  const tree = await runAsync(args, { ...env, CARA_DIRECT: "off" })
  return { fast, tree, taken: startTaken(traced) }
}

describe("the fast starts print what the command tree prints", () => {
  it("help of the root and of commands at each depth, from the stored table", () => {
    for (
      const args of [["--help"], ["-h"], ["status", "--help"], ["matrix", "--help"], ["matrix", "dlq", "list", "-h"]]
    ) {
      const { fast, tree } = both(args, {}, { CARA_HELP_TABLE: "off" })
      expect(tree.status, args.join(" ")).toBe(0)
      expect(fast.status, args.join(" ")).toBe(0)
      expect(fast.stdout, args.join(" ")).toBe(tree.stdout)
      expect(fast.stderr, args.join(" ")).toBe(tree.stderr)
    }
  })

  it("status, dlq list, verifications and devices, with and without a credential, and against a closed port", () => {
    const cases: ReadonlyArray<[ReadonlyArray<string>, Record<string, string>]> = [
      [["status", "--port", String(port)], { CARAPACE_GATEWAY_TOKEN: TOKEN }],
      [["status", "--json", "--port", String(port)], { CARAPACE_GATEWAY_TOKEN: TOKEN }],
      [["status", "-p", String(port)], {}],
      [["status", `--port=${port}`, "--json"], { CARAPACE_GATEWAY_TOKEN: "not-the-token" }],
      [["status", "--port", String(closed)], { CARAPACE_GATEWAY_TOKEN: TOKEN }],
      [["matrix", "dlq", "list", "--port", String(port)], { CARAPACE_GATEWAY_TOKEN: TOKEN }],
      [["matrix", "verifications", "--json", "--port", String(port)], { CARAPACE_GATEWAY_TOKEN: TOKEN }],
      [["matrix", "devices", "--host", "127.0.0.1", "--port", String(port)], { CARAPACE_GATEWAY_TOKEN: TOKEN }],
      [["matrix", "dlq", "list", "--port", String(closed)], { CARAPACE_GATEWAY_TOKEN: TOKEN }]
    ]
    for (const [args, extra] of cases) {
      const { fast, tree } = both(args, extra, { CARA_DIRECT: "off" })
      const name = `${args.join(" ")} ${Object.keys(extra).join(",")}`
      expect(fast.status, name).toBe(tree.status)
      expect(steady(fast.stdout), name).toBe(steady(tree.stdout))
      expect(fast.stderr, name).toBe(tree.stderr)
      // the same through the Effect start of direct.ts (CARA_LITE=off), and the lite start did answer
      const traced = traceEnv(cleanEnv(dir, extra))
      const lite = runCli(args, traced.env)
      const direct = runCli(args, cleanEnv(dir, { ...extra, CARA_LITE: "off" }))
      expect(startTaken(traced), name).toBe("lite")
      expect(lite.status, name).toBe(direct.status)
      expect(steady(lite.stdout), name).toBe(steady(direct.stdout))
      expect(lite.stderr, name).toBe(direct.stderr)
    }
    // and they did talk to the daemon
    const ok = runCli(["status", "--port", String(port)], cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN }))
    expect(ok.status).toBe(0)
    expect(ok.stdout).toContain("Channels: 0/0 connected")
  })
})

describe("the start without Effect leaves what it is not sure of to the typed client", () => {
  it("a config port other than the default, without --port", () => {
    const traced = traceEnv(cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN }))
    const fast = runCli(["status"], traced.env)
    const tree = runCli(["status"], cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN, CARA_DIRECT: "off" }))
    expect(startTaken(traced)).toBe("direct")
    expect(fast.status).toBe(tree.status)
    expect(steady(fast.stdout)).toBe(steady(tree.stdout))
    expect(fast.stderr).toBe(tree.stderr)
  })
})

// ---------------------------------------------------------------------------------------------------------
// A stand-in daemon with data: the answers as the daemon encodes them (src/domain/api.ts), and variants.

const EXTRA = {
  joinedRoomCount: 3,
  encryptedRoomCount: 2,
  unencryptedRoomCount: 1,
  unsupportedRoomCount: 0,
  unsupportedRooms: [],
  pendingVerificationCount: 1,
  lastSuccessfulSyncAt: null,
  undecryptableEventCount: 4,
  unsupportedInboundCount: 0,
  inboundDispatchFailureTotal: 1,
  inboundDlqAppendFailureTotal: 0,
  inboundDlqUndecodableLostCount: 0,
  inboundDlqRecordCount: 2,
  inboundDlqDurabilityError: "disk \u001b[31mfull\u001b[0m",
  outboundPendingCount: 1,
  peerDropUnsupportedMsgtypeTotal: 0,
  peerDropAllowlistRejectionTotal: 2,
  peerDropBodyTooLargeTotal: 0,
  peerDropVerificationCapFullTotal: 0,
  peerDropEncryptedRoomTotal: 0,
  inboundDedupeCorruptLineTotal: 0,
  inboundBudgetRefusedRoomTotal: 5,
  inboundBudgetRefusedSenderTotal: 6,
  inboundBudgetNoticeTotal: 7,
  peerDropUnencryptedInEncryptedRoomTotal: 8,
  peerDropNotCrossSignedTotal: 9,
  inboundRedactedTotal: 0,
  deviceId: "BOTDEVICE",
  userId: "@bot:example.org",
  crossSigning: "verified",
  lastErrorKind: "sync-failed"
}
const ANSWERS: Record<string, unknown> = {
  "/health": { status: "ok", version: "0.0.0-stand-in", uptimeSeconds: 93784 },
  "/control/status": {
    ok: true,
    version: "0.0.0-stand-in",
    startedAt: "2026-01-02T03:04:05.000Z",
    uptimeSeconds: 93784,
    connectedChannels: 1,
    totalChannels: 1,
    runtime: { name: "node", version: "24.0.0", platform: "linux", arch: "x64" }
  },
  "/control/channels": {
    total: 1,
    connected: 1,
    channels: [{
      id: "matrix",
      name: "Matrix \u202eevil",
      status: "connected",
      lastConnectedAt: "2026-01-02T03:04:06.000Z",
      lastError: "sync timed out",
      statusChangedAt: "2026-01-02T03:04:06.000Z",
      extra: EXTRA
    }]
  },
  "/control/matrix/dlq": {
    ok: true,
    records: [
      {
        id: "dlq_1",
        direction: "inbound",
        eventId: "$e1",
        roomId: "!r:example.org",
        senderId: "@alice:example.org",
        receivedAt: 1767322800000,
        encrypted: true,
        attempts: 2,
        nextAttemptAt: 1767322900000,
        lastError: "model \u001b]0;down",
        textBytes: 12
      },
      {
        id: "dlq_2",
        direction: "outbound",
        eventId: "$e2",
        roomId: "!r:example.org",
        senderId: "@bob:example.org",
        receivedAt: 1767322801000,
        encrypted: false,
        attempts: 0,
        textBytes: 3
      }
    ],
    undecodable: 1
  },
  "/control/matrix/verifications": {
    ok: true,
    verifications: [
      {
        flowId: "mvr_abc",
        protocolFlowId: "txn1",
        userId: "@alice:example.org",
        deviceId: "ALICEDEV",
        state: "keys_exchanged",
        sas: {
          emoji: [{ symbol: "🐶", description: "Dog" }, { symbol: "🔑", description: "Key" }],
          decimals: [1234, 5678, 9012]
        },
        createdAt: 1767322800000,
        updatedAt: 1767322801000
      },
      {
        flowId: "mvr_def",
        protocolFlowId: "$ev",
        userId: "@bob:example.org",
        roomId: "!dm:example.org",
        state: "requested",
        createdAt: 1767322802000,
        updatedAt: 1767322803000
      }
    ]
  },
  "/control/matrix/devices": {
    ok: true,
    devices: [
      { userId: "@bot:example.org", deviceId: "BOTDEVICE", displayName: "cara", verified: true },
      { userId: "@bot:example.org", deviceId: "OLD\u0007", verified: false, rawDeviceIdHex: "4f4c4407" }
    ]
  }
}

type Mode = "data" | "unauthorized" | "unavailable" | "extra-field" | "missing-default" | "server-error"
let mode: Mode = "data"
let standIn: http.Server | undefined
let standInPort = 0

const answer = (url: string): [number, unknown] => {
  const body = ANSWERS[url]
  if (body === undefined) return [404, { ok: false, error: { kind: "not-found", message: "no such route" } }]
  if (mode === "unauthorized" && url.startsWith("/control")) {
    return [401, { ok: false, error: { kind: "unauthorized", message: "invalid gateway \u001b[1mtoken\u001b[0m" } }]
  }
  if (mode === "unavailable" && url.startsWith("/control/matrix")) {
    return [503, { ok: false, error: { kind: "some-newer-kind", message: "the Matrix runtime is not running" } }]
  }
  if (mode === "server-error" && url.startsWith("/control")) {
    return [500, { ok: false, error: { kind: "internal", message: "boom" } }]
  }
  if (mode === "extra-field") return [200, { ...(body as object), addedLater: 1 }]
  if (mode === "missing-default" && url === "/control/channels") {
    const { inboundRedactedTotal: _, ...older } = EXTRA
    const c = body as { channels: Array<object> }
    return [200, { ...c, channels: [{ ...c.channels[0], extra: older }] }]
  }
  return [200, body]
}

describe("the start without Effect prints what the typed client prints, with data", () => {
  beforeAll(async () => {
    standIn = http.createServer((req, res) => {
      const [status, body] = answer(req.url ?? "")
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body))
    })
    await new Promise<void>((r) => standIn!.listen(0, "127.0.0.1", r))
    standInPort = (standIn.address() as net.AddressInfo).port
  })
  afterAll(() => {
    standIn?.close()
  })

  const COMMANDS: ReadonlyArray<ReadonlyArray<string>> = [
    ["status"],
    ["status", "--json"],
    ["matrix", "dlq", "list"],
    ["matrix", "dlq", "list", "--json"],
    ["matrix", "verifications"],
    ["matrix", "verifications", "--json"],
    ["matrix", "devices"],
    ["matrix", "devices", "--json"]
  ]
  const MODES: ReadonlyArray<[Mode, "lite" | "direct"]> = [
    ["data", "lite"],
    ["unauthorized", "lite"],
    ["unavailable", "lite"],
    ["extra-field", "direct"],
    ["server-error", "direct"]
  ]

  it("each command, --json or not, for answers with data, 401 and 503; others go to the typed client", async () => {
    for (const [m, start] of MODES) {
      mode = m
      for (const command of COMMANDS) {
        const args = [...command, "--port", String(standInPort)]
        const { fast, taken, tree } = await compare(args, cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN }))
        const name = `${m}: ${command.join(" ")}`
        // status asks /health first, which answers in every mode
        const expected = m === "unavailable" && command[0] === "status" ? "lite" : start
        expect(taken, name).toBe(expected)
        expect(fast.status, name).toBe(tree.status)
        expect(fast.stdout, name).toBe(tree.stdout)
        expect(fast.stderr, name).toBe(tree.stderr)
        if (m === "data") expect(fast.status, name).toBe(0)
      }
    }
  })

  it("status without a credential, and an older daemon's answer without a field that has a default", async () => {
    mode = "data"
    const bare = await compare(["status", "--port", String(standInPort)], cleanEnv(dir))
    expect(bare.taken).toBe("lite")
    expect(bare.fast.stdout).toBe(bare.tree.stdout)
    expect(bare.fast.stdout).toContain("no gateway token")
    mode = "missing-default"
    const older = await compare(
      ["status", "--port", String(standInPort)],
      cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN })
    )
    expect(older.taken).toBe("direct")
    expect(older.fast.stdout).toBe(older.tree.stdout)
    expect(older.fast.stderr).toBe(older.tree.stderr)
  })
})
