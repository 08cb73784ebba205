// The Matrix runtime as a composition: the features live in ./matrix/ (runtime.ts puts them together);
// this layer runs the runtime for the life of its scope and serves MatrixSync and MatrixControl from it.
import { Cause, Context, Effect, Exit, Layer, Option, Ref, Schema } from "effect"
import { MATRIX_CHANNEL_ID, MatrixError, RoomId, roomNotFound } from "../domain/matrix.js"
import { ChannelStatus } from "../services/ChannelStatus.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"
import { MatrixControl, MatrixControlError } from "../services/MatrixControl.js"
import { type MatrixSession, MatrixSettings, MatrixSync, type MatrixSyncShape } from "../services/MatrixSync.js"
import type { OutboundShape } from "../services/Outbound.js"
import { runMatrix } from "./matrix/runtime.js"

// The names other modules import from here.
export { MATRIX_CHANNEL_ID as CHANNEL_ID } from "../domain/matrix.js"
export { giveUpMessage, shouldGiveUp, SYNC_GIVE_UP_MS } from "../domain/syncHealth.js"
export { DEVICE_DISPLAY_NAME } from "./matrix/auth.js"

const notConnected = () =>
  new MatrixError({
    kind: "not-connected",
    message: "The Matrix runtime is not connected yet (or has stopped); check `cara status` and retry."
  })

/** A runtime that stopped: `disconnected` when interrupted, else `error` with its kind. */
const reportExit = (exit: Exit.Exit<never, MatrixError>) =>
  Effect.gen(function*() {
    const status = yield* ChannelStatus
    if (Exit.isSuccess(exit)) return
    if (Cause.isInterruptedOnly(exit.cause)) return yield* status.setState(MATRIX_CHANNEL_ID, "disconnected")
    const failure = Cause.failureOption(exit.cause)
    const err = Option.isSome(failure)
      ? failure.value
      : new MatrixError({
        kind: "startup-failed",
        message: `Matrix runtime startup failed: ${Cause.pretty(exit.cause).split("\n")[0] ?? "defect"}`
      })
    yield* Effect.logError(`Matrix runtime stopped: ${err.message}`).pipe(Effect.annotateLogs({ kind: err.kind }))
    yield* status.setState(MATRIX_CHANNEL_ID, "error", { kind: err.kind, message: err.message })
  })

/** The control API's `send-test` (§9.4 kinds): the running runtime's Outbound, `not-connected` before. */
const sendTestThrough = (outbound: Ref.Ref<Option.Option<OutboundShape>>) => (roomId: string, text: string) =>
  Effect.flatMap(
    Ref.get(outbound),
    Option.match({
      onNone: () => Effect.fail(notConnected()),
      onSome: (o) =>
        Option.match(Schema.decodeUnknownOption(RoomId)(roomId), {
          onNone: () => Effect.fail(roomNotFound(roomId)),
          onSome: (id) => o.sendTest(id, text)
        })
    })
  ).pipe(
    Effect.mapError((e) =>
      new MatrixControlError({
        kind: e.kind,
        message: e.message,
        ...(e.retryAfterMs === undefined ? {} : { retryAfterMs: Math.round(e.retryAfterMs) })
      })
    )
  )

const makeMatrixSync = (env: NodeJS.ProcessEnv) =>
  Effect.gen(function*() {
    const secrets = yield* ConfigSecrets
    const status = yield* ChannelStatus
    const outbound = yield* Ref.make(Option.none<OutboundShape>())
    const session = yield* Ref.make(Option.none<MatrixSession>())
    const m = secrets.config.matrix
    if (m !== undefined && m !== null && m.enabled) {
      yield* status.setState(MATRIX_CHANNEL_ID, "connecting")
      if (m.encrypted) yield* status.updateMatrix((x) => ({ ...x, crossSigning: "pending" }))
      yield* Effect.forkScoped(
        Effect.scoped(runMatrix(env, { outbound, session })).pipe(
          Effect.provideService(MatrixSettings, m),
          Effect.onExit(reportExit),
          Effect.annotateLogs({ service: "matrix" })
        )
      )
    }
    const sync: MatrixSyncShape = { session: Ref.get(session) }
    return { sync, control: { sendTest: sendTestThrough(outbound) } }
  })

/** MatrixSync and MatrixControl, the runtime running for the life of the layer. */
export const MatrixSyncLive = (env: NodeJS.ProcessEnv = process.env) =>
  Layer.scopedContext(
    Effect.map(makeMatrixSync(env), ({ control, sync }) =>
      Context.make(MatrixSync, sync).pipe(Context.add(MatrixControl, control)))
  )
