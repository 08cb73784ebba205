// Reads the operator docs for the docs tests: code blocks, inline code spans and tables, so each test can
// check what the docs name (commands, config keys, endpoints, events, error kinds) against the code.
import * as fs from "node:fs"
import * as path from "node:path"

export const DOC_FILES = [
  "README.md",
  "docs/channels.md",
  "docs/security.md",
  "docs/protocol/http.md",
  "docs/protocol/websocket.md"
] as const

export interface CodeBlock {
  readonly file: string
  readonly lang: string
  readonly text: string
}

export interface Doc {
  readonly file: string
  readonly text: string
  /** The text with fenced code blocks removed (for inline spans and tables). */
  readonly prose: string
  readonly blocks: ReadonlyArray<CodeBlock>
}

export const readDoc = (file: string): Doc => {
  const text = fs.readFileSync(path.resolve(file), "utf8")
  const blocks: Array<CodeBlock> = []
  const prose = text.replace(/^```([\w-]*)\n([\s\S]*?)^```$/gm, (_, lang: string, body: string) => {
    blocks.push({ file, lang, text: body })
    return ""
  })
  return { file, text, prose, blocks }
}

export const readDocs = (): ReadonlyArray<Doc> => DOC_FILES.map(readDoc)

/** Inline code spans of the prose (single backticks). */
export const inlineSpans = (doc: Doc): ReadonlyArray<string> =>
  [...doc.prose.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!)

/** Markdown tables: header cells and rows of cells. */
export const tables = (
  doc: Doc
): ReadonlyArray<{ header: ReadonlyArray<string>; rows: ReadonlyArray<ReadonlyArray<string>> }> => {
  const out: Array<{ header: Array<string>; rows: Array<Array<string>> }> = []
  const lines = doc.prose.split("\n").map((l) => l.trim())
  const cells = (l: string) => l.replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim())
  for (let i = 0; i + 1 < lines.length; i++) {
    if (lines[i]!.startsWith("|") && /^\|[\s|:-]+\|$/.test(lines[i + 1]!)) {
      const t = { header: cells(lines[i]!), rows: [] as Array<Array<string>> }
      let j = i + 2
      while (j < lines.length && lines[j]!.startsWith("|")) t.rows.push(cells(lines[j++]!))
      out.push(t)
      i = j
    }
  }
  return out
}

/** Backticked tokens of a table cell. */
export const codeIn = (cell: string): ReadonlyArray<string> => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!)

/** Splits a shell-ish command line into words, keeping quoted strings whole (quotes removed). */
export const shellWords = (line: string): Array<string> => {
  const words: Array<string> = []
  for (const m of line.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)) words.push(m[1] ?? m[2] ?? m[3]!)
  return words
}

export interface DocCommand {
  readonly file: string
  readonly source: string
  /** The subcommand path after `cara` (`["matrix", "confirm"]`). */
  readonly path: ReadonlyArray<string>
  /** Every `--flag` / `-x` the documented command uses. */
  readonly flags: ReadonlyArray<string>
}

const toCommand = (file: string, source: string): DocCommand | undefined => {
  const at = source.search(/(^|[\s|;&(])(npx )?cara(\s|$)/)
  if (at < 0) return undefined
  const rest = source.slice(at).replace(/^[\s|;&(]*(npx )?cara/, "")
  const words = shellWords(rest.replace(/\s+#.*$/, ""))
  const pathWords: Array<string> = []
  for (const w of words) {
    if (!/^[a-z][a-z0-9-]*$/.test(w)) break
    pathWords.push(w)
  }
  const flags = words.map((w) => w.replace(/^[[(]+|[\])]+$/g, "")).filter((w) => /^--?[a-z][a-z0-9-]*$/.test(w))
  return { file, source, path: pathWords, flags }
}

/** Every `cara …` command: lines of shell code blocks and inline spans that start with `cara`. */
export const docCommands = (docs: ReadonlyArray<Doc>): ReadonlyArray<DocCommand> => {
  const out: Array<DocCommand> = []
  for (const doc of docs) {
    for (const b of doc.blocks.filter((b) => b.lang === "bash" || b.lang === "sh")) {
      for (const line of b.text.split("\n")) {
        const code = line.replace(/^\s*#.*$/, "")
        const c = /(^|[|;&]\s*|^\s*(\w+=\S*\s+)+)(npx )?cara(\s|$)/.test(code) ? toCommand(doc.file, code) : undefined
        if (c !== undefined) out.push(c)
      }
    }
    for (const span of inlineSpans(doc)) {
      if (/^(npx )?cara(\s|$)/.test(span)) {
        const c = toCommand(doc.file, span)
        if (c !== undefined) out.push(c)
      }
    }
  }
  return out
}
