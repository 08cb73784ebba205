import { Context, type Effect, type Option } from "effect"
import type { StateDirError } from "../domain/errors.js"

/** Why a capped read refused a file (the caller words the message; nothing here is an error). */
export type CappedRefusal =
  | { readonly reason: "symlink" }
  | { readonly reason: "not-file" }
  /** `size` is the stat'd size when that alone exceeded the cap; absent when the read ran past it. */
  | { readonly reason: "too-large"; readonly size?: number }

export type CappedResult =
  | { readonly state: "absent" }
  | { readonly state: "ok"; readonly text: string }
  | ({ readonly state: "refused" } & CappedRefusal)

export interface CappedReadOptions {
  /** Follow a final symlink (to a regular file); refused by default. */
  readonly followSymlink?: boolean
}

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
  /**
   * A small file read at most `cap` bytes deep: absent, its text, or why it was refused (a symlink unless
   * followed, not a regular file, over the cap). Never blocks on a FIFO.
   */
  readonly readCapped: (
    path: string,
    cap: number,
    options?: CappedReadOptions
  ) => Effect.Effect<CappedResult, StateDirError>
  /** Appends whole lines durably (fsync; directory fsync when created), 0600, never through a symlink. */
  readonly append: (path: string, text: string) => Effect.Effect<void, StateDirError>
  /** Creates a file only if absent (temp + fsync + hard link + directory fsync); `"exists"` otherwise. */
  readonly createExclusive: (
    path: string,
    data: string | Uint8Array,
    options?: WriteOptions
  ) => Effect.Effect<"created" | "exists", StateDirError>
  /**
   * Renames a file over another and fsyncs the target's directory; with `mode`, the source (never followed
   * through a symlink) gets that mode first.
   */
  readonly rename: (from: string, to: string, options?: WriteOptions) => Effect.Effect<void, StateDirError>
  /** fsyncs a directory (after a change made in it by other means). */
  readonly fsyncDir: (path: string) => Effect.Effect<void, StateDirError>
  /** Removes a file (missing is fine) and fsyncs its directory; true when there was one. */
  readonly remove: (path: string) => Effect.Effect<boolean, StateDirError>
  readonly exists: (path: string) => Effect.Effect<boolean, StateDirError>
}

export class StateDir extends Context.Tag("cara/StateDir")<StateDir, StateDirShape>() {}
