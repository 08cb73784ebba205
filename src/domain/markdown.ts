import MarkdownIt from "markdown-it"
import sanitizeHtml from "sanitize-html"

// ---------------------------------------------------------------------------------------------------------
// Markdown → sanitized HTML (Matrix's `org.matrix.custom.html` subset)
//
// Two kept libraries, two layers of safety: markdown-it (CommonMark + GFM tables and strikethrough) with raw
// HTML off, so every `<` of the model's text is escaped before it becomes HTML; then sanitize-html with the
// tag and attribute allowlist of the Matrix spec ("m.room.message msgtypes", HTML subset), so even a renderer
// bug cannot put anything else into `formatted_body`. Links are kept only for http(s), mailto and matrix:
// URIs (matrix.to links are https); images are turned into links, since Matrix clients show only `mxc://`
// images and a model never has one.

/** Link schemes that survive rendering and sanitising. */
const SAFE_SCHEMES = ["http", "https", "mailto", "matrix"] as const
const SAFE_URL = /^(https?:\/\/|mailto:|matrix:)/i
const LANGUAGE = /^[\w+#.-]{1,40}$/

const md = new MarkdownIt("default", { html: false, linkify: true, breaks: true, typographer: false })
// Only URLs written with a scheme become links (as GFM does for http/https), not every "example.com".
md.linkify.set({ fuzzyLink: false, fuzzyEmail: false, fuzzyIP: false })
// markdown-it's own check only blocks javascript:/vbscript:/file:/data:; ours is an allowlist (no relative links).
md.validateLink = (url: string) => SAFE_URL.test(url.trim())
// A code block's class is `language-<first word of the info string>`, and only for a plain language name.
const renderFence = md.renderer.rules.fence!
md.renderer.rules.fence = (tokens, idx, options, env, self) => {
  const token = tokens[idx]!
  const lang = token.info.trim().split(/\s+/)[0] ?? ""
  token.info = LANGUAGE.test(lang) ? lang : ""
  return renderFence(tokens, idx, options, env, self)
}
md.renderer.rules.image = (tokens, idx) => {
  const token = tokens[idx]!
  const src = String(token.attrGet("src") ?? "")
  const alt = md.utils.escapeHtml(token.content === "" ? src : token.content)
  return SAFE_URL.test(src) ? `<a href="${md.utils.escapeHtml(src)}">${alt}</a>` : alt
}

/** The tags and attributes Matrix clients accept (spec v1.x HTML subset), minus `img` (mxc-only). */
const SANITIZE: sanitizeHtml.IOptions = {
  allowedTags: [
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
  ],
  allowedAttributes: { a: ["href"], ol: ["start"], code: ["class"] },
  allowedClasses: { code: [/^language-[\w+#.-]{1,40}$/] },
  allowedSchemes: [...SAFE_SCHEMES],
  allowedSchemesByTag: {},
  allowedSchemesAppliedToAttributes: ["href"],
  allowProtocolRelative: false,
  disallowedTagsMode: "discard",
  selfClosing: ["br", "hr"]
}

/**
 * Removes the newlines markdown-it puts between tags (Matrix clients would show some of them as extra
 * space), except inside `<pre>`, where they are the code's own; writes void tags the HTML way.
 */
const compact = (html: string): string =>
  html
    .split(/(<pre>[\s\S]*?<\/pre>)/)
    .map((part, i) => (i % 2 === 1 ? part : part.replace(/\n/g, "")))
    .join("")
    .replace(/<(br|hr) ?\/>/g, "<$1>")

const normalizeNewlines = (text: string) => text.replace(/\r\n?/g, "\n")

/** Markdown to the HTML subset Matrix clients render; the input's own HTML is always escaped. */
export const renderMarkdown = (text: string): string =>
  compact(sanitizeHtml(md.render(normalizeNewlines(text).replace(/\u0000/g, "")), SANITIZE))

/** What plain text (paragraphs and line breaks only) looks like after the same pipeline. */
const plainHtml = (text: string): string =>
  compact(
    sanitizeHtml(
      normalizeNewlines(text)
        .split(/\n{2,}/)
        .map((p) => p.trim())
        .filter((p) => p !== "")
        .map((p) => `<p>${md.utils.escapeHtml(p).replace(/\n/g, "<br>")}</p>`)
        .join(""),
      SANITIZE
    )
  )

/**
 * The content for `text`: the Markdown source as `body`, and `formatted_body` only when the Markdown
 * produced markup beyond plain paragraphs (as Element does). Always `m.notice`, the spec's msgtype for
 * automated output that clients and bots must never answer: two bots that allow each other do not loop.
 */
export const messageContent = (text: string): Record<string, unknown> => {
  const html = renderMarkdown(text)
  return html === plainHtml(text)
    ? { msgtype: "m.notice", body: text }
    : { msgtype: "m.notice", body: text, format: "org.matrix.custom.html", formatted_body: html }
}

// ---------------------------------------------------------------------------------------------------------
// Splitting
//
// A long answer is cut into events at block boundaries (markdown-it's own block map, so what counts as a
// code block or a table is what the renderer will see). A block that alone is too big is cut into several
// well-formed blocks: a fenced code block into several fences with the same info string, a table into
// several tables that each repeat the header, a list at its items; anything else at lines, then at code
// points. Limitation: a fence nested inside an oversized list item or quote is cut at lines.

const utf8Length = (s: string) => Buffer.byteLength(s, "utf8")

/** Body bytes per chunk: with `formatted_body` and Megolm's base64 the event stays far below 64 KiB. */
export const MAX_CHUNK_BYTES = 12_000
/** The clear content of one chunk must stay below this (its encrypted form grows by about 4/3). */
export const MAX_CONTENT_BYTES = 30_000

type BlockKind = "fence" | "table" | "list" | "other"

interface Block {
  readonly kind: BlockKind
  readonly lines: ReadonlyArray<string>
  /** Line offsets (relative to the block) where list items start. */
  readonly itemStarts: ReadonlyArray<number>
  /** The fence marker (```` ``` ```` or `~~~`...) for fences. */
  readonly markup: string
}

const kindOf = (type: string): BlockKind =>
  type === "fence"
    ? "fence"
    : type === "table_open"
    ? "table"
    : type === "bullet_list_open" || type === "ordered_list_open"
    ? "list"
    : "other"

const trimBlankEnd = (lines: ReadonlyArray<string>): Array<string> => {
  const out = [...lines]
  while (out.length > 0 && out[out.length - 1]!.trim() === "") out.pop()
  return out
}

/** The top-level blocks of `text`, each with all its source lines (text between blocks stays with them). */
const blocksOf = (text: string): Array<Block> => {
  const lines = text.split("\n")
  const starts: Array<{ line: number; kind: BlockKind; markup: string; items: Array<number> }> = []
  for (const t of md.parse(text, {})) {
    if (t.map === null) continue
    if (t.level === 0 && t.nesting !== -1) {
      starts.push({ line: t.map[0], kind: kindOf(t.type), markup: t.markup, items: [] })
    } else if (t.level === 1 && t.type === "list_item_open") starts[starts.length - 1]?.items.push(t.map[0])
  }
  if (starts.length === 0 || starts[0]!.line > 0) starts.unshift({ line: 0, kind: "other", markup: "", items: [] })
  return starts.flatMap((s, i) => {
    const end = starts[i + 1]?.line ?? lines.length
    const own = trimBlankEnd(lines.slice(s.line, end))
    if (own.length === 0 || own.every((l) => l.trim() === "")) return []
    return [{ kind: s.kind, lines: own, itemStarts: s.items.map((n) => n - s.line), markup: s.markup }]
  })
}

/** Splits at code point boundaries so that no piece exceeds `maxBytes`. */
const hardSplit = (s: string, maxBytes: number): Array<string> => {
  const out: Array<string> = []
  let cur = ""
  let curBytes = 0
  for (const ch of s) {
    const b = utf8Length(ch)
    if (curBytes + b > maxBytes && cur !== "") {
      out.push(cur)
      cur = ""
      curBytes = 0
    }
    cur += ch
    curBytes += b
  }
  if (cur !== "") out.push(cur)
  return out
}

/** Packs pieces joined by `sep` greedily into chunks of at most `maxBytes`. */
const pack = (pieces: ReadonlyArray<string>, sep: string, maxBytes: number): Array<string> => {
  const out: Array<string> = []
  let cur: string | undefined
  for (const piece of pieces) {
    if (cur === undefined) cur = piece
    else if (utf8Length(cur) + utf8Length(sep) + utf8Length(piece) <= maxBytes) cur = cur + sep + piece
    else {
      out.push(cur)
      cur = piece
    }
  }
  if (cur !== undefined) out.push(cur)
  return out
}

/** Lines packed into chunks of at most `maxBytes`; an oversized line is cut at code points. */
const byLines = (lines: ReadonlyArray<string>, maxBytes: number): Array<string> =>
  pack(lines.flatMap((line) => (utf8Length(line) <= maxBytes ? [line] : hardSplit(line, maxBytes))), "\n", maxBytes)

/** Room left for content when every piece carries `frame` bytes of repeated framing. */
const MIN_BODY_BYTES = 32

/** A fenced code block too big for one event: several fences, each opened and closed like the original. */
const splitFence = (b: Block, maxBytes: number): Array<string> => {
  const open = b.lines[0]!
  const close = b.markup === "" ? "```" : b.markup
  const last = b.lines[b.lines.length - 1]!.trim()
  const closed = b.lines.length > 1 && last.startsWith(close[0]!.repeat(close.length)) && /^(`+|~+)$/.test(last)
  const body = b.lines.slice(1, closed ? -1 : undefined)
  const budget = maxBytes - utf8Length(open) - utf8Length(close) - 2
  if (budget < MIN_BODY_BYTES) return byLines(b.lines, maxBytes)
  return byLines(body, budget).map((part) => `${open}\n${part}\n${close}`)
}

/** A table too big for one event: several tables, each with the header and delimiter rows. */
const splitTable = (b: Block, maxBytes: number): Array<string> => {
  const header = b.lines.slice(0, 2).join("\n")
  const budget = maxBytes - utf8Length(header) - 1
  if (b.lines.length < 3 || budget < MIN_BODY_BYTES) return byLines(b.lines, maxBytes)
  return byLines(b.lines.slice(2), budget).map((rows) => `${header}\n${rows}`)
}

/** A list too big for one event: cut between its items (an oversized item at lines). */
const splitList = (b: Block, maxBytes: number): Array<string> => {
  const starts = b.itemStarts.length > 0 && b.itemStarts[0] === 0 ? b.itemStarts : [0, ...b.itemStarts]
  const items = starts.map((s, i) => trimBlankEnd(b.lines.slice(s, starts[i + 1] ?? b.lines.length)).join("\n"))
  return pack(
    items.flatMap((item) => (utf8Length(item) <= maxBytes ? [item] : byLines(item.split("\n"), maxBytes))),
    "\n",
    maxBytes
  )
}

const splitBlock = (b: Block, maxBytes: number): Array<string> => {
  const whole = b.lines.join("\n")
  if (utf8Length(whole) <= maxBytes) return [whole]
  switch (b.kind) {
    case "fence":
      return splitFence(b, maxBytes)
    case "table":
      return splitTable(b, maxBytes)
    case "list":
      return splitList(b, maxBytes)
    case "other":
      return byLines(b.lines, maxBytes)
  }
}

/**
 * Splits an answer into chunks of at most `maxBytes` UTF-8 bytes, at block boundaries; joining the chunks
 * with blank lines gives back the text up to whitespace between blocks (and the framing repeated where a
 * code block or table had to be cut).
 */
export const splitMessage = (text: string, maxBytes = MAX_CHUNK_BYTES): Array<string> => {
  const trimmed = normalizeNewlines(text).trim()
  if (trimmed === "") return []
  if (utf8Length(trimmed) <= maxBytes) return [trimmed]
  return pack(blocksOf(trimmed).flatMap((b) => splitBlock(b, maxBytes)), "\n\n", maxBytes)
}

/** The contents to send for an answer: split, rendered, and re-split where escaping made one too big. */
export const chunkContents = (text: string, maxBytes = MAX_CHUNK_BYTES): Array<Record<string, unknown>> =>
  splitMessage(text, maxBytes).flatMap((chunk) => {
    const content = messageContent(chunk)
    if (utf8Length(JSON.stringify(content)) <= MAX_CONTENT_BYTES || maxBytes < 256) return [content]
    return chunkContents(chunk, Math.floor(maxBytes / 2))
  })
