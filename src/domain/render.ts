/**
 * Markdown rendering and message splitting for the Matrix send path, pure (moved as is from OutboundLive;
 * a later issue replaces the renderer).
 */

// Markdown → sanitized HTML (Matrix's `org.matrix.custom.html` subset)
//
// Safe by construction: every character of the input is HTML-escaped before any markup is produced, so no
// tag or attribute of the model's text ever reaches `formatted_body`; links are emitted only for http(s),
// mailto and matrix URIs.

const escapeHtml = (s: string): string =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;")

const SAFE_URL = /^(https?:\/\/|mailto:|matrix:)/i

const renderInline = (text: string): string => {
  const tokens: Array<string> = []
  const hold = (html: string) => `\u0000${tokens.push(html) - 1}\u0000`
  // 1. code spans keep their content literally (NUL is reserved for the placeholders)
  let s = text.replace(/\u0000/g, "").replace(
    /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g,
    (_m, _ticks: string, code: string) =>
      hold(`<code>${escapeHtml(code.trim() === "" ? code : code.replace(/^ (.*) $/s, "$1"))}</code>`)
  )
  // 2. links [text](url) before escaping so the URL is seen as written
  s = s.replace(
    /\[([^\]\n]+)\]\(([^()\s]+)\)/g,
    (m, label: string, url: string) =>
      SAFE_URL.test(url) ? hold(`<a href="${escapeHtml(url)}">${renderEmphasis(escapeHtml(label))}</a>`) : m
  )
  // 3. bare URLs
  s = s.replace(
    /\bhttps?:\/\/[^\s<>"'\u0000]+[^\s<>"'.,;:!?)\]\u0000]/g,
    (url) => hold(`<a href="${escapeHtml(url)}">${escapeHtml(url)}</a>`)
  )
  // 4. everything else is text
  const parts = s.split(/(\u0000\d+\u0000)/)
  const html = parts.map((p, i) => (i % 2 === 1 ? p : escapeHtml(p))).join("")
  let result = renderEmphasis(html)
  // a link label may hold a code span: restore until no placeholder is left (bounded by the nesting depth)
  for (let depth = 0; depth < 3 && result.includes("\u0000"); depth++) {
    result = result.replace(/\u0000(\d+)\u0000/g, (_m, n: string) => tokens[Number(n)] ?? "")
  }
  return result
}

