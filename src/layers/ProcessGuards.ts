import { Effect, Layer, Runtime } from "effect"

/**
 * A daemon must not die because a library dropped a promise: matrix-js-sdk, for one, leaves its aborted
 * `/sync` request rejected and unobserved when the client stops. Such rejections are logged (with the
 * reason's text, never its data) for the daemon's life instead of crashing the process. Uncaught
 * exceptions still crash it: their state is unknown, and the process manager restarts us.
 */
export const UnhandledRejectionsLogged = Layer.scopedDiscard(
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const log = (reason: unknown) => {
      const text = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason)
      Runtime.runFork(runtime)(
        Effect.logWarning(`ignored an unhandled promise rejection: ${text}`).pipe(
          Effect.annotateLogs({ service: "daemon" })
        )
      )
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => process.on("unhandledRejection", log)),
      () => Effect.sync(() => process.off("unhandledRejection", log))
    )
  })
)
