import { Duration, Effect } from "effect"
import {
  sanitizeDisplay,
  VerificationFailed,
  VerificationTimeout,
  VerificationUnavailable
} from "../../domain/verification.js"

/** How long one SDK call of the verification layer may take before the operator gets a 504. */
export const SDK_TIMEOUT = Duration.seconds(30)

/** A thrown value as one sanitised line (peer-influenced text never reaches a log or an error raw). */
export const describe = (e: unknown): string => {
  const m = (e as { message?: unknown } | undefined)?.message
  return sanitizeDisplay(typeof m === "string" ? m : String(e)).slice(0, 200)
}

export const notConnected = () =>
  new VerificationUnavailable({
    kind: "not-connected",
    message:
      "The Matrix runtime is not connected (Matrix disabled, still starting, or stopped); check `cara status` and retry.",
    retryAfterMs: 5000
  })

export const verificationFailed = (message: string) => new VerificationFailed({ kind: "verification", message })

/** One SDK call as an Effect: a rejection is a 502, no answer within SDK_TIMEOUT a 504 (it may still land). */
export const sdkCall = <A>(what: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (e) => verificationFailed(`Matrix verification ${what} failed: ${describe(e)}`) })
    .pipe(
      Effect.timeoutFail({
        duration: SDK_TIMEOUT,
        onTimeout: () =>
          new VerificationTimeout({
            kind: "verification-timeout",
            message:
              `Matrix verification ${what} timed out; it may still land. Run \`cara matrix verifications\` to see the current state.`
          })
      })
    )
