import { Option } from "effect"
import * as sdk from "matrix-js-sdk"
import { describe, expect, it } from "vitest"
import { decodeEventIds } from "../../src/domain/matrix.js"
import { toInbound } from "../../src/layers/matrix/events.js"

const message = (over: Record<string, unknown> = {}) =>
  new sdk.MatrixEvent({
    type: "m.room.message",
    event_id: "$e1:example.org",
    room_id: "!r:example.org",
    sender: "@alice:example.org",
    origin_server_ts: 1,
    content: { msgtype: "m.text", body: "hi" },
    ...over
  })

describe("branded ids at the SDK boundary", () => {
  it("decodes well-formed ids and rejects the rest", () => {
    expect(Option.isSome(decodeEventIds({ eventId: "$e", roomId: "!r:x", sender: "@a:x" }))).toBe(true)
    expect(Option.isNone(decodeEventIds({ eventId: "e", roomId: "!r:x", sender: "@a:x" }))).toBe(true)
    expect(Option.isNone(decodeEventIds({ eventId: "$e", roomId: "r:x", sender: "@a:x" }))).toBe(true)
    expect(Option.isNone(decodeEventIds({ eventId: "$e", roomId: "!r:x", sender: "alice" }))).toBe(true)
    expect(Option.isNone(decodeEventIds({ eventId: "$e", roomId: "!r:x", sender: "@a:x", threadId: "t" }))).toBe(true)
  })

  it("turns a room message into an inbound event, and one with a malformed id into \"malformed\"", () => {
    expect(toInbound(message())).toMatchObject({
      eventId: "$e1:example.org",
      roomId: "!r:example.org",
      sender: "@alice:example.org",
      body: "hi"
    })
    expect(toInbound(message({ sender: "alice" }))).toBe("malformed")
    expect(
      toInbound(message({ content: { body: "x", "m.relates_to": { rel_type: "m.thread", event_id: "root" } } }))
    ).toBe("malformed")
    expect(toInbound(message({ type: "m.reaction" }))).toBeUndefined()
  })
})
