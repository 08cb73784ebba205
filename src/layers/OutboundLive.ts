import { Cause, Clock, Deferred, Duration, Effect, Layer, Option, Schedule } from "effect"
import { chunkContents } from "../domain/markdown.js"
import { type EventId, MatrixError, type RoomId, roomNotFound } from "../domain/matrix.js"
import { editContent } from "../domain/relations.js"
import { classifySendError } from "../domain/sendError.js"
import { finalEditTxnId, streamEditContent } from "../domain/streaming.js"
import { testTxnId, txnIdFor } from "../domain/txnId.js"
import { MatrixSettings } from "../services/MatrixSync.js"
import type { MatrixTransportShape as MatrixTransport } from "../services/MatrixTransport.js"
import { MatrixTransport as MatrixTransportTag } from "../services/MatrixTransport.js"
import { Metrics, type MetricsShape } from "../services/Metrics.js"
import type { OutboundEdit, OutboundReply, OutboundShape, ReplyOptions } from "../services/Outbound.js"
import { Outbound } from "../services/Outbound.js"

// The pure parts of the send path live in src/domain (markdown.ts renders and splits); re-exported for the
// existing importers.
export { classifySendError, type SendFailure } from "../domain/sendError.js"
export { testTxnId, txnIdFor } from "../domain/txnId.js"
export type { MatrixTransportShape as MatrixTransport } from "../services/MatrixTransport.js"

// ---------------------------------------------------------------------------------------------------------
// The service over a transport

export interface OutboundOptions {
  /** `matrix.encrypted`: false refuses to send into encrypted rooms. */
  readonly encrypted: boolean
  /** First backoff step for 5xx / network errors (doubles up to `maxDelayMs`). */
  readonly baseDelayMs?: number
  readonly maxDelayMs?: number
  /**
   * Attempts per chunk before `reply` fails with `send-failed` (`matrix.outbound.sendAttempts`); the caller
   * then hands the answer to the pending-reply retrier (makeReplyRetry).
   */
  readonly maxAttempts?: number
  /** Where the send durations go (the daemon's Metrics; unit tests leave it out). */
  readonly metrics?: MetricsShape
}

const TYPING_TIMEOUT_MS = 30_000
const TYPING_REFRESH = Duration.seconds(20)
/**
 * Typing starts only once the answer has taken this long: a quick answer (a command, a replayed answer, a
 * fast model) arrives without a typing flash before it and without the two requests that cost the
 * homeserver and the daemon per reply; a model that thinks longer shows typing as before.
 */
export const TYPING_DELAY = Duration.millis(300)

/** The room must be joined, and not encrypted unless `matrix.encrypted`. */
const roomChecker = (transport: MatrixTransport, encrypted: boolean) => {
  return (roomId: RoomId) =>
    Effect.suspend(() => {
      const room = transport.room(roomId)
      if (room === undefined) return Effect.fail(roomNotFound(roomId))
      if (room.encrypted && !encrypted) {
        return Effect.fail(
          new MatrixError({
            kind: "unsupported-room",
            message:
              `${roomId} is encrypted but matrix.encrypted=false; set matrix.encrypted to true to serve encrypted rooms.`
          })
        )
      }
      return Effect.void
    })
}

interface SendSettings {
  readonly baseDelay: number
  readonly maxDelay: number
  readonly maxAttempts: number
  readonly metrics: Option.Option<MetricsShape>
}

const chunkSender = (transport: MatrixTransport, { baseDelay, maxAttempts, maxDelay, metrics }: SendSettings) => {
  /** One chunk, retried with the same transaction id until it is accepted or fails terminally. */
  return (
    roomId: RoomId,
    threadId: EventId | null,
    content: Record<string, unknown>,
    txnId: string,
    attempts: number = maxAttempts,
    onFailedAttempt: (detail: string) => Effect.Effect<void> = () => Effect.void
  ) =>
    Effect.gen(function*() {
      for (let attempt = 1;; attempt++) {
        const started = Date.now()
        const result = yield* Effect.tryPromise({
          try: () => transport.send(roomId, threadId, content, txnId),
          catch: classifySendError
        }).pipe(Effect.either)
        if (Option.isSome(metrics)) {
          yield* metrics.value.observe("carapace_matrix_outbound_send_duration_seconds", (Date.now() - started) / 1000)
        }
        if (result._tag === "Right") return result.right
        const failure = result.left
        yield* onFailedAttempt(`${failure.kind}: ${failure.detail}`)
        if (failure._tag === "Terminal") {
          return yield* Effect.fail(
            new MatrixError({
              kind: failure.kind,
              message: failure.kind === "auth-token-revoked"
                ? `Matrix send failed: the access token was rejected (${failure.detail}); log in again and restart.`
                : `Matrix send to ${roomId} was refused (${failure.detail}); check the bot's membership and power level in the room.`
            })
          )
        }
        if (attempt >= attempts) {
          return yield* Effect.fail(
            new MatrixError({
              kind: "send-failed",
              message:
                `Matrix send failed after ${attempt} attempts (${failure.detail}); the answer stays pending and is retried while the homeserver is reachable. Check homeserver reachability.`,
              ...(failure.retryAfterMs === undefined ? {} : { retryAfterMs: failure.retryAfterMs })
            })
          )
        }
        const backoff = Math.min(maxDelay, baseDelay * 2 ** (attempt - 1))
        const delay = failure.retryAfterMs ?? backoff
        yield* Effect.logWarning(
          `Matrix send to ${roomId} failed (${failure.detail}); retrying in ${delay} ms with the same transaction id`
        )
        yield* Effect.sleep(Duration.millis(delay))
      }
    })
}

