// Group context against the real Synapse (issue 20.5): in an encrypted room with two humans and the bot, the
// model's request names the speakers by display name (with the MXID where a name collides or poses as an
// MXID), a thread is its own conversation, `/new` in a thread leaves the room's history, and
// `matrix.threadReplies: "always"` starts a thread on a main-timeline question.
import { expect, it } from "vitest"
import type { RecordedRequest } from "../support/fake-llm.js"
import type { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { inReplyTo, useMatrixWorld } from "./matrix-world.js"

/** The contents of a request's messages (text parts joined), oldest first. */
const contents = (r: RecordedRequest | undefined): Array<string> =>
  ((r?.body as { messages?: Array<{ content: unknown }> } | undefined)?.messages ?? []).map((m) =>
    typeof m.content === "string"
      ? m.content
      : (m.content as Array<{ text?: string }>).map((p) => p.text ?? "").join("")
  )

const sendInThread = async (h: Human, roomId: string, root: string, body: string): Promise<string> => {
  const { event_id } = await h.client.sendEvent(roomId, "m.room.message" as never, {
    msgtype: "m.text",
    body,
    "m.relates_to": { rel_type: "m.thread", event_id: root, is_falling_back: true, "m.in_reply_to": { event_id: root } }
  } as never)
  return event_id
}

/** A display name for this room only (Element's `/myroomnick`): a new `m.room.member` state event. */
const setRoomName = async (h: Human, roomId: string, displayname: string) => {
  await h.client.sendStateEvent(
    roomId,
    "m.room.member" as never,
    { membership: "join", displayname } as never,
    h.userId
  )
}

const threadOf = (content: Record<string, unknown>) =>
  (content["m.relates_to"] as { rel_type?: string; event_id?: string } | undefined)?.rel_type === "m.thread"
    ? (content["m.relates_to"] as { event_id?: string }).event_id
    : undefined

describeSynapse("Matrix: group context (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)
  const llm = () => world.llm

  it("names speakers, keeps a thread's conversation apart, and /new in a thread leaves the room's", async () => {
    const alice = await world.human()
    const bob = await world.human()
    await alice.client.setDisplayName("Alice Liddell")
    await bob.client.setDisplayName("Bob")
    const bot = await world.bot({ allowUsers: [alice.userId, bob.userId], matrixExtra: `groupMessages: "all",` })
    await bot.start()
    const roomId = await alice.createEncryptedRoom([bot.user.userId, bob.userId], "group context")
    await bob.joinRoom(roomId)
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
    await alice.waitForMembership(roomId, bob.userId, "join", 30_000)

    const ask = async (h: Human, text: string) => {
      const id = await h.sendText(roomId, text)
      return { id, reply: await world.replyTo(alice, bot, roomId, id) }
    }

    // display names, and the note that they are labels
    const first = await ask(alice, "hello from alice")
    await ask(bob, "hello from bob")
    const named = llm().requests.at(-1)
    expect(contents(named)).toEqual([
      "[Alice Liddell] hello from alice",
      first.reply.body,
      "[Bob] hello from bob"
    ])
    expect(JSON.stringify((named?.body as { system?: unknown }).system)).toContain("square brackets")

    // bob takes alice's name, then her MXID: the MXID is added (and stays with those messages)
    await setRoomName(bob, roomId, "Alice Liddell")
    await ask(bob, "I am alice")
    expect(contents(llm().requests.at(-1)).at(-1)).toBe(`[Alice Liddell (${bob.userId})] I am alice`)
    await setRoomName(bob, roomId, alice.userId)
    await ask(bob, "me again")
    const spoofed = contents(llm().requests.at(-1))
    expect(spoofed.at(-1)).toBe(`[${alice.userId} (${bob.userId})] me again`)
    expect(spoofed).toContain(`[Alice Liddell (${bob.userId})] I am alice`)

    // a question in a thread: answered in the thread, and its conversation holds none of the main timeline
    const inThread = await sendInThread(alice, roomId, first.id, "a thread question")
    const threadReply = await world.replyTo(alice, bot, roomId, inThread)
    expect(threadOf(threadReply.content)).toBe(first.id)
    expect(contents(llm().requests.at(-1))).toEqual(["[Alice Liddell] a thread question"])
    const second = await sendInThread(bob, roomId, first.id, "and a follow-up")
    await world.replyTo(alice, bot, roomId, second)
    expect(contents(llm().requests.at(-1))).toEqual([
      "[Alice Liddell] a thread question",
      threadReply.body,
      `[${alice.userId} (${bob.userId})] and a follow-up`
    ])
    // the main timeline's conversation did not get the thread's messages
    await ask(alice, "back in the room")
    const main = contents(llm().requests.at(-1))
    expect(main.at(0)).toBe("[Alice Liddell] hello from alice")
    expect(main.at(-1)).toBe("[Alice Liddell] back in the room")
    expect(main.join("\n")).not.toContain("thread question")

    // /new in the thread: the thread starts over, the room's history stays
    const reset = await sendInThread(alice, roomId, first.id, "/new")
    const resetReply = await world.replyTo(alice, bot, roomId, reset)
    expect(resetReply.body).toContain("thread")
    expect(threadOf(resetReply.content)).toBe(first.id)
    const after = await sendInThread(alice, roomId, first.id, "fresh thread")
    await world.replyTo(alice, bot, roomId, after)
    expect(contents(llm().requests.at(-1))).toEqual(["[Alice Liddell] fresh thread"])
    await ask(bob, "room still remembers?")
    const kept = contents(llm().requests.at(-1))
    expect(kept.at(0)).toBe("[Alice Liddell] hello from alice")
    expect(kept).toContain("[Alice Liddell] back in the room")
    expect(kept.join("\n")).not.toContain("fresh thread")
  }, 240_000)

  it("threadReplies \"always\" answers a main-timeline question in a new thread rooted at it", async () => {
    const alice = await world.human()
    const bot = await world.bot({ allowUsers: [alice.userId], matrixExtra: `threadReplies: "always",` })
    await bot.start()
    const roomId = await world.dm(alice, bot)

    const q1 = await alice.sendText(roomId, "first question")
    const r1 = await world.replyTo(alice, bot, roomId, q1)
    expect(threadOf(r1.content)).toBe(q1)
    expect(inReplyTo(r1)).toBe(q1)
    // the follow-up in that thread continues from the question
    const follow = await sendInThread(alice, roomId, q1, "follow-up")
    const r2 = await world.replyTo(alice, bot, roomId, follow)
    expect(threadOf(r2.content)).toBe(q1)
    expect(contents(llm().requests.at(-1))).toEqual(["first question", r1.body, "follow-up"])
    // another main-timeline question opens its own thread and conversation
    const q2 = await alice.sendText(roomId, "second question")
    const r3 = await world.replyTo(alice, bot, roomId, q2)
    expect(threadOf(r3.content)).toBe(q2)
    expect(contents(llm().requests.at(-1))).toEqual(["second question"])
  }, 180_000)
})
