// The acting commands without Effect (src/cli/liteActions.ts: `cara matrix dlq show|replay|purge`, `cara matrix
// accept|cancel|verify`) print what the full command tree prints, byte for byte, exit code included, and send the
// same request: against a stand-in daemon that records every request (answers with data, the endpoints' errors,
// and answers the lite start does not know), and against a real daemon. A POST reaches the daemon exactly once:
// on an answer it does not know, the lite start says so instead of handing the command to the full tree.
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cleanEnv, moduleTrace, runCliAsync, type RunningDaemon, startDaemon, tempStateDir } from "../support/cli.js"

const TOKEN = "cli-lite-actions-token-5b7e19c3"
const CONFIG = `{
  gateway: { port: 0, bind: "loopback", auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
}`

let dir = ""

/** Which start answered: the lite one loads dist/cli/liteActions-*.js and never the tree (dist/cli/run-*.js). */
const traced = (env: NodeJS.ProcessEnv) => {
  const t = moduleTrace(dir, env)
  return {
    env: t.env,
    taken: (): "lite" | "tree" | "neither" => {
      const urls = t.loaded()
      if (urls.some((u) => /\/dist\/cli\/run-[A-Z0-9]+\.js$/.test(u))) return "tree"
      return urls.some((u) => /\/dist\/cli\/liteActions-[A-Z0-9]+\.js$/.test(u)) ? "lite" : "neither"
    }
  }
}

const run = runCliAsync

beforeAll(() => {
  dir = tempStateDir()
  fs.writeFileSync(path.join(dir, "carapace.json5"), CONFIG)
})

// ---------------------------------------------------------------------------------------------------------
// The stand-in

const FLOW = {
  flowId: "mvr_abc",
  protocolFlowId: "txn1",
  userId: "@alice:example.org",
  deviceId: "ALICEDEV",
  state: "keys_exchanged",
  sas: { emoji: [{ symbol: "🐶", description: "Dog \u001b[31m" }], decimals: [1234, 5678, 9012] },
  createdAt: 1767322800000,
  updatedAt: 1767322801000
}
const REQUESTED = { ...FLOW, flowId: "mvr_def", state: "requested", sas: undefined }
const RECORD = {
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
}

type Mode =
  | "data"
  | "errors"
  | "unauthorized"
  | "unavailable"
  | "extra-field"
  | "server-error"
  | "strict-kind"
  | "leak"
let mode: Mode = "data"

interface Seen {
  readonly method: string
  readonly url: string
  readonly type: string | undefined
  readonly length: string | undefined
  readonly body: string
}
let seen: Array<Seen> = []

const err = (status: number, kind: string, message: string): [number, unknown] => [
  status,
  { ok: false, error: { kind, message } }
]

/** The answer of each route: the data, and the error each endpoint declares in `errors` mode. */
const ROUTES: Record<string, { data: [number, unknown]; error: [number, unknown] }> = {
  "GET /control/matrix/dlq/dlq_1?reveal=false": {
    data: [200, { ok: true, record: RECORD }],
    error: err(404, "dlq-record-not-found", "no DLQ record dlq_1")
  },
  "POST /control/matrix/dlq/replay": {
    data: [200, {
      ok: true,
      report: { replayed: 1, failed: 1, dropped: 0, quarantined: 0, deferred: 0, remaining: 1 }
    }],
    error: err(502, "dlq-dispatch-failure", "the model is \u001b[1mdown")
  },
  "POST /control/matrix/dlq/purge": {
    data: [200, { ok: true, purged: 2 }],
    error: err(404, "dlq-record-not-found", "no DLQ record dlq_1")
  },
  "POST /control/matrix/verifications/mvr_def/accept": {
    data: [200, { ok: true, verification: { ...REQUESTED, sas: undefined } }],
    error: err(409, "verification-flow-not-ready", "not ready")
  },
  "POST /control/matrix/verifications/mvr_abc/accept": {
    data: [200, { ok: true, verification: FLOW }],
    error: err(410, "verification-cancelled", "the peer cancelled")
  },
  "POST /control/matrix/verifications/mvr_abc/cancel": {
    data: [200, { ok: true, verification: { ...FLOW, state: "cancelled" } }],
    error: err(404, "verification-flow-not-found", "no flow mvr_abc")
  },
  "POST /control/matrix/verify": {
    data: [201, { ok: true, verification: REQUESTED }],
    error: err(422, "invalid-user-id", "not a user id")
  }
}

