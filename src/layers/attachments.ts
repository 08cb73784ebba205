// Images, files and voice messages in (issue 20.2): from an attachment event's content to the agent's turn
// input, or to one short answer. Download (authenticated media, size-bounded), hash check and decryption,
// classification, then the model's parts; the session history gets only a reference line. Everything stays
// in memory: no attachment byte, file text or transcript is written to disk or logged (ids only).
import { Effect, Either, Option } from "effect"
import { type AgentError, parseModel, type TranscriptionRequest } from "../domain/agent.js"
import {
  type Attachment,
  attachmentFailedReply,
  attachmentOf,
  attachmentParts,
  attachmentReference,
  type AttachmentSource,
  AUDIO_MAX_BYTES,
  audioNotConfiguredReply,
  type Classified,
  classify,
  type ContentPart,
  decryptAttachment,
  DOWNLOAD_MAX_BYTES,
  emptyTranscriptReply,
  IMAGE_MAX_BYTES,
  imageDeclaredTooLarge,
  mib,
  modelAcceptsImages,
  refusalReply,
  refuseBeforeDownload,
  sourceUrl,
  transcriptParts
} from "../domain/attachment.js"
import type { AgentShape, TurnInput } from "../services/Agent.js"

/** What attachment handling needs from the runtime, for one room. */
export interface AttachmentIo {
  /** MatrixTransport.download; absent = attachments cannot be fetched here. */
  readonly download: ((mxc: string, maxBytes: number) => Promise<Uint8Array>) | undefined
  /** The room's model takes images (`matrix.attachments.images`, else the guess by model name). */
  readonly acceptsImages: boolean
  /** Agent.transcribe; absent = no `matrix.transcription`. */
  readonly transcribe: ((r: TranscriptionRequest) => Effect.Effect<string, AgentError>) | undefined
}

export type Prepared =
  /** For the agent: `text` is the history's reference line, `parts` the model's input for this turn. */
  | { readonly _tag: "Turn"; readonly text: string; readonly parts: ReadonlyArray<ContentPart> }
  /** One short answer instead of a model call (a refusal, a missing setup, a failed download). */
  | { readonly _tag: "Answer"; readonly text: string; readonly reason: string }

type Refused = Extract<Classified, { _tag: "Refused" }>

const answer = (text: string, reason: string): Prepared => ({ _tag: "Answer", text, reason })
const refused = (a: Attachment, c: Refused): Prepared => answer(refusalReply(a, c), c.reason)

/** The clear bytes behind a source: downloaded (at most `maxBytes`), hash-checked and decrypted. */
const fetchClear = (io: AttachmentIo, source: AttachmentSource, maxBytes: number) =>
  Effect.gen(function*() {
    const download = io.download
    if (download === undefined) return yield* Effect.fail("unavailable" as const)
    const bytes = yield* Effect.tryPromise({
      try: () => download(sourceUrl(source), maxBytes),
      catch: (e) => ((e as { kind?: unknown }).kind === "media-too-large" ? "too-large" as const : "failed" as const)
    })
    if (source._tag === "Plain") return bytes
    return yield* decryptAttachment(bytes, source.file).pipe(Effect.mapError(() => "failed" as const))
  })

const tooLarge = (limit: number): Refused => ({
  _tag: "Refused",
  reason: "image-too-large",
  detail: `it is larger than ${mib(limit)}`
})

const turn = (a: Attachment, c: Extract<Classified, { _tag: "Image" | "Text" }>, size: number): Prepared => ({
  _tag: "Turn",
  text: attachmentReference(
    a,
    c._tag === "Image" ? "image" : "text file",
    size,
    c._tag === "Image" ? c.mediaType : undefined
  ),
  parts: attachmentParts(a, c)
})

/**
 * An image: the original when it fits the caps (and is PNG, JPEG, GIF or WebP), else the sender's own
 * thumbnail when that does (no downscaling here: see docs/channels.md), else one short answer.
 */
const image = (io: AttachmentIo, a: Attachment) =>
  Effect.gen(function*() {
    if (!io.acceptsImages) {
      return refused(a, {
        _tag: "Refused",
        reason: "images-not-accepted",
        detail: "the model in use does not take images"
      })
    }
    let refusal: Refused = tooLarge(IMAGE_MAX_BYTES)
    if (!imageDeclaredTooLarge(a)) {
      const bytes = yield* Effect.either(fetchClear(io, a.source, IMAGE_MAX_BYTES))
      if (Either.isLeft(bytes) && bytes.left !== "too-large") {
        return answer(attachmentFailedReply(a, "download"), bytes.left)
      }
      if (Either.isRight(bytes)) {
        const c = classify(a, bytes.right, io.acceptsImages)
        if (c._tag === "Image" || c._tag === "Text") {
          return turn(a, c, bytes.right.length)
        }
        // too large, or a format the models do not take (HEIC, BMP, TIFF): the thumbnail may still do
        if (c._tag !== "Refused" || (c.reason !== "image-too-large" && c.reason !== "unsupported")) {
          return refused(a, c as Refused)
        }
        refusal = c
      }
    }
    if (a.thumbnail === undefined) return refused(a, refusal)
    const thumb = yield* Effect.either(fetchClear(io, a.thumbnail.source, IMAGE_MAX_BYTES))
    if (Either.isLeft(thumb)) return refused(a, refusal)
    const c = classify(a, thumb.right, io.acceptsImages)
    return c._tag === "Image" ? turn(a, c, thumb.right.length) : refused(a, refusal)
  })

