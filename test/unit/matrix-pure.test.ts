// The pure parts of the Matrix runtime: the allowlist, the inbound gates, Markdown → sanitized HTML,
// splitting, transaction ids, send-error classification, and Outbound's retry over a fake transport.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { allowsUser, normalizeAllowlist, serverNameOf } from "../../src/domain/allowlist.js"
import { chunkContents, messageContent, renderMarkdown, splitMessage } from "../../src/domain/markdown.js"
import { EventId, type InboundEvent, RoomId, UserId } from "../../src/domain/matrix.js"
import {
  type GateContext,
  gateInbound,
  isInvisibleOnly,
  MAX_BODY_BYTES,
  openLedger
} from "../../src/layers/InboundLive.js"
import { classifySendError, makeOutbound, type MatrixTransport, txnIdFor } from "../../src/layers/OutboundLive.js"
import type { RoomFacts } from "../../src/services/Inbound.js"
import { tmpDir } from "../support/tmp.js"

// the services take branded ids: the fixtures' strings, checked once
const eid = EventId.make
const rid = RoomId.make
const uid = UserId.make

describe("allowlist", () => {
  const list = { allowUsers: ["@alice:example.org"], allowServerNames: ["example.com"] }

  it("admits exact MXIDs, case-sensitively", () => {
    expect(allowsUser(list, "@alice:example.org")).toBe(true)
    expect(allowsUser(list, "@Alice:example.org")).toBe(false)
    expect(allowsUser(list, "@bob:example.org")).toBe(false)
  })

  it("matches server names label-anchored, ports stripped from the user side", () => {
    expect(allowsUser(list, "@x:example.com")).toBe(true)
    expect(allowsUser(list, "@x:chat.example.com")).toBe(true)
    expect(allowsUser(list, "@x:example.com:8448")).toBe(true)
    expect(allowsUser(list, "@x:evil-example.com")).toBe(false)
    expect(allowsUser(list, "@x:example.com.evil.net")).toBe(false)
    expect(allowsUser(list, "@x:notexample.com")).toBe(false)
  })

  it("fails closed: empty lists admit nobody, malformed ids are refused", () => {
    const empty = { allowUsers: [], allowServerNames: [] }
    expect(allowsUser(empty, "@alice:example.org")).toBe(false)
    expect(allowsUser(list, "alice:example.com")).toBe(false)
    expect(allowsUser(list, "@:example.com")).toBe(false)
    expect(serverNameOf("@a:host:1234")).toBe("host")
    expect(allowsUser({ allowUsers: [], allowServerNames: ["example.com:8448"] }, "@x:example.com:8448")).toBe(false)
  })

  it("normalizes by trimming and dropping empties and duplicates", () => {
    expect(normalizeAllowlist({ allowUsers: [" @a:x ", "", "@a:x"], allowServerNames: ["  "] })).toEqual({
      allowUsers: ["@a:x"],
      allowServerNames: []
    })
  })
})

