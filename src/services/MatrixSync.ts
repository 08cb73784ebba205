import { Context, type Effect, type Option } from "effect"
import type { Matrix } from "../domain/config.js"
import type { DeviceId, UserId } from "../domain/matrix.js"

/** Who the bot is on the homeserver, once authenticated. */
export interface MatrixSession {
  readonly userId: UserId
  readonly deviceId: DeviceId
}

/**
 * The Matrix runtime, sole owner of the matrix-js-sdk client: login or token restore, the client on the
 * durable CryptoStore, the sync loop (watchdog, backoff, terminal errors), auto-join, the room survey and
 * the channel status. It runs only when `matrix.enabled`; a failure puts the channel in `error` with its
 * kind and leaves the rest of the gateway running. Its `send-test` is served as MatrixControl (the one path).
 */
export interface MatrixSyncShape {
  /** The authenticated session; `None` before authentication or when Matrix is off. */
  readonly session: Effect.Effect<Option.Option<MatrixSession>>
}

export class MatrixSync extends Context.Tag("cara/MatrixSync")<MatrixSync, MatrixSyncShape>() {}

/** The authenticated session inside the running Matrix runtime (provided once authentication is done). */
export class CurrentMatrixSession
  extends Context.Tag("cara/CurrentMatrixSession")<CurrentMatrixSession, MatrixSession>()
{}

/** The `matrix` config section of the running runtime (enabled; provided by MatrixSync to its parts). */
export class MatrixSettings extends Context.Tag("cara/MatrixSettings")<MatrixSettings, Matrix>() {}
