// The daemon's core against the real Synapse: an encrypted DM from an allowed person gets an encrypted answer
// from the agent (the real daemon process, a fake LLM), once, across restarts and a crash.
import { expect, it } from "vitest"
import type { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { type Bot, count, messagesFrom } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

describeSynapse("Matrix: encrypted DM round trip (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)
  const llm = () => world.llm

  const human = world.human

  it(
    "answers an encrypted DM with an encrypted, formatted reply to the message; the password is replaced by a sealed token",
    async () => {
      const alice = await human()
      const bot = await world.bot({ allowUsers: [alice.userId] })
      llm().enqueue({ type: "text", chunks: ["Hello **Alice**", ", here is `code`."] })
      await bot.start()

      const roomId = await alice.createEncryptedDm(bot.user.userId)
      await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      const sent = await alice.sendText(roomId, "hi bot")
      const reply = await alice.waitForMessage(roomId, (m) => m.sender === bot.user.userId, 45_000)

      expect(reply.encrypted).toBe(true)
      expect(reply.body).toBe("Hello **Alice**, here is `code`.")
      expect(reply.content["format"]).toBe("org.matrix.custom.html")
      expect(reply.content["formatted_body"]).toBe("<p>Hello <strong>Alice</strong>, here is <code>code</code>.</p>")
      expect(reply.content["m.relates_to"]).toEqual({ "m.in_reply_to": { event_id: sent } })
      // on the wire the reply is a Megolm event
      expect((await alice.fetchRawEvent(roomId, reply.eventId)).type).toBe("m.room.encrypted")
      // the model saw the message
      expect(JSON.stringify(llm().requests.at(-1)?.body)).toContain("hi bot")

      // config write-back: the token is sealed, the device id recorded, the password gone (removed once the
      // start-up sequence, cross-signing included, no longer needs it: it may finish after the first reply)
      const deadline = Date.now() + 30_000
      while (/password:/.test(bot.config()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
      const config = bot.config()
      expect(config).toMatch(/accessToken:\s*"enc:v2:/)
      expect(config).toMatch(/deviceId:\s*"[A-Z0-9]+"/)
      expect(config).not.toMatch(/password:/)
      expect(config).toContain("// first login only")
    },
    150_000
  )

  const dmWithBot = async (alice: Human, bot: Bot) => {
    const roomId = await alice.createEncryptedDm(bot.user.userId)
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
    return roomId
  }
  const ask = async (alice: Human, bot: Bot, roomId: string, text: string) => {
    const sent = await alice.sendText(roomId, text)
    await alice.waitForMessage(
      roomId,
      (m) => m.sender === bot.user.userId && (m.content["m.relates_to"] as any)?.["m.in_reply_to"]?.event_id === sent,
      45_000
    )
    return sent
  }

  it(
    "a restart keeps the device, uploads no keys, does not answer old messages again and answers new ones",
    async () => {
      const alice = await human()
      const bot = await world.bot({ allowUsers: [alice.userId] })
      await bot.start()
      const deviceId = /Matrix client synced .*deviceId=(\S+)/.exec(bot.output())?.[1]
      expect(deviceId).toBeDefined()
      // the SDK's outgoing-request loop uploads the device keys shortly after the client starts
      await bot.waitForLog(/--> POST \S+\/keys\/upload/, 30_000)
      const roomId = await dmWithBot(alice, bot)
      const first = await ask(alice, bot, roomId, "first")
      expect((await bot.stop("SIGTERM")).code).toBe(0)

      // sent while the bot is down: answered after the restart
      const whileDown = await alice.sendText(roomId, "while you were away")
      await bot.start()
      expect(bot.output()).toContain(`deviceId=${deviceId}`)
      expect(bot.output()).not.toMatch(/--> POST \S+\/login/)
      expect(count(bot.output(), /--> POST \S+\/keys\/upload/)).toBe(0)
      await alice.waitForMessage(
        roomId,
        (m) =>
          m.sender === bot.user.userId && (m.content["m.relates_to"] as any)?.["m.in_reply_to"]?.event_id === whileDown,
        45_000
      )
      const third = await ask(alice, bot, roomId, "third")
      // replies are posted in order per room: a duplicate of an earlier answer would already be here
      expect(messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)).toEqual([first, whileDown, third])
    },
    240_000
  )

  it(
    "SIGKILL after the answer and before the ledger commit: after a restart the human sees exactly one reply",
    async () => {
      const alice = await human()
      const bot = await world.bot({ allowUsers: [alice.userId] })
      await bot.start({ CARA_TEST_FAULT: "after-reply-before-commit" })
      const roomId = await dmWithBot(alice, bot)
      const requestsBefore = llm().requests.length
      const sent = await alice.sendText(roomId, "answer me once")
      const reply = await alice.waitForMessage(roomId, (m) => m.sender === bot.user.userId, 45_000)
      expect((await bot.running!.exited).signal).toBe("SIGKILL")
      bot.running = undefined

      await bot.start()
      // the interrupted answer is finished either by the start-up resume or by the redelivered event
      await bot.waitForLog(/Matrix message answered/, 60_000)
      const next = await ask(alice, bot, roomId, "and now this")
      const replies = messagesFrom(alice, roomId, bot.user.userId)
      expect(replies.map((m) => m.inReplyTo)).toEqual([sent, next])
      expect(replies[0]!.eventId).toBe(reply.eventId)
      // the resumed answer came from the stored history, not from a second model call
      expect(llm().requests.length - requestsBefore).toBe(2)
    },
    240_000
  )
})
