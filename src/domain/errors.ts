import { Schema } from "effect"

/**
 * Errors that reach an operator (CLI exit path, control API, disk). Each carries a stable `kind`
 * from the reference's `lastErrorKind` vocabulary and a message that says what to do next.
 */
export class StateDirError extends Schema.TaggedError<StateDirError>()("StateDirError", {
  kind: Schema.Literal("state-dir-io", "state-dir-symlink", "state-dir-permissions"),
  path: Schema.String,
  message: Schema.String
}) {}
