// Edits, reactions and redactions (src/domain/relations.ts).
import { describe, expect, it } from "@effect/vitest"
import {
  editContent,
  editOf,
  editValidity,
  type EventFacts,
  feedbackOf,
  feedbackRecord,
  reactionOf,
  redactAnswerTxnId,
  redactedEventId
} from "../../src/domain/relations.js"
// cara's own reactions: one definition (src/domain/reactions.ts), named by key
import { REACTION, reactionContent, reactionTxnId, unreactTxnId } from "../../src/domain/reactions.js"

describe("edits in", () => {
  it("extracts the new content of an m.replace, never the * fallback", () => {
    const content = {
      msgtype: "m.text",
      body: "* fixed question",
      "m.new_content": { msgtype: "m.text", body: "fixed question" },
      "m.relates_to": { rel_type: "m.replace", event_id: "$orig" }
    }
    expect(editOf(content)).toEqual({
      targetEventId: "$orig",
      newContent: { msgtype: "m.text", body: "fixed question" },
      newBody: "fixed question"
    })
    expect(editOf({ msgtype: "m.text", body: "plain" })).toBeUndefined()
    expect(editOf({ body: "x", "m.relates_to": { rel_type: "m.thread", event_id: "$t" } })).toBeUndefined()
    expect(editOf({ body: "x", "m.relates_to": { rel_type: "m.replace", event_id: "$o" } })).toBeUndefined()
    expect(
      editOf({ body: "x", "m.new_content": { body: 3 }, "m.relates_to": { rel_type: "m.replace", event_id: "$o" } })
    ).toBeUndefined()
  })

  it("applies the spec's validity rules", () => {
    const original: EventFacts = {
      eventId: "$o",
      roomId: "!r",
      sender: "@a:x",
      type: "m.room.message",
      isState: false,
      relType: undefined
    }
    const edit: EventFacts = { ...original, eventId: "$e", relType: "m.replace" }
    expect(editValidity(original, edit)).toBe("valid")
    expect(editValidity(original, { ...edit, sender: "@mallory:x" })).toBe("other-sender")
    expect(editValidity(original, { ...edit, roomId: "!other" })).toBe("other-room")
    expect(editValidity(original, { ...edit, type: "m.sticker" })).toBe("other-type")
    expect(editValidity({ ...original, isState: true }, edit)).toBe("state-event")
    expect(editValidity({ ...original, relType: "m.replace" }, edit)).toBe("edit-of-edit")
  })
})

describe("edits out", () => {
  it("drops relations from m.new_content and prefixes both fallbacks with *", () => {
    const c = editContent("$reply", {
      msgtype: "m.notice",
      body: "new",
      format: "org.matrix.custom.html",
      formatted_body: "<p>new</p>",
      "m.relates_to": { "m.in_reply_to": { event_id: "$q" } }
    })
    expect(c).toEqual({
      msgtype: "m.notice",
      body: "* new",
      format: "org.matrix.custom.html",
      formatted_body: "* <p>new</p>",
      "m.new_content": {
        msgtype: "m.notice",
        body: "new",
        format: "org.matrix.custom.html",
        formatted_body: "<p>new</p>"
      },
      "m.relates_to": { rel_type: "m.replace", event_id: "$reply" }
    })
    expect(editContent("$r", { msgtype: "m.notice", body: "plain" })).not.toHaveProperty("formatted_body")
  })
})

describe("reactions", () => {
  it("builds annotations with derived transaction ids", () => {
    expect(reactionContent("$q", REACTION.working)).toEqual({
      "m.relates_to": { rel_type: "m.annotation", event_id: "$q", key: "👀" }
    })
    expect(reactionTxnId("$q", REACTION.working)).toBe(reactionTxnId("$q", REACTION.working))
    const ids = new Set([
      reactionTxnId("$q", REACTION.working),
      reactionTxnId("$q", REACTION.failed),
      unreactTxnId("$q", REACTION.working),
      reactionTxnId("$p", REACTION.working)
    ])
    expect(ids.size).toBe(4)
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9-]+$/)
    expect(reactionOf({ "m.relates_to": { rel_type: "m.annotation", event_id: "$a", key: "👍" } })).toEqual({
      targetEventId: "$a",
      key: "👍"
    })
    expect(reactionOf({ "m.relates_to": { rel_type: "m.reference", event_id: "$a", key: "👍" } })).toBeUndefined()
  })

  it("classifies 👍/👎 in any skin tone and spelling as feedback, and nothing else", () => {
    for (const k of ["👍", "👍️", "👍🏽", "+1", ":thumbsup:"]) expect(feedbackOf(k)).toBe("positive")
    for (const k of ["👎", "👎🏿", "-1", ":-1:"]) expect(feedbackOf(k)).toBe("negative")
    for (const k of ["👀", "❤️", "ok", ""]) expect(feedbackOf(k)).toBeUndefined()
    expect(feedbackRecord("positive", { roomId: "!r", userId: "@a:x", answerEventId: "$ans", reactionEventId: "$re" }))
      .toEqual({
        kind: "feedback",
        value: "positive",
        roomId: "!r",
        userId: "@a:x",
        answerEventId: "$ans",
        reactionEventId: "$re"
      })
  })
})

describe("redactions", () => {
  it("reads the redacted event id in old and v11 rooms", () => {
    expect(redactedEventId({ type: "m.room.redaction", redacts: "$old", content: {} })).toBe("$old")
    expect(redactedEventId({ type: "m.room.redaction", content: { redacts: "$v11" } })).toBe("$v11")
    expect(redactedEventId({ type: "m.room.message", redacts: "$x" })).toBeUndefined()
    expect(redactAnswerTxnId("$a")).toMatch(/^cara-x1-[0-9a-f]{40}$/)
  })
})
