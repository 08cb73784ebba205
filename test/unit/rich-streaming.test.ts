// The streaming throttle (src/domain/streaming.ts), driven by a simulated clock.
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { MAX_CHUNK_BYTES, splitMessage } from "../../src/domain/markdown.js"
import {
  decide,
  DEFAULT_STREAM_SETTINGS,
  editTxnId,
  finalEditTxnId,
  finishPlan,
  initialStream,
  onDelta,
  onEnd,
  onRateLimited,
  onSent,
  replyTxnId,
  type StreamAction,
  streamEditContent,
  type StreamState
} from "../../src/domain/streaming.js"
import { txnIdFor } from "../../src/layers/OutboundLive.js"

/** Feeds `deltas` (at their times), sending whatever decide() asks for at once; ticks at wakeAt. */
const drive = (deltas: ReadonlyArray<{ at: number; text: string }>, endAt: number) => {
  let s: StreamState = initialStream("$q:x", "run1")
  const sent: Array<{ at: number; action: StreamAction }> = []
  const events = [...deltas.map((d) => ({ at: d.at, delta: d.text as string | undefined })), {
    at: endAt,
    delta: undefined
  }]
  let wake: number | undefined
  const step = (now: number) => {
    for (;;) {
      const d = decide(s, now)
      wake = d.wakeAt
      if (d.action === undefined) return
      sent.push({ at: now, action: d.action })
      if (d.action._tag === "Finish") return
      s = onSent(s, d.action, now)
    }
  }
  for (const e of events) {
    while (wake !== undefined && wake <= e.at) step(wake)
    if (e.delta === undefined) s = onEnd(s)
    else s = onDelta(s, e.delta, e.at)
    step(e.at)
  }
  return { sent, state: s }
}

describe("transaction ids", () => {
  it("derives the reply's id exactly as non-streamed answers do, and distinct edit ids", () => {
    for (const id of ["$abc:x", "$a/b?c#d", "$" + "z".repeat(200)]) {
      for (const i of [0, 1, 7]) expect(replyTxnId(id, i)).toBe(txnIdFor(id, i))
    }
    const ids = new Set([
      replyTxnId("$e", 0),
      editTxnId("$e", "r1", 1),
      editTxnId("$e", "r1", 2),
      editTxnId("$e", "r2", 1),
      finalEditTxnId("$e")
    ])
    expect(ids.size).toBe(5)
    expect(finalEditTxnId("$e")).toBe(finalEditTxnId("$e"))
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9-]+$/)
  })
})

describe("the first chunk", () => {
  it("goes out at the first sentence end", () => {
    const { sent } = drive(
      [{ at: 0, text: "Hello" }, { at: 100, text: " there. And" }, { at: 200, text: " more" }],
      5000
    )
    expect(sent[0]).toEqual({
      at: 100,
      action: { _tag: "SendFirst", text: "Hello there. And", txnId: replyTxnId("$q:x", 0) }
    })
  })

  it("goes out 1 s after the first text without a sentence end", () => {
    const { sent } = drive([{ at: 0, text: "   " }, { at: 500, text: "no stop" }, { at: 900, text: " yet" }], 5000)
    expect(sent[0]).toEqual({
      at: 1500,
      action: { _tag: "SendFirst", text: "no stop yet", txnId: replyTxnId("$q:x", 0) }
    })
  })

  it("is skipped for a short answer that ends first: the end sends the whole answer once", () => {
    const { sent } = drive([{ at: 0, text: "Hi" }], 300)
    expect(sent).toEqual([{ at: 300, action: { _tag: "Finish" } }])
    expect(finishPlan("$q:x", "Hi", false)).toEqual([{
      _tag: "Reply",
      index: 0,
      text: "Hi",
      txnId: replyTxnId("$q:x", 0)
    }])
  })
})

