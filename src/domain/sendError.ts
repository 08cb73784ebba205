import { TOKEN_REVOCATION_CODES } from "./matrix.js"

// Send errors

export type SendFailure =
  | {
    readonly _tag: "Transient"
    readonly kind: "send-failed"
    readonly retryAfterMs: number | undefined
    readonly detail: string
  }
  | { readonly _tag: "Terminal"; readonly kind: "send-terminal" | "auth-token-revoked"; readonly detail: string }

const TERMINAL_CODES = new Set([
  "M_FORBIDDEN",
  "M_THREEPID_DENIED",
  "M_TOO_LARGE",
  "M_GUEST_ACCESS_FORBIDDEN",
  "M_BAD_JSON",
  "M_NOT_JSON",
  "M_UNRECOGNIZED"
])

const RETRY_AFTER_CAP_MS = 3_600_000

/** Classifies a matrix-js-sdk send error (reference §8.3); unknown errors are transient. */
export const classifySendError = (e: unknown): SendFailure => {
  const err = (e ?? {}) as {
    errcode?: unknown
    httpStatus?: unknown
    data?: { retry_after_ms?: unknown }
    name?: unknown
    message?: unknown
    getRetryAfterMs?: () => number | null
  }
  const errcode = typeof err.errcode === "string" ? err.errcode : undefined
  const status = typeof err.httpStatus === "number" ? err.httpStatus : undefined
  const detail = `${errcode ?? (typeof err.name === "string" ? err.name : "error")}${
    status === undefined ? "" : ` (HTTP ${status})`
  }`
  if (errcode !== undefined && TOKEN_REVOCATION_CODES.has(errcode)) {
    return { _tag: "Terminal", kind: "auth-token-revoked", detail }
  }
  if (errcode === "M_LIMIT_EXCEEDED" || status === 429) {
    let hint: number | undefined
    try {
      hint = err.getRetryAfterMs?.() ?? undefined
    } catch {
      hint = undefined
    }
    if (hint === undefined && typeof err.data?.retry_after_ms === "number") hint = err.data.retry_after_ms
    return {
      _tag: "Transient",
      kind: "send-failed",
      retryAfterMs: hint === undefined ? undefined : Math.min(Math.max(0, hint), RETRY_AFTER_CAP_MS),
      detail
    }
  }
  if (
    (errcode !== undefined && TERMINAL_CODES.has(errcode)) || (status !== undefined && status >= 400 && status < 500)
  ) {
    return { _tag: "Terminal", kind: "send-terminal", detail }
  }
  return { _tag: "Transient", kind: "send-failed", retryAfterMs: undefined, detail }
}

/** An SDK error in a few words: its errcode (and HTTP status), else its class; never a URL. */
export const describeSdkError = (e: unknown): string => {
  const err = e as { errcode?: unknown; httpStatus?: unknown; name?: unknown; message?: unknown }
  if (typeof err?.errcode === "string") {
    return `${err.errcode}${typeof err.httpStatus === "number" ? ` (HTTP ${err.httpStatus})` : ""}`
  }
  // a transport error's text can hold the request URL: keep only the class of failure
  if (typeof err?.name === "string" && err.name !== "Error") return err.name
  return typeof err?.message === "string"
    ? err.message.replace(/https?:\/\/\S+/g, "[URL]").slice(0, 200)
    : String(e).slice(0, 200)
}

export const errcodeOf = (e: unknown): string | undefined => {
  const c = (e as { errcode?: unknown } | undefined)?.errcode
  return typeof c === "string" ? c : undefined
}

/** An errcode that means the access token is gone for good (a sync or whoami answered with it stops the runtime). */
export const isTokenRejection = (code: string | undefined): boolean =>
  code !== undefined && (TOKEN_REVOCATION_CODES.has(code) || code === "M_FORBIDDEN")
