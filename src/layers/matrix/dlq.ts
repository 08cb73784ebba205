// The inbound DLQ for the life of the runtime: replay hands records back to this pipeline (allowlist
// re-checked), one replay at a time, started after every successful sync.
import { Effect, Ref } from "effect"
import { allowsUser, normalizeAllowlist } from "../../domain/allowlist.js"
import { Dlq } from "../../services/Dlq.js"
import { Inbound } from "../../services/Inbound.js"
import { MatrixSettings } from "../../services/MatrixSync.js"

/** Registers the dispatcher; returns the (non-blocking) trigger of a replay round. */
export const registerDlq = Effect.gen(function*() {
  const dlq = yield* Dlq
  const inbound = yield* Inbound
  const allowlist = normalizeAllowlist((yield* MatrixSettings).autoJoin)
  const scope = yield* Effect.scope
  const replaying = yield* Ref.make(false)
  const replay = Effect.gen(function*() {
    if (yield* Ref.getAndSet(replaying, true)) return
    yield* Effect.forkIn(
      dlq.replayDue.pipe(
        Effect.catchAll((e) =>
          Effect.logWarning(`Matrix inbound DLQ replay failed: ${e.message}`).pipe(
            Effect.annotateLogs({ kind: e.kind })
          )
        ),
        Effect.ensuring(Ref.set(replaying, false))
      ),
      scope
    )
  })
  yield* dlq.register({ allowed: (s) => allowsUser(allowlist, s), dispatch: inbound.redeliver, resend: inbound.resend })
  return replay
})
