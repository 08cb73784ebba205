// From nothing to a verified bot (issue 21): `cara setup` with flags against the real Synapse, the exports it
// prints, the daemon started on that config, an encrypted DM from an Element-like client answered by the
// built-in `local:echo` model, and `cara verify --outcome matrix` passing. With CARA_TRANSCRIPT=<file> the
// commands and their output are written there (the note's transcript comes from this test).
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { expect, it } from "vitest"
import { cleanEnv, runCli, startDaemon, tempStateDir } from "../support/cli.js"
import { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { inReplyTo } from "./matrix-world.js"

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

describeSynapse("cara setup to a first successful cara verify", (hs) => {
  it("setup, exports, start, an answered encrypted DM, verify passes", async () => {
    const transcript: Array<string> = []
    const record = (command: string, output: string) => transcript.push(`$ ${command}`, output.trimEnd(), "")
    const bot = await hs.registerUser()
    const you = await hs.registerUser()
    const dir = tempStateDir()
    const secrets = {
      CARAPACE_CONFIG_PASSWORD: "s".repeat(64),
      CARAPACE_GATEWAY_TOKEN: "g".repeat(64),
      MATRIX_PASSWORD: bot.password
    }
    const env = cleanEnv(dir, secrets)

    const setupArgs = [
      "setup",
      "--homeserver",
      hs.baseUrl,
      "--user",
      bot.userId,
      "--allow-user",
      you.userId,
      "--provider",
      "local",
      "--yes"
    ]
    const setup = runCli(setupArgs, cleanEnv(dir))
    record(`cara ${setupArgs.join(" ")}`, setup.stdout + setup.stderr)
    expect(setup.status, setup.stdout + setup.stderr).toBe(0)
    for (const name of Object.keys(secrets)) expect(setup.stdout).toMatch(new RegExp(`^  export ${name}=`, "m"))

    // the operator keeps the default port 18789; tests run side by side, so this one takes a free port
    const file = path.join(dir, "carapace.json5")
    const port = await freePort()
    fs.writeFileSync(file, fs.readFileSync(file, "utf8").replace(/port: 18789/, `port: ${port}`), { mode: 0o600 })

    const daemon = await startDaemon(env, 60_000)
    const human = await Human.login(hs.baseUrl, you.userId, you.password)
    try {
      await human.start()
      const roomId = await human.createEncryptedDm(bot.userId)
      await human.waitForMembership(roomId, bot.userId, "join", 45_000)
      const question = await human.sendText(roomId, "hello from setup")
      const answer = await human.waitForMessage(
        roomId,
        (m) => m.sender === bot.userId && inReplyTo(m) === question,
        60_000
      )
      expect(answer.body.length).toBeGreaterThan(0)
      transcript.push(
        `(Element, encrypted DM) you: hello from setup`,
        `(Element, encrypted DM) ${bot.userId}: ${answer.body}`,
        ""
      )

      const verify = runCli(["verify", "--outcome", "matrix", "--matrix-to", roomId, "--port", String(port)], env)
      record(`cara verify --outcome matrix --matrix-to ${roomId}`, verify.stdout + verify.stderr)
      expect(verify.status, verify.stdout + verify.stderr).toBe(0)
      expect(verify.stdout).toContain("[PASS] Matrix runtime registration: matrix channel is connected")
      expect(verify.stdout).not.toContain("[SKIP]")
      expect(verify.stdout).toMatch(
        /\[PASS\] Matrix start-up: start-up sequence finished; cross-signing (bootstrapped|verified)/
      )
      // the first start removed the password from the config once the device was set up
      expect(fs.readFileSync(file, "utf8")).not.toContain("MATRIX_PASSWORD")
    } finally {
      await human.stop()
      daemon.child.kill("SIGTERM")
      await daemon.exited
      const out = process.env["CARA_TRANSCRIPT"]
      if (out !== undefined) fs.writeFileSync(out, transcript.join("\n").replaceAll(dir, "$CARAPACE_STATE_DIR"))
    }
  }, 240_000)
})
