// The human client's rich-message helpers (test/support/human.ts) against the real Synapse, in an encrypted
// room: an encrypted image and file that the other human downloads through the authenticated media API and
// decrypts with src/domain/attachment.ts, an edit, a reaction and a redaction, each seen on the other side.
import { Effect, Either } from "effect"
import { afterAll, beforeAll, expect, it } from "vitest"
import { attachmentOf, classify, decryptAttachment, mediaDownloadPath, mxcOf } from "../../src/domain/attachment.js"
import { editOf, reactionOf } from "../../src/domain/relations.js"
import { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"

const PNG_1x1 = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
  "base64"
)

describeSynapse("rich messages from the human client", (hs) => {
  let alice: Human
  let bob: Human
  let roomId: string

  beforeAll(async () => {
    const a = await hs.registerUser()
    const b = await hs.registerUser()
    ;[alice, bob] = await Promise.all([
      Human.login(hs.baseUrl, a.userId, a.password),
      Human.login(hs.baseUrl, b.userId, b.password)
    ])
    await Promise.all([alice.start(), bob.start()])
    roomId = await alice.createEncryptedRoom([bob.userId])
    await bob.joinRoom(roomId)
    await alice.waitForMembership(roomId, bob.userId, "join")
  })
  afterAll(async () => {
    await alice?.stop()
    await bob?.stop()
  })

  const download = async (who: Human, mxc: string) => {
    const path = mediaDownloadPath(mxc)
    if (path === undefined) throw new Error(`not an mxc URI: ${mxc}`)
    const res = await fetch(`${who.baseUrl}${path}`, { headers: { authorization: `Bearer ${who.accessToken}` } })
    expect(res.status).toBe(200)
    return new Uint8Array(await res.arrayBuffer())
  }

  it("sends an encrypted image and file that the other side downloads, checks and decrypts", async () => {
    const imageId = await alice.sendEncryptedImage(roomId, PNG_1x1, {
      name: "dot.png",
      mimetype: "image/png",
      caption: "What colour is this?"
    })
    const fileId = await alice.sendEncryptedFile(roomId, Buffer.from("a,b\n1,2\n"), {
      name: "t.csv",
      mimetype: "text/csv"
    })
    for (const [id, want] of [[imageId, PNG_1x1], [fileId, Buffer.from("a,b\n1,2\n")]] as const) {
      const msg = await bob.waitForMessage(roomId, (m) => m.eventId === id)
      expect(msg.encrypted).toBe(true)
      const a = Either.getOrThrow(attachmentOf(msg.content))
      expect(a.source._tag).toBe("Encrypted")
      if (a.source._tag !== "Encrypted") return
      const ciphertext = await download(bob, mxcOf(a))
      expect(Buffer.from(ciphertext).equals(Buffer.from(want))).toBe(false)
      const clear = await Effect.runPromise(decryptAttachment(ciphertext, a.source.file))
      expect(Buffer.from(clear).equals(Buffer.from(want))).toBe(true)
      expect(classify(a, clear, true)._tag).toBe(id === imageId ? "Image" : "Text")
      if (id === imageId) expect(a.caption).toBe("What colour is this?")
    }
  })

  it("edits, reacts and redacts, and the other side sees each", async () => {
    const q = await alice.sendText(roomId, "what is 2+2?")
    await bob.waitForMessage(roomId, (m) => m.eventId === q)
    const editId = await alice.editText(roomId, q, "what is 3+3?")
    expect(await bob.waitForEdit(roomId, q, (b) => b === "what is 3+3?")).toBe("what is 3+3?")
    const edit = await bob.waitForRoomEvent(roomId, "m.room.message", (e) => e.eventId === editId)
    expect(editOf(edit.content)).toMatchObject({ targetEventId: q, newBody: "what is 3+3?" })

    const reactionId = await bob.react(roomId, q, "👍")
    const reaction = await alice.waitForRoomEvent(roomId, "m.reaction", (e) => e.eventId === reactionId)
    expect(reactionOf(reaction.content)).toEqual({ targetEventId: q, key: "👍" })

    await alice.redact(roomId, q, "never mind")
    const redaction = await bob.waitForRoomEvent(roomId, "m.room.redaction", (e) => e.redacts === q)
    expect(redaction.sender).toBe(alice.userId)
  })
})