describe("edits", () => {
  it("come at most once per interval and only after enough growth", () => {
    const deltas = Array.from({ length: 100 }, (_, i) => ({ at: i * 50, text: i === 0 ? "Start. " : "word " }))
    const { sent } = drive(deltas, 5000)
    const edits = sent.filter((s) => s.action._tag === "Edit")
    expect(edits.length).toBeGreaterThan(2)
    const times = sent.filter((s) => s.action._tag !== "Finish").map((s) => s.at)
    for (let i = 1; i < times.length; i++) {
      expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(DEFAULT_STREAM_SETTINGS.editIntervalMs)
    }
    const shown = sent.flatMap((s) => (s.action._tag === "Finish" ? [] : [s.action.text]))
    for (let i = 1; i < shown.length; i++) {
      expect(shown[i]!.length - shown[i - 1]!.length).toBeGreaterThanOrEqual(DEFAULT_STREAM_SETTINGS.minGrowthChars)
    }
    expect(edits.map((e) => (e.action._tag === "Edit" ? e.action.seq : 0))).toEqual(edits.map((_, i) => i + 1))
  })

  it("sends small growth after the flush interval, and nothing when nothing grew", () => {
    const { sent } = drive([{ at: 0, text: "One. " }, { at: 100, text: "two" }], 10_000)
    expect(sent.map((s) => [s.at, s.action._tag])).toEqual([[0, "SendFirst"], [3000, "Edit"], [10_000, "Finish"]])
  })

  it("waits out a rate limit and then edits half as often", () => {
    let s = onDelta(initialStream("$q", "r"), "First. ", 0)
    const first = decide(s, 0).action!
    s = onSent(s, first, 0)
    s = onDelta(s, "x".repeat(100), 1200)
    s = onRateLimited(s, 1200, 4000)
    expect(decide(s, 1300)).toEqual({ action: undefined, wakeAt: 5200 })
    expect(decide(s, 5200).action?._tag).toBe("Edit")
    s = onSent(s, decide(s, 5200).action!, 5200)
    s = onDelta(s, "y".repeat(100), 5300)
    expect(decide(s, 6300).wakeAt).toBe(5200 + 2 * DEFAULT_STREAM_SETTINGS.editIntervalMs)
    // the end is not dropped by a rate limit, only delayed
    s = onRateLimited(onEnd(s), 6400, 1000)
    expect(decide(s, 6500).action).toBeUndefined()
    expect(decide(s, 7400).action).toEqual({ _tag: "Finish" })
  })

  it("shows at most the first event's worth while streaming", () => {
    const long = Array.from({ length: 2000 }, (_, i) => `Sentence ${i}.`).join(" ")
    const { sent } = drive([{ at: 0, text: long }], 2000)
    const first = sent[0]!.action
    expect(first._tag).toBe("SendFirst")
    if (first._tag === "SendFirst") expect(Buffer.byteLength(first.text)).toBeLessThanOrEqual(MAX_CHUNK_BYTES)
  })

  it("property: sends are spaced, each shows more than the last, and the stream always finishes", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ gap: fc.integer({ min: 0, max: 1500 }), text: fc.string({ maxLength: 30 }) }), {
          maxLength: 60
        }),
        (raw) => {
          let at = 0
          const deltas = raw.map((d) => ({ at: (at += d.gap), text: d.text }))
          const { sent } = drive(deltas, at + 10)
          expect(sent[sent.length - 1]!.action._tag).toBe("Finish")
          const shows = sent.filter((s) => s.action._tag !== "Finish")
          for (let i = 1; i < shows.length; i++) {
            expect(shows[i]!.at - shows[i - 1]!.at).toBeGreaterThanOrEqual(DEFAULT_STREAM_SETTINGS.editIntervalMs)
          }
          expect(shows.filter((s) => s.action._tag === "SendFirst").length).toBeLessThanOrEqual(1)
        }
      ),
      { numRuns: 200 }
    )
  })
})

describe("the end of an answer", () => {
  it("finishes a streamed reply with one final edit, then further replies for a long answer", () => {
    const text = Array.from({ length: 3000 }, (_, i) => `Sentence number ${i}.`).join(" ")
    const chunks = splitMessage(text)
    expect(chunks.length).toBeGreaterThan(1)
    const plan = finishPlan("$q", text, true)
    expect(plan[0]).toEqual({ _tag: "FinalEdit", text: chunks[0], txnId: finalEditTxnId("$q") })
    expect(plan.slice(1)).toEqual(
      chunks.slice(1).map((c, i) => ({ _tag: "Reply", index: i + 1, text: c, txnId: replyTxnId("$q", i + 1) }))
    )
  })

  it("after a restart that may have streamed: the reply with its own id, then the final edit (never a second answer)", () => {
    expect(finishPlan("$q", "Full answer.", false, true)).toEqual([
      { _tag: "Reply", index: 0, text: "Full answer.", txnId: replyTxnId("$q", 0) },
      { _tag: "FinalEdit", text: "Full answer.", txnId: finalEditTxnId("$q") }
    ])
    expect(finishPlan("$q", "   ", true)).toEqual([])
  })

  it("builds a spec-correct edit with the rendered body and the * fallback", () => {
    expect(streamEditContent("$reply", "Some **bold** text")).toEqual({
      msgtype: "m.notice",
      body: "* Some **bold** text",
      format: "org.matrix.custom.html",
      formatted_body: "* <p>Some <strong>bold</strong> text</p>",
      "m.new_content": {
        msgtype: "m.notice",
        body: "Some **bold** text",
        format: "org.matrix.custom.html",
        formatted_body: "<p>Some <strong>bold</strong> text</p>"
      },
      "m.relates_to": { rel_type: "m.replace", event_id: "$reply" }
    })
  })
})
