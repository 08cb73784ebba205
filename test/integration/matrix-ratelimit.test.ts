// A Synapse with a strict rc_message: the bot's sends hit M_LIMIT_EXCEEDED, and every answer still arrives
// (retry_after_ms honoured, same transaction id), each exactly once. The limit (one message per 5 s, burst 1)
// is far below the pace of one answer's chunks, so the limiter bites however slow the machine is; that it
// did is read from Synapse's own access log, not from the bot's.
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import type { FakeLlmServer } from "../support/fake-llm.js"
import { Human } from "../support/human.js"
import { describeSynapse, startSynapse, type SynapseServer } from "../support/synapse/index.js"
import { type Bot, makeBot, messagesFrom, startFakeLlm } from "./matrix-support.js"

describeSynapse("Matrix: strict rc_message (real daemon)", () => {
  let strict: SynapseServer
  let llm: FakeLlmServer
  let closeLlm: () => Promise<void>
  let bot: Bot | undefined
  let alice: Human | undefined

  beforeAll(async () => {
    strict = await startSynapse({ strictMessageRateLimit: { perSecond: 0.2, burst: 1 } })
    ;({ llm, close: closeLlm } = await startFakeLlm())
  })
  afterAll(async () => {
    await bot?.stop("SIGKILL")
    await alice?.stop()
    await closeLlm()
    await strict.stop()
  })

  it("every reply arrives, once, although the homeserver rate-limits the bot", async () => {
    const u = await strict.registerUser()
    // the limiter is there for the bot; the human is exempt, so its own messages are not what it throttles
    const exempt = await fetch(
      `${strict.baseUrl}/_synapse/admin/v1/users/${encodeURIComponent(u.userId)}/override_ratelimit`,
      {
        method: "POST",
        headers: { authorization: `Bearer ${strict.adminToken}`, "content-type": "application/json" },
        body: JSON.stringify({ messages_per_second: 0, burst_count: 0 })
      }
    )
    expect(exempt.ok).toBe(true)
    alice = await Human.login(strict.baseUrl, u.userId, u.password)
    await alice.start()
    bot = await makeBot(
      {
        baseUrl: strict.baseUrl,
        serverName: strict.serverName,
        synapseVersion: strict.synapseVersion,
        registerUser: (...a) => strict.registerUser(...a)
      },
      llm,
      {
        allowUsers: [alice.userId]
      }
    )
    await bot.start()
    const roomId = await alice.createEncryptedDm(bot.user.userId)
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
    // the first answer is long: three chunks posted back to back trip the limiter
    const para = (c: string) => c.repeat(11_000)
    llm.enqueue({ type: "text", chunks: [para("a"), "\n\n", para("b"), "\n\n", para("c")] })
    const asked: Array<string> = []
    for (let i = 0; i < 5; i++) asked.push(await alice.sendText(roomId, `question ${i}`))
    try {
      for (const id of asked) {
        await alice.waitForMessage(
          roomId,
          (m) =>
            m.sender === bot!.user.userId && (m.content["m.relates_to"] as any)?.["m.in_reply_to"]?.event_id === id,
          90_000
        )
      }
    } catch (e) {
      fs.writeFileSync(`${bot.dir}/daemon-output.log`, bot.output())
      throw e
    }
    await alice.waitForMessage(roomId, (m) => m.sender === bot!.user.userId && m.body === para("c"), 90_000)
    const replies = messagesFrom(alice, roomId, bot.user.userId)
    expect(replies.map((m) => m.inReplyTo)).toEqual([asked[0], asked[0], asked[0], ...asked.slice(1)])
    expect(replies.slice(0, 3).map((m) => m.body)).toEqual([para("a"), para("b"), para("c")])
    // the limiter did bite: Synapse answered at least one of the bot's reply sends with 429
    const accessLog = fs.readFileSync(path.join(strict.dataDir, "synapse.log"), "utf8")
    const limited = accessLog.split("\n").filter((l) =>
      l.includes(`{${bot!.user.userId}}`) &&
      / 429 "PUT \/_matrix\/client\/v3\/rooms\/[^/]+\/send\/m\.room\.encrypted\/cara-r1-/.test(l)
    )
    expect(limited.length, accessLog.split("\n").filter((l) => l.includes("/send/")).slice(-20).join("\n"))
      .toBeGreaterThan(0)
  }, 300_000)
})
