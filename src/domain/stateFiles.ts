import { Schema } from "effect"

/**
 * A state file the daemon needs exists but is not what it should be (empty, truncated, not SQLite, the
 * wrong schema, undecodable content), or is missing while other state shows it must exist. The daemon
 * refuses to start with it, `cara doctor` reports it, and nothing is overwritten: each message names the
 * file and the remedy (restore from a backup, or the documented way to start over).
 */
export const STATE_FILE_ERROR_KINDS = [
  "crypto-store-corrupt",
  "state-store-corrupt",
  "inbound-ledger-corrupt",
  "session-history-corrupt",
  "installation-id-missing",
  "installation-id",
  "encrypted-state-io"
] as const
export const StateFileErrorKind = Schema.Literal(...STATE_FILE_ERROR_KINDS)
export type StateFileErrorKind = typeof StateFileErrorKind.Type

export class StateFileError extends Schema.TaggedError<StateFileError>()("StateFileError", {
  kind: StateFileErrorKind,
  /** The file concerned. */
  path: Schema.String,
  message: Schema.String
}) {}

/** The message of a damaged inbound ledger (`matrix/inbound-ledger.sqlite`). */
export const corruptLedgerMessage = (file: string, reason: string): string =>
  `The inbound ledger ${file} cannot be used: ${reason}. It was left untouched. Restore it from a backup, or move it aside: the next start begins a new ledger (answers that were in progress are then not resumed, and undecryptable messages held for their keys are forgotten).`

/** The message of a damaged conversation history (`carapace.sqlite`). */
export const corruptHistoryMessage = (file: string, reason: string): string =>
  `The conversation history ${file} cannot be used: ${reason}. It was left untouched. Restore it from a backup, or move it aside: the next start begins with an empty history.`
