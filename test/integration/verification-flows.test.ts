// SAS flows beyond the happy path, against the real Synapse, the real daemon and the human client: a
// `--no-match` confirmation, a cancel by the human, a bot-initiated `cara matrix verify` of a device the human
// added after the bot started, and glare (both sides start SAS at once). Every flow runs between the same
// pair of devices as the one before it unless a new device is the point of the test.
import { ClientEvent } from "matrix-js-sdk"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, afterEach, beforeAll, expect, it } from "vitest"
import { trackUsers } from "../../src/layers/verification/sdkPort.js"
import { cleanEnv, CLI, runCli } from "../support/cli.js"
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

describeSynapse("Matrix SAS verification: mismatch, cancel, bot-initiated, glare", (hs) => {
  let llm: FakeLlmServer
  let closeLlm: () => Promise<void>
  let bot: Bot
  let alice: Human
  let botDevice: string
  let aliceLogin: { userId: string; password: string }
  const humans: Array<Human> = []

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

  /** The CLI on a pseudo-terminal (util-linux `script`), `input` typed at its prompt. */
  const ptyCli = (args: ReadonlyArray<string>, input: string) => {
    const port = new URL(bot.running!.baseUrl).port
    const cmd = [process.execPath, CLI, "matrix", ...args, "--port", port].map((a) => `'${a}'`).join(" ")
    const env = cleanEnv(bot.dir, { CARAPACE_GATEWAY_TOKEN: GATEWAY_TOKEN, CARAPACE_CONFIG_PASSWORD: CONFIG_PASSWORD })
    return spawnSync("script", ["-qec", cmd, "/dev/null"], { env, input, encoding: "utf8", timeout: 60_000 })
  }

  /**
   * The bot's SAS equals the human's; both confirm; both end `done`, and the human trusts the bot's device.
   * With `prompt`, the operator confirms at the CLI's terminal prompt, which shows the SAS and wants `yes`.
   */
  const compareAndConfirm = async (human: Human, hv: HumanVerification, flowId: string, prompt = false) => {
    const humanSas = await hv.waitForSas()
    const withSas = await waitFlow("the bot's SAS", (f) => f.flowId === flowId && f.sas !== undefined)
    expect(withSas.sas!.emoji).toEqual(humanSas.emoji)
    expect(withSas.sas!.decimals).toEqual(humanSas.decimals)
    if (prompt) {
      // anything but `yes` aborts and sends nothing
      const refused = ptyCli(["confirm", flowId, "--match"], "no\n")
      expect(refused.status, refused.stdout).not.toBe(0)
      expect(refused.stdout).toContain("Type `yes` to proceed")
      for (const e of humanSas.emoji) expect(refused.stdout).toContain(e.description)
      for (const d of humanSas.decimals) expect(refused.stdout).toContain(String(d))
      expect(refused.stdout).toContain("[aborted]")
      expect((await flows()).find((f) => f.flowId === flowId)?.state).toBe("keys_exchanged")
      const confirmed = ptyCli(["confirm", flowId, "--match"], "yes\n")
      expect(confirmed.status, confirmed.stdout).toBe(0)
    } else {
      const confirmed = cli(["confirm", flowId, "--match", "--unsafe-skip-sas-prompt", "--json"])
      expect(confirmed.status, confirmed.stderr).toBe(0)
    }
    await hv.confirm()
    await hv.waitForDone()
    await waitFlow("done on the bot", (f) => f.flowId === flowId && f.state === "done")
    expect((await human.waitForDeviceVerified(bot.user.userId, botDevice)).verified).toBe(true)
  }

  /**
   * Two completed syncs of `h`, each woken by a to-device message to itself. The Rust machine cancels a new
   * request (with m.user) while it still holds an earlier, even finished, flow with the same user; it drops
   * finished flows only at the start of a sync. Element users meet the same rule; a test must wait it out.
   */
  const settle = async (h: Human) => {
    for (let i = 0; i < 2; i++) {
      const synced = new Promise<void>((resolve) => h.client.once(ClientEvent.Sync, () => resolve()))
      await h.client.sendToDevice("org.cara.test_nudge", new Map([[h.userId, new Map([[h.deviceId, {}]])]]))
      await synced
    }
  }

  /** A human-initiated to-device request from `human`, listed and accepted by the bot. */
  const requestAndAccept = async (human: Human) => {
    await settle(human)
    const hv = await human.requestDeviceVerification(bot.user.userId, botDevice)
    const listed = await waitFlow("the human's request", (f) => f.protocolFlowId === hv.transactionId)
    expect(listed.state).toBe("requested")
    const accepted = cli(["accept", listed.flowId, "--json"])
    expect(accepted.status, accepted.stderr).toBe(0)
    return { hv, flowId: listed.flowId }
  }

  beforeAll(async () => {
    ;({ llm, close: closeLlm } = await startFakeLlm())
    aliceLogin = await hs.registerUser()
    alice = await Human.login(hs.baseUrl, aliceLogin.userId, aliceLogin.password)
    humans.push(alice)
    await alice.start()
    bot = await makeBot(hs, llm, { allowUsers: [alice.userId] })
    await bot.start()
    botDevice = /deviceId:\s*"([A-Za-z0-9]+)"/.exec(bot.config())![1]!
    // like Element opening the bot's profile: the human tracks the bot's devices without a shared room
    expect(await trackUsers(alice.client, [bot.user.userId])).toBe(true)
    await alice.waitForDevice(bot.user.userId, botDevice)
  }, 180_000)

  afterEach(async (ctx) => {
    if (ctx.task.result?.state === "fail") {
      const file = path.join(bot.dir, "daemon-output.log")
      fs.writeFileSync(file, bot.output())
      process.stderr.write(`--- daemon output in ${file}; last lines:\n${bot.output().slice(-4000)}\n`)
      for (const h of humans) fs.writeFileSync(path.join(bot.dir, `human-${h.deviceId}.log`), h.logTail(2000))
    }
  })

  afterAll(async () => {
    await bot?.stop("SIGKILL")
    for (const h of humans) await h.stop()
    await closeLlm()
  })

  it(
    "a first flow completes (typed `yes` at the CLI prompt), then `confirm --no-match` on the next one between the same devices cancels both sides with m.mismatched_sas",
    async () => {
      const first = await requestAndAccept(alice)
      await compareAndConfirm(alice, first.hv, first.flowId, true)

      const { hv, flowId } = await requestAndAccept(alice)
      await hv.waitForSas()
      await waitFlow("the bot's SAS", (f) => f.flowId === flowId && f.sas !== undefined)
      const r = cli(["confirm", flowId, "--no-match", "--unsafe-skip-sas-prompt", "--json"])
      expect(r.status, r.stderr).toBe(0)
      expect(JSON.parse(r.stdout).verification.state).toBe("mismatched")
      const onHuman = await hv.waitForCancel()
      expect(onHuman.code).toBe("m.mismatched_sas")
      expect(onHuman.by).toBe(bot.user.userId)
      const after = (await flows()).find((f) => f.flowId === flowId)
      expect(after?.state).toBe("mismatched")
      // a terminal flow answers 410
      const late = await api("POST", `/control/matrix/verifications/${flowId}/confirm`, { match: true })
      expect(late.status).toBe(410)
    },
    120_000
  )

  it("the human cancels an accepted flow: the bot lists it as cancelled", async () => {
    const { hv, flowId } = await requestAndAccept(alice)
    await hv.waitForSas()
    await hv.cancel()
    const cancelled = await waitFlow("cancelled on the bot", (f) => f.flowId === flowId && f.state === "cancelled")
    expect(cancelled.sas?.emoji).toHaveLength(7)
    expect((await api("POST", `/control/matrix/verifications/${flowId}/accept`)).status).toBe(410)
  }, 120_000)

  it(
    "bot-initiated `cara matrix verify <user> <device>` of a device added after the bot started completes",
    async () => {
      const phone = await Human.login(hs.baseUrl, aliceLogin.userId, aliceLogin.password, { deviceName: "alice phone" })
      humans.push(phone)
      await phone.start()
      expect(await trackUsers(phone.client, [bot.user.userId])).toBe(true)
      await phone.waitForDevice(bot.user.userId, botDevice)

      const started = cli(["verify", alice.userId, phone.deviceId, "--json"])
      expect(started.status, started.stderr).toBe(0)
      const flow = JSON.parse(started.stdout).verification as ApiFlow
      expect(flow).toMatchObject({ userId: alice.userId, deviceId: phone.deviceId })

      const hv = await phone.nextVerificationRequest(30_000, bot.user.userId)
      expect(hv.transactionId).toBe(flow.protocolFlowId)
      await hv.accept()
      // the bot started it, so it starts SAS itself once ready, and needs no `accept`
      await compareAndConfirm(phone, hv, flow.flowId)
    },
    120_000
  )

  it("glare: both sides start SAS at once and the flow still completes", async () => {
    const tablet = await Human.login(hs.baseUrl, aliceLogin.userId, aliceLogin.password, { deviceName: "alice tablet" })
    humans.push(tablet)
    await tablet.start()
    expect(await trackUsers(tablet.client, [bot.user.userId])).toBe(true)
    await tablet.waitForDevice(bot.user.userId, botDevice)

    const started = cli(["verify", alice.userId, tablet.deviceId, "--json"])
    expect(started.status, started.stderr).toBe(0)
    const flow = JSON.parse(started.stdout).verification as ApiFlow
    const hv = await tablet.nextVerificationRequest(30_000, bot.user.userId)
    // the bot sends its .start as soon as it sees .ready; the human sends its own right away too
    await hv.accept()
    await hv.startSas()
    await compareAndConfirm(tablet, hv, flow.flowId)
    // both sides did send a .start (the SDK resolved the glare, the flow went on with one of them)
    expect(bot.output()).toMatch(new RegExp(`type=m\\.key\\.verification\\.start [^\\n]*${tablet.deviceId}`))
  }, 120_000)
})