describe("inbound gates", () => {
  const bot = uid("@cara:example.com")
  const ctx: GateContext = {
    botUserId: bot,
    allowlist: { allowUsers: ["@alice:example.com"], allowServerNames: [] },
    encryptedMode: true,
    groupMessages: "mention"
  }
  const dm: RoomFacts = { memberCount: 2, encrypted: true, botJoinedAt: 1000, botDisplayName: "Cara" }
  const group: RoomFacts = { ...dm, memberCount: 3 }
  const ev = (over: Partial<InboundEvent> = {}): InboundEvent => ({
    eventId: eid("$e1"),
    roomId: rid("!r:example.com"),
    sender: uid("@alice:example.com"),
    ts: 2000,
    msgtype: "m.text",
    body: "hello",
    encrypted: true,
    ...over
  })

  it("dispatches an allowed DM", () => {
    expect(gateInbound(ctx, ev(), dm)).toEqual({ _tag: "Dispatch", isGroup: false })
  })

  it("ignores own messages, verification requests, edits and history from before the join", () => {
    expect(gateInbound(ctx, ev({ sender: bot }), dm)).toMatchObject({ _tag: "Ignore", reason: "own" })
    expect(gateInbound(ctx, ev({ msgtype: "m.key.verification.request" }), dm)).toMatchObject({
      reason: "verification"
    })
    expect(gateInbound(ctx, ev({ relType: "m.replace" }), dm)).toMatchObject({ reason: "edit" })
    expect(gateInbound(ctx, ev({ ts: 999 }), dm)).toMatchObject({ reason: "history" })
  })

  it("drops and counts other msgtypes, disallowed senders, oversize and invisible bodies", () => {
    expect(gateInbound(ctx, ev({ msgtype: "m.emote" }), dm)).toMatchObject({
      _tag: "Drop",
      counters: ["peerDropUnsupportedMsgtypeTotal", "unsupportedInboundCount"]
    })
    expect(gateInbound(ctx, ev({ sender: uid("@mallory:example.com") }), dm)).toMatchObject({
      _tag: "Drop",
      counters: ["peerDropAllowlistRejectionTotal"]
    })
    expect(gateInbound(ctx, ev({ body: "x".repeat(MAX_BODY_BYTES + 1) }), dm)).toMatchObject({ reason: "too-large" })
    expect(gateInbound(ctx, ev({ body: "x".repeat(MAX_BODY_BYTES) }), dm)._tag).toBe("Dispatch")
    expect(gateInbound(ctx, ev({ body: " \u200b\u200e\u2066\t\n\u3164 " }), dm)).toMatchObject({ reason: "invisible" })
    expect(isInvisibleOnly("a\u200b")).toBe(false)
  })

  it("never answers an m.notice (other bots' output) or the bot's own account, from any device", () => {
    expect(gateInbound(ctx, ev({ msgtype: "m.notice" }), dm)).toEqual({ _tag: "Ignore", reason: "notice" })
    expect(gateInbound({ ...ctx, groupMessages: "all" }, ev({ msgtype: "m.notice", body: `${bot} hi` }), group)._tag)
      .toBe("Ignore")
    // the gate has no device in view at all: the account decides
    expect(gateInbound(ctx, ev({ sender: bot, encrypted: false }), { ...dm, encrypted: false })).toMatchObject({
      reason: "own"
    })
  })

  it("drops and counts a plaintext message in an encrypted room; plaintext rooms are unaffected", () => {
    expect(gateInbound(ctx, ev({ encrypted: false }), dm)).toEqual({
      _tag: "Drop",
      reason: "unencrypted-in-encrypted-room",
      counters: ["peerDropUnencryptedInEncryptedRoomTotal", "unsupportedInboundCount"]
    })
    // also when it claims to be a verification request or comes from a stranger: refused before anything else
    expect(gateInbound(ctx, ev({ encrypted: false, msgtype: "m.key.verification.request" }), dm)).toMatchObject({
      reason: "unencrypted-in-encrypted-room"
    })
    expect(gateInbound(ctx, ev({ encrypted: false }), { ...dm, encrypted: false })._tag).toBe("Dispatch")
  })

  it("with requireCrossSignedSenders answers only devices their owner cross-signed (unknown = refused)", () => {
    const strict = { ...ctx, requireCrossSignedSenders: true }
    expect(gateInbound(strict, ev({ senderDeviceCrossSigned: true }), dm)._tag).toBe("Dispatch")
    expect(gateInbound(strict, ev({ senderDeviceCrossSigned: false }), dm)).toEqual({
      _tag: "Drop",
      reason: "not-cross-signed",
      counters: ["peerDropNotCrossSignedTotal"]
    })
    expect(gateInbound(strict, ev(), dm)).toMatchObject({ reason: "not-cross-signed" })
    // a stranger is refused by the allowlist (and so is never sent the explanatory notice)
    expect(gateInbound(strict, ev({ sender: uid("@mallory:example.com"), senderDeviceCrossSigned: false }), dm))
      .toMatchObject({ reason: "allowlist" })
    // off (the default): the device's state does not matter
    expect(gateInbound(ctx, ev({ senderDeviceCrossSigned: false }), dm)._tag).toBe("Dispatch")
  })

  it("with encrypted=false drops everything from encrypted rooms", () => {
    expect(gateInbound({ ...ctx, encryptedMode: false }, ev(), dm)).toMatchObject({
      _tag: "Drop",
      counters: ["peerDropEncryptedRoomTotal", "unsupportedInboundCount"]
    })
    expect(gateInbound({ ...ctx, encryptedMode: false }, ev({ encrypted: false }), { ...dm, encrypted: false })._tag)
      .toBe("Dispatch")
  })

  it("in group rooms answers only mentions (m.mentions, MXID or display name as a word) unless groupMessages=all", () => {
    expect(gateInbound(ctx, ev(), group)).toMatchObject({ _tag: "Ignore", reason: "not-mentioned" })
    expect(gateInbound(ctx, ev({ mentionedUserIds: [bot] }), group)).toEqual({ _tag: "Dispatch", isGroup: true })
    expect(gateInbound(ctx, ev({ body: `hey ${bot} what's up` }), group)._tag).toBe("Dispatch")
    expect(gateInbound(ctx, ev({ body: "cara: what's up" }), group)._tag).toBe("Dispatch")
    expect(gateInbound(ctx, ev({ body: "caramel is tasty" }), group)._tag).toBe("Ignore")
    expect(gateInbound({ ...ctx, groupMessages: "all" }, ev(), group)).toEqual({ _tag: "Dispatch", isGroup: true })
  })
})

