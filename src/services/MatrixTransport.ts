import { Context } from "effect"
import type { EventId, RoomId } from "../domain/matrix.js"

/** The few client operations Outbound needs (matrix-js-sdk in the daemon, a fake in unit tests). */
export interface MatrixTransportShape {
  /** Sends (or re-sends, same `txnId`) one `m.room.message`; resolves with the event id. */
  readonly send: (
    roomId: RoomId,
    threadId: EventId | null,
    content: Record<string, unknown>,
    txnId: string
  ) => Promise<EventId>
  readonly typing: (roomId: RoomId, on: boolean, timeoutMs: number) => Promise<void>
  readonly receipt: (roomId: RoomId, eventId: EventId) => Promise<void>
  /** Sends (or re-sends, same `txnId`) one `m.reaction`; resolves with its event id. */
  readonly react?: (roomId: RoomId, content: Record<string, unknown>, txnId: string) => Promise<string>
  /** Redacts one of the bot's own events (a reaction). */
  readonly redact?: (roomId: RoomId, eventId: string, txnId: string) => Promise<void>
  /**
   * The bytes behind an `mxc://` URI through the authenticated media API, at most `maxBytes` (rejects with
   * a MediaError beyond, src/layers/matrix/media.ts).
   */
  readonly download?: (mxc: string, maxBytes: number) => Promise<Uint8Array>
  /** `undefined` when the bot has not joined the room. */
  readonly room: (roomId: RoomId) => { readonly encrypted: boolean } | undefined
}

/** Provided by the Matrix client resource for the life of the client (src/layers/matrix/client.ts). */
export class MatrixTransport extends Context.Tag("cara/MatrixTransport")<MatrixTransport, MatrixTransportShape>() {}
