// The human's count of the bot's replies, read from the server history: for each message sent, the bot's
// events that answer it (`m.in_reply_to`), and the bot's events that answer nothing sent. Shared by the chaos
// run (scripts/chaos.ts), the backlog bench and the integration tests that count answers.
import * as sdk from "matrix-js-sdk"
import type { Human } from "./human.js"

export interface Tally {
  /** sent message id → ids of the bot's replies to it */
  readonly replies: Map<string, Set<string>>
  /** bot messages that answer nothing we sent */
  readonly strays: Array<string>
  /** events the human could not decrypt (yet) */
  readonly undecrypted: number
}

/**
 * Pages the whole room history from the server (a gappy sync after an outage cannot hide anything) and
 * decrypts it with the human's client.
 */
export const roomHistory = async (human: Human, roomId: string): Promise<Array<sdk.MatrixEvent>> => {
  const out: Array<sdk.MatrixEvent> = []
  let from: string | null = null
  const mapper = human.client.getEventMapper()
  for (let page = 0; page < 100; page++) {
    const res: Awaited<ReturnType<sdk.MatrixClient["createMessagesRequest"]>> = await human.client
      .createMessagesRequest(roomId, from, 200, sdk.Direction.Backward)
    for (const raw of res.chunk) out.push(mapper(raw))
    if (res.end === undefined || res.end === from || res.chunk.length === 0) break
    from = res.end
  }
  await Promise.all(out.map((ev) => human.client.decryptEventIfNeeded(ev).catch(() => undefined)))
  return out
}

export const tally = async (
  human: Human,
  roomIds: ReadonlyArray<string>,
  botUserId: string,
  sent: ReadonlySet<string>
): Promise<Tally> => {
  const replies = new Map<string, Set<string>>([...sent].map((id) => [id, new Set<string>()]))
  const strays: Array<string> = []
  let undecrypted = 0
  for (const roomId of roomIds) {
    for (const ev of await roomHistory(human, roomId)) {
      if (ev.getSender() !== botUserId) continue
      if (ev.isDecryptionFailure() || ev.getType() === "m.room.encrypted") {
        undecrypted++
        continue
      }
      if (ev.getType() !== "m.room.message") continue
      const to = (ev.getContent()["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)
        ?.["m.in_reply_to"]?.event_id
      const set = to === undefined ? undefined : replies.get(to)
      if (set === undefined) strays.push(ev.getId() ?? "?")
      else set.add(ev.getId() ?? "?")
    }
  }
  return { replies, strays, undecrypted }
}
