import { Context, type Effect, type Option, type Redacted, type Scope } from "effect"
import type {
  EncryptedStateIoError,
  InstallationIdError,
  LockHolderKind,
  RekeyLockHeldError,
  StorePassphraseError
} from "../domain/storePassphrase.js"

/** Where the resolved passphrase came from (for logs and `cara status`; never the value). */
export type PassphraseSource = "explicit" | "pinned-file" | "derived"

export interface ResolvedPassphrase {
  readonly passphrase: Redacted.Redacted<string>
  readonly source: PassphraseSource
}

/** Proof that this process holds `{state_dir}/.matrix-rekey.lock`; released when its scope closes. */
export interface RekeyLock {
  readonly path: string
  readonly holder: LockHolderKind
}

/**
 * The Matrix store passphrase chain (reference §3): `installation_id`, passphrase resolution and the
 * maintenance lock that keeps the daemon and offline maintenance (rekey-store, recovery-key) apart.
 */
export interface StorePassphraseShape {
  /**
   * The store passphrase to open the CryptoStore with: `None` when `matrix.encrypted=false` (or Matrix is
   * not configured). Fails with `interrupted-rekey` when a rekey was interrupted, `missing-store-secret`
   * when no key source exists.
   */
  readonly resolve: Effect.Effect<Option.Option<Redacted.Redacted<string>>, StorePassphraseError>
  /** Like `resolve`, with where the value came from. */
  readonly resolveDetailed: Effect.Effect<Option.Option<ResolvedPassphrase>, StorePassphraseError>
  /** `{state_dir}/installation_id`, created (race-safe) on first use. */
  readonly installationId: Effect.Effect<string, InstallationIdError>
  /**
   * Takes `{state_dir}/.matrix-rekey.lock` for the life of the scope. Another live holder →
   * `rekey-lock-held` naming what it is; a holder that died leaves nothing that blocks.
   */
  readonly acquireLock: (
    holder: LockHolderKind
  ) => Effect.Effect<RekeyLock, RekeyLockHeldError | EncryptedStateIoError, Scope.Scope>
}

export class StorePassphrase extends Context.Tag("cara/StorePassphrase")<StorePassphrase, StorePassphraseShape>() {}
