// The Markdown renderer and splitter of src/domain/markdown.ts (markdown-it + sanitize-html): GFM and splitting
// cases the old hand-written renderer did not handle. The old renderer's cases run against this module in
// test/unit/matrix-pure.test.ts.
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import {
  chunkContents,
  MAX_CHUNK_BYTES,
  MAX_CONTENT_BYTES,
  messageContent,
  renderMarkdown,
  splitMessage
} from "../../src/domain/markdown.js"

describe("limits", () => {
  it("keeps the limits of the old module", () => {
    expect(MAX_CHUNK_BYTES).toBe(12_000)
    expect(MAX_CONTENT_BYTES).toBe(30_000)
  })
})

describe("GFM and the Matrix HTML allowlist", () => {
  it("renders tables without the alignment styles Matrix drops", () => {
    expect(renderMarkdown("| a | b |\n|:--|--:|\n| 1 | `x<y` |")).toBe(
      "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td><code>x&lt;y</code></td></tr></tbody></table>"
    )
  })

  it("renders nested and ordered lists, with the start number", () => {
    expect(renderMarkdown("3. three\n4. four\n   - nested\n     1. deep")).toBe(
      "<ol start=\"3\"><li>three</li><li>four<ul><li>nested<ol><li>deep</li></ol></li></ul></li></ol>"
    )
  })

  it("renders strikethrough and links bare URLs without trailing punctuation", () => {
    expect(renderMarkdown("~~gone~~ see https://example.com/x.")).toBe(
      "<p><s>gone</s> see <a href=\"https://example.com/x\">https://example.com/x</a>.</p>"
    )
    // only URLs with a scheme are links
    expect(renderMarkdown("example.com")).toBe("<p>example.com</p>")
  })

  it("keeps language-* classes on code blocks, and only plain language names", () => {
    expect(renderMarkdown("```python extra words\nprint(1)\n```")).toBe(
      "<pre><code class=\"language-python\">print(1)\n</code></pre>"
    )
    const odd = renderMarkdown("```\"><script>alert(1)</script>\nx\n```")
    expect(odd).toBe("<pre><code>x\n</code></pre>")
    expect(renderMarkdown("    indented\n    code")).toBe("<pre><code>indented\ncode\n</code></pre>")
  })

  it("keeps only http(s), mailto and matrix links; relative and script links stay text", () => {
    expect(renderMarkdown("[t](https://matrix.to/#/@a:b) [m](matrix:u/a:b) [e](mailto:a@b.c)")).toBe(
      "<p><a href=\"https://matrix.to/#/@a:b\">t</a> <a href=\"matrix:u/a:b\">m</a> <a href=\"mailto:a@b.c\">e</a></p>"
    )
    for (
      const bad of [
        "/relative",
        "//proto.relative/x",
        "javascript:alert(1)",
        "data:text/html,x",
        "vbscript:x",
        "file:///etc/passwd"
      ]
    ) {
      const html = renderMarkdown(`[x](${bad}) <${bad}>`)
      expect(html).not.toContain("<a")
    }
  })

  it("turns images into links (Matrix shows only mxc images), unsafe ones into their alt text", () => {
    expect(renderMarkdown("![a cat](https://e.com/c.png)")).toBe("<p><a href=\"https://e.com/c.png\">a cat</a></p>")
    expect(renderMarkdown("![x](javascript:1)")).not.toMatch(/<(a|img)\b/)
  })

  it("produces nothing outside the allowlist, whatever the input", () => {
    const allowed = new Set([
      "del",
      "s",
      "h1",
      "h2",
      "h3",
      "h4",
      "h5",
      "h6",
      "blockquote",
      "p",
      "a",
      "ul",
      "ol",
      "sup",
      "sub",
      "li",
      "b",
      "i",
      "u",
      "strong",
      "em",
      "code",
      "hr",
      "br",
      "div",
      "table",
      "thead",
      "tbody",
      "tr",
      "th",
      "td",
      "caption",
      "pre",
      "span",
      "details",
      "summary"
    ])
    const piece = fc.constantFrom(
      "<b>",
      "</b>",
      "<img src=x onerror=1>",
      "<svg onload=1>",
      "**",
      "*",
      "_",
      "~~",
      "`",
      "```",
      "\n",
      "\n\n",
      "> ",
      "- ",
      "1. ",
      "| a | b |\n|---|---|\n",
      "[x](",
      ")",
      "javascript:",
      "https://e.com/",
      "\"",
      "'",
      "<!--",
      "-->",
      "&lt;",
      "&#x3C;script>",
      "# ",
      "---",
      "![i](",
      "text",
      " "
    )
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 40 }), (parts) => {
        const html = renderMarkdown(parts.join(""))
        for (const m of html.matchAll(/<\/?([a-zA-Z][a-zA-Z0-9]*)([^>]*)>/g)) {
          expect(allowed.has(m[1]!.toLowerCase())).toBe(true)
          const attrs = m[2]!.trim()
          if (attrs !== "") {
            expect(attrs).toMatch(
              /^(href="(https?:\/\/|mailto:|matrix:)[^"]*"|start="\d+"|class="language-[\w+#.-]+")$/
            )
          }
        }
      }),
      { numRuns: 300 }
    )
  })

  it("sends formatted_body for tables and code but not for plain text with quotes", () => {
    expect(messageContent("it's \"quoted\" & fine")).toEqual({ msgtype: "m.notice", body: "it's \"quoted\" & fine" })
    expect(messageContent("| a |\n|---|\n| 1 |")).toHaveProperty("formatted_body")
  })
})