export const makeOutbound = (transport: MatrixTransport, options: OutboundOptions) =>
  Effect.gen(function*() {
    const baseDelay = options.baseDelayMs ?? 1_000
    const maxDelay = options.maxDelayMs ?? 60_000
    const maxAttempts = options.maxAttempts ?? 12
    const metrics = Option.fromNullable(options.metrics)
    const checkRoom = roomChecker(transport, options.encrypted)
    const sendOne = chunkSender(transport, { baseDelay, maxDelay, maxAttempts, metrics })
    // One queue per room: answers to one room go out in order, rooms do not wait for each other.
    const queues = new Map<string, Effect.Semaphore>()
    const queueOf = (roomId: string) =>
      Effect.suspend(() => {
        const q = queues.get(roomId)
        if (q) return Effect.succeed(q)
        return Effect.map(Effect.makeSemaphore(1), (s) => {
          queues.set(roomId, s)
          return s
        })
      })

    const relationOf = (r: OutboundReply): Record<string, unknown> =>
      r.threadId === undefined
        ? { "m.in_reply_to": { event_id: r.inReplyTo } }
        : {
          rel_type: "m.thread",
          event_id: r.threadId,
          is_falling_back: false,
          "m.in_reply_to": { event_id: r.inReplyTo }
        }

    /** Chunk `index` of the answer `r` as a reply event, under its derived transaction id. */
    const sendChunk = (r: OutboundReply, o: ReplyOptions, content: Record<string, unknown>, index: number) =>
      sendOne(
        r.roomId,
        r.threadId ?? null,
        { ...content, "m.relates_to": relationOf(r) },
        txnIdFor(r.inReplyTo, index),
        o.attempts ?? maxAttempts,
        o.onFailedAttempt
      )

    /** The final edit of a (maybe) streamed reply `target` with chunk 0, then chunks 1.. (streaming.ts's finishPlan). */
    const finishStreamed = (
      r: OutboundReply,
      o: ReplyOptions,
      contents: ReadonlyArray<Record<string, unknown>>,
      shown: EventId | undefined
    ) =>
      Effect.gen(function*() {
        const first = shown ?? (yield* sendChunk(r, o, contents[0]!, 0))
        yield* sendOne(
          r.roomId,
          r.threadId ?? null,
          editContent(first, contents[0]!),
          finalEditTxnId(r.inReplyTo),
          o.attempts ?? maxAttempts,
          o.onFailedAttempt
        )
        const rest = yield* Effect.forEach(contents.slice(1), (content, i) => sendChunk(r, o, content, i + 1))
        return [first, ...rest]
      })

    const reply = (r: OutboundReply, o: ReplyOptions = {}) =>
      Effect.gen(function*() {
        yield* checkRoom(r.roomId)
        const contents = chunkContents(r.text)
        const q = yield* queueOf(r.roomId)
        const streamed = r.streamedReply !== undefined || r.mayHaveStreamed === true
        return yield* q.withPermits(1)(
          streamed && contents.length > 0
            ? finishStreamed(r, o, contents, r.streamedReply)
            : Effect.forEach(contents, (content, index) => sendChunk(r, o, content, index))
        )
      }).pipe(Effect.withSpan("Outbound.reply"))

    const edit = (e: OutboundEdit, o: ReplyOptions = {}) =>
      Effect.gen(function*() {
        yield* checkRoom(e.roomId)
        const q = yield* queueOf(e.roomId)
        return yield* q.withPermits(1)(
          sendOne(
            e.roomId,
            e.threadId ?? null,
            streamEditContent(e.eventId, e.text),
            e.txnId,
            o.attempts ?? maxAttempts,
            o.onFailedAttempt
          )
        )
      }).pipe(Effect.withSpan("Outbound.edit"))

    const sendTest = (roomId: RoomId, text: string) =>
      Effect.gen(function*() {
        yield* checkRoom(roomId)
        const q = yield* queueOf(roomId)
        return yield* q.withPermits(1)(sendOne(roomId, null, { msgtype: "m.notice", body: text }, testTxnId()))
      }).pipe(Effect.withSpan("Outbound.sendTest"))

    const setTyping = (roomId: RoomId, on: boolean) =>
      Effect.tryPromise(() => transport.typing(roomId, on, TYPING_TIMEOUT_MS)).pipe(
        Effect.catchAll((e) => Effect.logDebug(`typing notification failed: ${String(e)}`))
      )

    // The refresher is stopped by a signal, not by interruption: it must never hold up the answer.
    const whileTyping = <A, E, R>(roomId: RoomId, effect: Effect.Effect<A, E, R>) =>
      Effect.gen(function*() {
        const done = yield* Deferred.make<void>()
        yield* Effect.forkDaemon(
          Effect.gen(function*() {
            const early = yield* Deferred.await(done).pipe(Effect.timeout(TYPING_DELAY), Effect.option)
            if (Option.isSome(early)) return
            while (!(yield* Deferred.isDone(done))) {
              yield* setTyping(roomId, true)
              yield* Deferred.await(done).pipe(Effect.timeout(TYPING_REFRESH), Effect.ignore)
            }
            yield* setTyping(roomId, false)
          })
        )
        return yield* effect.pipe(Effect.ensuring(Deferred.succeed(done, undefined)))
      })

    return { reply, edit, sendTest, whileTyping, readReceipt: receiptSender(transport) } satisfies OutboundShape
  })

