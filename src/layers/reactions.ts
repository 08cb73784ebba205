import { Effect, Option } from "effect"
import type { RoomId } from "../domain/matrix.js"
import { FAILED_REACTION, reactionContent, reactionTxnId, unreactTxnId, WORKING_REACTION } from "../domain/reactions.js"
import type { MatrixTransportShape } from "../services/MatrixTransport.js"

/**
 * Lifecycle reactions on a question. Best effort: a reaction that cannot be sent or removed is logged and
 * never fails or delays the answer beyond its own request.
 */
export interface LifecycleReactions {
  /** Puts 👀 on the question; the reaction's event id when it was sent. */
  readonly working: (roomId: RoomId, eventId: string) => Effect.Effect<Option.Option<string>>
  /** The answer is in the room: removes 👀, and adds ❌ when the answer is a failure. */
  readonly answered: (
    roomId: RoomId,
    eventId: string,
    working: Option.Option<string>,
    failed: boolean
  ) => Effect.Effect<void>
}

const bestEffort = <A>(what: string, roomId: string, p: () => Promise<A>): Effect.Effect<Option.Option<A>> =>
  Effect.tryPromise(p).pipe(
    Effect.map(Option.some),
    Effect.catchAll((e) =>
      Effect.logDebug(`${what} failed: ${e.error instanceof Error ? e.error.message : String(e.error)}`).pipe(
        Effect.annotateLogs({ service: "Inbound", roomId }),
        Effect.as(Option.none<A>())
      )
    )
  )

/** The reactions over a transport; `undefined` when the transport cannot send reactions. */
export const lifecycleReactions = (transport: MatrixTransportShape): LifecycleReactions | undefined => {
  const { react, redact } = transport
  if (react === undefined || redact === undefined) return undefined
  const add = (roomId: RoomId, eventId: string, key: string) =>
    bestEffort(
      `Reacting ${key} to the question`,
      roomId,
      () => react(roomId, reactionContent(eventId, key), reactionTxnId(eventId, key))
    )
  return {
    working: (roomId, eventId) => add(roomId, eventId, WORKING_REACTION),
    answered: (roomId, eventId, working, failed) =>
      Effect.gen(function*() {
        if (Option.isSome(working)) {
          const reaction = working.value
          yield* bestEffort(
            "Removing the working reaction",
            roomId,
            () => redact(roomId, reaction, unreactTxnId(eventId, WORKING_REACTION))
          )
        }
        if (failed) yield* add(roomId, eventId, FAILED_REACTION)
      })
  }
}
