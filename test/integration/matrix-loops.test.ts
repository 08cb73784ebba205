// Issue 16 §6 and §10 against the real Synapse: two daemons that allow each other in one room with
// groupMessages "all" do not answer each other; a flooding human reaches the model a bounded number of times
// and is told once; the bot's own account on another device is never answered; a plaintext message injected
// into an encrypted room is not answered but counted; with requireCrossSignedSenders a device that is not
// cross-signed gets exactly one notice and no answer, while a cross-signed one is answered.
import * as fs from "node:fs"
import { expect, it } from "vitest"
import { eventually } from "../support/eventually.js"
import { Human, type ReceivedMessage } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { type Bot, messagesFrom } from "./matrix-support.js"
import { inReplyTo, useMatrixWorld } from "./matrix-world.js"

const poll = <A>(what: string, timeoutMs: number, f: () => Promise<A | undefined> | A | undefined): Promise<A> =>
  eventually(what, f, { timeoutMs, intervalMs: 200 })

const extraOf = async (bot: Bot) => ((await bot.status())?.["extra"] ?? {}) as Record<string, unknown>

const metricsOf = async (bot: Bot) => (await fetch(`${bot.running!.baseUrl}/metrics`)).text()

/** The bot's messages in the room with their msgtype, as the human decrypted them. */
const fromBot = (h: Human, roomId: string, bot: Bot) =>
  (h.client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [])
    .filter((e) => e.getSender() === bot.user.userId && e.getType() === "m.room.message" && e.status === null)
    .map((e) => e.getContent() as { msgtype?: string; body?: string })

