// Images, files and voice messages in (issue 20.2), against the real Synapse and daemon in an encrypted DM:
// the human's encrypted PNG with a caption reaches the model as an image block (the same bytes) with the
// caption; a text file's content is in the request; an unsupported file gets the short answer without a
// model call; a voice message is transcribed by the configured endpoint and the transcript reaches the
// model; and none of the attachments' bytes or text is found in any file under the bot's state directory.
import * as fs from "node:fs"
import * as path from "node:path"
import { expect, it } from "vitest"
import type { RecordedRequest } from "../support/fake-llm.js"
import { type AttachmentSender, sendEncryptedAttachment } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { useMatrixWorld } from "./matrix-world.js"

const PNG_1x1 = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
  "base64"
)
const FILE_TEXT = "inventory-marker-7f3a: 42 crates of saffron in aisle nine\n"
const TRANSCRIPT = "transcript-marker-9c1e what time does the ferry leave"
const VOICE = Buffer.from("OggS voice-bytes-marker-55d2 not really opus")

const filesUnder = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name)
    return e.isDirectory() ? filesUnder(p) : e.isFile() ? [p] : []
  })

const modelRequests = (requests: ReadonlyArray<RecordedRequest>) => requests.filter((r) => r.path === "/v1/messages")

describeSynapse("Matrix: images, files and voice messages in (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)

  it("answers an image, a text file, an unsupported file and a voice message; nothing of them is on disk", async () => {
    const alice = await world.human()
    const bot = await world.bot({
      allowUsers: [alice.userId],
      matrixExtra: `transcription: { model: "whisper-1", baseUrl: ${JSON.stringify(`${world.llm.baseUrl}/v1`)} },`,
      env: { OPENAI_API_KEY: "test-openai-key" }
    })
    await bot.start()
    const roomId = await world.dm(alice, bot)
    const llm = world.llm

    // an encrypted PNG with a caption: the model gets the image (base64 of the same bytes) and the caption
    const imageId = await alice.sendEncryptedImage(roomId, PNG_1x1, {
      name: "dot.png",
      mimetype: "image/png",
      caption: "What colour is this dot?"
    })
    await world.replyTo(alice, bot, roomId, imageId)
    const imageRequest = modelRequests(llm.requests).at(-1)!
    const last = imageRequest.body.messages.at(-1)
    expect(last.role).toBe("user")
    expect(last.content).toContainEqual({
      type: "image",
      source: { type: "base64", media_type: "image/png", data: PNG_1x1.toString("base64") }
    })
    expect(JSON.stringify(last.content)).toContain("What colour is this dot?")

    // a text file: its content, framed, is in the request
    const fileId = await alice.sendEncryptedFile(roomId, Buffer.from(FILE_TEXT), {
      name: "stock.txt",
      mimetype: "text/plain"
    })
    await world.replyTo(alice, bot, roomId, fileId)
    const fileRequest = JSON.stringify(modelRequests(llm.requests).at(-1)!.body.messages.at(-1))
    expect(fileRequest).toContain("inventory-marker-7f3a: 42 crates of saffron")
    expect(fileRequest).toContain("stock.txt")
    expect(fileRequest).toContain("BEGIN FILE")

    // an unsupported file: one short answer, no model call
    const before = modelRequests(llm.requests).length
    const binId = await alice.sendEncryptedFile(roomId, Buffer.from([0x25, 0x50, 0x44, 0x46, 0, 1, 2, 0xff]), {
      name: "report.pdf",
      mimetype: "application/pdf"
    })
    const refusal = await world.replyTo(alice, bot, roomId, binId)
    expect(refusal.body).toContain("I can read images")
    expect(modelRequests(llm.requests).length).toBe(before)

    // a voice message: transcribed by the configured endpoint, the transcript is the question
    llm.enqueueTranscript(TRANSCRIPT)
    const audioSender: AttachmentSender = {
      uploadContent: (file, opts) => alice.client.uploadContent(file, opts),
      sendEvent: (r, type, content) =>
        alice.client.sendEvent(
          r,
          type as never,
          { ...content, msgtype: "m.audio", "org.matrix.msc3245.voice": {} } as never
        )
    }
    const voice = await sendEncryptedAttachment(audioSender, roomId, "m.file", VOICE, {
      name: "Voice message",
      mimetype: "audio/ogg"
    })
    await world.replyTo(alice, bot, roomId, voice.eventId)
    const transcription = llm.requests.filter((r) => r.path === "/v1/audio/transcriptions").at(-1)
    expect(transcription?.headers["authorization"]).toBe("Bearer test-openai-key")
    expect(transcription?.raw?.includes(VOICE)).toBe(true)
    expect(JSON.stringify(modelRequests(llm.requests).at(-1)!.body.messages.at(-1))).toContain(TRANSCRIPT)

    // nothing of the attachments is in the state directory: no bytes, no file text, no transcript
    const needles = [
      Buffer.from(PNG_1x1),
      Buffer.from(PNG_1x1.toString("base64")),
      Buffer.from("inventory-marker-7f3a"),
      Buffer.from("transcript-marker-9c1e"),
      Buffer.from("voice-bytes-marker-55d2")
    ]
    const files = filesUnder(bot.dir)
    // the search sees the history: the reference lines (names, not content) are there
    expect(files.some((f) => fs.readFileSync(f).includes(Buffer.from("stock.txt")))).toBe(true)
    for (const file of files) {
      const bytes = fs.readFileSync(file)
      for (const needle of needles) {
        expect({ file, found: bytes.includes(needle) }).toEqual({ file, found: false })
      }
    }
  }, 180_000)
})
