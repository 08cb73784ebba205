import { Schema } from "effect"

/**
 * Errors of the durable Matrix store (`CryptoStore`). They reach the operator through the daemon's
 * start-up failure and `cara status` (`lastErrorKind`), so each kind is stable and each message says
 * what to do next. Messages never contain key material or passphrases.
 */
export const CryptoStoreErrorKind = Schema.Literal(
  "encrypted-store-passphrase-mismatch",
  "missing-store-secret",
  "store-locked",
  "encrypted-state-io",
  /** `matrix-sdk-crypto.sqlite3` exists but is empty, truncated, not SQLite or not a store: refused, never rebuilt */
  "crypto-store-corrupt",
  /** the same for `matrix-sdk-state.sqlite3` */
  "state-store-corrupt"
)
export type CryptoStoreErrorKind = typeof CryptoStoreErrorKind.Type

export class CryptoStoreError extends Schema.TaggedError<CryptoStoreError>()("CryptoStoreError", {
  kind: CryptoStoreErrorKind,
  /** The store file (or directory) concerned. */
  path: Schema.String,
  /** For `store-locked`: the pid that holds the store, when it could be read. */
  holderPid: Schema.optional(Schema.Number),
  message: Schema.String
}) {}
