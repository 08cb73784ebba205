import { Context, type Effect, type Stream } from "effect"
import type { ChannelInfo, ChannelState, MatrixChannelExtra } from "../domain/channel.js"

/**
 * The registry of channel statuses: MatrixSync writes, ControlHttp (`/control/channels`, `/health/ready`,
 * WebSocket `channel.status` events) and metrics read. Only one channel (Matrix) exists today.
 */
export interface ChannelStatusShape {
  readonly get: Effect.Effect<ReadonlyArray<ChannelInfo>>
  readonly changes: Stream.Stream<ReadonlyArray<ChannelInfo>>
  /** Moves a channel to `state`; `error` with a message and kind, any other state clears them. */
  readonly setState: (
    id: string,
    state: ChannelState,
    error?: { readonly message: string; readonly kind?: string }
  ) => Effect.Effect<void>
  /** Updates the Matrix metadata (counters, room survey, ...). */
  readonly updateMatrix: (f: (extra: MatrixChannelExtra) => MatrixChannelExtra) => Effect.Effect<void>
}

export class ChannelStatus extends Context.Tag("cara/ChannelStatus")<ChannelStatus, ChannelStatusShape>() {}
