/**
 * Loopback fakes of the Anthropic Messages API and the OpenAI Chat Completions API, close enough to the
 * wire formats that the official SDKs talk to them through `baseURL`: JSON and SSE streaming answers,
 * error bodies with `retry-after`, errors inside an SSE stream. Each server records the requests it got
 * so tests can assert on what was sent (system prompt, history order, headers).
 */
import { Effect, type Scope } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

export type FakeReply =
  /** A successful answer: streamed as one delta per chunk when the request asks for a stream. */
  | {
    readonly type: "text"
    readonly chunks: ReadonlyArray<string>
    readonly delayMs?: number
    /** A slow model (Anthropic flavour, streamed): this long between the deltas. */
    readonly chunkDelayMs?: number
    /** The answer starts only once this settles: a test holds the model at a point of its choosing. */
    readonly until?: PromiseLike<unknown>
  }
  /** An HTTP error with the provider's error body. */
  | {
    readonly type: "error"
    readonly status: number
    readonly errorType: string
    readonly message: string
    readonly code?: string
    readonly headers?: Readonly<Record<string, string>>
  }
  /** A stream that starts, sends some deltas, then an in-stream error event. */
  | {
    readonly type: "stream-error"
    readonly chunks: ReadonlyArray<string>
    readonly errorType: string
    readonly message: string
  }
  /** A stream that sends some deltas and then never finishes (until the client goes away). */
  | { readonly type: "stall"; readonly chunks: ReadonlyArray<string> }

export interface RecordedRequest {
  readonly method: string
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  readonly body: any
  /** The raw body bytes (a transcription's multipart upload carries the audio). */
  readonly raw?: Buffer
}

export interface FakeLlmServer {
  readonly flavor: "anthropic" | "openai"
  /** What to give the SDK as `baseURL`. */
  readonly baseUrl: string
  readonly requests: ReadonlyArray<RecordedRequest>
  /** Queues replies, used in order; an empty queue answers `defaultReply`. */
  readonly enqueue: (...replies: ReadonlyArray<FakeReply>) => void
  /** Resolves once at least `n` requests were received. */
  readonly waitForRequests: (n: number) => Promise<void>
  /** Resolves once the client closed a stalled response (it aborted the request). */
  readonly waitForAbort: () => Promise<void>
  /**
   * Queues transcripts for the OpenAI-compatible `POST …/audio/transcriptions` (served by both flavours at
   * `/v1/audio/transcriptions`); an empty queue answers `DEFAULT_TRANSCRIPT`.
   */
  readonly enqueueTranscript: (...texts: ReadonlyArray<string>) => void
}

export const DEFAULT_TRANSCRIPT = "This is the fake transcript."

export const DEFAULT_TEXT = "Hello from the fake model."

