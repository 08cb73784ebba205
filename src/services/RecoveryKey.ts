import { Context, type Effect } from "effect"
import type { MatrixClient } from "matrix-js-sdk"
import type { CryptoCallbacks } from "matrix-js-sdk/lib/crypto-api/index.js"
import type { RecoveryKeyError } from "../domain/recoveryKey.js"

/**
 * Cross-signing, secret storage and key backup for the daemon's Matrix client (reference §5.2, §5.3, §5.6).
 * MatrixSync calls it at three moments: `repair` before the store is opened, `cryptoCallbacks` when the
 * client is created, `afterFirstSync` once the first sync is in (bootstrap needs our own identity known).
 * The CLI-only operations (show, restore, rotate) are programs (src/programs/recoveryKey.ts), never API.
 */
export interface RecoveryKeyShape {
  /** Passed to `createClient`: answers secret-storage key requests from the keys this process holds. */
  readonly cryptoCallbacks: CryptoCallbacks
  /** Journal inspection and the §5.6 repair of an interrupted rotation; fails closed. */
  readonly repair: Effect.Effect<void, RecoveryKeyError>
  /**
   * Restore from `recovery_key`, bootstrap cross-signing (password UIA once, then removed from the config),
   * sign our own device, first mint. Never creates a new cross-signing identity over an existing one.
   * Returns the cross-signing state; the runtime publishes it once its whole start-up sequence is done.
   */
  readonly afterFirstSync: (client: MatrixClient) => Effect.Effect<"bootstrapped" | "verified", RecoveryKeyError>
}

export class RecoveryKey extends Context.Tag("cara/RecoveryKey")<RecoveryKey, RecoveryKeyShape>() {}
