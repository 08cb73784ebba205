// How a reply looks and feels in the room (issue 7 point 6), against the real Synapse: the bot shows typing
// while the agent works and stops afterwards, sends a read receipt for the message it handled, and answers a
// message in a thread inside that thread.
import { RoomMemberEvent } from "matrix-js-sdk"
import { expect, it } from "vitest"
import { describeSynapse } from "../support/synapse/index.js"
import { useMatrixWorld } from "./matrix-world.js"

describeSynapse("Matrix: typing, read receipts and threads (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)

  const setup = world.botInDm
  const replyTo = world.replyTo
  const llm = () => world.llm

  it("types while the agent works, stops typing after the answer, and marks the message read", async () => {
    const { alice, bot, roomId } = await setup()
    const typing: Array<boolean> = []
    // the model answers only once the human has seen the bot typing: on a slow machine a fixed delay could
    // end before the typing notification arrives, and "on" then "off" in one sync shows only "off"
    let sawTyping = () => {}
    const typed = new Promise<void>((r) => (sawTyping = r))
    alice.client.on(RoomMemberEvent.Typing, (_event, member) => {
      if (member.roomId !== roomId || member.userId !== bot.user.userId) return
      typing.push(member.typing)
      if (member.typing) sawTyping()
    })
    llm().enqueue({ type: "text", chunks: ["slow answer"], until: typed })
    const sent = await alice.sendText(roomId, "take your time")
    const deadline = Date.now() + 20_000
    while (!typing.includes(true) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    expect(typing).toContain(true)

    const reply = await replyTo(alice, bot, roomId, sent)
    expect(reply.body).toBe("slow answer")
    const room = alice.client.getRoom(roomId)!
    const until = Date.now() + 20_000
    while (Date.now() < until) {
      const stoppedTyping = room.getMember(bot.user.userId)?.typing === false && typing.at(-1) === false
      const receipt = room.getReadReceiptForUserId(bot.user.userId, true)
      if (stoppedTyping && receipt !== null) break
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(typing.at(-1)).toBe(false)
    // a real receipt from the bot (not one the SDK synthesises from the bot's own reply)
    const receipt = room.getReadReceiptForUserId(bot.user.userId, true)
    expect(receipt?.eventId).toBe(sent)
  }, 180_000)

  it("answers a message in a thread inside that thread", async () => {
    const { alice, bot, roomId } = await setup()
    const root = await alice.sendText(roomId, "root question")
    await replyTo(alice, bot, roomId, root)
    const { event_id: inThread } = await alice.client.sendEvent(roomId, "m.room.message" as never, {
      msgtype: "m.text",
      body: "follow-up in the thread",
      "m.relates_to": {
        rel_type: "m.thread",
        event_id: root,
        is_falling_back: true,
        "m.in_reply_to": { event_id: root }
      }
    } as never)
    const reply = await alice.waitForMessage(
      roomId,
      (m) => m.sender === bot.user.userId && (m.content["m.relates_to"] as any)?.rel_type === "m.thread",
      45_000
    )
    expect(reply.content["m.relates_to"]).toMatchObject({
      rel_type: "m.thread",
      event_id: root,
      "m.in_reply_to": { event_id: inThread }
    })
    expect(JSON.stringify(llm().requests.at(-1)?.body)).toContain("follow-up in the thread")
  }, 180_000)

  it("answers /help in the encrypted DM with the command list, without calling the model", async () => {
    const { alice, bot, roomId } = await setup()
    const before = llm().requests.length
    const sent = await alice.sendText(roomId, "/help")
    const reply = await replyTo(alice, bot, roomId, sent)
    expect(reply.encrypted).toBe(true)
    for (const name of ["/help", "/model", "/new"]) expect(reply.body).toContain(name)
    expect(reply.content["formatted_body"]).toContain("<li><code>/model</code>")
    expect(llm().requests.length).toBe(before)
  }, 180_000)

  it("with matrix.reactions: 👀 on the question while working, removed when answered; ❌ on failure", async () => {
    const alice = await world.human()
    const bot = await world.bot({ allowUsers: [alice.userId], matrixExtra: "reactions: true," })
    await bot.start()
    const roomId = await world.dm(alice, bot)
    const fromBot = (key: string, on: string) => (ev: { sender: string; content: Record<string, unknown> }) => {
      const rel = ev.content["m.relates_to"] as { rel_type?: string; event_id?: string; key?: string } | undefined
      return ev.sender === bot.user.userId && rel?.rel_type === "m.annotation" && rel.event_id === on &&
        rel.key === key
    }
    let release = () => {}
    const held = new Promise<void>((r) => (release = r))
    llm().enqueue({ type: "text", chunks: ["fine"], until: held })
    const sent = await alice.sendText(roomId, "are you there?")
    const eyes = await alice.waitForRoomEvent(roomId, "m.reaction", fromBot("👀", sent), 30_000)
    release()
    const reply = await replyTo(alice, bot, roomId, sent)
    expect(reply.body).toBe("fine")
    await alice.waitForRoomEvent(roomId, "m.room.redaction", (ev) => ev.redacts === eyes.eventId, 30_000)

    llm().enqueue({ type: "error", status: 400, errorType: "invalid_request_error", message: "bad request" })
    const failing = await alice.sendText(roomId, "this one fails")
    await replyTo(alice, bot, roomId, failing)
    const cross = await alice.waitForRoomEvent(roomId, "m.reaction", fromBot("❌", failing), 30_000)
    expect(cross.sender).toBe(bot.user.userId)
  }, 180_000)
})
