import { Chunk, Clock, Duration, Effect, Exit, Option, Queue, Stream } from "effect"
import { randomUUID } from "node:crypto"
import { AgentError, userReply } from "../domain/agent.js"
import { type EventId, MatrixError } from "../domain/matrix.js"
import {
  decide,
  DEFAULT_STREAM_SETTINGS,
  initialStream,
  onDelta,
  onEnd,
  onRateLimited,
  onSent,
  type StreamAction,
  type StreamSettings,
  type StreamState
} from "../domain/streaming.js"
import type { AgentShape, TurnEvent, TurnInput, TurnOutcome } from "../services/Agent.js"
import type { OutboundReply, OutboundShape } from "../services/Outbound.js"
import type { SessionStoreError } from "../services/Sessions.js"

// ---------------------------------------------------------------------------------------------------------
// Streaming an answer into the room (`matrix.streaming: "edits"`)
//
// The agent's turn runs into a queue; the driver takes what is there (all of it: decisions are made on the
// drained deltas, never per delta) and asks the state machine of src/domain/streaming.ts what to send.
// Before the first chunk goes out it waits `settleMs` once more and drains again, so an answer that is
// complete by then (a fast model, a stored answer, a command) is sent as one reply, exactly as without
// streaming. Intermediate sends get one attempt each: a failure backs off (429's retry_after_ms), and one
// the homeserver refuses stops the preview; the final send (the caller's, with the pending-reply handover)
// carries the full answer either way. Typing stays on until that final send is done.

export type StreamingMode = "edits" | "off"

/** How the final send must treat a streamed answer (the fields of OutboundReply it sets). */
export type Streamed = Pick<OutboundReply, "streamedReply" | "mayHaveStreamed">

export interface StreamDeps {
  readonly agent: AgentShape
  readonly outbound: OutboundShape
  readonly mode: StreamingMode
  readonly settings?: StreamSettings
  /** The extra wait before the first chunk (default 250 ms). */
  readonly settleMs?: number
  /** This process run's nonce for the intermediate edits' transaction ids (default: random). */
  readonly run?: string
  /**
   * Durable: recorded before the first chunk is sent, so a resumed or re-sent answer finishes it; false
   * when it could not be recorded (then nothing is streamed).
   */
  readonly markStreamed: (eventId: string) => Effect.Effect<boolean>
  /** Whether a previous run recorded `markStreamed` for this event. */
  readonly streamedBefore: (eventId: string) => Effect.Effect<boolean>
}

export interface AnswerArgs {
  readonly input: TurnInput
  /** The answer's reply (relation, thread) for `text`; also the shape of the first streamed chunk. */
  readonly toReply: (text: string, streamed: Streamed) => OutboundReply
  /**
   * The answer to an edit of an answered question: this reply of cara's is edited with the new answer (the
   * turn is not streamed; the final edit's transaction id derives from the edit's event id).
   */
  readonly editing?: EventId
  /**
   * The final send of the turn's `outcome`; `undefined` when it was handed over to the pending replies (or not
   * sent at all: the question was redacted meanwhile).
   */
  readonly send: (reply: OutboundReply, outcome: TurnOutcome) => Effect.Effect<ReadonlyArray<EventId> | undefined>
}

export interface Answered {
  readonly outcome: TurnOutcome
  readonly ids: ReadonlyArray<EventId> | undefined
}

const DEFAULT_SETTLE_MS = 250
/** Failed intermediate sends before the preview stops (the final send still goes out). */
const MAX_PREVIEW_FAILURES = 5

type Item<E> = TurnEvent | { readonly _tag: "End"; readonly exit: Exit.Exit<void, E> }

interface Drive<E> {
  s: StreamState
  outcome: TurnOutcome | undefined
  end: Exit.Exit<void, E> | undefined
  shown: EventId | undefined
  attempted: boolean
  off: boolean
  failures: number
  wakeAt: number | undefined
}

const noAnswer = (): TurnOutcome => {
  const error = new AgentError({ kind: "agent-unavailable", message: "The turn ended without an answer." })
  return { _tag: "Failed", text: userReply(error), error }
}

