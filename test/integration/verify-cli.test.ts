// `cara verify` pieces that need no daemon: the start-up check over the channel metadata, the help link, and
// the encrypted-store check run by the real CLI against configs in a temp state dir.
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { emptyMatrixExtra } from "../../src/domain/channel.js"
import { HELP_ANCHOR, HELP_PATH, startUpCheck, summarize } from "../../src/programs/verify.js"
import { cleanEnv, runCli, tempStateDir } from "../support/cli.js"

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
const slug = (heading: string) => heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s-]/gu, "").replace(/\s/g, "-")

const closedPort = async () => {
  const probe = net.createServer()
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r))
  const port = (probe.address() as net.AddressInfo).port
  await new Promise<void>((r) => probe.close(() => r()))
  return port
}

const configDir = (port: number, matrix: string) => {
  const dir = tempStateDir()
  fs.writeFileSync(
    path.join(dir, "carapace.json5"),
    `{
  gateway: { port: ${port}, auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
  matrix: { enabled: true, homeserverUrl: "http://127.0.0.1:9", userId: "@cara:example.org", accessToken: "syt_x", deviceId: "DEV", ${matrix} },
}`,
    { mode: 0o600 }
  )
  return dir
}

describe("cara verify: start-up check", () => {
  it("waits while crossSigning is pending and passes once the start-up sequence reported its outcome", () => {
    const extra = (crossSigning?: "pending" | "unknown" | "not-bootstrapped" | "bootstrapped" | "verified") =>
      crossSigning === undefined ? emptyMatrixExtra : { ...emptyMatrixExtra, crossSigning }
    expect(startUpCheck(true, extra("pending"))).toBeUndefined()
    expect(startUpCheck(true, extra("bootstrapped"))).toMatchObject({
      status: "PASS",
      detail: "start-up sequence finished; cross-signing bootstrapped"
    })
    expect(startUpCheck(true, extra("verified"))?.status).toBe("PASS")
    expect(startUpCheck(true, extra("unknown"))?.status).toBe("PASS")
    expect(startUpCheck(true, extra("not-bootstrapped"))).toMatchObject({
      status: "FAIL",
      nextStep: expect.stringContaining("matrix.password")
    })
    // an older daemon that does not report it: not a pass
    expect(startUpCheck(true, extra())?.status).toBe("SKIP")
    // without encryption there is nothing to bootstrap, whatever is listed
    expect(startUpCheck(false, extra("pending"))?.status).toBe("PASS")
  })

  it("the help path names a section that exists in docs/channels.md", () => {
    const headings = fs.readFileSync("docs/channels.md", "utf8").split("\n").filter((l) => /^#{1,6} /.test(l)).map((
      l
    ) => slug(l.replace(/^#+ /, "")))
    expect(headings).toContain(HELP_ANCHOR)
    expect(HELP_PATH).toBe(`Next help path: docs/channels.md#${HELP_ANCHOR}`)
    const failed = summarize([{ status: "PASS", name: "a", detail: "" }, { status: "FAIL", name: "b", detail: "" }])
    expect(failed.ok).toBe(false)
    expect(failed.text).toContain(HELP_PATH)
  })
})

describe("cara verify: encrypted store check (real CLI)", () => {
  it("fails without a store key source in this shell, naming the variables to set", async () => {
    const dir = configDir(await closedPort(), "encrypted: true")
    const r = runCli(["verify", "--outcome", "matrix"], cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: "t" }))
    expect(r.status).toBe(1)
    expect(r.stdout).toContain("[FAIL] Matrix encrypted store: ")
    // the config loader refuses an encrypted set-up without a key source before the key is resolved
    expect(r.stdout).toMatch(/\[FAIL\] Matrix encrypted store: .*CARAPACE_CONFIG_PASSWORD.* \[config-invalid\]/)
    expect(r.stdout).toContain("next step: run `cara config check`")
    expect(r.stdout).not.toContain("Gateway reachability")
    expect(r.stdout).toContain(HELP_PATH)
  })

  it("an interrupted rekey fails with the rerun of rekey-store as the next step", async () => {
    const dir = configDir(await closedPort(), "encrypted: true")
    fs.mkdirSync(path.join(dir, "matrix"), { recursive: true, mode: 0o700 })
    fs.writeFileSync(path.join(dir, "matrix", "store_passphrase.pending"), "0".repeat(64) + "\n", { mode: 0o600 })
    const r = runCli(
      ["verify", "--outcome", "matrix"],
      cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: "t", CARAPACE_CONFIG_PASSWORD: "pw-0123456789" })
    )
    expect(r.status).toBe(1)
    expect(r.stdout).toContain("[interrupted-rekey]")
    expect(r.stdout).toContain("rekey-store --new")
  })

  it("passes with a key source (or without encryption), then goes on to the gateway", async () => {
    const port = await closedPort()
    const keyed = runCli(
      ["verify", "--outcome", "matrix"],
      cleanEnv(configDir(port, "encrypted: true"), {
        CARAPACE_GATEWAY_TOKEN: "t",
        CARAPACE_CONFIG_PASSWORD: "pw-0123456789"
      })
    )
    expect(keyed.stdout).toContain("[PASS] Matrix encrypted store: encrypted Matrix store secret is available")
    expect(keyed.stdout).toContain("[FAIL] Gateway reachability")
    const plain = runCli(
      ["verify", "--outcome", "matrix"],
      cleanEnv(configDir(port, "encrypted: false"), { CARAPACE_GATEWAY_TOKEN: "t" })
    )
    expect(plain.stdout).toContain(
      "[PASS] Matrix encrypted store: matrix.encrypted=false; only unencrypted rooms are supported"
    )
    expect(plain.status).toBe(1)
  })
})
