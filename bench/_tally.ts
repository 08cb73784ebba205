// The human's count of the bot's replies, from the server history (for bench/matrix-backlog.ts).
//
// Not imported from scripts/chaos.ts: that module starts its own chaos run (two Synapses, SIGKILLs) when it
// is loaded outside vitest, so a bench importing it ran a chaos phase beside the measurement.
import * as sdk from "matrix-js-sdk"
import type { Human } from "../test/support/human.js"

/** Every event of the room, paged backwards from the server and decrypted with the human's client. */
const roomHistory = async (human: Human, roomId: string): Promise<Array<sdk.MatrixEvent>> => {
  const out: Array<sdk.MatrixEvent> = []
  const mapper = human.client.getEventMapper()
  let from: string | null = null
  for (let page = 0; page < 100; page++) {
    const res: Awaited<ReturnType<sdk.MatrixClient["createMessagesRequest"]>> = await human.client
      .createMessagesRequest(roomId, from, 200, sdk.Direction.Backward)
    out.push(...res.chunk.map(mapper))
    if (res.end === undefined || res.end === from || res.chunk.length === 0) break
    from = res.end
  }
  await Promise.all(out.map((ev) => human.client.decryptEventIfNeeded(ev).catch(() => undefined)))
  return out
}

/** For each sent message id, how many replies of the bot's point at it (`m.in_reply_to`). */
export const repliesPerMessage = async (
  human: Human,
  roomIds: ReadonlyArray<string>,
  botUserId: string,
  sent: ReadonlySet<string>
): Promise<Array<number>> => {
  const counts = new Map<string, number>([...sent].map((id) => [id, 0]))
  for (const roomId of roomIds) {
    for (const ev of await roomHistory(human, roomId)) {
      if (ev.getSender() !== botUserId || ev.getType() !== "m.room.message") continue
      const to = (ev.getContent()["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)
        ?.["m.in_reply_to"]?.event_id
      const n = to === undefined ? undefined : counts.get(to)
      if (to !== undefined && n !== undefined) counts.set(to, n + 1)
    }
  }
  return [...counts.values()]
}
