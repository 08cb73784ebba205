// SAS verification against the real Synapse: the real daemon process, an Element-like human client, the
// control API and the CLI. The human verifies the bot's device before they share any room (the seed's order).
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, afterEach, beforeAll, expect, it } from "vitest"
import { trackUsers } from "../../src/layers/verification/sdkPort.js"
import { cleanEnv, runCli } from "../support/cli.js"
import type { FakeLlmServer } from "../support/fake-llm.js"
import { Human, type HumanVerification } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import {
  type ApiFlow,
  type Bot,
  CONFIG_PASSWORD,
  GATEWAY_TOKEN,
  makeBot,
  sleep,
  startFakeLlm
} from "./matrix-support.js"

describeSynapse("Matrix SAS verification (real daemon, human client)", (hs) => {
  let llm: FakeLlmServer
  let closeLlm: () => Promise<void>
  let bot: Bot
  let alice: Human
  let bob: Human
  let botDevice: string
  let aliceLogin: { userId: string; password: string }
  const extraHumans: Array<Human> = []
  /**
   * Alice on a new device. The Rust machine cancels (m.user) a new request while it still holds an earlier
   * flow with the same user, finished ones included, until its clean-up at the start of the next sync; a
   * fresh device has no earlier flow (verification-flows.test.ts waits for the clean-up instead).
   */
  const freshAlice = async (): Promise<Human> => {
    const h = await Human.login(hs.baseUrl, aliceLogin.userId, aliceLogin.password)
    extraHumans.push(h)
    await h.start()
    expect(await trackUsers(h.client, [bot.user.userId])).toBe(true)
    await h.waitForDevice(bot.user.userId, botDevice)
    return h
  }
  // WS frames for the whole run, in arrival order
  const frames: Array<{ event: string; payload: { verification: ApiFlow } }> = []
  let ws: { close(): void } | undefined

  const api = async (method: "GET" | "POST", p: string, body?: unknown) => {
    const r = await fetch(`${bot.running!.baseUrl}${p}`, {
      method,
      headers: {
        authorization: `Bearer ${GATEWAY_TOKEN}`,
        ...(body === undefined ? {} : { "content-type": "application/json" })
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    return { status: r.status, body: (await r.json()) as any }
  }
  const flows = async (): Promise<Array<ApiFlow>> =>
    (await api("GET", "/control/matrix/verifications")).body.verifications
  const waitFlow = async (what: string, pred: (f: ApiFlow) => boolean, timeoutMs = 30_000): Promise<ApiFlow> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const f = (await flows()).find(pred)
      if (f) return f
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${what}; flows: ${JSON.stringify(await flows())}`)
      }
      await sleep(100)
    }
  }
  const cli = (args: ReadonlyArray<string>, input?: string) => {
    const port = new URL(bot.running!.baseUrl).port
    return runCli(
      ["matrix", ...args, "--port", port],
      cleanEnv(bot.dir, { CARAPACE_GATEWAY_TOKEN: GATEWAY_TOKEN, CARAPACE_CONFIG_PASSWORD: CONFIG_PASSWORD }),
      input
    )
  }

  /** The bot's SAS equals the human's; both confirm; both end `done` and the human trusts the bot's device. */
  const compareAndConfirm = async (hv: HumanVerification, flowId: string) => {
    const humanSas = await hv.waitForSas()
    const withSas = await waitFlow("the bot's SAS", (f) => f.flowId === flowId && f.sas !== undefined)
    expect(withSas.state).toBe("keys_exchanged")
    expect(withSas.sas!.emoji).toEqual(humanSas.emoji)
    expect(withSas.sas!.emoji).toHaveLength(7)
    expect(withSas.sas!.decimals).toEqual(humanSas.decimals)
    const confirmed = await api("POST", `/control/matrix/verifications/${flowId}/confirm`, { match: true })
    expect(confirmed.status).toBe(200)
    await hv.confirm()
    await hv.waitForDone()
    await waitFlow("done on the bot", (f) => f.flowId === flowId && f.state === "done")
  }

  beforeAll(async () => {
    ;({ llm, close: closeLlm } = await startFakeLlm())
    const a = await hs.registerUser()
    aliceLogin = a
    const b = await hs.registerUser()
    alice = await Human.login(hs.baseUrl, a.userId, a.password)
    bob = await Human.login(hs.baseUrl, b.userId, b.password)
    await alice.start()
    await bob.start()
    bot = await makeBot(hs, llm, { allowUsers: [alice.userId] })
    await bot.start()
    botDevice = /deviceId:\s*"([A-Za-z0-9]+)"/.exec(bot.config())![1]!
    // like Element opening the bot's profile: the humans track the bot's devices without a shared room
    expect(await trackUsers(alice.client, [bot.user.userId])).toBe(true)
    expect(await trackUsers(bob.client, [bot.user.userId])).toBe(true)
    const wsModule = "ws"
    const WebSocket = ((await import(wsModule)) as { default: new(url: string, o?: unknown) => any }).default
    const socket = new WebSocket(`${bot.running!.baseUrl.replace(/^http/, "ws")}/ws`, {
      headers: { authorization: `Bearer ${GATEWAY_TOKEN}` }
    })
    socket.on("message", (data: Buffer) => {
      const f = JSON.parse(data.toString()) as { type: string; event?: string; payload?: any }
      if (f.type === "event" && f.event?.startsWith("matrix.verification.")) {
        frames.push({ event: f.event, payload: f.payload })
      }
    })
    await new Promise<void>((resolve, reject) => {
      socket.on("open", () => resolve())
      socket.on("error", reject)
    })
    ws = socket
  }, 180_000)

  afterEach(async (ctx) => {
    if (ctx.task.result?.state === "fail") {
      const file = path.join(bot.dir, "daemon-output.log")
      fs.writeFileSync(file, bot.output())
      process.stderr.write(`--- daemon output in ${file}; last lines:\n${bot.output().slice(-4000)}\n`)
    }
  })

  afterAll(async () => {
    ws?.close()
    await bot?.stop("SIGKILL")
    await alice?.stop()
    await bob?.stop()
    for (const h of extraHumans) await h.stop()
    await closeLlm()
  })

  it(
    "human-initiated device verification before any shared room: listed → 409 before SAS → accept → equal SAS → confirm both → verified; WS events in order",
    async () => {
      // no room exists between them: the bot tracks allowlisted users from startup
      await alice.waitForDevice(bot.user.userId, botDevice)
      const hv = await alice.requestDeviceVerification(bot.user.userId, botDevice)
      const listed = await waitFlow("alice's request", (f) => f.userId === alice.userId)
      expect(listed).toMatchObject({ state: "requested", deviceId: alice.deviceId, protocolFlowId: hv.transactionId })
      expect(listed.roomId).toBeUndefined()

      const early = await api("POST", `/control/matrix/verifications/${listed.flowId}/confirm`, { match: true })
      expect(early.status).toBe(409)
      expect(early.body.error.kind).toBe("verification-flow-not-ready")

      // the CLI (real process) accepts; list --json shows it
      const accepted = cli(["accept", listed.flowId, "--json"])
      expect(accepted.status, accepted.stderr).toBe(0)
      expect(JSON.parse(accepted.stdout).verification.flowId).toBe(listed.flowId)

      await compareAndConfirm(hv, listed.flowId)
      const trust = await alice.waitForDeviceVerified(bot.user.userId, botDevice)
      expect(trust.verified).toBe(true)

      const listing = cli(["verifications", "--json"])
      expect(listing.status, listing.stderr).toBe(0)
      expect(JSON.parse(listing.stdout).verifications.find((f: ApiFlow) => f.flowId === listed.flowId).state).toBe(
        "done"
      )

      // WS: one `requested`, then only `updated`, ending in done, SAS before confirmation
      const mine = frames.filter((f) => f.payload.verification.flowId === listed.flowId)
      expect(mine[0]?.event).toBe("matrix.verification.requested")
      expect(mine.slice(1).every((f) => f.event === "matrix.verification.updated")).toBe(true)
      const states = mine.map((f) => f.payload.verification.state)
      expect(states.at(-1)).toBe("done")
      expect(states.indexOf("keys_exchanged")).toBeGreaterThan(0)
      expect(states.indexOf("keys_exchanged")).toBeLessThan(states.lastIndexOf("done"))
    },
    120_000
  )

  it("a request from a user outside the allowlist is never listed", async () => {
    await bob.waitForDevice(bot.user.userId, botDevice)
    const hv = await bob.requestDeviceVerification(bot.user.userId, botDevice)
    // a later request from alice is listed, so bob's has had every chance to arrive first
    await sleep(2_000)
    const marker = await alice.requestDeviceVerification(bot.user.userId, botDevice)
    await waitFlow("alice's marker request", (f) => f.protocolFlowId === marker.transactionId)
    expect((await flows()).some((f) => f.userId === bob.userId)).toBe(false)
    await hv.cancel().catch(() => undefined)
    await marker.cancel()
  }, 60_000)

  it("user verification in a DM room (in-room request) completes with cross-signing trust", async () => {
    const alice = await freshAlice()
    await alice.bootstrapCrossSigning()
    const roomId = await alice.createEncryptedDm(bot.user.userId)
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
    await alice.waitForCrossSigningIdentity(bot.user.userId)
    const hv = await alice.requestVerificationDM(bot.user.userId, roomId)
    const listed = await waitFlow("the in-room request", (f) => f.roomId === roomId)
    expect(listed.protocolFlowId).toBe(hv.transactionId)
    expect((await api("POST", `/control/matrix/verifications/${listed.flowId}/accept`)).status).toBe(200)
    await compareAndConfirm(hv, listed.flowId)
    const deadline = Date.now() + 20_000
    while (!(await alice.isUserCrossSigningVerified(bot.user.userId))) {
      if (Date.now() > deadline) throw new Error("alice never saw the bot's identity as verified")
      await sleep(200)
    }
  }, 120_000)

  it("GET /control/matrix/devices lists the bot's own device", async () => {
    const r = cli(["devices", "--json"])
    expect(r.status, r.stderr).toBe(0)
    const devices = JSON.parse(r.stdout).devices as Array<{ deviceId: string; userId: string }>
    expect(devices.map((d) => d.deviceId)).toContain(botDevice)
    expect(devices.every((d) => d.userId === bot.user.userId)).toBe(true)
  }, 60_000)
})