/**
 * Read receipts, sent in the background one at a time per room: the answer (and the room's next question)
 * does not wait for the round trip, and when several answers of a room finish while one receipt is on its
 * way (a catch-up) only the newest is sent next, as a receipt marks everything before it read too.
 */
const receiptSender = (transport: MatrixTransport) => {
  const next = new Map<RoomId, EventId>()
  const sending = new Set<RoomId>()
  const drain = (roomId: RoomId): Effect.Effect<void> =>
    Effect.suspend(() => {
      const eventId = next.get(roomId)
      if (eventId === undefined) {
        sending.delete(roomId)
        return Effect.void
      }
      next.delete(roomId)
      return Effect.tryPromise(() => transport.receipt(roomId, eventId)).pipe(
        Effect.catchAll((e) => Effect.logDebug(`read receipt failed: ${String(e)}`)),
        Effect.zipRight(drain(roomId))
      )
    })
  return (roomId: RoomId, eventId: EventId): Effect.Effect<void> =>
    Effect.suspend(() => {
      next.set(roomId, eventId)
      if (sending.has(roomId)) return Effect.void
      sending.add(roomId)
      return Effect.asVoid(Effect.forkDaemon(drain(roomId)))
    })
}

/** Outbound over the client's transport, with the `matrix.encrypted` and `matrix.outbound` settings. */
export const OutboundLive = Layer.effect(
  Outbound,
  Effect.gen(function*() {
    const m = yield* MatrixSettings
    return yield* makeOutbound(yield* MatrixTransportTag, {
      encrypted: m.encrypted,
      maxAttempts: m.outbound.sendAttempts,
      metrics: yield* Metrics
    })
  })
)

// ---------------------------------------------------------------------------------------------------------
// Replies that could not be sent (pending replies)
//
// `reply` gives up after its attempts (`send-failed`); the answer is then held here and retried in rounds,
// with the same transaction ids, for as long as it takes. A round runs only while the homeserver is
// reachable (a recent successful sync), so an outage of any length costs nothing but time; when the
// homeserver comes back every held reply is due at once. A reply that keeps failing while the homeserver
// is reachable goes to the DLQ as an outbound record after `deadLetterAfterRounds` rounds, and one the
// homeserver refuses (`send-terminal`, the bot left the room) at once. The ledger holds a row per pending
// reply (ids and attempt count, no text), so the count survives a restart; after one, the event is resumed
// like any unfinished one and its answer comes back from the session history.

export interface HeldReply {
  readonly reply: OutboundReply
  /** Who asked: the DLQ record names them (replay re-checks the allowlist). */
  readonly senderId: string
  readonly isGroup: boolean
}

