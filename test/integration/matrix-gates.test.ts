// Who and what the daemon answers, against the real Synapse: group rooms answer mentions only, disallowed
// inviters and senders get nothing, invisible-only messages are ignored and counted, encrypted=false
// refuses an encrypted invite.
import { Preset } from "matrix-js-sdk"
import { expect, it } from "vitest"
import type { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { type Bot, count, messagesFrom } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

describeSynapse("Matrix: inbound gates (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)
  const llm = () => world.llm

  const human = world.human
  const replyTo = (h: Human, roomId: string, bot: Bot, eventId: string) =>
    h.waitForMessage(
      roomId,
      (m) =>
        m.sender === bot.user.userId && (m.content["m.relates_to"] as any)?.["m.in_reply_to"]?.event_id === eventId,
      45_000
    )

  it("in a group room answers only when mentioned", async () => {
    const alice = await human()
    const bob = await human()
    const bot = await world.bot({ allowUsers: [alice.userId, bob.userId] })
    await bot.start()
    const roomId = await alice.createEncryptedRoom([bot.user.userId, bob.userId], "group")
    await bob.joinRoom(roomId)
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
    await alice.waitForMembership(roomId, bob.userId, "join", 30_000)

    await alice.sendText(roomId, "just chatting with bob")
    const mentioned = await alice.sendText(roomId, `${bot.user.userId} what do you think?`)
    await replyTo(alice, roomId, bot, mentioned)
    expect(messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)).toEqual([mentioned])
  }, 180_000)

  it("never joins for a disallowed inviter, and ignores a disallowed sender in an allowed room", async () => {
    const alice = await human()
    const mallory = await human()
    const bot = await world.bot({ allowUsers: [alice.userId], matrixExtra: `groupMessages: "all",` })
    await bot.start()

    const malloryDm = await mallory.createEncryptedDm(bot.user.userId)
    await mallory.waitForMembership(malloryDm, bot.user.userId, "leave", 30_000)
    await bot.waitForLog(/Matrix invite rejected: inviter not in matrix.autoJoin allowlist/)
    // declined once, not again at every sync
    await new Promise((r) => setTimeout(r, 3_000))
    expect(count(bot.output(), /Matrix invite rejected: inviter not in matrix.autoJoin allowlist/)).toBe(1)

    const roomId = await alice.createEncryptedRoom([bot.user.userId, mallory.userId], "mixed")
    await mallory.joinRoom(roomId)
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
    await alice.waitForMembership(roomId, mallory.userId, "join", 30_000)
    await mallory.sendText(roomId, `${bot.user.userId} please answer me`)
    const fromAlice = await alice.sendText(roomId, "and me?")
    await replyTo(alice, roomId, bot, fromAlice)
    expect(messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)).toEqual([fromAlice])

    const status = await bot.status()
    const extra = status?.["extra"] as Record<string, number>
    expect(extra["peerDropAllowlistRejectionTotal"]).toBeGreaterThanOrEqual(2)
  }, 180_000)

  // An over-64-KiB body cannot reach the bot through Synapse (its 65536-byte event limit is smaller than the
  // body limit plus the envelope), so the size gate is covered by the unit tests (matrix-pure.test.ts).
  it("ignores and counts invisible-only messages", async () => {
    const alice = await human()
    const bot = await world.bot({ allowUsers: [alice.userId] })
    await bot.start()
    const roomId = await alice.createEncryptedDm(bot.user.userId)
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)

    await alice.sendText(roomId, "\u200b\u200e \u2066")
    const normal = await alice.sendText(roomId, "a normal question")
    await replyTo(alice, roomId, bot, normal)
    expect(messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)).toEqual([normal])

    const extra = (await bot.status())?.["extra"] as Record<string, number>
    expect(extra["peerDropBodyTooLargeTotal"]).toBe(0)
    expect(extra["unsupportedInboundCount"]).toBe(1)
    expect(extra["joinedRoomCount"]).toBe(1)
    expect(extra["encryptedRoomCount"]).toBe(1)
  }, 180_000)

  it("with encrypted=false refuses an encrypted invite, even from an allowed user", async () => {
    const alice = await human()
    const bot = await world.bot({ allowUsers: [alice.userId], matrixExtra: "encrypted: false," })
    await bot.start()
    const roomId = await alice.createEncryptedDm(bot.user.userId)
    await alice.waitForMembership(roomId, bot.user.userId, "leave", 30_000)
    await bot.waitForLog(/Matrix invite rejected: room is encrypted and matrix.encrypted=false/)
    const extra = (await bot.status())?.["extra"] as Record<string, number>
    expect(extra["peerDropEncryptedRoomTotal"]).toBe(1)
  }, 180_000)

  it(
    "with encrypted=false answers in a plain room, and marks the room unsupported once it becomes encrypted",
    async () => {
      const alice = await human()
      const bot = await world.bot({ allowUsers: [alice.userId], matrixExtra: "encrypted: false," })
      await bot.start()
      const { room_id: roomId } = await alice.client.createRoom({
        is_direct: true,
        invite: [bot.user.userId],
        preset: Preset.TrustedPrivateChat
      })
      await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      const plain = await alice.sendText(roomId, "plain question")
      await alice.waitForMessage(
        roomId,
        (m) =>
          m.sender === bot.user.userId && (m.content["m.relates_to"] as any)?.["m.in_reply_to"]?.event_id === plain,
        45_000
      )

      await alice.client.sendStateEvent(
        roomId,
        "m.room.encryption" as never,
        { algorithm: "m.megolm.v1.aes-sha2" } as never,
        ""
      )
      await bot.waitForLog(/Matrix room became encrypted while matrix.encrypted=false/, 30_000)
      const requestsBefore = llm().requests.length
      const secret = await alice.sendText(roomId, "this one is encrypted")
      const deadline = Date.now() + 30_000
      let extra: Record<string, unknown> = {}
      while (Date.now() < deadline) {
        extra = ((await bot.status())?.["extra"] ?? {}) as Record<string, unknown>
        if (extra["unsupportedRoomCount"] === 1 && Number(extra["peerDropEncryptedRoomTotal"]) >= 2) break
        await new Promise((r) => setTimeout(r, 200))
      }
      expect(extra["unsupportedRoomCount"]).toBe(1)
      expect(extra["unsupportedRooms"]).toEqual([roomId])
      expect(Number(extra["peerDropEncryptedRoomTotal"])).toBeGreaterThanOrEqual(2)
      expect(llm().requests.length).toBe(requestsBefore)
      expect(messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)).toEqual([plain])
      expect(secret).toBeDefined()
    },
    180_000
  )

  it("respects a kick (no rejoin) and a ban, and joins again only on a new invite", async () => {
    const alice = await human()
    const bot = await world.bot({ allowUsers: [alice.userId] })
    await bot.start()
    // a room where alice outranks the bot (in a trusted_private_chat DM both have power 100: no kick)
    const roomId = await alice.createEncryptedRoom([bot.user.userId], "kick and ban")
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
    const joinsOf = () =>
      bot.output().split("\n").filter((l) =>
        l.includes("--> POST") && l.includes("/join") && l.includes(encodeURIComponent(roomId))
      ).length
    const joinedOnce = joinsOf()
    await alice.client.kick(roomId, bot.user.userId, "testing")
    await alice.waitForMembership(roomId, bot.user.userId, "leave", 30_000)
    // several sync cycles later the bot is still out and has not tried to join
    await new Promise((r) => setTimeout(r, 4_000))
    expect(alice.client.getRoom(roomId)?.getMember(bot.user.userId)?.membership).toBe("leave")
    expect(joinsOf()).toBe(joinedOnce)

    await alice.invite(roomId, bot.user.userId)
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
    await alice.client.ban(roomId, bot.user.userId, "testing")
    await alice.waitForMembership(roomId, bot.user.userId, "ban", 30_000)
    const asked = await alice.sendText(roomId, "you cannot see this")
    await new Promise((r) => setTimeout(r, 3_000))
    expect(messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)).not.toContain(asked)
    // one join for the first invite, one for the new invite, none after the kick or the ban
    expect(joinsOf()).toBe(joinedOnce + 1)
  }, 180_000)
})
