import { Context, Effect, Layer, Schema } from "effect"

/**
 * A typed failure of a Matrix runtime operation, with the reference's kind (§9.4 / §12):
 * `matrix-runtime-unavailable`, `not-connected`, `send-failed`, `room-not-found`, `unsupported-room`, ...
 * `retryAfterMs` is set when the runtime knows when a retry can succeed.
 */
export class MatrixControlError extends Schema.TaggedError<MatrixControlError>()("MatrixControlError", {
  kind: Schema.String,
  message: Schema.String,
  retryAfterMs: Schema.optional(Schema.Int)
}) {}

/**
 * What the control API needs from the Matrix runtime. MatrixSync (or the lead's wiring) provides the real
 * implementation; until then `MatrixControlUnavailable` answers every call with `matrix-runtime-unavailable`.
 */
export interface MatrixControlShape {
  /** Sends `text` to `roomId` (encrypted when the room is); succeeds with the event id. */
  readonly sendTest: (roomId: string, text: string) => Effect.Effect<string, MatrixControlError>
}

export class MatrixControl extends Context.Tag("cara/MatrixControl")<MatrixControl, MatrixControlShape>() {}

export const matrixRuntimeUnavailable = () =>
  new MatrixControlError({
    kind: "matrix-runtime-unavailable",
    message:
      "Matrix runtime unavailable: matrix is not enabled or has not started. Check matrix.enabled and the daemon log, then retry.",
    retryAfterMs: 5000
  })

/** The default: no Matrix runtime registered. */
export const MatrixControlUnavailable = Layer.succeed(MatrixControl, {
  sendTest: () => Effect.fail(matrixRuntimeUnavailable())
})
