// The daemon's core against the real Synapse: an encrypted DM from an allowed person gets an encrypted answer
// from the agent (the real daemon process, a fake LLM), once, across restarts and a crash.
import * as fs from "node:fs"
import { afterAll, afterEach, beforeAll, expect, it } from "vitest"
import type { FakeLlmServer } from "../support/fake-llm.js"
import { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { type Bot, makeBot, startFakeLlm } from "./matrix-support.js"

describeSynapse("Matrix: encrypted DM round trip (real daemon)", (hs) => {
  let llm: FakeLlmServer
  let closeLlm: () => Promise<void>
  const bots: Array<Bot> = []
  const humans: Array<Human> = []

  beforeAll(async () => {
    ;({ llm, close: closeLlm } = await startFakeLlm())
  })
  afterEach(async (ctx) => {
    if (ctx.task.result?.state === "fail") {
      for (const b of bots) {
        const file = `${b.dir}/daemon-output.log`
        fs.writeFileSync(file, b.output())
        process.stderr.write(`fake LLM requests: ${llm.requests.length}\n`)
        process.stderr.write(`--- daemon output (${b.user.userId}) in ${file}; last lines:\n${b.output().slice(-3000)}\n`)
      }
    }
    for (const b of bots.splice(0)) await b.stop("SIGKILL")
    for (const h of humans.splice(0)) await h.stop()
  })
  afterAll(async () => {
    await closeLlm()
  })

  const human = async () => {
    const u = await hs.registerUser()
    const h = await Human.login(hs.baseUrl, u.userId, u.password)
    humans.push(h)
    await h.start()
    return h
  }

  it("answers an encrypted DM with an encrypted, formatted reply to the message; the password is replaced by a sealed token", async () => {
    const alice = await human()
    const bot = await makeBot(hs, llm, { allowUsers: [alice.userId] })
    bots.push(bot)
    llm.enqueue({ type: "text", chunks: ["Hello **Alice**", ", here is `code`."] })
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
    expect(JSON.stringify(llm.requests.at(-1)?.body)).toContain("hi bot")

    // config write-back: the token is sealed, the device id recorded, the password gone
    const config = bot.config()
    expect(config).toMatch(/accessToken:\s*"enc:v2:/)
    expect(config).toMatch(/deviceId:\s*"[A-Z0-9]+"/)
    expect(config).not.toMatch(/password:/)
    expect(config).toContain("// first login only")
  }, 150_000)
})
