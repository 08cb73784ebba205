// Redactions and feedback (issue 20 §3, §4) against the real Synapse, one daemon in an encrypted DM: a
// question redacted after its answer has the answer redacted (the human sees the redaction); a question
// redacted while the (held) model works gets no answer, nor one asked and redacted while the bot was
// stopped; 👍/👎 on an answer become `feedback` records in the
// bot's audit.jsonl with ids only, while a 👍 on the question and one from a user not on the allowlist are
// ignored.
import * as fs from "node:fs"
import * as path from "node:path"
import { expect, it } from "vitest"
import { eventually } from "../support/eventually.js"
import { describeSynapse } from "../support/synapse/index.js"
import { type Bot, messagesFrom } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

const extraOf = async (bot: Bot) => ((await bot.status())?.["extra"] ?? {}) as Record<string, unknown>

/** The `feedback` / `feedback-removed` records of the bot's audit log. */
const feedbackOf = (bot: Bot) => {
  const file = path.join(bot.dir, "audit.jsonl")
  if (!fs.existsSync(file)) return { text: "", records: [] as Array<{ event: string; data: Record<string, unknown> }> }
  const text = fs.readFileSync(file, "utf8")
  const records = text.split("\n").filter((l) => l.trim() !== "").map((l) =>
    JSON.parse(l) as { event: string; data: Record<string, unknown> }
  ).filter((r) => r.event.startsWith("feedback"))
  return { text, records }
}

describeSynapse("Matrix: redactions and feedback (real daemon, encrypted DM)", (hs) => {
  const world = useMatrixWorld(hs)

  it(
    "redacts its answer to a redacted question, does not answer one redacted while the model works, and records feedback",
    async () => {
      const { alice, bot, roomId } = await world.botInDm()
      const llm = world.llm

      // 1. answered, then redacted by its sender: the bot redacts its answer
      llm.enqueue({ type: "text", chunks: ["the first answer"] })
      const q1 = await alice.sendText(roomId, "first question")
      const a1 = await world.replyTo(alice, bot, roomId, q1)
      expect(a1.body).toBe("the first answer")
      await alice.redact(roomId, q1)
      const redaction = await alice.waitForRoomEvent(
        roomId,
        "m.room.redaction",
        (e) => e.redacts === a1.eventId,
        30_000
      )
      expect(redaction.sender).toBe(bot.user.userId)

      // 2. redacted while the model is held: no answer reaches the room
      let release = () => {}
      const held = new Promise<void>((r) => (release = r))
      const before = llm.requests.length
      llm.enqueue({ type: "text", chunks: ["an answer nobody should see"], until: held })
      const q2 = await alice.sendText(roomId, "second question, soon taken back")
      await llm.waitForRequests(before + 1)
      await alice.redact(roomId, q2)
      await bot.waitForLog(new RegExp(`Matrix question redacted[^\\n]*${escape(q2)}`), 30_000)
      release()
      await eventually("the redacted question counted", async () => (await extraOf(bot))["inboundRedactedTotal"] === 1)

      // 3. the next question is answered (answers in a room go out in order: nothing for q2 is still coming)
      llm.enqueue({ type: "text", chunks: ["the third answer"] })
      const q3 = await alice.sendText(roomId, "third question")
      const a3 = await world.replyTo(alice, bot, roomId, q3)
      const fromBot = messagesFrom(alice, roomId, bot.user.userId)
      expect(fromBot.filter((m) => m.inReplyTo === q2)).toEqual([])
      expect(fromBot.map((m) => m.body)).not.toContain("an answer nobody should see")

      // 4. asked and redacted while the bot was stopped: the backlog brings it redacted, it is not answered
      await bot.stop()
      const q4 = await alice.sendText(roomId, "asked while the bot was away")
      await alice.redact(roomId, q4)
      await bot.start()
      llm.enqueue({ type: "text", chunks: ["the fifth answer"] })
      const q5 = await alice.sendText(roomId, "fifth question")
      await world.replyTo(alice, bot, roomId, q5)
      await eventually(
        "the backlog's redacted question counted",
        async () => Number((await extraOf(bot))["inboundRedactedTotal"] ?? 0) >= 1
      )
      expect(messagesFrom(alice, roomId, bot.user.userId).filter((m) => m.inReplyTo === q4)).toEqual([])
      expect(JSON.stringify(llm.requests.map((r) => r.body))).not.toContain("asked while the bot was away")

      // 5. feedback: 👍 on the answer is recorded (ids only), 👍 on the question is not
      await alice.react(roomId, q3, "👍")
      const up = await alice.react(roomId, a3.eventId, "👍🏽")
      await eventually("the feedback record", () => feedbackOf(bot).records.length >= 1 ? true : undefined)
      expect(feedbackOf(bot).records[0]).toEqual({
        ts: expect.any(String),
        event: "feedback",
        data: {
          value: "positive",
          roomId,
          userId: alice.userId,
          answerEventId: a3.eventId,
          reactionEventId: up,
          questionEventId: q3
        }
      })

      // 6. a user not on the allowlist reacts on the answer: ignored; alice's 👎 after it is recorded
      const bob = await world.human()
      await alice.invite(roomId, bob.userId)
      await bob.joinRoom(roomId)
      await bob.react(roomId, a3.eventId, "👍")
      // the bot has seen bob once his next event (a message it refuses) is counted
      const refusedBefore = Number((await extraOf(bot))["peerDropAllowlistRejectionTotal"] ?? 0)
      await bob.sendText(roomId, `${bot.user.userId} hello from bob`)
      await eventually(
        "bob's message refused",
        async () => Number((await extraOf(bot))["peerDropAllowlistRejectionTotal"] ?? 0) > refusedBefore
      )
      const down = await alice.react(roomId, a3.eventId, "👎")
      await eventually("the second feedback record", () => feedbackOf(bot).records.length >= 2 ? true : undefined)
      // 7. alice takes her 👍 back
      await alice.redact(roomId, up)
      await eventually("the removal record", () => feedbackOf(bot).records.length >= 3 ? true : undefined)
      const { records, text } = feedbackOf(bot)
      expect(records.map((r) => [r.event, r.data["value"], r.data["userId"], r.data["reactionEventId"]])).toEqual([
        ["feedback", "positive", alice.userId, up],
        ["feedback", "negative", alice.userId, down],
        ["feedback-removed", "positive", alice.userId, up]
      ])
      // never any content in the audit log
      for (
        const body of ["first question", "the first answer", "third question", "the third answer", "hello from bob"]
      ) {
        expect(text).not.toContain(body)
      }
    },
    240_000
  )
})
