import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { cleanEnv, runCli, type RunningDaemon, startDaemon, tempStateDir } from "../support/cli.js"

const pkg = JSON.parse(fs.readFileSync("package.json", "utf8")) as { version: string }

const canConnect = (url: string) =>
  new Promise<boolean>((resolve) => {
    const { hostname, port } = new URL(url)
    const socket = net.connect({ host: hostname, port: Number(port) })
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

const writeConfig = (dir: string, text: string) => fs.writeFileSync(path.join(dir, "carapace.json5"), text)
// Every daemon config names its gateway token (#16.2: no gateway.auth refuses start).
const AUTH = `auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" }`
const TOKEN_ENV = { CARAPACE_GATEWAY_TOKEN: "daemon-test-gateway-token-0123456789" }

let running: RunningDaemon | undefined
afterEach(() => {
  running?.child.kill("SIGKILL")
  running = undefined
})

describe("cara (the daemon's first form)", () => {
  it("--version prints the package version", () => {
    const result = runCli(["--version"], cleanEnv(tempStateDir()))
    expect(result.status).toBe(0)
    expect(result.stdout.trim()).toBe(pkg.version)
  })

  it("--help describes the daemon and lists only working subcommands", () => {
    const result = runCli(["--help"], cleanEnv(tempStateDir()))
    expect(result.status).toBe(0)
    expect(result.stdout).toContain("starts the daemon")
    expect(result.stdout).toContain("config")
  })

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`serves GET /health from the configured port, then stops cleanly on ${signal}`, async () => {
      const dir = tempStateDir()
      writeConfig(
        dir,
        `{
        // port 0: the OS picks a free port; the ready line says which
        gateway: { port: 0, bind: "loopback", ${AUTH} },
      }`
      )
      running = await startDaemon(cleanEnv(dir, TOKEN_ENV))
      expect(running.baseUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      expect(running.output().match(/ready: gateway listening/g)).toHaveLength(1)

      await new Promise((r) => setTimeout(r, 1100))
      const response = await fetch(`${running.baseUrl}/health`)
      expect(response.status).toBe(200)
      const body = (await response.json()) as Record<string, unknown>
      expect(body).toEqual({ status: "ok", version: pkg.version, uptimeSeconds: expect.any(Number) })
      expect(body["uptimeSeconds"]).toBeGreaterThanOrEqual(1)

      running.child.kill(signal)
      const { code } = await running.exited
      expect(code).toBe(0)
      expect(await canConnect(running.baseUrl)).toBe(false)
    })
  }

  it("listens on gateway.port from the config", async () => {
    const probe = net.createServer()
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r))
    const port = (probe.address() as net.AddressInfo).port
    await new Promise<void>((r) => probe.close(() => r()))
    const dir = tempStateDir()
    writeConfig(dir, `{ gateway: { port: ${port}, ${AUTH} } }`)
    running = await startDaemon(cleanEnv(dir, TOKEN_ENV))
    expect(running.baseUrl).toBe(`http://127.0.0.1:${port}`)
    expect((await fetch(`${running.baseUrl}/health`)).status).toBe(200)
  })

  it("a port already in use fails with a message that says what to do", async () => {
    const blocker = net.createServer()
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r))
    const port = (blocker.address() as net.AddressInfo).port
    try {
      const dir = tempStateDir()
      writeConfig(dir, `{ gateway: { port: ${port}, ${AUTH} } }`)
      const result = runCli([], cleanEnv(dir, TOKEN_ENV))
      expect(result.status).toBe(1)
      expect(result.stderr).toContain(`Port ${port} on 127.0.0.1 is already in use`)
      expect(result.stderr).toContain("gateway.port")
      expect(result.stderr).not.toContain("    at ")
    } finally {
      await new Promise<void>((r) => blocker.close(() => r()))
    }
  })

  it("a malformed config file stops startup with the file, line and column", () => {
    const dir = tempStateDir()
    writeConfig(dir, "{\n  gateway: { port: 0,\n")
    const result = runCli([], cleanEnv(dir, TOKEN_ENV))
    expect(result.status).toBe(1)
    expect(result.stderr).toContain(`${path.join(dir, "carapace.json5")}:3:1`)
    expect(result.stderr).toContain("[config-invalid]")
  })

  it("an invalid gateway.bind stops startup and names the path", () => {
    const dir = tempStateDir()
    writeConfig(dir, `{ gateway: { bind: "everywhere" } }`)
    const result = runCli([], cleanEnv(dir, TOKEN_ENV))
    expect(result.status).toBe(1)
    expect(result.stderr).toContain(".gateway.bind")
  })

  it("with no config file at all the defaults are valid and the state dir is created 0700", async () => {
    const dir = path.join(tempStateDir(), "fresh")
    // The default port may be taken on a busy machine; only the state dir and the defaults are checked here.
    const result = runCli(["config", "check"], cleanEnv(dir, TOKEN_ENV))
    expect(result.status).toBe(0)
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700)
  })
})