/** Everything in the queue now; when empty, waits for one item (or until `wakeAt`, then maybe nothing). */
const takeDrained = <A>(queue: Queue.Queue<A>, wakeAt: number | undefined) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const first = wakeAt === undefined
      ? Option.some(yield* Queue.take(queue))
      : wakeAt <= now
      ? Option.none()
      : yield* Queue.take(queue).pipe(Effect.timeoutOption(Duration.millis(wakeAt - now)))
    return [...Option.toArray(first), ...Chunk.toReadonlyArray(yield* Queue.takeAll(queue))]
  })

const absorb = <E>(st: Drive<E>, items: ReadonlyArray<Item<E>>, now: number) => {
  for (const item of items) {
    if (item._tag === "Delta") st.s = onDelta(st.s, item.text, now)
    else if (item._tag === "End") st.end = item.exit
    else st.outcome = item
  }
  if (st.outcome !== undefined || st.end !== undefined) st.s = onEnd(st.s)
}

/** Sends one preview step (the first chunk or an edit); failures only slow the preview down. */
const previewSender = <E>(deps: StreamDeps, st: Drive<E>, eventId: string, args: AnswerArgs) =>
(
  action: Extract<StreamAction, { _tag: "SendFirst" | "Edit" }>
) =>
  Effect.gen(function*() {
    const base = args.toReply(action.text, {})
    let sent: Effect.Effect<EventId, MatrixError>
    if (action._tag === "SendFirst") {
      if (!(yield* deps.markStreamed(eventId))) {
        st.off = true
        return
      }
      st.attempted = true
      sent = Effect.flatMap(deps.outbound.reply(base, { attempts: 1 }), (ids) =>
        ids[0] === undefined
          ? Effect.fail(new MatrixError({ kind: "send-terminal", message: "the first chunk was empty" }))
          : Effect.succeed(ids[0]))
    } else {
      sent = deps.outbound.edit({
        roomId: base.roomId,
        eventId: st.shown!,
        text: action.text,
        txnId: action.txnId,
        ...(base.threadId === undefined ? {} : { threadId: base.threadId })
      }, { attempts: 1 })
    }
    const result = yield* Effect.either(sent)
    const now = yield* Clock.currentTimeMillis
    if (result._tag === "Right") {
      if (action._tag === "SendFirst") st.shown = result.right
      st.s = onSent(st.s, action, now)
      return
    }
    st.failures++
    if (result.left.kind === "send-failed" && st.failures < MAX_PREVIEW_FAILURES) {
      st.s = onRateLimited(st.s, now, result.left.retryAfterMs, deps.settings)
      return
    }
    st.off = true
    yield* Effect.logWarning(`streamed preview stopped (${result.left.kind}); the full answer follows at the end`)
      .pipe(Effect.annotateLogs({ eventId }))
  })

