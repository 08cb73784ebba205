import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cleanEnv, runCli, type RunningDaemon, startDaemon, tempStateDir } from "../support/cli.js"

const TOKEN = "cli-gw-token-5e1d9a2c7b3f"
const pkg = JSON.parse(fs.readFileSync("package.json", "utf8")) as { version: string }

const freePort = async () => {
  const probe = net.createServer()
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r))
  const port = (probe.address() as net.AddressInfo).port
  await new Promise<void>((r) => probe.close(() => r()))
  return port
}

// The daemon and the CLI read the same config file (as an operator's two terminals would).
const CONFIG = `{
  gateway: { port: 0, bind: "loopback", auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
}`

let dir = ""
let daemon: RunningDaemon | undefined
let port = 0
const cliOutput: Array<string> = []

const cli = (args: ReadonlyArray<string>, extra: Record<string, string> = {}) => {
  const result = runCli(args, cleanEnv(dir, extra))
  cliOutput.push(result.stdout, result.stderr)
  return result
}

beforeAll(async () => {
  dir = tempStateDir()
  fs.writeFileSync(path.join(dir, "carapace.json5"), CONFIG)
  daemon = await startDaemon(cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN }))
  port = Number(new URL(daemon.baseUrl).port)
})

afterAll(() => {
  daemon?.child.kill("SIGKILL")
})

describe("cara status / cara verify against a running daemon", () => {
  it("status authenticates with CARAPACE_GATEWAY_TOKEN and shows gateway and channel status", () => {
    const r = cli(["status", "--port", String(port)], { CARAPACE_GATEWAY_TOKEN: TOKEN })
    expect(r.status).toBe(0)
    expect(r.stdout).toContain("cara gateway status")
    expect(r.stdout).toContain(`Version:  ${pkg.version}`)
    expect(r.stdout).toContain(`Address:  127.0.0.1:${port}`)
    expect(r.stdout).toContain("Channels: 0/0 connected")
    expect(r.stdout).toContain(`Platform: ${process.platform} (${process.arch})`)
  })

  it("status --json prints health, controlStatus and channels as JSON", () => {
    const r = cli(["status", "--json", "--port", String(port)], { CARAPACE_GATEWAY_TOKEN: TOKEN })
    expect(r.status).toBe(0)
    const body = JSON.parse(r.stdout) as Record<string, any>
    expect(body["health"]).toMatchObject({ status: "ok", version: pkg.version })
    expect(body["controlStatus"]).toMatchObject({ ok: true, totalChannels: 0, runtime: { name: "cara" } })
    expect(body["channels"]).toEqual({ total: 0, connected: 0, channels: [] })
    expect(body["controlError"]).toBeUndefined()
  })

  it("status without a token or with a wrong one shows health and says why the rest is missing", () => {
    const none = cli(["status", "--port", String(port)])
    expect(none.status).toBe(0)
    expect(none.stdout).toContain("Status:   ok")
    expect(none.stdout).toContain("gateway-token-missing")
    const wrong = cli(["status", "--json", "--port", String(port)], { CARAPACE_GATEWAY_TOKEN: "not-the-token" })
    expect(JSON.parse(wrong.stdout)["controlError"]["kind"]).toBe("unauthorized")
  })

  it("status against a closed port exits 1 with what to do", async () => {
    const closed = await freePort()
    const r = cli(["status", "--port", String(closed)])
    expect(r.status).toBe(1)
    expect(r.stderr).toContain(`Could not connect to cara at 127.0.0.1:${closed}`)
    expect(r.stderr).toContain("ECONNREFUSED")
    expect(r.stderr).toContain("Is the daemon running?")
  })

  it("verify --outcome matrix fails on a config without matrix, with a next step and exit 1", () => {
    const r = cli(["verify", "--outcome", "matrix", "--port", String(port)], { CARAPACE_GATEWAY_TOKEN: TOKEN })
    expect(r.status).toBe(1)
    expect(r.stdout).toContain("Outcome: matrix")
    expect(r.stdout).toContain(`Gateway port: ${port}`)
    expect(r.stdout).toContain("[FAIL] Matrix configuration: matrix config is missing")
    expect(r.stdout).toContain("      next step: ")
    expect(r.stdout).toContain("outcome verification incomplete (no checks passed)")
  })

  it("verify with matrix configured reaches the gateway, then fails registration when the runtime never connects", () => {
    // A separate config for the CLI only: the daemon above keeps running without Matrix.
    const cliDir = tempStateDir()
    fs.writeFileSync(
      path.join(cliDir, "carapace.json5"),
      `{
      gateway: { port: ${port}, auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
      matrix: { enabled: true, homeserverUrl: "http://127.0.0.1:9", userId: "@cara:example.org", accessToken: "syt_x", deviceId: "DEV", encrypted: false },
    }`
    )
    const r = runCli(
      ["verify", "--outcome", "matrix", "--wait", "1"],
      cleanEnv(cliDir, { CARAPACE_GATEWAY_TOKEN: TOKEN })
    )
    cliOutput.push(r.stdout, r.stderr)
    expect(r.stdout).toContain("[PASS] Matrix configuration: Matrix user @cara:example.org is configured")
    expect(r.stdout).toContain(`[PASS] Gateway reachability: service is reachable at 127.0.0.1:${port}`)
    expect(r.stdout).toContain(
      "[FAIL] Matrix runtime registration: matrix channel did not become connected within 1 seconds"
    )
    expect(r.stdout).toContain("outcome verification failed")
    expect(r.status).toBe(1)
  })

  it("verify with a wrong token names the credential problem", () => {
    const cliDir = tempStateDir()
    fs.writeFileSync(
      path.join(cliDir, "carapace.json5"),
      `{
      gateway: { port: ${port} },
      matrix: { enabled: true, homeserverUrl: "http://127.0.0.1:9", userId: "@cara:example.org", accessToken: "syt_x", deviceId: "DEV", encrypted: false },
    }`
    )
    const r = runCli(
      ["verify", "--outcome", "matrix", "--wait", "1"],
      cleanEnv(cliDir, { CARAPACE_GATEWAY_TOKEN: "wrong" })
    )
    cliOutput.push(r.stdout, r.stderr)
    expect(r.status).toBe(1)
    expect(r.stdout).toContain("[FAIL] Matrix runtime registration: control API refused the request")
    expect(r.stdout).toContain("[unauthorized]")
    expect(r.stdout).toContain("CARAPACE_GATEWAY_TOKEN")
  })

  it("a non-loopback bind without gateway auth is refused at startup", () => {
    const lanDir = tempStateDir()
    fs.writeFileSync(path.join(lanDir, "carapace.json5"), `{ gateway: { port: 0, bind: "lan" } }`)
    const r = runCli([], cleanEnv(lanDir))
    expect(r.status).not.toBe(0)
    expect(r.stderr).toContain("gateway.auth.mode")
    expect(r.stderr).toContain("[gateway-auth-config]")
    expect(r.stderr).not.toContain("ready: gateway listening")
  })

  it("neither the daemon's log nor any CLI output contains the gateway token", () => {
    expect(cliOutput.length).toBeGreaterThan(10)
    for (const text of [...cliOutput, daemon!.output()]) expect(text).not.toContain(TOKEN)
  })
})