const answer = (method: string, url: string): [number, unknown] => {
  const route = ROUTES[`${method} ${url}`]
  if (route === undefined) return err(404, "not-found", "no such route")
  switch (mode) {
    case "data":
      return route.data
    case "errors":
      return route.error
    case "unauthorized":
      return err(401, "unauthorized", "invalid gateway \u001b[1mtoken\u001b[0m")
    case "unavailable":
      return err(503, "some-newer-kind", "the Matrix runtime is not running")
    case "extra-field":
      return [route.data[0], { ...(route.data[1] as object), addedLater: 1 }]
    case "server-error":
      return err(500, "internal", "boom")
    case "leak":
      // an error that quotes the credential: the full path's redactor would change it
      return [route.error[0], { ok: false, error: { kind: "not-found", message: `bad ${TOKEN}` } }]
    case "strict-kind":
      // a verification endpoint's 404 with a kind its class does not have, a DLQ answer without its fields: the
      // typed client cannot decode either
      return url.includes("verif") ? err(404, "not-found", "gone") : [200, { ok: true }]
  }
}

let standIn: http.Server | undefined
let standInPort = 0

beforeAll(async () => {
  standIn = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      seen.push({
        method: req.method ?? "",
        url: req.url ?? "",
        type: req.headers["content-type"],
        length: req.headers["content-length"],
        body: Buffer.concat(chunks).toString("utf8")
      })
      const [status, body] = answer(req.method ?? "", req.url ?? "")
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body))
    })
  })
  await new Promise<void>((r) => standIn!.listen(0, "127.0.0.1", r))
  standInPort = (standIn.address() as net.AddressInfo).port
})

afterAll(() => {
  standIn?.close()
})

const COMMANDS: ReadonlyArray<ReadonlyArray<string>> = [
  ["matrix", "dlq", "show", "dlq_1"],
  ["matrix", "dlq", "show", "--json", "dlq_1"],
  ["matrix", "dlq", "replay", "dlq_1"],
  ["matrix", "dlq", "replay", "--all", "--json"],
  ["matrix", "dlq", "purge", "dlq_1", "--yes"],
  ["matrix", "dlq", "purge", "--all", "--yes", "--json"],
  ["matrix", "accept", "mvr_def"],
  ["matrix", "accept", "mvr_abc", "--json"],
  ["matrix", "cancel", "mvr_abc"],
  ["matrix", "verify", "@alice:example.org"],
  ["matrix", "verify", "@alice:example.org", "ALICEDEV", "--json"]
]

/** Runs `args` on the lite start (traced) and on the full tree, with the requests each sent. */
const compare = async (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv) => {
  const t = traced(env)
  seen = []
  const fast = await run(args, t.env)
  const fastSeen = seen
  seen = []
  const tree = await run(args, { ...env, CARA_DIRECT: "off" })
  const treeSeen = seen
  return { fast, tree, taken: t.taken(), fastSeen, treeSeen }
}

