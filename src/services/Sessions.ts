import { Context, type Effect, type Option, Schema } from "effect"
import type { ChatRole } from "../domain/agent.js"

/** The conversation history could not be read or written (SQLite at `{state_dir}/carapace.sqlite`). */
export class SessionStoreError extends Schema.TaggedError<SessionStoreError>()("SessionStoreError", {
  /** `session-history-corrupt`: the file exists but is not the history database (refused at start, kept). */
  kind: Schema.Literal("agent-history-io", "session-history-corrupt"),
  message: Schema.String
}) {}

export interface StoredMessage {
  /** Insertion order within the store; history is always returned in this order. */
  readonly id: number
  readonly roomId: string
  readonly role: ChatRole
  readonly content: string
  readonly senderId: string | undefined
  readonly senderName: string | undefined
  /** For a user message: the inbound event it came from. */
  readonly eventId: string | undefined
  /** For an assistant message: the user event it answers. */
  readonly replyTo: string | undefined
  readonly agent: string | undefined
  readonly model: string | undefined
  readonly createdAt: number
}

export interface NewMessage {
  readonly role: ChatRole
  readonly content: string
  readonly senderId?: string
  readonly senderName?: string
  readonly eventId?: string
  readonly replyTo?: string
  readonly agent?: string
  readonly model?: string
}

/**
 * One conversation per room (a DM is a room). Appends are idempotent per event: a user message with an
 * `eventId` already stored, or a second answer to the same `replyTo`, returns the stored row instead of
 * adding one, so a redelivered event never doubles the history.
 */
export interface SessionsShape {
  readonly append: (roomId: string, message: NewMessage) => Effect.Effect<StoredMessage, SessionStoreError>
  /** The newest `limit` messages of the room's current conversation, oldest first. */
  readonly history: (roomId: string, limit: number) => Effect.Effect<ReadonlyArray<StoredMessage>, SessionStoreError>
  /** The stored answer to a user event, if the turn already completed. */
  readonly replyTo: (roomId: string, eventId: string) => Effect.Effect<Option.Option<StoredMessage>, SessionStoreError>
  /** `/new`: forgets the room's conversation; returns how many messages were dropped. */
  readonly reset: (roomId: string) => Effect.Effect<number, SessionStoreError>
}

export class Sessions extends Context.Tag("cara/Sessions")<Sessions, SessionsShape>() {}
