import * as sdk from "matrix-js-sdk"
import { EventId } from "../../domain/matrix.js"
import type { MatrixTransportShape } from "../../services/MatrixTransport.js"
import { downloadMedia } from "./media.js"

/**
 * The transport Outbound sends through: resends a failed local echo under its own transaction id. The
 * homeserver's event ids are branded here (`make` checks them: a malformed one fails the send).
 */
export const sdkTransport = (client: sdk.MatrixClient): MatrixTransportShape => ({
  send: async (roomId, threadId, content, txnId) => {
    const room = client.getRoom(roomId)
    const pending = room?.getEventForTxnId(txnId)
    // matrix-js-sdk refuses a second send with a txnId it still tracks; a failed one is re-sent as is
    if (room && pending && pending.status === sdk.EventStatus.NOT_SENT) {
      const r = await client.resendEvent(pending, room)
      return EventId.make(r.event_id)
    }
    if (pending && pending.status === null && pending.getId()?.startsWith("$") === true) {
      return EventId.make(pending.getId()!)
    }
    const r = await client.sendEvent(roomId, threadId, sdk.EventType.RoomMessage, content as never, txnId)
    return EventId.make(r.event_id)
  },
  react: async (roomId, content, txnId) => {
    const r = await client.sendEvent(roomId, null, sdk.EventType.Reaction, content as never, txnId)
    return r.event_id
  },
  redact: async (roomId, eventId, txnId) => {
    // like send: a failed local echo is re-sent as is (the SDK refuses a second one with its txnId)
    const room = client.getRoom(roomId)
    const pending = room?.getEventForTxnId(txnId)
    if (room && pending && pending.status === sdk.EventStatus.NOT_SENT) {
      await client.resendEvent(pending, room)
      return
    }
    if (pending && pending.status === null) return
    await client.redactEvent(roomId, null, eventId, txnId)
  },
  download: (mxc, maxBytes) =>
    downloadMedia({ baseUrl: client.getHomeserverUrl(), accessToken: client.getAccessToken(), mxc, maxBytes }),
  typing: async (roomId, on, timeoutMs) => {
    await client.sendTyping(roomId, on, timeoutMs)
  },
  receipt: async (roomId, eventId) => {
    const ev = client.getRoom(roomId)?.findEventById(eventId)
    if (ev) await client.sendReadReceipt(ev)
  },
  room: (roomId) => {
    const room = client.getRoom(roomId)
    if (!room || room.getMyMembership() !== sdk.KnownMembership.Join) return undefined
    return { encrypted: room.hasEncryptionStateEvent() }
  }
})