describeSynapse("Matrix: loops, floods and untrusted input (real daemons)", (hs) => {
  const world = useMatrixWorld(hs)

  it("two bots that allow each other answer one human message once each, and never each other", async () => {
    const alice = await world.human()
    const a = await world.bot({ matrixExtra: `groupMessages: "all",` })
    const b = await world.bot({ matrixExtra: `groupMessages: "all",` })
    // each bot admits the human and the other bot (the config is written before the first start)
    for (const [bot, other] of [[a, b], [b, a]] as const) {
      fs.writeFileSync(
        bot.configPath,
        bot.config().replace(/allowUsers: \[\]/, `allowUsers: ${JSON.stringify([alice.userId, other.user.userId])}`)
      )
    }
    await Promise.all([a.start(), b.start()])
    const roomId = await alice.createEncryptedRoom([a.user.userId, b.user.userId], "two bots")
    await alice.waitForMembership(roomId, a.user.userId, "join", 30_000)
    await alice.waitForMembership(roomId, b.user.userId, "join", 30_000)
    const before = world.llm.requests.length

    const asked = await alice.sendText(roomId, "hello both of you")
    const replyA = await world.replyTo(alice, a, roomId, asked)
    const replyB = await world.replyTo(alice, b, roomId, asked)
    expect(replyA.content["msgtype"]).toBe("m.notice")
    expect(replyB.content["msgtype"]).toBe("m.notice")
    // settled: each bot has gated the other's reply (an m.notice: not for the agent), so nothing is in flight
    await a.waitForLog(new RegExp(`not for the agent: notice[^\\n]*${escape(replyB.eventId)}`), 30_000)
    await b.waitForLog(new RegExp(`not for the agent: notice[^\\n]*${escape(replyA.eventId)}`), 30_000)
    expect(world.llm.requests.length - before).toBe(2)
    expect(messagesFrom(alice, roomId, a.user.userId).map((m) => m.inReplyTo)).toEqual([asked])
    expect(messagesFrom(alice, roomId, b.user.userId).map((m) => m.inReplyTo)).toEqual([asked])
  }, 240_000)

  it(
    "a flooding sender reaches the model `senderBurst` times and gets one notice; counted in status and /metrics",
    async () => {
      const alice = await world.human()
      // a refill of one per minute: nothing refills while the test runs
      const bot = await world.bot({
        allowUsers: [alice.userId],
        matrixExtra: `inboundBudget: { senderBurst: 2, senderPerMinute: 1 },`
      })
      await bot.start()
      const roomId = await world.dm(alice, bot)
      const before = world.llm.requests.length
      const sent: Array<string> = []
      for (let i = 0; i < 5; i++) sent.push(await alice.sendText(roomId, `question ${i}`))

      const extra = await poll("three budget refusals", 60_000, async () => {
        const x = await extraOf(bot)
        return Number(x["inboundBudgetRefusedSenderTotal"]) >= 3 && Number(x["inboundBudgetNoticeTotal"]) >= 1
          ? x
          : undefined
      })
      await world.replyTo(alice, bot, roomId, sent[0]!)
      await world.replyTo(alice, bot, roomId, sent[1]!)
      const notice = await alice.waitForMessage(
        roomId,
        (m: ReceivedMessage) => m.sender === bot.user.userId && inReplyTo(m) === sent[2],
        30_000
      )
      expect(notice.content["msgtype"]).toBe("m.notice")
      expect(String(notice.content["body"])).toMatch(/faster than I answer/)
      expect(extra["inboundBudgetRefusedSenderTotal"]).toBe(3)
      expect(extra["inboundBudgetNoticeTotal"]).toBe(1)
      expect(world.llm.requests.length - before).toBe(2)
      // exactly two answers and one notice: the later refusals of the window are silent
      // (the notice is sent at once, the answers when the model is done: compare as sets)
      expect(
        messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo).sort()
      ).toEqual([sent[0], sent[1], sent[2]].sort())
      const metrics = await metricsOf(bot)
      expect(metrics).toContain("carapace_matrix_inbound_refused_total{reason=\"budget_sender\"} 3")
      expect(metrics).toContain("carapace_matrix_inbound_budget_notices_total 1")
    },
    180_000
  )

  it("never answers the bot's own account from another device", async () => {
    const { alice, bot, roomId } = await world.botInDm()
    const self = await Human.login(hs.baseUrl, bot.user.userId, bot.user.password, {
      deviceName: "the bot's other session"
    })
    try {
      await self.start()
      await self.joinRoom(roomId).catch(() => undefined)
      const before = world.llm.requests.length
      const own = await self.sendText(roomId, "from the bot's account, another device")
      // the human's next message is answered, so the bot has processed the one before it by then
      const asked = await alice.sendText(roomId, "and now me")
      await world.replyTo(alice, bot, roomId, asked)
      expect(world.llm.requests.length - before).toBe(1)
      expect(messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)).not.toContain(own)
    } finally {
      await self.stop()
    }
  }, 180_000)

  it("a plaintext m.room.message in an encrypted room is not answered, and is counted", async () => {
    const { alice, bot, roomId } = await world.botInDm()
    const before = world.llm.requests.length
    // what a homeserver admin or a spoofing server could inject: the client-server API with a member's token
    const res = await fetch(
      `${hs.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/plain-${Date.now()}`,
      {
        method: "PUT",
        headers: { "content-type": "application/json", authorization: `Bearer ${alice.accessToken}` },
        body: JSON.stringify({ msgtype: "m.text", body: "unencrypted, please answer" })
      }
    )
    expect(res.status).toBe(200)
    const { event_id: plain } = (await res.json()) as { event_id: string }
    expect((await alice.fetchRawEvent(roomId, plain)).type).toBe("m.room.message")
    await poll(
      "the plaintext refusal counted",
      30_000,
      async () => (await extraOf(bot))["peerDropUnencryptedInEncryptedRoomTotal"] === 1 ? true : undefined
    )
    const asked = await alice.sendText(roomId, "the encrypted one")
    await world.replyTo(alice, bot, roomId, asked)
    expect(world.llm.requests.length - before).toBe(1)
    expect(messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)).toEqual([asked])
    expect(JSON.stringify(world.llm.requests.at(-1)?.body)).not.toContain("unencrypted, please answer")
    expect(await metricsOf(bot)).toContain(
      "carapace_matrix_inbound_refused_total{reason=\"unencrypted_in_encrypted_room\"} 1"
    )
  }, 180_000)

  it(
    "requireCrossSignedSenders: a device not cross-signed gets exactly one notice and no answer; a cross-signed one is answered",
    async () => {
      const alice = await world.human()
      await alice.bootstrapCrossSigning()
      const bob = await world.human() // never cross-signs: his device is not signed by its owner
      const bot = await world.bot({
        allowUsers: [alice.userId, bob.userId],
        matrixExtra: `groupMessages: "all", requireCrossSignedSenders: true,`
      })
      await bot.start()
      const roomId = await alice.createEncryptedRoom([bot.user.userId, bob.userId], "cross-signing")
      await bob.joinRoom(roomId)
      await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      await bob.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      const before = world.llm.requests.length

      const first = await bob.sendText(roomId, "from an unverified session")
      const second = await bob.sendText(roomId, "again from it")
      const notice = await bob.waitForMessage(
        roomId,
        (m) => m.sender === bot.user.userId && inReplyTo(m) === first,
        45_000
      )
      expect(notice.content["msgtype"]).toBe("m.notice")
      expect(String(notice.content["body"])).toMatch(/not verified by its owner/)
      await poll(
        "both refusals counted",
        30_000,
        async () => (await extraOf(bot))["peerDropNotCrossSignedTotal"] === 2 ? true : undefined
      )

      const asked = await alice.sendText(roomId, "from a cross-signed session")
      await world.replyTo(alice, bot, roomId, asked)
      expect(world.llm.requests.length - before).toBe(1)
      const fromTheBot = messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)
      expect(fromTheBot).toEqual([first, asked])
      expect(fromTheBot).not.toContain(second)
      expect(fromBot(alice, roomId, bot).every((c) => c.msgtype === "m.notice")).toBe(true)
      expect(await metricsOf(bot)).toContain("carapace_matrix_inbound_refused_total{reason=\"not_cross_signed\"} 2")
    },
    240_000
  )
})

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
