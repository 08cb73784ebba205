// Downloading an attachment's bytes through the authenticated media API (Matrix v1.11:
// `/_matrix/client/v1/media/download/{serverName}/{mediaId}` with the access token), bounded in size while
// the body streams in. The bytes stay in memory; nothing here writes to disk or logs the token or the URL's
// query.
import { Data } from "effect"
import { mediaDownloadPath } from "../../domain/attachment.js"

export type MediaErrorKind = "media-invalid-uri" | "media-too-large" | "media-http" | "media-network"

/** A download failed; the message names the mxc URI's kind of problem, never the token. */
export class MediaError extends Data.TaggedError("MediaError")<{
  readonly kind: MediaErrorKind
  readonly message: string
}> {}

export interface DownloadOptions {
  /** The homeserver's client-server base URL (`https://matrix.example.org`). */
  readonly baseUrl: string
  readonly accessToken: string | null
  readonly mxc: string
  /** The download is refused (and aborted) beyond this many bytes. */
  readonly maxBytes: number
  readonly timeoutMs?: number
  readonly fetchFn?: typeof fetch
}

const DEFAULT_TIMEOUT_MS = 60_000

const tooLarge = (maxBytes: number) =>
  new MediaError({ kind: "media-too-large", message: `the attachment is larger than ${maxBytes} bytes` })

/** Reads a response body into memory, aborting as soon as it grows beyond `maxBytes`. */
const readBounded = async (res: Response, maxBytes: number, abort: () => void): Promise<Uint8Array> => {
  const body = res.body
  if (body === null) return new Uint8Array(0)
  const reader = body.getReader()
  const chunks: Array<Uint8Array> = []
  let total = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    total += value.byteLength
    if (total > maxBytes) {
      abort()
      await reader.cancel().catch(() => undefined)
      throw tooLarge(maxBytes)
    }
    chunks.push(value)
  }
  const out = new Uint8Array(total)
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.byteLength
  }
  return out
}

/** A homeserver from before authenticated media (Matrix v1.11) answers the v1 path with M_UNRECOGNIZED. */
const unrecognized = async (res: Response): Promise<boolean> => {
  if (res.status !== 404 && res.status !== 400 && res.status !== 405) return false
  const body = await res.json().catch(() => undefined) as { errcode?: unknown } | undefined
  return body?.errcode === "M_UNRECOGNIZED"
}

/**
 * The bytes behind an `mxc://` URI (still encrypted for an encrypted attachment). A declared
 * `content-length` over the bound is refused before reading; a body that grows past it is aborted. A
 * homeserver without the authenticated endpoint is asked at the legacy `/_matrix/media/v3/download` path.
 */
export const downloadMedia = async (o: DownloadOptions): Promise<Uint8Array> => {
  const path = mediaDownloadPath(o.mxc)
  if (path === undefined) throw new MediaError({ kind: "media-invalid-uri", message: "not an mxc:// URI" })
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), o.timeoutMs ?? DEFAULT_TIMEOUT_MS)
  const get = (p: string) =>
    (o.fetchFn ?? fetch)(`${o.baseUrl.replace(/\/+$/, "")}${p}`, {
      headers: o.accessToken === null ? {} : { authorization: `Bearer ${o.accessToken}` },
      redirect: "follow",
      signal: controller.signal
    }).catch((e: unknown) => {
      throw new MediaError({
        kind: "media-network",
        message: `the media download failed: ${e instanceof Error ? e.name : "network error"}`
      })
    })
  try {
    let res = await get(path)
    if (await unrecognized(res)) res = await get(path.replace("/_matrix/client/v1/media/", "/_matrix/media/v3/"))
    if (!res.ok) {
      await res.body?.cancel().catch(() => undefined)
      throw new MediaError({ kind: "media-http", message: `the media download was refused (HTTP ${res.status})` })
    }
    const declared = Number(res.headers.get("content-length") ?? "")
    if (Number.isFinite(declared) && declared > o.maxBytes) {
      controller.abort()
      throw tooLarge(o.maxBytes)
    }
    return await readBounded(res, o.maxBytes, () => controller.abort()).catch((e: unknown) => {
      if (e instanceof MediaError) throw e
      throw new MediaError({ kind: "media-network", message: "the media download broke off" })
    })
  } finally {
    clearTimeout(timer)
  }
}