/** Runs the turn, showing it as it grows; resolves with its outcome and how the final send must go. */
const streamTurn = (deps: StreamDeps, args: AnswerArgs, mayHaveStreamed: boolean) =>
  Effect.gen(function*() {
    const eventId = args.input.eventId
    const settings = deps.settings ?? DEFAULT_STREAM_SETTINGS
    const settleMs = deps.settleMs ?? DEFAULT_SETTLE_MS
    const queue = yield* Queue.unbounded<Item<SessionStoreError>>()
    yield* Effect.fork(
      Stream.runForEach(deps.agent.turn(args.input), (e) => Queue.offer(queue, e)).pipe(
        Effect.exit,
        Effect.flatMap((exit) => Queue.offer(queue, { _tag: "End", exit }))
      )
    )
    const st: Drive<SessionStoreError> = {
      s: initialStream(eventId, deps.run ?? RUN, settings),
      outcome: undefined,
      end: undefined,
      shown: undefined,
      attempted: false,
      off: false,
      failures: 0,
      wakeAt: undefined
    }
    const show = previewSender(deps, st, eventId, args)
    const drain = (wakeAt: number | undefined) =>
      Effect.flatMap(takeDrained(queue, wakeAt), (items) =>
        Effect.map(Clock.currentTimeMillis, (now) => absorb(st, items, now)))
    while (!st.s.ended) {
      yield* drain(st.off ? undefined : st.wakeAt)
      if (st.s.ended || st.off) {
        continue
      }
      let d = decide(st.s, yield* Clock.currentTimeMillis, settings)
      if (d.action?._tag === "SendFirst" && settleMs > 0) {
        // the answer may be complete within the settle window: then it is one reply, as without streaming, sent
        // the moment the turn ends (not after the whole window: a fast answer must not wait for nothing)
        const until = (yield* Clock.currentTimeMillis) + settleMs
        while (!st.s.ended && (yield* Clock.currentTimeMillis) < until) {
          yield* drain(until)
        }
        if (st.s.ended) {
          break
        }
        d = decide(st.s, yield* Clock.currentTimeMillis, settings)
      }
      st.wakeAt = d.wakeAt
      if (d.action !== undefined && d.action._tag !== "Finish") {
        yield* show(d.action)
        // asked again at once: more may be due (the text grew meanwhile, a back-off to wait out)
        st.wakeAt = yield* Clock.currentTimeMillis
      }
    }
    // the turn's own end (its finalizers ran): a store failure after the outcome is still the turn's
    while (st.end === undefined) {
      yield* drain(undefined)
    }
    if (Exit.isFailure(st.end)) {
      return yield* Effect.failCause(st.end.cause)
    }
    const streamed: Streamed = st.shown !== undefined
      ? { streamedReply: st.shown }
      : mayHaveStreamed || st.attempted
      ? { mayHaveStreamed: true }
      : {}
    return { outcome: st.outcome ?? noAnswer(), streamed }
  })

/** This process run's nonce (intermediate edits of a run after a restart are not taken for old ones). */
const RUN = randomUUID()

/**
 * One answer: the turn (streamed into the room when `mode` is "edits"), then the final send, typing on
 * meanwhile. An event a previous run may have streamed is finished with the final edit (never a second answer).
 */
export const answerTurn = (deps: StreamDeps) => (args: AnswerArgs): Effect.Effect<Answered, SessionStoreError> =>
  Effect.gen(function*() {
    const roomId = args.toReply("", {}).roomId
    const before = yield* deps.streamedBefore(args.input.eventId)
    if (deps.mode === "off" || args.editing !== undefined) {
      const outcome = yield* deps.outbound.whileTyping(roomId, deps.agent.reply(args.input))
      const streamed: Streamed = args.editing !== undefined
        ? { streamedReply: args.editing }
        : before
        ? { mayHaveStreamed: true }
        : {}
      const ids = yield* args.send(args.toReply(outcome.text, streamed), outcome)
      return { outcome, ids }
    }
    return yield* deps.outbound.whileTyping(
      roomId,
      Effect.gen(function*() {
        const { outcome, streamed } = yield* streamTurn(deps, args, before)
        const ids = yield* args.send(args.toReply(outcome.text, streamed), outcome)
        return { outcome, ids }
      })
    )
  })

/** An answer that needs no model call (a refused attachment): one reply, sent as it is. */
export const answerWithoutModel = <E>(
  text: string,
  send: (outcome: TurnOutcome) => Effect.Effect<ReadonlyArray<EventId> | undefined, E>
): Effect.Effect<Answered, E> => {
  const outcome: TurnOutcome = { _tag: "Command", text }
  return Effect.map(send(outcome), (ids) => ({ outcome, ids }))
}

/** The streamed-answer marks in the inbound ledger (a failed read counts as "not streamed"). */
export const streamMarks = (ledger: {
  readonly streamedAdd: (eventId: string, now: number) => void
  readonly streamed: (eventId: string) => boolean
}): Pick<StreamDeps, "markStreamed" | "streamedBefore"> => ({
  markStreamed: (eventId) =>
    Effect.try(() => ledger.streamedAdd(eventId, Date.now())).pipe(
      Effect.as(true),
      Effect.catchAll((e) =>
        Effect.as(Effect.logWarning(`inbound ledger: recording a streamed answer failed: ${String(e)}`), false)
      )
    ),
  streamedBefore: (eventId) => Effect.try(() => ledger.streamed(eventId)).pipe(Effect.orElseSucceed(() => false))
})