describe("Markdown to sanitized HTML", () => {
  it("renders the common constructs", () => {
    expect(renderMarkdown("Hello **bold** and *it* and `c<d>`")).toBe(
      "<p>Hello <strong>bold</strong> and <em>it</em> and <code>c&lt;d&gt;</code></p>"
    )
    expect(renderMarkdown("# Title\n\n- a\n- b\n\n1. x\n2. y")).toBe(
      "<h1>Title</h1><ul><li>a</li><li>b</li></ul><ol><li>x</li><li>y</li></ol>"
    )
    expect(renderMarkdown("```ts\nconst a = 1 < 2\n```")).toBe(
      "<pre><code class=\"language-ts\">const a = 1 &lt; 2\n</code></pre>"
    )
    expect(renderMarkdown("> quoted\n> more")).toBe("<blockquote><p>quoted<br>more</p></blockquote>")
    expect(renderMarkdown("[site](https://example.com/a?b=1&c=2)")).toBe(
      "<p><a href=\"https://example.com/a?b=1&amp;c=2\">site</a></p>"
    )
  })

  it("never lets the model's HTML or unsafe links through", () => {
    const html = renderMarkdown("<img src=x onerror=\"alert(1)\"> <script>x</script> [x](javascript:alert(1)) **<b>**")
    expect(html).not.toMatch(/<(img|script|b)[\s>]/)
    expect(html).not.toContain("href=\"javascript")
    expect(html).toContain("&lt;script&gt;")
    expect(renderMarkdown("[a](https://x.y/\"onmouseover=1)")).not.toContain("\"onmouseover")
  })

  it("sends formatted_body only when there is markup", () => {
    expect(messageContent("just text\n\nsecond")).toEqual({ msgtype: "m.notice", body: "just text\n\nsecond" })
    expect(messageContent("a **b**")).toEqual({
      msgtype: "m.notice",
      body: "a **b**",
      format: "org.matrix.custom.html",
      formatted_body: "<p>a <strong>b</strong></p>"
    })
  })
})

describe("splitting", () => {
  it("keeps short answers whole and splits long ones at paragraph boundaries", () => {
    expect(splitMessage("short")).toEqual(["short"])
    expect(splitMessage("  \n ")).toEqual([])
    const paras = Array.from({ length: 10 }, (_, i) => `paragraph ${i} ${"x".repeat(40)}`)
    const chunks = splitMessage(paras.join("\n\n"), 120)
    expect(chunks.length).toBeGreaterThan(1)
    for (const c of chunks) expect(Buffer.byteLength(c)).toBeLessThanOrEqual(120)
    expect(chunks.join("\n\n")).toBe(paras.join("\n\n"))
    // no paragraph is cut
    for (const c of chunks) for (const p of c.split("\n\n")) expect(paras).toContain(p)
  })

  it("falls back to lines, then code points, never splitting a multi-byte character", () => {
    const long = "é".repeat(100)
    const chunks = splitMessage(long, 31)
    for (const c of chunks) expect(Buffer.byteLength(c)).toBeLessThanOrEqual(31)
    expect(chunks.join("")).toBe(long)
  })

  it("re-splits a chunk whose HTML escaping makes the event too big", () => {
    const contents = chunkContents(`**a** ${"<".repeat(11_900)}`)
    expect(contents.length).toBeGreaterThan(1)
    for (const c of contents) expect(Buffer.byteLength(JSON.stringify(c))).toBeLessThanOrEqual(30_000)
  })
})

describe("transaction ids and send errors", () => {
  it("derives a stable id per (event, chunk)", () => {
    expect(txnIdFor("$abc:x", 0)).toBe(txnIdFor("$abc:x", 0))
    expect(txnIdFor("$abc:x", 0)).not.toBe(txnIdFor("$abc:x", 1))
    expect(txnIdFor("$abc:x", 0)).not.toBe(txnIdFor("$abd:x", 0))
    expect(txnIdFor("$a/b?c#d", 3)).toMatch(/^[A-Za-z0-9-]+$/)
  })

  it("classifies errors like reference §8.3", () => {
    expect(classifySendError({ errcode: "M_LIMIT_EXCEEDED", httpStatus: 429, data: { retry_after_ms: 1234 } }))
      .toMatchObject({
        _tag: "Transient",
        retryAfterMs: 1234
      })
    expect(classifySendError({ errcode: "M_UNKNOWN_TOKEN", httpStatus: 401 })).toMatchObject({
      _tag: "Terminal",
      kind: "auth-token-revoked"
    })
    expect(classifySendError({ errcode: "M_FORBIDDEN", httpStatus: 403 })).toMatchObject({
      _tag: "Terminal",
      kind: "send-terminal"
    })
    expect(classifySendError({ errcode: "M_UNKNOWN", httpStatus: 502 })).toMatchObject({ _tag: "Transient" })
    expect(classifySendError(new TypeError("fetch failed"))).toMatchObject({ _tag: "Transient" })
  })
})

