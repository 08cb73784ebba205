import { Context } from "effect"

/** The few client operations Outbound needs (matrix-js-sdk in the daemon, a fake in unit tests). */
export interface MatrixTransportShape {
  /** Sends (or re-sends, same `txnId`) one `m.room.message`; resolves with the event id. */
  readonly send: (
    roomId: string,
    threadId: string | null,
    content: Record<string, unknown>,
    txnId: string
  ) => Promise<string>
  readonly typing: (roomId: string, on: boolean, timeoutMs: number) => Promise<void>
  readonly receipt: (roomId: string, eventId: string) => Promise<void>
  /** Sends (or re-sends, same `txnId`) one `m.reaction`; resolves with its event id. */
  readonly react?: (roomId: string, content: Record<string, unknown>, txnId: string) => Promise<string>
  /** Redacts one of the bot's own events (a reaction). */
  readonly redact?: (roomId: string, eventId: string, txnId: string) => Promise<void>
  /** `undefined` when the bot has not joined the room. */
  readonly room: (roomId: string) => { readonly encrypted: boolean } | undefined
}

/** Provided by the Matrix client resource for the life of the client (src/layers/matrix/client.ts). */
export class MatrixTransport extends Context.Tag("cara/MatrixTransport")<MatrixTransport, MatrixTransportShape>() {}
