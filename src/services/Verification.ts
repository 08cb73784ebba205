import { Context, type Effect, type Scope } from "effect"
import type { MatrixClient } from "matrix-js-sdk"
import type { DeviceId, UserId } from "../domain/matrix.js"
import type {
  FlowId,
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
  readonly accept: (flowId: FlowId) => Effect.Effect<VerificationFlow, VerificationActionError>
  /** `match: true` confirms the SAS; `false` cancels it on the peer with `m.mismatched_sas`. */
  readonly confirm: (flowId: FlowId, match: boolean) => Effect.Effect<VerificationFlow, VerificationActionError>
  readonly cancel: (flowId: FlowId) => Effect.Effect<VerificationFlow, VerificationActionError>
  /**
   * Bot-initiated: a device when given, else the user (in a DM room shared with them). The id is checked
   * again (422 `invalid-user-id`): the brand's pattern is looser than a Matrix user id.
   */
  readonly start: (userId: UserId, deviceId?: DeviceId) => Effect.Effect<VerificationFlow, VerificationStartError>
  /** The bot's own account's devices. */
  readonly devices: Effect.Effect<
    ReadonlyArray<OwnDevice>,
    VerificationUnavailable | VerificationFailed | VerificationTimeout
  >
}

export class Verification extends Context.Tag("cara/Verification")<Verification, VerificationShape>() {}