export interface ReplyRetryOptions {
  /** Failed rounds while the homeserver is reachable before the answer goes to the DLQ. */
  readonly deadLetterAfterRounds: number
  /** Delay after the first failed round; doubles up to `roundMaxDelayMs`. */
  readonly roundBaseDelayMs?: number
  readonly roundMaxDelayMs?: number
  /** Send attempts per chunk within one round. */
  readonly attemptsPerRound?: number
  /** How often due rounds are looked for (a successful sync also triggers one: `kick`). */
  readonly tickMs?: number
}

export interface ReplyRetryDeps {
  readonly outbound: OutboundShape
  /** The homeserver answered a sync lately: a failure now is the reply's own and counts. */
  readonly reachable: Effect.Effect<boolean>
  /** Records one more failed attempt durably. */
  readonly attemptFailed: (reply: OutboundReply, detail: string) => Effect.Effect<void>
  /** The answer is out: the event is committed (its pending row goes with it). */
  readonly sent: (eventId: string, replyIds: ReadonlyArray<string>) => Effect.Effect<void>
  /** Appends the outbound DLQ record, then commits the event; `None`: no DLQ (the reply stays held). */
  readonly deadLetter: Option.Option<(held: HeldReply) => Effect.Effect<void, { readonly message: string }>>
  /** Pending rows in the ledger (also those this process does not hold: a restart lost their text). */
  readonly pendingRows: Effect.Effect<ReadonlyArray<{ readonly eventId: string; readonly roomId: string }>>
  /** Re-fetches and re-offers an event whose pending row this process does not hold. */
  readonly resume: (eventId: string, roomId: string) => Effect.Effect<void>
}

export const DEFAULT_DEAD_LETTER_AFTER_ROUNDS = 12

interface Entry {
  readonly held: HeldReply
  rounds: number
  nextAt: number
}

/** The retrier's state: held replies, ledger rows without an owner, and whether the homeserver went away. */
const retryState = () => ({
  // insertion order is the order of first failure: answers to a room go out in the order they were asked
  held: new Map<string, Entry>(),
  orphans: new Map<string, { tries: number; nextAt: number }>(),
  offline: false
})

const annotate = (r: OutboundReply) => Effect.annotateLogs({ eventId: r.inReplyTo, roomId: r.roomId })

/** Moves a held reply to the DLQ (the ledger commits it there), or keeps it when that is not possible. */
const dlqMover = (
  deps: ReplyRetryDeps,
  held: Map<string, Entry>,
  max: number,
  roundDelay: (rounds: number) => number
) => {
  return (e: Entry, why: string) =>
    Effect.gen(function*() {
      const id = e.held.reply.inReplyTo
      if (Option.isNone(deps.deadLetter)) {
        e.nextAt = (yield* Clock.currentTimeMillis) + max
        return yield* Effect.logError(`Matrix reply cannot be sent (${why}) and there is no DLQ; it stays pending`)
          .pipe(annotate(e.held.reply))
      }
      const r = yield* Effect.either(deps.deadLetter.value(e.held))
      if (r._tag === "Left") {
        // the DLQ could not take it (its own durability error is set): keep owning the reply
        e.nextAt = (yield* Clock.currentTimeMillis) + roundDelay(e.rounds)
        return yield* Effect.logError(
          `Matrix reply could not be moved to the DLQ (${r.left.message}); it stays pending`
        ).pipe(annotate(e.held.reply))
      }
      held.delete(id)
      yield* Effect.logWarning(`Matrix reply moved to the DLQ (${why}); \`cara matrix dlq replay\` sends it`).pipe(
        annotate(e.held.reply)
      )
    })
}

/** One retry of one held reply in a round; false ends the round (the homeserver went away, or the token). */
const roundRetrier = (
  deps: ReplyRetryDeps,
  options: ReplyRetryOptions,
  st: ReturnType<typeof retryState>,
  toDlq: (e: Entry, why: string) => Effect.Effect<void>,
  roundDelay: (rounds: number) => number
) => {
  const { held } = st
  const attemptsPerRound = options.attemptsPerRound ?? 3
  return (e: Entry) =>
    Effect.gen(function*() {
      const r = e.held.reply
      const result = yield* Effect.either(
        deps.outbound.reply(r, { attempts: attemptsPerRound, onFailedAttempt: (d) => deps.attemptFailed(r, d) })
      )
      if (result._tag === "Right") {
        yield* deps.sent(r.inReplyTo, result.right)
        held.delete(r.inReplyTo)
        yield* Effect.logInfo(
          `Matrix pending reply sent (${result.right.length} event${result.right.length === 1 ? "" : "s"})`
        ).pipe(annotate(r))
        return true
      }
      const error = result.left
      if (error.kind === "auth-token-revoked") return false
      if (error.kind !== "send-failed") {
        yield* toDlq(e, `${error.kind}: ${error.message}`)
        return true
      }
      // the homeserver went away during the round: not the reply's fault, nothing counts
      if (!(yield* deps.reachable)) {
        st.offline = true
        return false
      }
      e.rounds++
      if (e.rounds >= options.deadLetterAfterRounds) {
        yield* toDlq(e, `not sent in ${e.rounds} rounds while the homeserver was reachable: ${error.message}`)
        return true
      }
      e.nextAt = (yield* Clock.currentTimeMillis) + Math.max(roundDelay(e.rounds), error.retryAfterMs ?? 0)
      return true
    })
}

