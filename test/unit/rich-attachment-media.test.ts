// The authenticated media download (src/layers/matrix/media.ts) against a loopback server: the path and the
// bearer token, the size bound (declared and streamed), HTTP errors; and the downloaded ciphertext's hash
// check before decryption.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll } from "vitest"
import { AttachmentError, attachmentOf, decryptAttachment } from "../../src/domain/attachment.js"
import { downloadMedia, MediaError } from "../../src/layers/matrix/media.js"
import { encryptForUpload } from "../support/human.js"

const TOKEN = "syt_secret_token_value"
const seen: Array<{ url: string; auth: string | undefined }> = []
let bodies: Record<string, { bytes: Uint8Array; declare: boolean; status?: number }> = {}
let server: http.Server
let baseUrl = ""

beforeAll(async () => {
  server = http.createServer((req, res) => {
    seen.push({ url: req.url ?? "", auth: req.headers.authorization })
    const id = (req.url ?? "").split("/").pop() ?? ""
    if (id.startsWith("legacy") && req.url?.startsWith("/_matrix/client/v1/") === true) {
      res.writeHead(404, { "content-type": "application/json" })
      res.end(JSON.stringify({ errcode: "M_UNRECOGNIZED", error: "Unrecognized request" }))
      return
    }
    const b = bodies[id]
    if (b === undefined) {
      res.writeHead(404, { "content-type": "application/json" })
      res.end(JSON.stringify({ errcode: "M_NOT_FOUND" }))
      return
    }
    res.writeHead(b.status ?? 200, {
      "content-type": "application/octet-stream",
      ...(b.declare ? { "content-length": String(b.bytes.length) } : {})
    })
    // in pieces, so a streamed body crosses the bound part-way
    const piece = 1024
    for (let i = 0; i < b.bytes.length; i += piece) res.write(b.bytes.subarray(i, i + piece))
    res.end()
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})
afterAll(async () => {
  server.closeAllConnections()
  await new Promise<void>((r) => server.close(() => r()))
})

const fail = async (p: Promise<unknown>): Promise<MediaError> => {
  try {
    await p
  } catch (e) {
    if (e instanceof MediaError) return e
    throw e
  }
  throw new Error("expected a MediaError")
}

describe("downloadMedia", () => {
  it("fetches the authenticated media path with the bearer token", async () => {
    bodies = { abc: { bytes: new Uint8Array([1, 2, 3]), declare: true } }
    const got = await downloadMedia({
      baseUrl: `${baseUrl}/`,
      accessToken: TOKEN,
      mxc: "mxc://example.org/abc",
      maxBytes: 10
    })
    expect([...got]).toEqual([1, 2, 3])
    expect(seen.at(-1)).toEqual({ url: "/_matrix/client/v1/media/download/example.org/abc", auth: `Bearer ${TOKEN}` })
  })

  it("refuses a declared size over the bound, and aborts a streamed body that grows past it", async () => {
    bodies = {
      big: { bytes: new Uint8Array(5000), declare: true },
      chunked: { bytes: new Uint8Array(5000), declare: false },
      fits: { bytes: new Uint8Array(4096), declare: false }
    }
    for (const id of ["big", "chunked"]) {
      const e = await fail(
        downloadMedia({ baseUrl, accessToken: TOKEN, mxc: `mxc://example.org/${id}`, maxBytes: 4096 })
      )
      expect(e.kind).toBe("media-too-large")
      expect(e.message).not.toContain(TOKEN)
    }
    const fits = await downloadMedia({ baseUrl, accessToken: TOKEN, mxc: "mxc://example.org/fits", maxBytes: 4096 })
    expect(fits.length).toBe(4096)
  })

  it("asks a homeserver without authenticated media at the legacy path", async () => {
    bodies = { legacy1: { bytes: new Uint8Array([9, 8]), declare: true } }
    const got = await downloadMedia({ baseUrl, accessToken: TOKEN, mxc: "mxc://example.org/legacy1", maxBytes: 10 })
    expect([...got]).toEqual([9, 8])
    expect(seen.slice(-2).map((s) => s.url)).toEqual([
      "/_matrix/client/v1/media/download/example.org/legacy1",
      "/_matrix/media/v3/download/example.org/legacy1"
    ])
  })

  it("maps HTTP errors and malformed mxc URIs to typed errors without the token", async () => {
    bodies = {}
    const e404 = await fail(downloadMedia({ baseUrl, accessToken: TOKEN, mxc: "mxc://example.org/gone", maxBytes: 10 }))
    expect(e404.kind).toBe("media-http")
    expect(e404.message).toContain("404")
    expect(e404.message).not.toContain(TOKEN)
    const bad = await fail(downloadMedia({ baseUrl, accessToken: TOKEN, mxc: "https://evil/x", maxBytes: 10 }))
    expect(bad.kind).toBe("media-invalid-uri")
  })

  it.effect("a downloaded ciphertext that does not match the event's hash is not decrypted", () =>
    Effect.gen(function*() {
      const clear = new TextEncoder().encode("hello, file")
      const { data, info } = yield* Effect.promise(() => encryptForUpload(clear))
      bodies = {
        f: { bytes: data, declare: true },
        g: { bytes: data.map((b, i) => (i === 0 ? b ^ 1 : b)), declare: true }
      }
      const a = Either.getOrThrow(attachmentOf({
        msgtype: "m.file",
        body: "f.txt",
        file: { ...info, url: "mxc://example.org/f" }
      }))
      if (a.source._tag !== "Encrypted") throw new Error("expected an encrypted attachment")
      const good = yield* Effect.promise(() =>
        downloadMedia({ baseUrl, accessToken: TOKEN, mxc: "mxc://example.org/f", maxBytes: 1000 })
      )
      expect(new TextDecoder().decode(yield* decryptAttachment(good, a.source.file))).toBe("hello, file")
      const tampered = yield* Effect.promise(() =>
        downloadMedia({ baseUrl, accessToken: TOKEN, mxc: "mxc://example.org/g", maxBytes: 1000 })
      )
      const exit = yield* Effect.exit(decryptAttachment(tampered, a.source.file))
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
        expect(exit.cause.error).toBeInstanceOf(AttachmentError)
        expect(exit.cause.error.kind).toBe("attachment-hash-mismatch")
      }
    }))
})
