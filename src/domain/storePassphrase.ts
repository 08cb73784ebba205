import { Schema } from "effect"

/**
 * Errors of the store-passphrase chain (installation id, store key resolution, the rekey state machine and
 * the maintenance lock). Each reaches an operator (daemon start-up, `cara status`, the rekey CLI), so each
 * has a stable `kind` from the reference's vocabulary and a message that says what to do next. Messages
 * never contain a passphrase or key material; paths are fine.
 */

/** A `store_passphrase.pending` or `.rekeying` file exists without `store_passphrase` (reference §4.4). */
export class InterruptedRekeyError extends Schema.TaggedError<InterruptedRekeyError>()("InterruptedRekeyError", {
  kind: Schema.Literal("interrupted-rekey"),
  pendingPath: Schema.String,
  markerPath: Schema.String,
  finalPath: Schema.String,
  message: Schema.String
}) {}

/** Encrypted mode, no explicit passphrase, no pinned file and no `CARAPACE_CONFIG_PASSWORD`. */
export class MissingStoreSecretError extends Schema.TaggedError<MissingStoreSecretError>()("MissingStoreSecretError", {
  kind: Schema.Literal("missing-store-secret"),
  message: Schema.String
}) {}

/** HKDF failed (never expected with valid inputs; kept as its own kind like the reference). */
export class StoreKeyDerivationError extends Schema.TaggedError<StoreKeyDerivationError>()("StoreKeyDerivationError", {
  kind: Schema.Literal("store-key-derivation"),
  message: Schema.String
}) {}

/**
 * `{state_dir}/installation_id` cannot be read, is malformed, or cannot be created (`installation-id`), or
 * is absent while state keyed from it exists, so a new one would lock that state out (`installation-id-missing`).
 */
export class InstallationIdError extends Schema.TaggedError<InstallationIdError>()("InstallationIdError", {
  kind: Schema.Literal("installation-id", "installation-id-missing"),
  path: Schema.String,
  message: Schema.String
}) {}

/** A passphrase file (`store_passphrase*`) or marker cannot be read, written or removed, or is malformed. */
export class EncryptedStateIoError extends Schema.TaggedError<EncryptedStateIoError>()("EncryptedStateIoError", {
  kind: Schema.Literal("encrypted-state-io"),
  path: Schema.String,
  message: Schema.String
}) {}

export const LockHolderKind = Schema.Literal("daemon", "rekey-store", "recovery-key", "doctor")
export type LockHolderKind = typeof LockHolderKind.Type

/** `{state_dir}/.matrix-rekey.lock` is held by another live process. */
export class RekeyLockHeldError extends Schema.TaggedError<RekeyLockHeldError>()("RekeyLockHeldError", {
  kind: Schema.Literal("rekey-lock-held"),
  path: Schema.String,
  /** What the other process is; `unknown` when its lock file could not be parsed (still live). */
  holder: Schema.Union(LockHolderKind, Schema.Literal("unknown")),
  holderPid: Schema.optional(Schema.Number),
  message: Schema.String
}) {}

/** `rekey-store` cannot run with this configuration or these files (explicit passphrase, no stores, ...). */
export class RekeyRefusedError extends Schema.TaggedError<RekeyRefusedError>()("RekeyRefusedError", {
  kind: Schema.Literal("rekey-refused"),
  message: Schema.String
}) {}

export type StorePassphraseError =
  | InterruptedRekeyError
  | MissingStoreSecretError
  | StoreKeyDerivationError
  | InstallationIdError
  | EncryptedStateIoError

/** Relative paths under `{state_dir}` (reference §3.4). */
export const INSTALLATION_ID_FILE = "installation_id"
export const PASSPHRASE_FILE = "matrix/store_passphrase"
export const PENDING_FILE = "matrix/store_passphrase.pending"
export const MARKER_FILE = "matrix/store_passphrase.rekeying"
export const MARKER_CONTENT = "rekeying\n"
export const LOCK_FILE = ".matrix-rekey.lock"
export { AUDIT_FILE } from "./audit.js"

/** The HKDF `info` of the derived store passphrase (reference §3.2). */
export const STORE_KEY_INFO = "carapace-matrix-store-v1"

/** The stable, grep-able prefix of the interrupted-rekey refusal. */
export const INTERRUPTED_REKEY_PREFIX = "Matrix store rekey interrupted:"

export const interruptedRekey = (paths: { pending: string; marker: string; final: string }) =>
  new InterruptedRekeyError({
    kind: "interrupted-rekey",
    pendingPath: paths.pending,
    markerPath: paths.marker,
    finalPath: paths.final,
    message: `${INTERRUPTED_REKEY_PREFIX} ${paths.pending} or ${paths.marker} present without ${paths.final}. ` +
      "Re-run `cara matrix rekey-store --new` to advance or roll back the in-flight rotation before starting the daemon. " +
      "Do not delete these files by hand."
  })

export const missingStoreSecret = () =>
  new MissingStoreSecretError({
    kind: "missing-store-secret",
    message: "matrix encrypted store requires CARAPACE_CONFIG_PASSWORD or MATRIX_STORE_PASSPHRASE " +
      "(or a pinned store_passphrase from `cara matrix rekey-store --new`); export the value that was in effect when the store was created."
  })
