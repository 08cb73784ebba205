// The inbound DLQ for the life of the runtime: replay hands records back to this pipeline (allowlist
// re-checked), one replay at a time, started after every successful sync and when the earliest record held
// back by its backoff is due again (a quiet room's sync returns only every 30 s, its long poll).
import { Clock, Duration, Effect, Fiber, Option, Ref } from "effect"
import { allowsUser, normalizeAllowlist } from "../../domain/allowlist.js"
import { Dlq } from "../../services/Dlq.js"
import { Inbound } from "../../services/Inbound.js"
import { MatrixSettings } from "../../services/MatrixSync.js"

const MIN_WAKE_MS = 1_000

/** Registers the dispatcher; returns the (non-blocking) trigger of a replay round. */
export const registerDlq = Effect.gen(function*() {
  const dlq = yield* Dlq
  const inbound = yield* Inbound
  const allowlist = normalizeAllowlist((yield* MatrixSettings).autoJoin)
  const scope = yield* Effect.scope
  const replaying = yield* Ref.make(false)
  // the one pending wake-up for the earliest backoff (replaced after each round)
  const timer = yield* Ref.make<Option.Option<Fiber.RuntimeFiber<void>>>(Option.none())
  const wakeAtNextRetry: Effect.Effect<void> = Effect.gen(function*() {
    const next = yield* dlq.nextRetryAt
    const previous = yield* Ref.getAndSet(timer, Option.none())
    if (Option.isSome(previous)) yield* Fiber.interruptFork(previous.value)
    if (Option.isNone(next)) return
    // never sooner than a second: a record a round could not reach (its key missing) is not retried in a loop
    const wait = Math.max(MIN_WAKE_MS, next.value - (yield* Clock.currentTimeMillis))
    const fiber = yield* Effect.forkIn(Effect.zipRight(Effect.sleep(Duration.millis(wait)), replay), scope)
    yield* Ref.set(timer, Option.some(fiber))
  })
  const replay: Effect.Effect<void> = Effect.gen(function*() {
    if (yield* Ref.getAndSet(replaying, true)) return
    yield* Effect.forkIn(
      dlq.replayDue.pipe(
        Effect.catchAll((e) =>
          Effect.logWarning(`Matrix inbound DLQ replay failed: ${e.message}`).pipe(
            Effect.annotateLogs({ kind: e.kind })
          )
        ),
        Effect.ensuring(Effect.zipRight(Ref.set(replaying, false), wakeAtNextRetry))
      ),
      scope
    )
  })
  yield* dlq.register({
    allowed: (s) => allowsUser(allowlist, s),
    dispatch: inbound.redeliver,
    resend: inbound.resend,
    wake: wakeAtNextRetry
  })
  return replay
})