const anthropicSse = (res: http.ServerResponse, model: string, chunks: ReadonlyArray<string>) => {
  const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  send("message_start", {
    type: "message_start",
    message: {
      id: "msg_fake",
      type: "message",
      role: "assistant",
      content: [],
      model,
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 11, output_tokens: 1 }
    }
  })
  send("content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } })
  send("ping", { type: "ping" })
  for (const text of chunks) {
    send("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text } })
  }
  return send
}

const finishAnthropic = (send: (event: string, data: unknown) => void, outputTokens: number) => {
  send("content_block_stop", { type: "content_block_stop", index: 0 })
  send("message_delta", {
    type: "message_delta",
    delta: { stop_reason: "end_turn", stop_sequence: null },
    usage: { output_tokens: outputTokens }
  })
  send("message_stop", { type: "message_stop" })
}

const openaiChunk = (model: string, delta: Record<string, unknown>, finish: string | null) => ({
  id: "chatcmpl-fake",
  object: "chat.completion.chunk",
  created: 1_700_000_000,
  model,
  choices: [{ index: 0, delta, finish_reason: finish }]
})

const handleAnthropic = (req: RecordedRequest, reply: FakeReply, res: http.ServerResponse) => {
  const model = String(req.body?.model ?? "")
  if (reply.type === "error") {
    res.writeHead(reply.status, { "content-type": "application/json", "request-id": "req_fake", ...reply.headers })
    res.end(JSON.stringify({ type: "error", error: { type: reply.errorType, message: reply.message } }))
    return
  }
  if (req.body?.stream === true) {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
    if (reply.type === "text" && reply.chunkDelayMs !== undefined) {
      const send = anthropicSse(res, model, [])
      const paced = (i: number): void => {
        if (res.destroyed) return // the client went away (a killed daemon)
        if (i === reply.chunks.length) {
          finishAnthropic(send, reply.chunks.length)
          res.end()
          return
        }
        send("content_block_delta", {
          type: "content_block_delta",
          index: 0,
          delta: { type: "text_delta", text: reply.chunks[i] }
        })
        setTimeout(() => paced(i + 1), reply.chunkDelayMs)
      }
      paced(0)
      return
    }
    const send = anthropicSse(res, model, reply.chunks)
    if (reply.type === "stall") return
    if (reply.type === "stream-error") {
      send("error", { type: "error", error: { type: reply.errorType, message: reply.message } })
    } else {
      finishAnthropic(send, reply.chunks.length)
    }
    res.end()
    return
  }
  const text = reply.chunks.join("")
  res.writeHead(200, { "content-type": "application/json" })
  res.end(JSON.stringify({
    id: "msg_fake",
    type: "message",
    role: "assistant",
    model,
    content: [{ type: "text", text }],
    stop_reason: "end_turn",
    stop_sequence: null,
    usage: { input_tokens: 11, output_tokens: reply.chunks.length }
  }))
}

const handleOpenAI = (req: RecordedRequest, reply: FakeReply, res: http.ServerResponse) => {
  const model = String(req.body?.model ?? "")
  if (reply.type === "error") {
    res.writeHead(reply.status, { "content-type": "application/json", "x-request-id": "req_fake", ...reply.headers })
    res.end(
      JSON.stringify({
        error: { message: reply.message, type: reply.errorType, param: null, code: reply.code ?? null }
      })
    )
    return
  }
  if (req.body?.stream === true) {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
    const data = (d: unknown) => res.write(`data: ${JSON.stringify(d)}\n\n`)
    data(openaiChunk(model, { role: "assistant", content: "" }, null))
    for (const content of reply.chunks) data(openaiChunk(model, { content }, null))
    if (reply.type === "stall") return
    if (reply.type === "stream-error") {
      data({ error: { message: reply.message, type: reply.errorType, param: null, code: null } })
      res.end()
      return
    }
    data(openaiChunk(model, {}, "stop"))
    if (req.body?.stream_options?.include_usage === true) {
      data({
        id: "chatcmpl-fake",
        object: "chat.completion.chunk",
        created: 1_700_000_000,
        model,
        choices: [],
        usage: { prompt_tokens: 11, completion_tokens: reply.chunks.length, total_tokens: 11 + reply.chunks.length }
      })
    }
    res.write("data: [DONE]\n\n")
    res.end()
    return
  }
  res.writeHead(200, { "content-type": "application/json" })
  res.end(JSON.stringify({
    id: "chatcmpl-fake",
    object: "chat.completion",
    created: 1_700_000_000,
    model,
    choices: [{ index: 0, message: { role: "assistant", content: reply.chunks.join("") }, finish_reason: "stop" }],
    usage: { prompt_tokens: 11, completion_tokens: reply.chunks.length, total_tokens: 11 + reply.chunks.length }
  }))
}

const start = (flavor: "anthropic" | "openai"): Effect.Effect<FakeLlmServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const requests: Array<RecordedRequest> = []
      const queue: Array<FakeReply> = []
      const transcripts: Array<string> = []
      const waiters: Array<{ n: number; resolve: () => void }> = []
      let aborts = 0
      const abortWaiters: Array<() => void> = []
      const expectedPath = flavor === "anthropic" ? "/v1/messages" : "/v1/chat/completions"

      const server = http.createServer((req, res) => {
        const parts: Array<Buffer> = []
        req.on("data", (c: Buffer) => parts.push(c))
        req.on("end", () => {
          const raw = Buffer.concat(parts).toString("utf8")
          let body: unknown = undefined
          try {
            body = raw === "" ? undefined : JSON.parse(raw)
          } catch {
            body = raw
          }
          const headers: Record<string, string> = {}
          for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers[k] = v
          const path = (req.url ?? "").split("?")[0] ?? ""
          const recorded: RecordedRequest = { method: req.method ?? "", path, headers, body, raw: Buffer.concat(parts) }
          requests.push(recorded)
          for (const w of waiters.splice(0)) {
            if (requests.length >= w.n) w.resolve()
            else waiters.push(w)
          }
          if (req.method === "POST" && path === "/v1/audio/transcriptions") {
            res.writeHead(200, { "content-type": "application/json" })
            res.end(JSON.stringify({ text: transcripts.shift() ?? DEFAULT_TRANSCRIPT }))
            return
          }
          if (req.method !== "POST" || path !== expectedPath) {
            res.writeHead(404, { "content-type": "application/json" })
            res.end(JSON.stringify(
              flavor === "anthropic"
                ? { type: "error", error: { type: "not_found_error", message: `no route ${path}` } }
                : { error: { message: `no route ${path}`, type: "invalid_request_error", param: null, code: null } }
            ))
            return
          }
          const reply = queue.shift() ?? { type: "text", chunks: [DEFAULT_TEXT] }
          if (reply.type === "stall") {
            res.on("close", () => {
              aborts++
              for (const w of abortWaiters.splice(0)) w()
            })
          }
          const answer =
            () => (flavor === "anthropic" ? handleAnthropic(recorded, reply, res) : handleOpenAI(recorded, reply, res))
          // a slow model: the answer starts only after the delay (typing indicators are visible meanwhile);
          // a held one once the test releases it (no guess about how fast the machine is)
          const delayed = () => (reply.type === "text" && reply.delayMs !== undefined
            ? void setTimeout(answer, reply.delayMs)
            : answer())
          if (reply.type === "text" && reply.until !== undefined) {
            // a client that went away meanwhile (a killed daemon) gets nothing
            const release = () => (res.destroyed ? undefined : delayed())
            Promise.resolve(reply.until).then(release, release)
          } else delayed()
        })
      })
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
      const port = (server.address() as AddressInfo).port
      const fake: FakeLlmServer & { server: http.Server } = {
        flavor,
        baseUrl: flavor === "anthropic" ? `http://127.0.0.1:${port}` : `http://127.0.0.1:${port}/v1`,
        requests,
        enqueue: (...replies) => void queue.push(...replies),
        enqueueTranscript: (...texts) => void transcripts.push(...texts),
        waitForRequests: (n) =>
          requests.length >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve })),
        waitForAbort: () => (aborts > 0 ? Promise.resolve() : new Promise<void>((resolve) =>
          abortWaiters.push(resolve)
        )),
        server
      }
      return fake
    }),
    (fake) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          fake.server.closeAllConnections()
          fake.server.close(() => resolve())
        })
      )
  )

/** A fake Anthropic Messages API on 127.0.0.1 (random port), closed with the scope. */
export const fakeAnthropic = start("anthropic")
/** A fake OpenAI Chat Completions API on 127.0.0.1 (random port), closed with the scope. */
export const fakeOpenAI = start("openai")
