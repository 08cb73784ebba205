// Undecryptable events (issue 7 point 8): a message whose Megolm key has not reached the bot is held, counted
// in the channel status, and answered exactly once when the key arrives, also when it arrives while the
// daemon is stopped. The human holds back its room-key share (ToDeviceGate) to make the key late.
import { expect, it } from "vitest"
import { eventually } from "../support/eventually.js"
import { describeSynapse } from "../support/synapse/index.js"
import { type Bot, messagesFrom } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

const undecryptable = async (bot: Bot): Promise<number> => {
  const status = await bot.status()
  return Number((status?.["extra"] as Record<string, unknown> | undefined)?.["undecryptableEventCount"])
}

const until = (what: string, check: () => Promise<boolean>, timeoutMs = 30_000) =>
  eventually(what, check, { timeoutMs, intervalMs: 100 })

describeSynapse("Matrix: undecryptable events wait for their keys (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)

  const setup = world.botInDm
  const replyTo = world.replyTo
  const llm = () => world.llm

  it("holds a message whose key is late, counts it, and answers it once when the key arrives", async () => {
    const { alice, bot, roomId } = await setup()
    expect(await undecryptable(bot)).toBe(0)

    alice.toDevice.holding = true
    const late = await alice.sendText(roomId, "the key of this one comes late")
    expect(alice.toDevice.heldCount).toBeGreaterThan(0)
    const requestsBefore = llm().requests.length
    await until("the bot to count the undecryptable event", async () => (await undecryptable(bot)) === 1)
    // held, not answered: the model was not called with the placeholder text
    expect(llm().requests.length).toBe(requestsBefore)

    await alice.toDevice.release()
    const reply = await replyTo(alice, bot, roomId, late)
    expect(reply.encrypted).toBe(true)
    expect(JSON.stringify(llm().requests.at(-1)?.body)).toContain("the key of this one comes late")
    await until("the count to drop back to 0", async () => (await undecryptable(bot)) === 0)
    expect(messagesFrom(alice, roomId, bot.user.userId).filter((m) => m.inReplyTo === late)).toHaveLength(1)
  }, 240_000)

  it(
    "a held message survives a restart: the key arrives while the daemon is down, the answer comes after it starts",
    async () => {
      const { alice, bot, roomId } = await setup()
      alice.toDevice.holding = true
      const late = await alice.sendText(roomId, "answer me after your restart")
      await until("the bot to count the undecryptable event", async () => (await undecryptable(bot)) === 1)
      expect((await bot.stop("SIGTERM")).code).toBe(0)

      await alice.toDevice.release()
      await bot.start()
      await replyTo(alice, bot, roomId, late)
      await until("the count to drop back to 0", async () => (await undecryptable(bot)) === 0)
      const next = await alice.sendText(roomId, "and a normal one")
      await replyTo(alice, bot, roomId, next)
      expect(messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)).toEqual([late, next])
    },
    240_000
  )
})