describe("Outbound over a fake transport", () => {
  const fakeTransport = (failures: Array<unknown>) => {
    const sends: Array<{ txnId: string; content: Record<string, unknown>; threadId: string | null }> = []
    const transport: MatrixTransport = {
      send: async (_roomId, threadId, content, txnId) => {
        sends.push({ txnId, content, threadId })
        const f = failures.shift()
        if (f !== undefined) throw f
        return eid(`$sent-${txnId}`)
      },
      typing: async () => {},
      receipt: async () => {},
      room: (roomId) => (roomId === "!joined:x" ? { encrypted: true } : undefined)
    }
    return { transport, sends }
  }

  it.live("retries M_LIMIT_EXCEEDED and 5xx with the same transaction id until accepted", () =>
    Effect.gen(function*() {
      const { sends, transport } = fakeTransport([
        { errcode: "M_LIMIT_EXCEEDED", httpStatus: 429, data: { retry_after_ms: 5 } },
        { errcode: "M_UNKNOWN", httpStatus: 500 }
      ])
      const outbound = yield* makeOutbound(transport, { encrypted: true, baseDelayMs: 1 })
      const ids = yield* outbound.reply({ roomId: rid("!joined:x"), text: "answer", inReplyTo: eid("$in:x") })
      expect(ids).toEqual([`$sent-${txnIdFor("$in:x", 0)}`])
      expect(sends.map((s) => s.txnId)).toEqual([txnIdFor("$in:x", 0), txnIdFor("$in:x", 0), txnIdFor("$in:x", 0)])
      expect(sends[0]!.content["m.relates_to"]).toEqual({ "m.in_reply_to": { event_id: "$in:x" } })
    }))

  it.live("stays in the thread, and fails terminal errors without retrying", () =>
    Effect.gen(function*() {
      const { sends, transport } = fakeTransport([{ errcode: "M_FORBIDDEN", httpStatus: 403 }])
      const outbound = yield* makeOutbound(transport, { encrypted: true, baseDelayMs: 1 })
      const err = yield* Effect.flip(
        outbound.reply({ roomId: rid("!joined:x"), text: "a", inReplyTo: eid("$in:x"), threadId: eid("$root:x") })
      )
      expect(err.kind).toBe("send-terminal")
      expect(sends).toHaveLength(1)
      expect(sends[0]!.threadId).toBe("$root:x")
      expect(sends[0]!.content["m.relates_to"]).toMatchObject({ rel_type: "m.thread", event_id: "$root:x" })
      const missing = yield* Effect.flip(outbound.sendTest(rid("!other:x"), "probe"))
      expect(missing.kind).toBe("room-not-found")
      const plain = yield* makeOutbound(transport, { encrypted: false })
      expect((yield* Effect.flip(plain.sendTest(rid("!joined:x"), "probe"))).kind).toBe("unsupported-room")
    }))

  it.live("gives up after maxAttempts with send-failed (the caller then holds it as a pending reply)", () =>
    Effect.gen(function*() {
      const { sends, transport } = fakeTransport([new TypeError("fetch failed"), new TypeError("fetch failed")])
      const outbound = yield* makeOutbound(transport, { encrypted: true, baseDelayMs: 1, maxAttempts: 2 })
      const err = yield* Effect.flip(outbound.reply({ roomId: rid("!joined:x"), text: "a", inReplyTo: eid("$in:x") }))
      expect(err.kind).toBe("send-failed")
      expect(sends).toHaveLength(2)
    }))
})

describe("ledger", () => {
  it("claims idempotently, commits, lists unfinished and held events across reopen; file mode 0600", () => {
    const dir = tmpDir("cara-ledger-")
    const file = path.join(dir, "ledger.sqlite")
    const a = openLedger(file)
    a.claim("$1", "!r", 1)
    a.claim("$1", "!r", 2)
    a.claim("$2", "!r", 3)
    a.commit("$2", ["$reply"], 4)
    a.utdAdd("$3", "!r", 5)
    a.close()
    const b = openLedger(file)
    expect(b.state("$1")).toBe("claimed")
    expect(b.state("$2")).toBe("committed")
    expect(b.state("$9")).toBeUndefined()
    expect(b.unfinished()).toEqual([{ eventId: "$1", roomId: "!r" }])
    expect(b.utdList()).toEqual([{ eventId: "$3", roomId: "!r" }])
    expect(b.utdRemove("$3")).toBe(true)
    expect(b.utdRemove("$3")).toBe(false)
    b.close()
    expect(fs.statSync(file).mode & 0o777).toBe(0o600)
  })
})