export const makeReplyRetry = (deps: ReplyRetryDeps, options: ReplyRetryOptions) =>
  Effect.gen(function*() {
    const base = options.roundBaseDelayMs ?? 30_000
    const max = options.roundMaxDelayMs ?? 3_600_000
    const roundDelay = (rounds: number) => Math.min(max, base * 2 ** rounds)
    const st = retryState()
    const { held, orphans } = st
    const oneRound = yield* Effect.makeSemaphore(1)
    const toDlq = dlqMover(deps, held, max, roundDelay)
    const retryOne = roundRetrier(deps, options, st, toDlq, roundDelay)

    /** Takes over an answer whose `reply` failed with `error`. */
    const hold = (h: HeldReply, error: MatrixError) =>
      Effect.gen(function*() {
        const id = h.reply.inReplyTo
        orphans.delete(id)
        // the runtime stops on a revoked token; the ledger row stays and the next start resumes the event
        if (error.kind === "auth-token-revoked") return
        const now = yield* Clock.currentTimeMillis
        const prev = held.get(id)
        const e: Entry = {
          held: h,
          rounds: prev?.rounds ?? 0,
          nextAt: now + Math.max(roundDelay(prev?.rounds ?? 0), error.retryAfterMs ?? 0)
        }
        held.set(id, e)
        if (error.kind !== "send-failed") return yield* toDlq(e, `${error.kind}: ${error.message}`)
        yield* Effect.logWarning(
          "Matrix reply not sent yet; it stays pending and is retried while the homeserver is reachable"
        ).pipe(
          annotate(h.reply)
        )
      })

    /** One pass over the due replies (and over rows a restart left without their text). */
    const pass = Effect.gen(function*() {
      if (!(yield* deps.reachable)) {
        st.offline = true
        return
      }
      const now = yield* Clock.currentTimeMillis
      if (st.offline) {
        // the homeserver is back: everything held is due now
        st.offline = false
        for (const e of held.values()) e.nextAt = now
        for (const o of orphans.values()) o.nextAt = now
      }
      for (const e of [...held.values()]) {
        if (e.nextAt > now || held.get(e.held.reply.inReplyTo) !== e) continue
        if (!(yield* retryOne(e))) return
      }
      for (const row of yield* deps.pendingRows) {
        if (held.has(row.eventId)) continue
        const o = orphans.get(row.eventId) ?? { tries: 0, nextAt: now }
        if (o.nextAt > now) continue
        orphans.set(row.eventId, { tries: o.tries + 1, nextAt: now + roundDelay(o.tries) })
        yield* deps.resume(row.eventId, row.roomId)
      }
    }).pipe(Effect.catchAllCause((c) => Effect.logError(`Matrix pending-reply round failed: ${Cause.pretty(c)}`)))

    // one round at a time; a round asked for while one runs is skipped (the running one covers it)
    const round = Effect.asVoid(oneRound.withPermitsIfAvailable(1)(pass))
    const scope = yield* Effect.scope
    let started = false

    return {
      hold,
      /**
       * Starts the rounds (every `tickMs`) in the scope. Called once the start-up resume of unfinished events
       * is done, so that a row it is resuming is not taken for one without an owner.
       */
      start: Effect.suspend(() => {
        if (started) return Effect.void
        started = true
        return Effect.asVoid(
          Effect.forkIn(round.pipe(Effect.repeat(Schedule.spaced(Duration.millis(options.tickMs ?? 5_000)))), scope)
        )
      }),
      /** After a successful sync: a round now, in the background (nothing before `start`). */
      kick: Effect.suspend(() => (started ? Effect.asVoid(Effect.forkIn(round, scope)) : Effect.void)),
      round,
      held: Effect.sync(() => held.size)
    } as const
  })

export type ReplyRetry = Effect.Effect.Success<ReturnType<typeof makeReplyRetry>>
