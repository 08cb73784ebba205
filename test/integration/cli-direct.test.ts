// The fast starts of the CLI (issue 19 §5) print what the full command tree prints, byte for byte, exit code
// included: `cara [command…] --help` from the table stored at build time (src/cli/helpTable.ts; CARA_HELP_TABLE=off
// is the tree), and the read-only gateway commands without the tree (src/cli/direct.ts; CARA_DIRECT=off).
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cleanEnv, runCli, type RunningDaemon, startDaemon, tempStateDir } from "../support/cli.js"

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
    }
    // and they did talk to the daemon
    const ok = runCli(["status", "--port", String(port)], cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: TOKEN }))
    expect(ok.status).toBe(0)
    expect(ok.stdout).toContain("Channels: 0/0 connected")
  })
})
