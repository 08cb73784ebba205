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
  /** How a group prompt names the sender, as of the message (src/domain/speakers.ts); absent in older rows. */
  readonly senderLabel: string | undefined
  /** The thread the message's conversation is (absent: the room's main timeline, and every older row). */
  readonly threadId: string | undefined
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
  readonly senderLabel?: string
  /** The thread whose conversation this message joins; absent: the room's main timeline. */
  readonly threadId?: string
  readonly eventId?: string
  readonly replyTo?: string
  readonly agent?: string
  readonly model?: string
}

/**
 * One conversation per room's main timeline (a DM is a room) and one per thread (`threadId`; absent: the
 * main timeline). Appends are idempotent per event: a user message with an
 * `eventId` already stored, or a second answer to the same `replyTo`, returns the stored row instead of
 * adding one, so a redelivered event never doubles the history.
 */
export interface SessionsShape {
  readonly append: (roomId: string, message: NewMessage) => Effect.Effect<StoredMessage, SessionStoreError>
  /** The newest `limit` messages of the conversation (the room's main timeline, or a thread), oldest first. */
  readonly history: (
    roomId: string,
    limit: number,
    threadId?: string
  ) => Effect.Effect<ReadonlyArray<StoredMessage>, SessionStoreError>
  /** The stored answer to a user event, if the turn already completed. */
  readonly replyTo: (roomId: string, eventId: string) => Effect.Effect<Option.Option<StoredMessage>, SessionStoreError>
  /** `/new`: forgets one conversation (the main timeline's, or a thread's); returns how many messages were dropped. */
  readonly reset: (roomId: string, threadId?: string) => Effect.Effect<number, SessionStoreError>
}

export class Sessions extends Context.Tag("cara/Sessions")<Sessions, SessionsShape>() {}
