import { Context, type Effect, type Option } from "effect"
import type { StateDirError } from "../domain/errors.js"

export interface WriteOptions {
  /** File mode of the written file; 0o600 unless a caller has a reason to differ. */
  readonly mode?: number
}

/**
 * The state directory: every path and every file write of the project goes through it.
 *
 * Paths given to the operations are relative to the state dir (`"matrix/recovery_key"`), or
 * absolute when they point elsewhere (the config file may live outside it).
 */
export interface StateDirShape {
  /** Absolute path of `{state_dir}` (already created, mode 0700). */
  readonly root: string
  /** Absolute path of a file or directory under the state dir. */
  readonly resolve: (relative: string) => string
  /** Creates (if needed) a directory under the state dir with mode 0700; refuses symlinks on the way. */
  readonly ensureDir: (relative: string) => Effect.Effect<string, StateDirError>
  /** Writes a file atomically: temp file + fsync + rename + directory fsync, mode 0600. */
  readonly writeAtomic: (
    path: string,
    data: string | Uint8Array,
    options?: WriteOptions
  ) => Effect.Effect<void, StateDirError>
  /** Reads a whole file; `None` when it does not exist. Refuses a symlinked file. */
  readonly read: (path: string) => Effect.Effect<Option.Option<Uint8Array>, StateDirError>
  readonly readText: (path: string) => Effect.Effect<Option.Option<string>, StateDirError>
  /** Removes a file (missing is fine) and fsyncs its directory. */
  readonly remove: (path: string) => Effect.Effect<void, StateDirError>
  readonly exists: (path: string) => Effect.Effect<boolean, StateDirError>
}

export class StateDir extends Context.Tag("cara/StateDir")<StateDir, StateDirShape>() {}
