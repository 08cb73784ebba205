import { Data, Either } from "effect"
import JSON5 from "json5"

/**
 * Minimal in-place edits of a JSON5 document, so a write-back keeps the operator's comments, blank lines,
 * key order, quoting and `${VAR}` placeholders.
 *
 * A small position-aware parser locates members; an edit replaces one value, inserts one member or deletes
 * one member as a text splice; `applyEdits` then re-parses the result with the `json5` package and compares
 * it with the intended object, so a splice that went wrong can never reach the disk.
 */

export class Json5EditError extends Data.TaggedError("Json5EditError")<{
  readonly reason: string
  readonly line?: number
  readonly column?: number
}> {}

export type JsonPath = ReadonlyArray<string>

interface NodeBase {
  /** Offset of the first character of the value. */
  readonly start: number
  /** Offset just past the value. */
  readonly end: number
}

export interface ObjectNode extends NodeBase {
  readonly kind: "object"
  readonly members: ReadonlyArray<MemberNode>
}

export interface ArrayNode extends NodeBase {
  readonly kind: "array"
  readonly elements: ReadonlyArray<ValueNode>
}

export interface ScalarNode extends NodeBase {
  readonly kind: "string" | "number" | "literal"
  readonly value: unknown
  /** The quote character of a string value. */
  readonly quote?: "\"" | "'"
}

export type ValueNode = ObjectNode | ArrayNode | ScalarNode

export interface MemberNode {
  readonly key: string
  readonly keyStart: number
  readonly keyStyle: "\"" | "'" | "bare"
  readonly value: ValueNode
  /** Offset of the comma that follows the member, if any. */
  readonly comma: number | undefined
}

// ---------------------------------------------------------------------------------------------------------
// Parser

const isJson5Space = (c: string) => /[\t\n\v\f\r \u00a0\u2028\u2029\ufeff\p{Zs}]/u.test(c)
const IDENT = /[\p{ID_Start}$_][\p{ID_Continue}$_\u200c\u200d]*/uy
const NUMBER = /[+-]?(?:Infinity|NaN|0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)/y

export const lineColumn = (text: string, offset: number): { line: number; column: number } => {
  let line = 1
  let last = -1
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === "\n") {
      line++
      last = i
    }
  }
  return { line, column: offset - last }
}

class Parser {
  pos = 0
  constructor(readonly text: string) {}

  fail(reason: string, at = this.pos): never {
    throw new Json5EditError({ reason, ...lineColumn(this.text, at) })
  }

  skipTrivia() {
    const t = this.text
    for (;;) {
      const c = t[this.pos]
      if (c === undefined) return
      if (isJson5Space(c)) {
        this.pos++
      } else if (c === "/" && t[this.pos + 1] === "/") {
        while (this.pos < t.length && t[this.pos] !== "\n" && t[this.pos] !== "\r") this.pos++
      } else if (c === "/" && t[this.pos + 1] === "*") {
        const close = t.indexOf("*/", this.pos + 2)
        if (close < 0) this.fail("unterminated block comment")
        this.pos = close + 2
      } else {
        return
      }
    }
  }

  document(): ValueNode {
    this.skipTrivia()
    const v = this.value()
    this.skipTrivia()
    if (this.pos < this.text.length) this.fail("unexpected content after the end of the document")
    return v
  }

  value(): ValueNode {
    const c = this.text[this.pos]
    if (c === undefined) this.fail("unexpected end of input")
    if (c === "{") return this.object()
    if (c === "[") return this.array()
    if (c === "\"" || c === "'") return this.string()
    NUMBER.lastIndex = this.pos
    const n = NUMBER.exec(this.text)
    if (n !== null) {
      const start = this.pos
      this.pos += n[0].length
      return { kind: "number", start, end: this.pos, value: JSON5.parse(n[0]) }
    }
    IDENT.lastIndex = this.pos
    const id = IDENT.exec(this.text)
    if (id !== null && (id[0] === "true" || id[0] === "false" || id[0] === "null")) {
      const start = this.pos
      this.pos += id[0].length
      return { kind: "literal", start, end: this.pos, value: id[0] === "null" ? null : id[0] === "true" }
    }
    return this.fail(`unexpected character ${JSON.stringify(c)}`)
  }

