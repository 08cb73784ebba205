import { createHash } from "node:crypto"

// ---------------------------------------------------------------------------------------------------------
// Text from other people (display names, captions, file names, file contents) on its way into a prompt.
//
// It is data, never markup or instructions: it is stripped of the characters that change how text looks
// without being seen (controls, bidi overrides, zero-width characters), kept on one line where it labels
// something, and quoted so that it cannot close the frame it sits in.

/**
 * C0/C1 controls, the bidi embeddings/overrides/isolates and marks, zero-width and other invisible format
 * characters (soft hyphen, word joiner, BOM, the invisible math operators, the tag characters), and the
 * line/paragraph separators.
 */
const INVISIBLE_CLASS =
  "[\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u206f\\ufeff\\ufff9-\\ufffb\\u{e0000}-\\u{e007f}]"
const INVISIBLE = new RegExp(INVISIBLE_CLASS, "gu")
const HAS_INVISIBLE = new RegExp(INVISIBLE_CLASS, "u")

/** True when `s` holds a character that `oneLine` strips (in a display name, a sign of spoofing). */
export const hasInvisible = (s: string): boolean => HAS_INVISIBLE.test(s)

/** One line, no invisible characters, whitespace collapsed, at most `max` code points (… when cut). */
export const oneLine = (s: string, max = 64): string => {
  const clean = s.normalize("NFC").replace(INVISIBLE, " ").replace(/\s+/g, " ").trim()
  const points = [...clean]
  return points.length > max ? `${points.slice(0, max - 1).join("")}…` : clean
}

/** A label (name, caption, file name) as a JSON string literal: quoted, escaped, one line. */
export const quoteLabel = (s: string, max = 200): string => JSON.stringify(oneLine(s, max))

/**
 * A multi-line text (a file's contents) with its controls removed, tabs and newlines kept, Windows and old
 * Mac line ends made `\n`.
 */
export const cleanBody = (s: string): string =>
  s.replace(/\r\n?/g, "\n").replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ufeff]/g, "")

/**
 * A frame for a block of untrusted text that the text itself cannot close: the marker carries a digest of
 * the content, so a file would have to contain the hash of itself to forge the end line.
 */
export const frameBlock = (title: string, body: string): string => {
  const tag = createHash("sha256").update(body, "utf8").digest("hex").slice(0, 12)
  return `----- BEGIN ${title} ${tag} -----\n${body}\n----- END ${title} ${tag} -----`
}
