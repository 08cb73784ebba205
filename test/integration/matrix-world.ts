// The lifecycle every real-daemon test file needs, in one place: a fake LLM for the file, bots and humans
// stopped after each test, and the daemon's output kept (and its tail printed) when a test fails.
// Separate from matrix-support.ts because it registers vitest hooks, and the benches import that file.
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, afterEach, beforeAll } from "vitest"
import { traceWait } from "../support/eventually.js"
import type { FakeLlmServer } from "../support/fake-llm.js"
import { Human, type ReceivedMessage } from "../support/human.js"
import type { SharedSynapse } from "../support/synapse/index.js"
import { type Bot, type BotOptions, makeBot, startFakeLlm } from "./matrix-support.js"

/** The event a bot's reply answers (`m.in_reply_to`), if any. */
export const inReplyTo = (m: ReceivedMessage): string | undefined =>
  ((m.content["m.relates_to"] as Record<string, unknown> | undefined)?.["m.in_reply_to"] as
    | { event_id?: string }
    | undefined)
    ?.event_id

export const useMatrixWorld = (hs: SharedSynapse) => {
  let llm: FakeLlmServer | undefined
  let closeLlm = async () => {}
  const bots: Array<Bot> = []
  const humans: Array<Human> = []

  beforeAll(async () => {
    ;({ llm, close: closeLlm } = await startFakeLlm())
  })
  afterEach(async (ctx) => {
    if (ctx.task.result?.state === "fail") {
      for (const b of bots) {
        const file = path.join(b.dir, "daemon-output.log")
        fs.writeFileSync(file, b.output())
        process.stderr.write(
          `--- daemon output (${b.user.userId}) in ${file}; last lines:\n${b.output().slice(-3000)}\n`
        )
      }
    }
    for (const b of bots.splice(0)) await b.stop("SIGKILL")
    for (const h of humans.splice(0)) await h.stop()
  })
  afterAll(async () => {
    await closeLlm()
  })

  const world = {
    get llm(): FakeLlmServer {
      if (llm === undefined) throw new Error("the fake LLM starts in beforeAll")
      return llm
    },
    /** A fresh account with an Element-like client, synced. */
    human: async (): Promise<Human> => {
      const startedAt = Date.now()
      const u = await hs.registerUser()
      const h = await Human.login(hs.baseUrl, u.userId, u.password)
      humans.push(h)
      await h.start()
      traceWait("a human registered, logged in and synced", startedAt)
      return h
    },
    /** A fresh bot account and config; not started. */
    bot: async (options: BotOptions = {}): Promise<Bot> => {
      const b = await makeBot(hs, world.llm, options)
      bots.push(b)
      return b
    },
    /** An encrypted DM from the human, once the bot has joined it. */
    dm: async (human: Human, bot: Bot): Promise<string> => {
      const roomId = await human.createEncryptedDm(bot.user.userId)
      await human.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      return roomId
    },
    /** A human, a started bot that admits them, and an encrypted DM between the two. */
    botInDm: async (): Promise<{ alice: Human; bot: Bot; roomId: string }> => {
      const alice = await world.human()
      const bot = await world.bot({ allowUsers: [alice.userId] })
      await bot.start()
      return { alice, bot, roomId: await world.dm(alice, bot) }
    },
    /** The bot's reply to `eventId`, as the human decrypted it. */
    replyTo: (human: Human, bot: Bot, roomId: string, eventId: string, timeoutMs = 45_000) =>
      human.waitForMessage(roomId, (m) => m.sender === bot.user.userId && inReplyTo(m) === eventId, timeoutMs)
  }
  return world
}