  string(): ScalarNode {
    const t = this.text
    const start = this.pos
    const quote = t[start] as "\"" | "'"
    let i = start + 1
    for (;;) {
      const c = t[i]
      if (c === undefined || c === "\n" || c === "\r") this.fail("unterminated string", start)
      if (c === "\\") {
        i += t[i + 1] === "\r" && t[i + 2] === "\n" ? 3 : 2
        continue
      }
      i++
      if (c === quote) break
    }
    this.pos = i
    let value: unknown
    try {
      value = JSON5.parse(t.slice(start, i))
    } catch {
      this.fail("invalid string escape", start)
    }
    return { kind: "string", start, end: i, value, quote }
  }

  object(): ObjectNode {
    const start = this.pos
    this.pos++
    const members: Array<MemberNode> = []
    for (;;) {
      this.skipTrivia()
      if (this.text[this.pos] === "}") break
      const keyStart = this.pos
      let key: string
      let keyStyle: MemberNode["keyStyle"]
      const c = this.text[this.pos]
      if (c === "\"" || c === "'") {
        const k = this.string()
        key = k.value as string
        keyStyle = c
      } else {
        IDENT.lastIndex = this.pos
        const id = IDENT.exec(this.text)
        if (id === null) this.fail("expected a member name")
        key = id[0]
        keyStyle = "bare"
        this.pos += id[0].length
      }
      this.skipTrivia()
      if (this.text[this.pos] !== ":") this.fail("expected ':' after a member name")
      this.pos++
      this.skipTrivia()
      const value = this.value()
      this.skipTrivia()
      let comma: number | undefined
      if (this.text[this.pos] === ",") {
        comma = this.pos
        this.pos++
      } else if (this.text[this.pos] !== "}") {
        this.fail("expected ',' or '}'")
      }
      members.push({ key, keyStart, keyStyle, value, comma })
      if (comma === undefined) {
        this.skipTrivia()
        break
      }
    }
    if (this.text[this.pos] !== "}") this.fail("expected '}'")
    this.pos++
    return { kind: "object", start, end: this.pos, members }
  }

  array(): ArrayNode {
    const start = this.pos
    this.pos++
    const elements: Array<ValueNode> = []
    for (;;) {
      this.skipTrivia()
      if (this.text[this.pos] === "]") break
      elements.push(this.value())
      this.skipTrivia()
      if (this.text[this.pos] === ",") {
        this.pos++
        continue
      }
      if (this.text[this.pos] !== "]") this.fail("expected ',' or ']'")
      break
    }
    this.pos++
    return { kind: "array", start, end: this.pos, elements }
  }
}

/** Parses a JSON5 document, keeping the text offsets of every value and member. */
export const parseWithPositions = (text: string): Either.Either<ValueNode, Json5EditError> => {
  try {
    return Either.right(new Parser(text).document())
  } catch (e) {
    if (e instanceof Json5EditError) return Either.left(e)
    throw e
  }
}

/** Every string value in the document with its path (object members only; array indices as strings). */
export const stringNodes = (root: ValueNode): ReadonlyArray<{ path: JsonPath; node: ScalarNode }> => {
  const out: Array<{ path: JsonPath; node: ScalarNode }> = []
  const walk = (n: ValueNode, path: ReadonlyArray<string>) => {
    if (n.kind === "object") { for (const m of n.members) walk(m.value, [...path, m.key]) }
    else if (n.kind === "array") n.elements.forEach((e, i) => walk(e, [...path, String(i)]))
    else if (n.kind === "string") out.push({ path, node: n })
  }
  walk(root, [])
  return out
}

export interface DuplicateKey {
  /** The path of the repeated member (`["matrix", "autoJoin", "allowUsers"]`). */
  readonly path: JsonPath
  /** Where the member first appears, and where it appears again (the value JSON5 keeps is the last one). */
  readonly first: { readonly line: number; readonly column: number }
  readonly again: { readonly line: number; readonly column: number }
}

/**
 * Members that appear more than once in the same object. JSON5 (like JSON.parse) silently keeps the last
 * one, so an operator who adds a second `allowUsers` further down loses the first without a word.
 */