const fenceLines = (chunk: string) => chunk.split("\n").filter((l) => /^ {0,3}(```|~~~)/.test(l)).length

describe("splitting never cuts inside a code block or a table", () => {
  it("moves a whole code block to the next chunk rather than cutting it", () => {
    const code = "```ts\n" + Array.from({ length: 5 }, (_, i) => `const v${i} = ${i}`).join("\n") + "\n```"
    const text = `${"intro ".repeat(15).trim()}\n\n${code}\n\nafter`
    const chunks = splitMessage(text, 140)
    expect(chunks.length).toBeGreaterThan(1)
    expect(chunks.some((c) => c.split("\n\n").includes(code))).toBe(true)
    for (const c of chunks) expect(fenceLines(c) % 2).toBe(0)
  })

  it("cuts an oversized code block into several well-formed blocks with the same language", () => {
    const body = Array.from({ length: 200 }, (_, i) => `line ${i} ${"y".repeat(30)}`)
    const chunks = splitMessage("```python\n" + body.join("\n") + "\n```", 1000)
    expect(chunks.length).toBeGreaterThan(1)
    for (const c of chunks) {
      expect(Buffer.byteLength(c)).toBeLessThanOrEqual(1000)
      expect(c.startsWith("```python\n")).toBe(true)
      expect(c.endsWith("\n```")).toBe(true)
      expect(renderMarkdown(c)).toMatch(/^<pre><code class="language-python">[^<]*<\/code><\/pre>$/)
    }
    // the code lines come back in order
    expect(chunks.flatMap((c) => c.split("\n").slice(1, -1))).toEqual(body)
  })

  it("closes an unterminated fence and keeps ~~~ fences as ~~~", () => {
    const chunks = splitMessage("~~~\n" + Array.from({ length: 50 }, (_, i) => `row ${i}`).join("\n"), 100)
    for (const c of chunks) {
      expect(c.startsWith("~~~\n")).toBe(true)
      expect(c.endsWith("\n~~~")).toBe(true)
    }
  })

  it("cuts an oversized table into tables that repeat the header", () => {
    const header = "| name | value |\n|------|------:|"
    const rows = Array.from({ length: 100 }, (_, i) => `| n${i} | ${i * 7} |`)
    const chunks = splitMessage(`Results:\n\n${header}\n${rows.join("\n")}`, 400)
    const tables = chunks.flatMap((c) => c.split("\n\n")).filter((p) => p.startsWith("|"))
    expect(tables.length).toBeGreaterThan(1)
    for (const t of tables) {
      expect(t.startsWith(`${header}\n`)).toBe(true)
      expect(renderMarkdown(t)).toMatch(/^<table><thead>.*<\/tbody><\/table>$/)
    }
    expect(tables.flatMap((t) => t.split("\n").slice(2))).toEqual(rows)
  })

  it("cuts an oversized list between items, keeping ordered numbers", () => {
    const items = Array.from({ length: 40 }, (_, i) => `${i + 1}. item ${i + 1} ${"z".repeat(20)}`)
    const chunks = splitMessage(items.join("\n"), 200)
    expect(chunks.length).toBeGreaterThan(1)
    expect(chunks.flatMap((c) => c.split("\n"))).toEqual(items)
    expect(renderMarkdown(chunks[1]!)).toMatch(/^<ol start="\d+">/)
  })

  it("keeps reference-style link definitions (which are no block of their own)", () => {
    const text = `${"word ".repeat(30).trim()}\n\n[site][s]\n\n[s]: https://example.com`
    expect(splitMessage(text, 100).join("\n\n")).toContain("[s]: https://example.com")
  })

  it("property: chunks fit, fences are balanced, and the text comes back", () => {
    const block = fc.oneof(
      fc.string({ minLength: 1, maxLength: 80 }).map((s) => s.replace(/[`~|\n#>*_-]/g, "a").trim() || "p"),
      fc.array(fc.string({ maxLength: 40 }).map((s) => s.replace(/[`~\n]/g, "c")), { minLength: 1, maxLength: 30 })
        .map((ls) => "```js\n" + ls.join("\n") + "\n```"),
      fc.array(fc.integer({ min: 0, max: 9999 }), { minLength: 1, maxLength: 30 })
        .map((ns) => "| k | v |\n|---|---|\n" + ns.map((n) => `| ${n} | ${n * 2} |`).join("\n"))
    )
    fc.assert(
      fc.property(
        fc.array(block, { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 120, max: 600 }),
        (blocks, max) => {
          const text = blocks.join("\n\n")
          const chunks = splitMessage(text, max)
          for (const c of chunks) {
            expect(Buffer.byteLength(c)).toBeLessThanOrEqual(max)
            expect(fenceLines(c) % 2).toBe(0)
          }
          // nothing is lost: every non-framing line of the input is in the output, in order
          const framing = (l: string) => /^(```|\|---)/.test(l) || l === "| k | v |" || l.trim() === ""
          const want = text.split("\n").filter((l) => !framing(l))
          const got = chunks.flatMap((c) => c.split("\n")).filter((l) => !framing(l))
          expect(got.join("\n").replace(/\s+/g, "")).toBe(want.join("\n").replace(/\s+/g, ""))
        }
      ),
      { numRuns: 150 }
    )
  })
})
