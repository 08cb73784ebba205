// What the provider clients built on an official SDK share: the key and its redaction list, the mapping of an
// SDK's API error onto a classified AgentError, and a scoped SDK stream that is aborted when its consumer
// stops. Each client keeps only its request shape and how it reads its events.
import { Effect, Option, Redacted, Stream } from "effect"
import {
  type AgentError,
  classifyFailure,
  connectionFailure,
  parseRetryAfter,
  type ProviderSettings,
  scrubSecrets,
  type StreamPart
} from "../domain/agent.js"

/** The API key as the SDK wants it (`""` when none) and the values no error text may carry. */
export const sdkKey = (settings: ProviderSettings) => {
  const apiKey = Option.getOrElse(Option.map(settings.apiKey, Redacted.value), () => "")
  return { apiKey, secrets: apiKey === "" ? [] : [apiKey] }
}

/** The fields of an SDK's HTTP API error that the classifier reads. */
export interface SdkApiError {
  readonly status: number | undefined
  readonly errorType: string | undefined
  readonly errorCode: string | undefined
  /** The provider's own message; scrubbed of `secrets` before it is kept. */
  readonly detail: string
  readonly headers: { readonly get: (name: string) => string | null } | undefined
}

/**
 * A classified `AgentError` from what an SDK threw: `api` when it was an HTTP API error (not a connection
 * failure), otherwise a connection failure. Key material never survives.
 */
export const sdkFailure = (
  provider: "anthropic" | "openai",
  model: string,
  secrets: ReadonlyArray<string>,
  nowMs: number,
  cause: unknown,
  api: SdkApiError | undefined
): AgentError => {
  if (api === undefined) return connectionFailure(provider, model, cause, secrets)
  const headers = api.headers
  return classifyFailure({
    provider,
    model,
    status: api.status,
    errorType: api.errorType,
    errorCode: api.errorCode,
    detail: scrubSecrets(api.detail, secrets),
    retryAfterMs: headers === undefined ? undefined : parseRetryAfter((n) => headers.get(n), nowMs),
    connection: false
  })
}

/** An SDK's streaming response: async-iterable events and the controller that aborts the request. */
export interface SdkStream<E> extends AsyncIterable<E> {
  readonly controller: AbortController
}

/**
 * Opens an SDK stream in a scope and maps its events to stream parts. `reader` is called once per stream
 * (it may keep per-stream state such as token counts); `tail` runs after the last event.
 */
export const sdkStreamParts = <E>(
  open: (signal: AbortSignal) => Promise<SdkStream<E>>,
  fail: (cause: unknown) => AgentError,
  reader: () => { readonly read: (event: E) => ReadonlyArray<StreamPart>; readonly tail?: Stream.Stream<StreamPart> }
): Stream.Stream<StreamPart, AgentError> => {
  const opened = Effect.acquireRelease(
    Effect.tryPromise({ try: open, catch: fail }),
    // Aborting ends a pending read at once; returning the iterator alone would wait for the next chunk.
    (sdkStream) => Effect.sync(() => sdkStream.controller.abort())
  )
  return Stream.unwrapScoped(
    Effect.map(opened, (sdkStream) => {
      const { read, tail } = reader()
      const parts = Stream.fromAsyncIterable(sdkStream, fail).pipe(Stream.mapConcat(read))
      return tail === undefined ? parts : Stream.concat(parts, tail)
    })
  )
}