export const duplicateKeys = (text: string, root: ValueNode): ReadonlyArray<DuplicateKey> => {
  const out: Array<DuplicateKey> = []
  const walk = (n: ValueNode, path: JsonPath) => {
    if (n.kind === "object") {
      const seen = new Map<string, number>()
      for (const m of n.members) {
        const first = seen.get(m.key)
        if (first === undefined) seen.set(m.key, m.keyStart)
        else out.push({ path: [...path, m.key], first: lineColumn(text, first), again: lineColumn(text, m.keyStart) })
        walk(m.value, [...path, m.key])
      }
    } else if (n.kind === "array") {
      n.elements.forEach((e, i) => walk(e, [...path, String(i)]))
    }
  }
  walk(root, [])
  return out
}

// ---------------------------------------------------------------------------------------------------------
// Serialisation of new text

const quoteString = (s: string, quote: "\"" | "'"): string => {
  const json = JSON.stringify(s)
  if (quote === "\"") return json
  // Swap the quoting: unescape \" and escape ' instead.
  return `'${json.slice(1, -1).replace(/\\"/g, "\"").replace(/'/g, "\\'")}'`
}

const isBareKey = (k: string) => {
  IDENT.lastIndex = 0
  const m = IDENT.exec(k)
  return m !== null && m[0] === k
}

interface Style {
  readonly keyStyle: MemberNode["keyStyle"]
  readonly quote: "\"" | "'"
  readonly unit: string
}

const renderKey = (k: string, style: Style) =>
  style.keyStyle === "bare" && isBareKey(k) ? k : quoteString(k, style.keyStyle === "'" ? "'" : "\"")

const renderValue = (v: unknown, indent: string, style: Style): string => {
  if (typeof v === "string") return quoteString(v, style.quote)
  if (Array.isArray(v)) return `[${v.map((e) => renderValue(e, indent, style)).join(", ")}]`
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v)
    if (entries.length === 0) return "{}"
    const inner = indent + style.unit
    const lines = entries.map(([k, e]) => `${inner}${renderKey(k, style)}: ${renderValue(e, inner, style)}`)
    return `{\n${lines.join(",\n")}\n${indent}}`
  }
  if (typeof v === "number" && !Number.isFinite(v)) return Number.isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity"
  return JSON.stringify(v) ?? "null"
}

// ---------------------------------------------------------------------------------------------------------
// Edits

export type Edit =
  | { readonly op: "set"; readonly path: JsonPath; readonly value: unknown }
  | { readonly op: "delete"; readonly path: JsonPath }

const lineStartOf = (text: string, pos: number) => text.lastIndexOf("\n", pos - 1) + 1

const leadingIndent = (text: string, pos: number) => {
  const ls = lineStartOf(text, pos)
  return /^[ \t]*/.exec(text.slice(ls, pos))?.[0] ?? ""
}

/** True when only spaces/tabs precede `pos` on its line. */
const firstOnLine = (text: string, pos: number) => /^[ \t]*$/.test(text.slice(lineStartOf(text, pos), pos))

const detectUnit = (text: string, root: ValueNode): string => {
  if (root.kind === "object") {
    const m = root.members[0]
    if (m !== undefined && firstOnLine(text, m.keyStart)) {
      const base = leadingIndent(text, root.start)
      const ind = leadingIndent(text, m.keyStart)
      if (ind.startsWith(base) && ind.length > base.length) return ind.slice(base.length)
    }
  }
  return "  "
}

const styleFor = (obj: ObjectNode, unit: string): Style => {
  const last = obj.members[obj.members.length - 1]
  const str = [...obj.members].reverse().find((m) => m.value.kind === "string")?.value as ScalarNode | undefined
  return { keyStyle: last?.keyStyle ?? "\"", quote: str?.quote ?? "\"", unit }
}

/** Where a member inserted after `anchor` goes: past trailing same-line spaces and same-line comments. */
const afterSameLineTrivia = (text: string, anchor: number) => {
  let p = anchor
  for (;;) {
    while (text[p] === " " || text[p] === "\t") p++
    if (text.startsWith("//", p)) {
      while (p < text.length && text[p] !== "\n" && text[p] !== "\r") p++
      return p
    }
    if (text.startsWith("/*", p)) {
      const close = text.indexOf("*/", p + 2)
      if (close < 0 || text.slice(p, close).includes("\n")) return p
      p = close + 2
      continue
    }
    return p
  }
}

