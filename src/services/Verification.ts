import { Context, type Effect, type Scope } from "effect"
import type { MatrixClient } from "matrix-js-sdk"
import type {
  OwnDevice,
  VerificationActionError,
  VerificationFailed,
  VerificationFlow,
  VerificationStartError,
  VerificationTimeout,
  VerificationUnavailable
} from "../domain/verification.js"

/** What the Matrix runtime hands over when its client exists (before `startClient`). */
export interface VerificationAttachment {
  readonly client: MatrixClient
  /** The bot's own user id (its own other devices may always verify it). */
  readonly botUserId: string
  /** The `matrix.autoJoin` allowlist: requests from anyone else are ignored and counted. */
  readonly isAllowed: (userId: string) => boolean
  /** Users whose devices are tracked from startup, so they can verify before sharing a room with the bot. */
  readonly trackUsers?: ReadonlyArray<string>
}

/**
 * SAS verification flows (reference §6): a registry of flows with stable ids fed by the SDK's verification
 * requests from allowed users, the operator's actions on them, WS events and the pending count. The bot never
 * accepts or confirms anything by itself.
 */
export interface VerificationShape {
  /** Called by the Matrix runtime with its client before the first sync; detached when the scope closes. */
  readonly attach: (attachment: VerificationAttachment) => Effect.Effect<void, never, Scope.Scope>
  /** Every known flow, newest first (expired ones already cancelled, old terminal ones pruned). */
  readonly list: Effect.Effect<ReadonlyArray<VerificationFlow>>
  /** Accepts the request (sends ready) and starts SAS once ready; carries the SAS when already known. */
  readonly accept: (flowId: string) => Effect.Effect<VerificationFlow, VerificationActionError>
  /** `match: true` confirms the SAS; `false` cancels it on the peer with `m.mismatched_sas`. */
  readonly confirm: (flowId: string, match: boolean) => Effect.Effect<VerificationFlow, VerificationActionError>
  readonly cancel: (flowId: string) => Effect.Effect<VerificationFlow, VerificationActionError>
  /** Bot-initiated: a device when given, else the user (in a DM room shared with them). */
  readonly start: (userId: string, deviceId?: string) => Effect.Effect<VerificationFlow, VerificationStartError>
  /** The bot's own account's devices. */
  readonly devices: Effect.Effect<ReadonlyArray<OwnDevice>, VerificationUnavailable | VerificationFailed | VerificationTimeout>
}

export class Verification extends Context.Tag("cara/Verification")<Verification, VerificationShape>() {}