/** Emphasis on already-escaped text (placeholders are left alone: they hold no `*`, `_` or `~`). */
const renderEmphasis = (html: string): string =>
  html
    .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^\w])__(?=\S)([\s\S]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
    .replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>")
    .replace(/(^|[^*\w])\*(?=[^\s*])([^*\n]*?[^\s*])\*(?!\*)/g, "$1<em>$2</em>")
    .replace(/(^|[^\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?!\w)/g, "$1<em>$2</em>")

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/
const QUOTE = /^ {0,3}>\s?(.*)$/
const BULLET = /^( {0,3})([-*+])\s+(.*)$/
const ORDERED = /^( {0,3})(\d{1,9})[.)]\s+(.*)$/

const startsBlock = (line: string) =>
  FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || BULLET.test(line) ||
  ORDERED.test(line)

const renderBlocks = (lines: ReadonlyArray<string>): string => {
  const out: Array<string> = []
  let i = 0
  while (i < lines.length) {
    const line = lines[i]!
    if (line.trim() === "") {
      i++
      continue
    }
    const fence = FENCE.exec(line)
    if (fence) {
      const marker = fence[1]!
      const lang = fence[2] ?? ""
      const body: Array<string> = []
      i++
      while (
        i < lines.length &&
        !new RegExp(`^ {0,3}${marker[0] === "`" ? "`" : "~"}{${marker.length},}\\s*$`).test(lines[i]!)
      ) {
        body.push(lines[i]!)
        i++
      }
      i++ // closing fence (or end of text)
      const cls = lang === "" ? "" : ` class="language-${escapeHtml(lang)}"`
      out.push(`<pre><code${cls}>${escapeHtml(body.join("\n"))}\n</code></pre>`)
      continue
    }
    const heading = HEADING.exec(line)
    if (heading) {
      const level = heading[1]!.length
      out.push(`<h${level}>${renderInline(heading[2] ?? "")}</h${level}>`)
      i++
      continue
    }
    if (RULE.test(line)) {
      out.push("<hr>")
      i++
      continue
    }
    if (QUOTE.test(line)) {
      const inner: Array<string> = []
      while (i < lines.length && QUOTE.test(lines[i]!)) {
        inner.push(QUOTE.exec(lines[i]!)![1] ?? "")
        i++
      }
      out.push(`<blockquote>${renderBlocks(inner)}</blockquote>`)
      continue
    }
    const bullet = BULLET.exec(line)
    const ordered = bullet ? null : ORDERED.exec(line)
    if (bullet || ordered) {
      const itemRe = bullet ? BULLET : ORDERED
      const items: Array<Array<string>> = []
      while (i < lines.length) {
        const l = lines[i]!
        const m = itemRe.exec(l)
        if (m) {
          items.push([m[3] ?? ""])
          i++
          continue
        }
        // indented continuation (nested list or wrapped text); a blank line followed by indentation too
        if (l.trim() !== "" && /^\s{2,}/.test(l) && items.length > 0) {
          items[items.length - 1]!.push(l.replace(/^\s{2,4}/, ""))
          i++
          continue
        }
        if (
          l.trim() === "" && i + 1 < lines.length && (itemRe.test(lines[i + 1]!) || /^\s{2,}\S/.test(lines[i + 1]!))
        ) {
          i++
          continue
        }
        break
      }
      const lis = items.map((item) => {
        const nested = item.length > 1 && item.slice(1).some((l) => startsBlock(l))
        const html = nested ? renderBlocks(item) : renderInline(item.join("\n")).replace(/\n/g, "<br>")
        return `<li>${nested ? html.replace(/^<p>([\s\S]*?)<\/p>/, "$1") : html}</li>`
      })
      if (bullet) out.push(`<ul>${lis.join("")}</ul>`)
      else {
        const start = Number(ordered![2])
        out.push(`<ol${start === 1 ? "" : ` start="${start}"`}>${lis.join("")}</ol>`)
      }
      continue
    }
    const para: Array<string> = []
    while (i < lines.length && lines[i]!.trim() !== "" && (para.length === 0 || !startsBlock(lines[i]!))) {
      para.push(lines[i]!.trim())
      i++
    }
    out.push(`<p>${renderInline(para.join("\n")).replace(/\n/g, "<br>")}</p>`)
  }
  return out.join("")
}

/** Markdown to the HTML subset Matrix clients render; the input's own HTML is always escaped. */
export const renderMarkdown = (text: string): string => renderBlocks(text.replace(/\r\n?/g, "\n").split("\n"))

/**
 * The content for `text`: the Markdown source as `body`, and `formatted_body` only when the Markdown
 * produced markup beyond plain paragraphs (as Element does). Always `m.notice`, the spec's msgtype for
 * automated output that clients and bots must never answer: two bots that allow each other do not loop.
 */
export const messageContent = (text: string): Record<string, unknown> => {
  const html = renderMarkdown(text)
  const plain = text
    .split(/\n{2,}/)
    .map((p) => p.trim())
    .filter((p) => p !== "")
    .map((p) => `<p>${escapeHtml(p).replace(/\n/g, "<br>")}</p>`)
    .join("")
  return html === plain
    ? { msgtype: "m.notice", body: text }
    : { msgtype: "m.notice", body: text, format: "org.matrix.custom.html", formatted_body: html }
}

// Splitting

const utf8Length = (s: string) => Buffer.byteLength(s, "utf8")

/** Body bytes per chunk: with `formatted_body` and Megolm's base64 the event stays far below 64 KiB. */
export const MAX_CHUNK_BYTES = 12_000
/** The clear content of one chunk must stay below this (its encrypted form grows by about 4/3). */
export const MAX_CONTENT_BYTES = 30_000

/** Paragraphs (blank-line separated), keeping fenced code blocks whole. */
const paragraphs = (text: string): Array<string> => {
  const out: Array<string> = []
  let current: Array<string> = []
  let fence: string | undefined
  for (const line of text.replace(/\r\n?/g, "\n").split("\n")) {
    const f = FENCE.exec(line)
    if (f) fence = fence === undefined ? f[1]![0] : line.trim().startsWith(fence) ? undefined : fence
    if (fence === undefined && line.trim() === "" && f === null) {
      if (current.length > 0) out.push(current.join("\n"))
      current = []
    } else current.push(line)
  }
  if (current.length > 0) out.push(current.join("\n"))
  return out
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

/**
 * Splits an answer into chunks of at most `maxBytes` UTF-8 bytes: at paragraph boundaries first, then at
 * line boundaries for an oversized paragraph, then at code points for an oversized line. Joining the
 * chunks with blank lines gives back the text up to whitespace between paragraphs.
 */
export const splitMessage = (text: string, maxBytes = MAX_CHUNK_BYTES): Array<string> => {
  const trimmed = text.trim()
  if (trimmed === "") return []
  if (utf8Length(trimmed) <= maxBytes) return [trimmed]
  const pieces = paragraphs(trimmed).flatMap((p) =>
    utf8Length(p) <= maxBytes
      ? [p]
      : pack(
        p.split("\n").flatMap((line) => (utf8Length(line) <= maxBytes ? [line] : hardSplit(line, maxBytes))),
        "\n",
        maxBytes
      )
  )
  return pack(pieces, "\n\n", maxBytes)
}

/** The contents to send for an answer: split, rendered, and re-split where escaping made one too big. */
export const chunkContents = (text: string, maxBytes = MAX_CHUNK_BYTES): Array<Record<string, unknown>> =>
  splitMessage(text, maxBytes).flatMap((chunk) => {
    const content = messageContent(chunk)
    if (utf8Length(JSON.stringify(content)) <= MAX_CONTENT_BYTES || maxBytes < 256) return [content]
    return chunkContents(chunk, Math.floor(maxBytes / 2))
  })