const splice = (text: string, start: number, end: number, insert: string) =>
  text.slice(0, start) + insert + text.slice(end)

const lastMember = (obj: ObjectNode, key: string): MemberNode | undefined => {
  for (let i = obj.members.length - 1; i >= 0; i--) if (obj.members[i]!.key === key) return obj.members[i]
  return undefined
}

const nest = (path: JsonPath, value: unknown): unknown => path.reduceRight<unknown>((acc, k) => ({ [k]: acc }), value)

const insertMember = (text: string, obj: ObjectNode, key: string, value: unknown, unit: string): string => {
  const style = styleFor(obj, unit)
  const last = obj.members[obj.members.length - 1]
  const close = obj.end - 1
  if (last === undefined) {
    const multiLine = text.slice(obj.start, close).includes("\n")
    if (multiLine && firstOnLine(text, close)) {
      const indent = leadingIndent(text, close) + unit
      const member = `${renderKey(key, style)}: ${renderValue(value, indent, style)}`
      return splice(text, lineStartOf(text, close), lineStartOf(text, close), `${indent}${member}\n`)
    }
    const indent = leadingIndent(text, obj.start)
    const member = `${renderKey(key, style)}: ${renderValue(value, indent, style)}`
    return splice(text, close, close, text[close - 1] === "{" ? ` ${member} ` : `${member} `)
  }
  const anchor = last.comma !== undefined ? last.comma + 1 : last.value.end
  const multiLine = text.slice(anchor, close).includes("\n")
  if (multiLine) {
    const indent = firstOnLine(text, last.keyStart)
      ? leadingIndent(text, last.keyStart)
      : leadingIndent(text, obj.start) + unit
    const member = `${renderKey(key, style)}: ${renderValue(value, indent, style)}`
    const at = afterSameLineTrivia(text, anchor)
    // Keep the author's trailing-comma habit: a new last member has one only if the old last member did.
    const inserted = splice(text, at, at, `\n${indent}${member}${last.comma !== undefined ? "," : ""}`)
    return last.comma !== undefined ? inserted : splice(inserted, last.value.end, last.value.end, ",")
  }
  const member = `${renderKey(key, style)}: ${renderValue(value, leadingIndent(text, obj.start), style)}`
  return last.comma !== undefined
    ? splice(text, anchor, anchor, ` ${member},`)
    : splice(text, last.value.end, last.value.end, `, ${member}`)
}

const deleteMember = (text: string, obj: ObjectNode, member: MemberNode): string => {
  const idx = obj.members.indexOf(member)
  const end = member.comma !== undefined ? member.comma + 1 : member.value.end
  let out = splice(text, member.keyStart, end, "")
  // Drop the line if the member was alone on it (a same-line comment after it keeps the line).
  const ls = lineStartOf(out, member.keyStart)
  const nl = out.indexOf("\n", member.keyStart)
  const le = nl < 0 ? out.length : nl
  if (/^[ \t\r]*$/.test(out.slice(ls, le))) out = splice(out, ls, nl < 0 ? le : le + 1, "")
  // A removed last member without a comma leaves the previous member's comma dangling: drop it too.
  const prev = idx > 0 ? obj.members[idx - 1] : undefined
  if (member.comma === undefined && prev?.comma !== undefined) out = splice(out, prev.comma, prev.comma + 1, "")
  return out
}