/** A text-like file becomes part of the prompt; anything else gets the supported-types answer. */
const file = (io: AttachmentIo, a: Attachment) =>
  Effect.gen(function*() {
    const early = refuseBeforeDownload(a)
    if (early?._tag === "Refused") return refused(a, early)
    const bytes = yield* Effect.either(fetchClear(io, a.source, DOWNLOAD_MAX_BYTES))
    if (Either.isLeft(bytes)) {
      return bytes.left === "too-large"
        ? refused(a, { ...tooLarge(DOWNLOAD_MAX_BYTES), reason: "text-too-large" })
        : answer(attachmentFailedReply(a, "download"), bytes.left)
    }
    const c = classify(a, bytes.right, io.acceptsImages)
    return c._tag === "Image" || c._tag === "Text" ? turn(a, c, bytes.right.length) : refused(a, c as Refused)
  })

const AUDIO_EXTENSIONS: Record<string, string> = {
  "audio/ogg": "ogg",
  "audio/opus": "ogg",
  "audio/mpeg": "mp3",
  "audio/mp4": "m4a",
  "audio/x-m4a": "m4a",
  "audio/aac": "m4a",
  "audio/wav": "wav",
  "audio/x-wav": "wav",
  "audio/webm": "webm",
  "audio/flac": "flac"
}

/** The upload's file name: transcription services tell formats apart by its extension. */
const audioFileName = (a: Attachment): string => {
  const mime = (a.declaredMime ?? "").split(";")[0]!.trim().toLowerCase()
  const ext = AUDIO_EXTENSIONS[mime] ?? /\.([a-z0-9]{2,5})$/i.exec(a.name)?.[1]?.toLowerCase() ?? "ogg"
  return `audio.${ext}`
}

/** A voice message or audio file: its transcript is the question (when transcription is configured). */
const audio = (io: AttachmentIo, a: Attachment) =>
  Effect.gen(function*() {
    const transcribe = io.transcribe
    if (transcribe === undefined) return answer(audioNotConfiguredReply(), "audio-not-configured")
    const bytes = yield* Effect.either(fetchClear(io, a.source, AUDIO_MAX_BYTES))
    if (Either.isLeft(bytes)) {
      return bytes.left === "too-large"
        ? refused(a, tooLarge(AUDIO_MAX_BYTES))
        : answer(attachmentFailedReply(a, "download"), bytes.left)
    }
    const request = { audio: bytes.right, name: audioFileName(a), mimeType: a.declaredMime }
    const transcript = yield* Effect.either(transcribe(request))
    if (Either.isLeft(transcript)) {
      yield* Effect.logWarning(`transcription failed: ${transcript.left.kind}`)
      return answer(attachmentFailedReply(a, "transcribe"), transcript.left.kind)
    }
    if (transcript.right === "") return answer(emptyTranscriptReply(), "empty-transcript")
    return {
      _tag: "Turn",
      text: attachmentReference(a, "audio", bytes.right.length),
      parts: transcriptParts(a, transcript.right)
    } satisfies Prepared
  })

/** An attachment event's content (`m.image` / `m.file` / `m.audio`) as the agent's input, or one answer. */
export const prepareAttachment = (io: AttachmentIo, content: unknown): Effect.Effect<Prepared> =>
  Either.match(attachmentOf(content), {
    onLeft: () =>
      Effect.succeed(
        answer("I couldn't read that attachment: its event is malformed. Please send it again.", "malformed")
      ),
    onRight: (a) => a.msgtype === "m.image" ? image(io, a) : a.msgtype === "m.audio" ? audio(io, a) : file(io, a)
  }).pipe(Effect.withSpan("Inbound.attachment"))

/**
 * The agent's input for an inbound event: a text message as it is, an attachment prepared (the caller sends
 * an `Answer` as the reply, without a model call).
 */
export const attachmentInput = (
  io: AttachmentIo | undefined,
  attachment: unknown,
  input: TurnInput
): Effect.Effect<{ readonly _tag: "Input"; readonly input: TurnInput } | Extract<Prepared, { _tag: "Answer" }>> =>
  attachment === undefined
    ? Effect.succeed({ _tag: "Input", input })
    : Effect.map(
      prepareAttachment(io ?? { download: undefined, acceptsImages: false, transcribe: undefined }, attachment),
      (p) => (p._tag === "Answer" ? p : { _tag: "Input", input: { ...input, text: p.text, parts: p.parts } } as const)
    )

/**
 * The per-room attachment I/O of the running daemon: the transport's download, the agent's transcriber, and
 * whether the room's model takes images (`matrix.attachments.images`: `auto` guesses by the model's name).
 */
export const attachmentIoFor = (
  images: "auto" | "on" | "off",
  download: AttachmentIo["download"],
  agent: Pick<AgentShape, "route" | "transcribe">
) =>
(roomId: string): AttachmentIo => ({
  download,
  transcribe: agent.transcribe,
  acceptsImages: images === "on" ||
    (images === "auto" &&
      Option.match(agent.route(roomId), {
        onNone: () => false,
        onSome: (r) => Either.match(parseModel(r.model), { onLeft: () => false, onRight: modelAcceptsImages })
      }))
})
