// The control API and CLI surface against a running daemon with a live Matrix channel (issue 8): `cara
// verify` passes and its probe reaches the human encrypted, `cara status` shows the Matrix metadata,
// /health/ready follows the channel, and no secret shows up anywhere an operator or a log can see.
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { expect, it } from "vitest"
import { open } from "../../src/domain/secrets.js"
import { runCli } from "../support/cli.js"
import { describeSynapse } from "../support/synapse/index.js"
import { type Bot, CONFIG_PASSWORD } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

const portOf = (bot: Bot) => new URL(bot.running!.baseUrl).port

describeSynapse("Control API and CLI with a live Matrix channel (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)

  it("verify passes, its probe arrives encrypted, status shows the Matrix block, and no secret leaks", async () => {
    const alice = await world.human()
    const bot = await world.bot({ allowUsers: [alice.userId] })
    await bot.start()
    await bot.waitForLog(/Matrix recovery key created/, 60_000)
    const roomId = await world.dm(alice, bot)

    const verify = runCli(["verify", "--outcome", "matrix", "--port", portOf(bot)], bot.cliEnv())
    expect(verify.stdout).toMatch(/\[PASS\].*[Mm]atrix/)
    expect(verify.stdout).not.toContain("[FAIL]")
    expect(verify.status).toBe(0)

    const probe = runCli(["verify", "--outcome", "matrix", "--matrix-to", roomId, "--port", portOf(bot)], bot.cliEnv())
    expect(probe.status).toBe(0)
    const eventId = /\$[A-Za-z0-9_-]+/.exec(probe.stdout)?.[0]
    expect(eventId).toBeDefined()
    const received = await alice.waitForMessage(roomId, (m) => m.eventId === eventId, 30_000)
    expect(received.sender).toBe(bot.user.userId)
    expect(received.encrypted).toBe(true)

    const status = runCli(["status", "--json", "--port", portOf(bot)], bot.cliEnv())
    expect(status.status).toBe(0)
    const parsed = JSON.parse(status.stdout) as {
      health: { status: string }
      channels: { channels: Array<{ id: string; status: string; extra: Record<string, unknown> }> }
    }
    expect(parsed.health.status).toBe("ok")
    const matrix = parsed.channels.channels.find((c) => c.id === "matrix")!
    expect(matrix.status).toBe("connected")
    expect(matrix.extra).toMatchObject({
      joinedRoomCount: 1,
      encryptedRoomCount: 1,
      unsupportedRoomCount: 0,
      pendingVerificationCount: 0
    })
    expect(matrix.extra["lastSuccessfulSyncAt"]).toEqual(expect.any(Number))
    expect(matrix.extra["deviceId"]).toMatch(/^[A-Z0-9]+$/)

    // an answered message shows up in the metrics (send duration), next to the live gauges
    const asked = await alice.sendText(roomId, "count me")
    await world.replyTo(alice, bot, roomId, asked)
    const metricsText = await (await fetch(`${bot.running!.baseUrl}/metrics`)).text()
    expect(Number(/^carapace_matrix_outbound_send_duration_seconds_count (\d+)$/m.exec(metricsText)?.[1]))
      .toBeGreaterThanOrEqual(1)
    expect(metricsText).toContain("carapace_matrix_joined_rooms{encryption=\"encrypted\"} 1")
    expect(metricsText).toContain("carapace_channel_up{channel=\"matrix\"} 1")

    // every secret of this installation, in plain text
    const sealed = /accessToken:\s*"(enc:v2:[^"]+)"/.exec(bot.config())![1]!
    const token = await Effect.runPromise(open(CONFIG_PASSWORD, sealed))
    const recoveryKey = fs.readFileSync(path.join(bot.dir, "matrix", "recovery_key"), "utf8").trim()
    const env = bot.cliEnv()
    const secrets = [token, sealed, recoveryKey, CONFIG_PASSWORD, bot.user.password, env["CARAPACE_GATEWAY_TOKEN"]!]
    const auth = { authorization: `Bearer ${env["CARAPACE_GATEWAY_TOKEN"]}` }
    const surfaces = [
      bot.output(),
      verify.stdout + verify.stderr,
      probe.stdout + probe.stderr,
      status.stdout + status.stderr,
      runCli(["status", "--port", portOf(bot)], bot.cliEnv()).stdout,
      await (await fetch(`${bot.running!.baseUrl}/control/channels`, { headers: auth })).text(),
      await (await fetch(`${bot.running!.baseUrl}/metrics`, { headers: auth })).text(),
      fs.readFileSync(path.join(bot.dir, "audit.jsonl"), "utf8")
    ]
    for (const surface of surfaces) for (const secret of secrets) expect(surface.includes(secret)).toBe(false)
    expect(token.length).toBeGreaterThan(10)
  }, 240_000)

  it("an interrupted rekey keeps the gateway up with the channel in error and /health/ready 503", async () => {
    const bot = await world.bot()
    await bot.start()
    expect((await bot.stop("SIGTERM")).code).toBe(0)
    fs.writeFileSync(path.join(bot.dir, "matrix", "store_passphrase.pending"), "0".repeat(64) + "\n", { mode: 0o600 })

    await bot.start({}, /Matrix runtime stopped/)
    const ready = await fetch(`${bot.running!.baseUrl}/health/ready`)
    expect(ready.status).toBe(503)
    expect((await fetch(`${bot.running!.baseUrl}/health`)).status).toBe(200)
    const channel = await bot.status()
    expect(channel?.["status"]).toBe("error")
    expect(String(channel?.["lastError"])).toMatch(/^Matrix store rekey interrupted:/)
    expect((channel?.["extra"] as Record<string, unknown>)["lastErrorKind"]).toBe("interrupted-rekey")
    const verify = runCli(["verify", "--outcome", "matrix", "--port", portOf(bot), "--wait", "2"], bot.cliEnv())
    expect(verify.status).not.toBe(0)
    expect(verify.stdout).toContain("rekey-store --new")
  }, 240_000)
})