describe("the acting commands without Effect, against a stand-in daemon", () => {
  const env = () => cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN })

  it("print what the tree prints and send the same single request, for data, errors, 401 and 503", async () => {
    for (const m of ["data", "errors", "unauthorized", "unavailable"] as const) {
      mode = m
      for (const command of COMMANDS) {
        const { fast, fastSeen, taken, tree, treeSeen } = await compare(
          [...command, "--port", String(standInPort)],
          env()
        )
        const name = `${m}: ${command.join(" ")}`
        expect(taken, name).toBe("lite")
        expect(fast.status, name).toBe(tree.status)
        expect(fast.stdout, name).toBe(tree.stdout)
        expect(fast.stderr, name).toBe(tree.stderr)
        expect(fastSeen.length, name).toBe(1)
        expect(fastSeen, name).toEqual(treeSeen)
        if (m === "data") expect(fast.status, name).toBe(command[2] === "replay" ? 1 : 0)
        else expect(fast.status, name).toBe(1)
      }
    }
  })

  it("on an answer it does not know, a GET goes to the tree and a POST is never sent again", async () => {
    for (const m of ["extra-field", "server-error", "strict-kind"] as const) {
      mode = m
      for (const command of COMMANDS) {
        const { fast, fastSeen, taken, tree } = await compare([...command, "--port", String(standInPort)], env())
        const name = `${m}: ${command.join(" ")}`
        if (command[2] === "show") {
          expect(taken, name).toBe("tree")
          expect(fastSeen.length, name).toBe(2)
          expect(fast.stdout, name).toBe(tree.stdout)
          expect(fast.stderr, name).toBe(tree.stderr)
          expect(fast.status, name).toBe(tree.status)
          continue
        }
        expect(taken, name).toBe("lite")
        expect(fastSeen.map((s) => s.method), name).toEqual(["POST"])
        expect(fast.status, name).toBe(1)
        expect(fast.stdout, name).toBe("")
        expect(fast.stderr, name).toMatch(/the request was not sent again: see `cara matrix (dlq list|verifications)`/)
        expect(fast.stderr, name).toContain("[gateway-bad-response]")
      }
    }
  })

  it("an error the redactor would change: a GET goes to the tree, a POST says so without the message", async () => {
    mode = "leak"
    for (const command of [["matrix", "dlq", "show", "dlq_1"], ["matrix", "dlq", "purge", "dlq_1", "--yes"]]) {
      const { fast, fastSeen, taken, tree } = await compare([...command, "--port", String(standInPort)], env())
      const name = command.join(" ")
      expect(fast.stderr, name).not.toContain(TOKEN)
      expect(tree.stderr, name).not.toContain(TOKEN)
      expect(fast.status, name).toBe(1)
      if (command[2] === "show") {
        expect(taken, name).toBe("tree")
        expect(fast.stderr, name).toBe(tree.stderr)
      } else {
        expect(taken, name).toBe("lite")
        expect(fastSeen.length, name).toBe(1)
        expect(fast.stderr, name).toContain("the request was not sent again")
      }
    }
  })

  it("leaves prompts, argument errors, confirm and CARA_LITE=off to the tree, having sent nothing itself", async () => {
    mode = "data"
    const cases: ReadonlyArray<[ReadonlyArray<string>, NodeJS.ProcessEnv, number]> = [
      // the typed confirmation (stdin is empty: not confirmed, nothing sent)
      [["matrix", "dlq", "purge", "dlq_1"], env(), 0],
      [["matrix", "dlq", "replay", "dlq_1", "--all"], env(), 0],
      [["matrix", "dlq", "replay"], env(), 0],
      [["matrix", "confirm", "mvr_abc", "--match"], env(), 0],
      [["matrix", "dlq", "show", "dlq 1"], env(), 1],
      [["matrix", "accept", "mvr:x"], env(), 1],
      [["matrix", "accept", "mvr_abc"], { ...env(), CARA_LITE: "off" }, 1]
    ]
    for (const [command, e, requests] of cases) {
      const { fast, fastSeen, taken, tree, treeSeen } = await compare([...command, "--port", String(standInPort)], e)
      const name = command.join(" ")
      expect(taken, name).not.toBe("lite")
      expect(fastSeen.length, name).toBe(requests)
      expect(treeSeen.length, name).toBe(requests)
      expect(fast.status, name).toBe(tree.status)
      expect(fast.stdout, name).toBe(tree.stdout)
      expect(fast.stderr, name).toBe(tree.stderr)
    }
  })

  it("--reveal when stdout is not a terminal: the tree's refusal, nothing sent", async () => {
    const { fast, fastSeen, taken, tree } = await compare(
      ["matrix", "dlq", "show", "dlq_1", "--reveal", "--port", String(standInPort)],
      env()
    )
    expect(taken).toBe("lite")
    expect(fastSeen).toEqual([])
    expect(fast.status).toBe(1)
    expect(fast.stderr).toBe(tree.stderr)
    expect(fast.stderr).toContain("[dlq-reveal-not-terminal]")
  })

  it("a closed port: the tree's unreachable line", async () => {
    const probe = net.createServer()
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r))
    const closed = (probe.address() as net.AddressInfo).port
    await new Promise<void>((r) => probe.close(() => r()))
    for (const command of [["matrix", "dlq", "replay", "--all"], ["matrix", "accept", "mvr_abc"]]) {
      const { fast, taken, tree } = await compare([...command, "--port", String(closed)], env())
      expect(taken).toBe("lite")
      expect(fast.status).toBe(1)
      expect(fast.stderr).toBe(tree.stderr)
      expect(fast.stderr).toContain("[gateway-unreachable]")
    }
  })
})

// ---------------------------------------------------------------------------------------------------------
// A real daemon (no Matrix channel: its answers are the API's errors)

describe("the acting commands without Effect, against the daemon", () => {
  let daemon: RunningDaemon | undefined
  let port = 0
  beforeAll(async () => {
    daemon = await startDaemon(cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN }))
    port = Number(new URL(daemon.baseUrl).port)
  })
  afterAll(() => {
    daemon?.child.kill("SIGKILL")
  })

  it("print what the tree prints, with and without the credential", async () => {
    for (const extra of [{ CARAPACE_GATEWAY_TOKEN: TOKEN }, { CARAPACE_GATEWAY_TOKEN: "not-the-token" }]) {
      for (const command of COMMANDS) {
        const { fast, taken, tree } = await compare([...command, "--port", String(port)], cleanEnv(dir, extra))
        const name = `${command.join(" ")} ${extra.CARAPACE_GATEWAY_TOKEN}`
        expect(taken, name).toBe("lite")
        expect(fast.status, name).toBe(tree.status)
        expect(fast.stdout, name).toBe(tree.stdout)
        expect(fast.stderr, name).toBe(tree.stderr)
      }
    }
  })
})