describe("cara daemon: auth fails closed (#16.2)", () => {
  for (
    const [label, gateway, env] of [
      ["no gateway.auth", `{ port: 0 }`, {}],
      ["a token variable that is unset", `{ port: 0, ${AUTH} }`, {}],
      ["a token variable that is empty", `{ port: 0, ${AUTH} }`, { CARAPACE_GATEWAY_TOKEN: "" }],
      ["no mode and an empty token", `{ port: 0, auth: { token: "" } }`, {}]
    ] as const
  ) {
    it(`refuses to start with ${label} and says how to set CARAPACE_GATEWAY_TOKEN`, () => {
      const dir = tempStateDir()
      writeConfig(dir, `{ gateway: ${gateway} }`)
      const result = runCli([], cleanEnv(dir, env))
      expect(result.status).toBe(1)
      expect(result.stderr).toContain("CARAPACE_GATEWAY_TOKEN")
      expect(result.stdout + result.stderr).not.toContain("ready: gateway listening")
    })
  }

  it("an explicit mode \"none\" on loopback starts, with a warning at start", async () => {
    const dir = tempStateDir()
    writeConfig(dir, `{ gateway: { port: 0, auth: { mode: "none" } } }`)
    running = await startDaemon(cleanEnv(dir))
    expect(running.output()).toContain("gateway.auth.mode is \"none\"")
    // and in every report an operator reads: status (which needs no token then) and doctor
    const port = new URL(running.baseUrl).port
    const status = runCli(["status", "--port", port], cleanEnv(dir))
    expect(status.status, status.stderr).toBe(0)
    expect(status.stdout).toContain("WARNING:  gateway auth is OFF (gateway.auth.mode \"none\")")
    expect(status.stdout).not.toContain("gateway-token-missing")
    const json = JSON.parse(runCli(["status", "--port", port, "--json"], cleanEnv(dir)).stdout) as {
      warnings?: Array<string>
    }
    expect(json.warnings?.[0]).toContain("gateway auth is OFF")
    const doctor = runCli(["doctor", "--offline", "--json"], cleanEnv(dir))
    const report = JSON.parse(doctor.stdout) as { findings: Array<{ check: string; status: string; kind?: string }> }
    expect(report.findings.find((f) => f.check === "config")).toMatchObject({
      status: "warn",
      kind: "gateway-auth-off"
    })
    expect(doctor.status).not.toBe(0)
  })
})

/** Writes raw bytes to the daemon and keeps the socket open without reading (a client that never reads). */
const rawSocket = (baseUrl: string, request: string) =>
  new Promise<net.Socket>((resolve, reject) => {
    const { hostname, port } = new URL(baseUrl)
    const socket = net.connect({ host: hostname, port: Number(port) }, () => {
      socket.write(request)
      socket.pause()
      resolve(socket)
    })
    socket.once("error", reject)
  })

describe("cara daemon: shutdown always completes (#16.4)", () => {
  it("after upgrade requests with a missing key, a bad version and a client that never reads, SIGTERM exits within 10 s and frees port and lock", async () => {
    const dir = tempStateDir()
    writeConfig(dir, `{ gateway: { port: 0, ${AUTH} } }`)
    running = await startDaemon(cleanEnv(dir, TOKEN_ENV))
    const host = new URL(running.baseUrl).host
    const auth = `Authorization: Bearer ${TOKEN_ENV.CARAPACE_GATEWAY_TOKEN}\r\n`
    const upgrade = (extra: string) =>
      `GET /ws HTTP/1.1\r\nHost: ${host}\r\n${auth}Connection: Upgrade\r\nUpgrade: websocket\r\n${extra}\r\n`
    const sockets = await Promise.all([
      rawSocket(running.baseUrl, upgrade("Sec-WebSocket-Version: 13\r\n")),
      rawSocket(
        running.baseUrl,
        upgrade("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n")
      ),
      rawSocket(
        running.baseUrl,
        upgrade("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
      ),
      rawSocket(running.baseUrl, `GET /ws HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n`),
      rawSocket(
        running.baseUrl,
        `POST /control/matrix/send-test HTTP/1.1\r\nHost: ${host}\r\n${auth}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{`
      )
    ])
    try {
      // let the daemon take them all in before the signal (polled, not slept)
      for (let i = 0; i < 100 && !(await canConnect(running.baseUrl)); i++) await new Promise((r) => setTimeout(r, 50))
      const t0 = performance.now()
      running.child.kill("SIGTERM")
      const timeout = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 10_000))
      const result = await Promise.race([running.exited, timeout])
      expect(result, `daemon did not exit within 10 s of SIGTERM after ${Math.round(performance.now() - t0)} ms`).not
        .toBe("timeout")
      expect(await canConnect(running.baseUrl)).toBe(false)
      // the maintenance lock is free: a new daemon on the same state dir starts
      running = await startDaemon(cleanEnv(dir, TOKEN_ENV))
    } finally {
      for (const s of sockets) s.destroy()
    }
  })
})

describe("cara daemon without Matrix state (#16.9, #17.7)", () => {
  it("the DLQ lists empty and purge answers purged: 0; send-test is 503 matrix-runtime-unavailable", async () => {
    const dir = tempStateDir()
    writeConfig(dir, `{ gateway: { port: 0, ${AUTH} } }`)
    running = await startDaemon(cleanEnv(dir, TOKEN_ENV))
    const call = async (method: "GET" | "POST", p: string, body?: unknown) => {
      const r = await fetch(`${running!.baseUrl}${p}`, {
        method,
        headers: {
          authorization: `Bearer ${TOKEN_ENV.CARAPACE_GATEWAY_TOKEN}`,
          ...(body !== undefined ? { "content-type": "application/json" } : {})
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {})
      })
      return { status: r.status, body: (await r.json()) as Record<string, unknown> }
    }
    expect(await call("GET", "/control/matrix/dlq")).toEqual({
      status: 200,
      body: { ok: true, records: [], undecodable: 0 }
    })
    expect(await call("POST", "/control/matrix/dlq/purge", { all: true })).toEqual({
      status: 200,
      body: { ok: true, purged: 0 }
    })
    expect(fs.existsSync(path.join(dir, "matrix", "inbound_dlq.jsonl"))).toBe(false)
    const probe = await call("POST", "/control/matrix/send-test", { roomId: "!room:example.org", text: "probe" })
    expect(probe.status).toBe(503)
    expect((probe.body["error"] as { kind: string }).kind).toBe("matrix-runtime-unavailable")
  })
})
