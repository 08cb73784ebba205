import { Context, type Effect, type Option, type Stream } from "effect"
import type { AgentError, AgentSettings, TranscriptionRequest, Usage } from "../domain/agent.js"
import type { ContentPart } from "../domain/attachment.js"
import type { SessionStoreError } from "./Sessions.js"

/** The agent settings the runtime is built on (derived from the config by `agentSettingsFromConfig`). */
export class AgentSettingsTag extends Context.Tag("cara/AgentSettings")<AgentSettingsTag, AgentSettings>() {}

/** One inbound message for the agent. */
export interface TurnInput {
  readonly roomId: string
  /** The inbound event id: a redelivered event gets its stored answer, not a second model call. */
  readonly eventId: string
  readonly senderId: string
  readonly senderName?: string
  /**
   * How a group prompt names the sender (Matrix: the display name as of the message, with the MXID where it
   * could mislead; src/domain/speakers.ts). Absent: `senderName (senderId)`.
   */
  readonly senderLabel?: string | undefined
  /** The thread whose conversation the message is in (absent: the room's main timeline). */
  readonly threadId?: string | undefined
  readonly text: string
  /**
   * An attachment's model input (image, framed text file), given to the model for this turn only; `text` is
   * its reference line, which is all the history keeps (src/layers/attachments.ts).
   */
  readonly parts?: ReadonlyArray<ContentPart> | undefined
  /** More than one human in the room: the model is told who says what. */
  readonly isGroup: boolean
  /** The bot's MXID: a command after a mention of the bot (`cara: /help`) is still a command. */
  readonly botUserId?: string | undefined
}

/**
 * What a turn produces, in order: zero or more `Delta`s (the answer as it streams), then exactly one
 * final event. `Completed.text` / `Failed.text` / `Reset.text` / `Command.text` is the whole reply to post; after a
 * `Failed`, deltas already shown should be replaced by it.
 */
export type TurnEvent =
  | { readonly _tag: "Delta"; readonly text: string }
  | {
    readonly _tag: "Completed"
    readonly text: string
    readonly agent: string
    readonly model: string
    readonly usage: Usage
    /** The answer was already stored for this event (redelivery); no model call was made. */
    readonly replayed: boolean
  }
  | { readonly _tag: "Failed"; readonly text: string; readonly error: AgentError }
  | { readonly _tag: "Reset"; readonly text: string }
  /** The answer to a chat command (`/help`, `/model`): no model call, nothing stored in the history. */
  | { readonly _tag: "Command"; readonly text: string }

export type TurnOutcome = Exclude<TurnEvent, { readonly _tag: "Delta" }>

export interface AgentRoute {
  readonly agent: string
  readonly model: string
}

/**
 * The agent runtime: for a room, pick the agent (room override, else default), load and trim the history,
 * call the model, stream the answer and persist the turn; `/new` resets the room's conversation.
 * Model failures are answers (`Failed` with a user-facing text and the typed error); only a history
 * store failure is an error, so the caller does not mark the event handled.
 */
export interface AgentShape {
  readonly turn: (input: TurnInput) => Stream.Stream<TurnEvent, SessionStoreError>
  /** `turn` drained to its final event. */
  readonly reply: (input: TurnInput) => Effect.Effect<TurnOutcome, SessionStoreError>
  /** Which agent and model a room would use; `None` when no model is configured. */
  readonly route: (roomId: string) => Option.Option<AgentRoute>
  /** Audio to text (`matrix.transcription`); absent when no transcription endpoint is configured. */
  readonly transcribe?: (request: TranscriptionRequest) => Effect.Effect<string, AgentError>
  /** Configuration problems found at start (no model, missing keys), for status and the startup warning. */
  readonly problems: ReadonlyArray<AgentError>
}

export class Agent extends Context.Tag("cara/Agent")<Agent, AgentShape>() {}
