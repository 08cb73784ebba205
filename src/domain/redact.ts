import { Redacted } from "effect"
import { redactRecoveryKeys } from "./recoveryKey.js"

/**
 * The process-wide registry of secret values, and the one redactor that every sink (the logger, the audit
 * writers, the agent's error-to-answer path, the CLI's error renderer) passes its text through.
 *
 * It redacts the exact values that were configured, not patterns: a provider that echoes the key, a URL
 * that carries a token, a library error that quotes the password are all caught, whatever the secret looks
 * like. Values are registered where they are resolved (the config load, `${VAR}` substitution, the store
 * passphrase, a fresh access token); the registry only grows, since a value that was a secret once stays
 * sensitive after a rotation.
 */

/** Shorter values are not redacted: they would mangle ordinary words and guarding them hides nothing. */
export const MIN_SECRET_LENGTH = 6

export const REDACTED = "[REDACTED]"

const values = new Set<string>()
let pattern: RegExp | undefined

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** The forms a value takes in text we write: as is, URL-encoded (query strings, userinfo), JSON-escaped. */
const encodings = (value: string): ReadonlyArray<string> => {
  const out = new Set([value, encodeURIComponent(value), JSON.stringify(value).slice(1, -1)])
  try {
    // Form encoding writes spaces as `+`.
    out.add(new URLSearchParams({ v: value }).toString().slice(2))
  } catch {
    // Lone surrogates cannot be form-encoded; the other forms still apply.
  }
  return [...out]
}

/** Adds a secret value (a string or a `Redacted`); blank and too-short values are ignored. */
export const registerSecret = (secret: string | Redacted.Redacted<string>): void => {
  const value = (typeof secret === "string" ? secret : Redacted.value(secret)).trim()
  if (value.length < MIN_SECRET_LENGTH || values.has(value)) return
  values.add(value)
  // One alternation, longest first, so a secret that contains another one is replaced whole.
  const forms = [...new Set([...values].flatMap(encodings))].filter((f) => f.length >= MIN_SECRET_LENGTH)
  forms.sort((a, b) => b.length - a.length)
  pattern = new RegExp(forms.map(escapeRegExp).join("|"), "g")
}

/** How many distinct secret values are registered (for tests and `cara doctor`-style summaries). */
export const registeredSecretCount = (): number => values.size

/** Forgets every registered value: for tests only, the daemon never unregisters. */
export const clearSecretsForTests = (): void => {
  values.clear()
  pattern = undefined
}

/** Replaces every registered secret value (and anything shaped like a Matrix recovery key) with `[REDACTED]`. */
export const redactSecrets = (text: string): string => {
  const exact = pattern === undefined ? text : text.replace(pattern, REDACTED)
  return redactRecoveryKeys(exact)
}

/**
 * One `audit.jsonl` line, `{"ts","event","data"}\n`, redacted: every audit writer formats through this so an
 * error text quoted into an audit record cannot carry a secret to disk.
 */
export const auditLine = (event: string, data: Record<string, unknown>, now: Date = new Date()): string =>
  `${redactSecrets(JSON.stringify({ ts: now.toISOString(), event, data }))}\n`
