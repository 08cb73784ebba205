// Streamed answers (issue 20 point 1) against the real Synapse, in an encrypted DM with the real daemon: a
// slow model's answer shows up as the first chunk, then `m.replace` edits, finally the full text, with the
// bot typing until the final edit; and a SIGKILL in the middle of a streamed answer leaves, after the
// restart, exactly one reply to the question whose latest edit is the complete answer. Edits in (point 3):
// an edit of an answered question edits cara's reply, and is handled once.
import { RoomMemberEvent } from "matrix-js-sdk"
import { expect, it } from "vitest"
import { eventually } from "../support/eventually.js"
import type { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { inReplyTo, useMatrixWorld } from "./matrix-world.js"

/** The bot's events in the room that relate to `question`: its replies, and the edits of `reply`. */
const botEvents = (human: Human, roomId: string, bot: string, question: string, reply?: string) => {
  const events = (human.client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [])
    .filter((e) => e.getSender() === bot && e.getType() === "m.room.message" && e.status === null)
    .map((e) => ({ eventId: e.getId() ?? "", content: e.getOriginalContent() as Record<string, unknown> }))
  const rel = (c: Record<string, unknown>) => c["m.relates_to"] as Record<string, unknown> | undefined
  const replies = events.filter((e) =>
    rel(e.content)?.["rel_type"] !== "m.replace" &&
    inReplyTo({ eventId: e.eventId, roomId, sender: bot, body: "", content: e.content, encrypted: true }) === question
  )
  const edits = events
    .filter((e) => rel(e.content)?.["rel_type"] === "m.replace" && rel(e.content)?.["event_id"] === reply)
    .map((e) => String((e.content["m.new_content"] as { body?: unknown } | undefined)?.body))
  return { replies, edits }
}

describeSynapse("Matrix: streamed answers and edits in (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)

  it(
    "a slow model streams into one reply (first chunk, edits, the full text last; typing until then), and a SIGKILL mid-stream still ends in one complete reply",
    async () => {
      const { alice, bot, roomId } = await world.botInDm()
      const botId = bot.user.userId
      const typing: Array<boolean> = []
      alice.client.on(RoomMemberEvent.Typing, (_e, member) => {
        if (member.userId === botId && member.roomId === roomId) typing.push(member.typing)
      })
      const isTyping = () => alice.client.getRoom(roomId)?.getMember(botId)?.typing === true

      // 1. a slow model: 24 deltas, 250 ms apart
      const words = Array.from({ length: 23 }, (_, i) => `word${i} and some more text `)
      const chunks = ["The **first** sentence is here. ", ...words]
      const full = chunks.join("").trim()
      world.llm.enqueue({ type: "text", chunks, chunkDelayMs: 250 })
      const q1 = await alice.sendText(roomId, "tell me a long story")
      const first = await world.replyTo(alice, bot, roomId, q1)
      // the first chunk: a start of the answer, not all of it, while the bot still types
      expect(first.body.length).toBeLessThan(full.length)
      expect(full.startsWith(first.body)).toBe(true)
      expect(first.encrypted).toBe(true)
      expect(isTyping()).toBe(true)
      const finalBody = await alice.waitForEdit(roomId, first.eventId, (b) => b === full, 60_000)
      expect(finalBody).toBe(full)
      const { edits, replies } = botEvents(alice, roomId, botId, q1, first.eventId)
      expect(replies).toHaveLength(1)
      // edits in between: growing previews, then the full text last
      expect(edits.length).toBeGreaterThanOrEqual(2)
      expect(edits.at(-1)).toBe(full)
      for (const e of edits) expect(full.startsWith(e)).toBe(true)
      const finalEdit = await alice.waitForRoomEvent(
        roomId,
        "m.room.message",
        ({ content }) => (content["m.new_content"] as { body?: unknown } | undefined)?.body === full
      )
      // the final edit carries the full formatted body
      const newContent = finalEdit.content["m.new_content"] as Record<string, unknown>
      expect(newContent["format"]).toBe("org.matrix.custom.html")
      expect(newContent["formatted_body"]).toContain("<strong>first</strong>")
      expect(newContent["formatted_body"]).toContain("word22 and some more text")
      // typing went off after the final edit
      await eventually("the bot stops typing", () => !isTyping(), { context: () => bot.output().slice(-3000) })
      expect(typing.at(-1)).toBe(false)

      // 2. SIGKILL after the human saw the first chunk; the restarted bot finishes the same reply
      const slow = Array.from({ length: 40 }, (_, i) => `part${i} of an answer that never ends here `)
      world.llm.enqueue({ type: "text", chunks: ["Killed answer starts. ", ...slow], chunkDelayMs: 300 })
      const q2 = await alice.sendText(roomId, "another long one")
      const partial = await world.replyTo(alice, bot, roomId, q2)
      expect(partial.body.startsWith("Killed answer starts.")).toBe(true)
      expect((await bot.stop("SIGKILL")).signal).toBe("SIGKILL")

      const complete = "The complete answer, after the restart."
      world.llm.enqueue({ type: "text", chunks: [complete] })
      await bot.start()
      await bot.waitForLog(/Matrix message answered/, 60_000)
      expect(await alice.waitForEdit(roomId, partial.eventId, (b) => b === complete, 60_000)).toBe(complete)
      const after = botEvents(alice, roomId, botId, q2, partial.eventId)
      expect(after.replies.map((r) => r.eventId)).toEqual([partial.eventId])
      expect(after.edits.at(-1)).toBe(complete)
      // the first question still has its one reply
      expect(botEvents(alice, roomId, botId, q1).replies).toHaveLength(1)
    },
    240_000
  )

  it(
    "an edit of an answered question edits cara's reply (no second reply); the edit is handled once, also across a restart",
    async () => {
      const { alice, bot, roomId } = await world.botInDm()
      const botId = bot.user.userId
      world.llm.enqueue({ type: "text", chunks: ["Four."] })
      const q = await alice.sendText(roomId, "what is 2+2")
      const reply = await world.replyTo(alice, bot, roomId, q)
      expect(reply.body).toBe("Four.")
      const requests = world.llm.requests.length

      world.llm.enqueue({ type: "text", chunks: ["Six."] })
      await alice.editText(roomId, q, "what is 3+3")
      expect(await alice.waitForEdit(roomId, reply.eventId, (b) => b === "Six.", 45_000)).toBe("Six.")
      // the model saw the new text, as a new turn
      expect(world.llm.requests.length).toBe(requests + 1)
      expect(JSON.stringify(world.llm.requests.at(-1)?.body)).toContain("what is 3+3")
      // the new text itself, not the "* " fallback body of the edit event
      expect(JSON.stringify(world.llm.requests.at(-1)?.body)).not.toContain("* what is 3+3")
      await bot.waitForLog(/Matrix message answered/, 30_000)

      // a restart after a kill (the edit may come again with the sync): nothing new for it
      expect((await bot.stop("SIGKILL")).signal).toBe("SIGKILL")
      await bot.start()
      world.llm.enqueue({ type: "text", chunks: ["Still here."] })
      const next = await alice.sendText(roomId, "are you there")
      expect((await world.replyTo(alice, bot, roomId, next)).body).toBe("Still here.")
      expect(world.llm.requests.length).toBe(requests + 2)
      const after = botEvents(alice, roomId, botId, q, reply.eventId)
      expect(after.replies.map((r) => r.eventId)).toEqual([reply.eventId])
      expect(after.edits).toEqual(["Six."])
    },
    180_000
  )
})