const applyOne = (text: string, edit: Edit): string => {
  const root = Either.getOrThrowWith(parseWithPositions(text), (e) => e)
  if (root.kind !== "object") throw new Json5EditError({ reason: "the document is not an object" })
  if (edit.path.length === 0) throw new Json5EditError({ reason: "an edit needs a non-empty path" })
  const unit = detectUnit(text, root)
  let obj: ObjectNode = root
  for (let i = 0; i < edit.path.length; i++) {
    const key = edit.path[i]!
    const isLast = i === edit.path.length - 1
    const m = lastMember(obj, key)
    if (edit.op === "delete") {
      if (m === undefined) return text
      if (isLast) {
        // Duplicate keys: JSON5 keeps the last one, and a delete must remove them all (one per pass).
        const out = deleteMember(text, obj, m)
        return obj.members.filter((x) => x.key === key).length > 1 ? applyOne(out, edit) : out
      }
      if (m.value.kind !== "object") return text
      obj = m.value
      continue
    }
    if (m === undefined) return insertMember(text, obj, key, nest(edit.path.slice(i + 1), edit.value), unit)
    if (isLast) {
      const old = m.value
      const style: Style = {
        ...styleFor(obj, unit),
        ...(old.kind === "string" && old.quote !== undefined ? { quote: old.quote } : {})
      }
      const indent = leadingIndent(text, m.keyStart)
      return splice(text, old.start, old.end, renderValue(edit.value, indent, style))
    }
    if (m.value.kind !== "object") {
      throw new Json5EditError({ reason: `${edit.path.slice(0, i + 1).join(".")} is not an object` })
    }
    obj = m.value
  }
  return text
}

// In-memory counterpart of the edits: what the document must parse to afterwards.
const applyToValue = (doc: unknown, edit: Edit): unknown => {
  const clone = structuredClone(doc) as Record<string, unknown>
  let cur: Record<string, unknown> = clone
  for (let i = 0; i < edit.path.length - 1; i++) {
    const k = edit.path[i]!
    const next = Object.hasOwn(cur, k) ? cur[k] : undefined
    if (next === undefined) {
      if (edit.op === "delete") return clone
      cur[k] = {}
    } else if (next === null || typeof next !== "object" || Array.isArray(next)) {
      if (edit.op === "delete") return clone
      throw new Json5EditError({ reason: `${edit.path.slice(0, i + 1).join(".")} is not an object` })
    }
    cur = cur[k] as Record<string, unknown>
  }
  const lastKey = edit.path[edit.path.length - 1]!
  if (edit.op === "delete") delete cur[lastKey]
  else cur[lastKey] = structuredClone(edit.value)
  return clone
}

export const deepEqual = (a: unknown, b: unknown): boolean => {
  if (typeof a === "number" && typeof b === "number") return Object.is(a, b) || a === b
  if (a === b) return true
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (ka.length !== kb.length) return false
  return ka.every((k) =>
    Object.hasOwn(b, k) && deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])
  )
}

export interface EditResult {
  readonly text: string
  /** The document as the edited text parses (equal to the intended object). */
  readonly value: unknown
}

/**
 * Applies the edits in order as minimal text splices, then proves the result: it must parse (with the
 * `json5` package, independently of our parser) to exactly the original object with the edits applied.
 */
export const applyEdits = (text: string, edits: ReadonlyArray<Edit>): Either.Either<EditResult, Json5EditError> => {
  try {
    const before: unknown = JSON5.parse(text)
    if (before === null || typeof before !== "object" || Array.isArray(before)) {
      return Either.left(new Json5EditError({ reason: "the document is not an object" }))
    }
    let out = text
    let intended: unknown = before
    for (const e of edits) {
      intended = applyToValue(intended, e)
      out = applyOne(out, e)
    }
    let after: unknown
    try {
      after = JSON5.parse(out)
    } catch (e) {
      return Either.left(new Json5EditError({ reason: `the edited text no longer parses (${String(e)})` }))
    }
    if (!deepEqual(after, intended)) {
      return Either.left(new Json5EditError({ reason: "the edited text does not parse to the intended object" }))
    }
    return Either.right({ text: out, value: after })
  } catch (e) {
    if (e instanceof Json5EditError) return Either.left(e)
    if (e instanceof SyntaxError) {
      const { lineNumber, columnNumber } = e as SyntaxError & { lineNumber?: number; columnNumber?: number }
      return Either.left(
        new Json5EditError({
          reason: e.message,
          ...(lineNumber !== undefined ? { line: lineNumber } : {}),
          ...(columnNumber !== undefined ? { column: columnNumber } : {})
        })
      )
    }
    throw e
  }
}

/** Replaces the text of one string value (used by rekey), keeping its quote style. */
export const replaceString = (text: string, node: ScalarNode, value: string): string =>
  splice(text, node.start, node.end, quoteString(value, node.quote ?? "\""))
