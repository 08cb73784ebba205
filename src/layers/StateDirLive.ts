import { Effect, Layer, Option } from "effect"
import { constants as fsConstants } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { StateDirError } from "../domain/errors.js"
import { type CappedReadOptions, StateDir, type StateDirShape, type WriteOptions } from "../services/StateDir.js"
// Layer imports by design: StateDir is built on the durable-file operations.
import { appendDurableFile, createExclusiveFile, fsyncDir, readCappedSync, writeAtomicFile } from "./durableFile.js"

/** The file-system steps an atomic write is made of; tests swap one out to crash at that point. */
export interface FsSteps {
  readonly rename: (from: string, to: string) => Promise<void>
}

const nodeSteps: FsSteps = { rename: (from, to) => fs.rename(from, to) }

/** `CARAPACE_STATE_DIR`, else the platform config dir + `/carapace` (`~/.config/carapace` on Linux). */
export const resolveStateDirPath = (env: NodeJS.ProcessEnv = process.env): string => {
  const explicit = env["CARAPACE_STATE_DIR"]
  if (explicit !== undefined && explicit.trim() !== "") return path.resolve(explicit)
  const xdg = env["XDG_CONFIG_HOME"]
  const configHome = xdg !== undefined && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".config")
  return path.join(configHome, "carapace")
}

const describe = (cause: unknown): string =>
  cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.message) : String(cause)

const ioError = (p: string, what: string) => (cause: unknown) =>
  new StateDirError({
    kind: "state-dir-io",
    path: p,
    message: `${what} ${p} failed (${
      describe(cause)
    }). Check that the state directory is writable by this user and the disk is not full.`
  })

const isNotFound = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code === "ENOENT"

// Creates one directory level, refusing a symlink where a directory should be.
const ensureOne = (dir: string) =>
  Effect.tryPromise({
    try: async () => {
      let st = await fs.lstat(dir).catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e)))
      if (st === undefined) {
        await fs.mkdir(dir, { mode: 0o700 }).catch((e: unknown) =>
          (e as NodeJS.ErrnoException).code === "EEXIST" ? undefined : Promise.reject(e)
        )
        st = await fs.lstat(dir)
      }
      if (st.isSymbolicLink()) return "symlink" as const
      if (!st.isDirectory()) return "not-dir" as const
      if ((st.mode & 0o777) !== 0o700) await fs.chmod(dir, 0o700)
      return "ok" as const
    },
    catch: ioError(dir, "Creating directory")
  }).pipe(
    Effect.flatMap((r) =>
      r === "ok"
        ? Effect.void
        : Effect.fail(
          new StateDirError({
            kind: "state-dir-symlink",
            path: dir,
            message: r === "symlink"
              ? `${dir} is a symbolic link; state subdirectories must be real directories owned by this user. Replace the link with the directory it points to, then start again.`
              : `${dir} exists but is not a directory. Move it out of the way, then start again.`
          })
        )
    )
  )

// The root itself may be a symlink (operators relocate ~/.config); it is created with parents.
const ensureRoot = (absRoot: string) =>
  Effect.tryPromise({
    try: async () => {
      await fs.mkdir(absRoot, { recursive: true, mode: 0o700 })
      const st = await fs.stat(absRoot)
      if (!st.isDirectory()) throw Object.assign(new Error("not a directory"), { code: "ENOTDIR" })
      if ((st.mode & 0o777) !== 0o700) await fs.chmod(absRoot, 0o700)
    },
    catch: ioError(absRoot, "Creating the state directory")
  })

const io = <A>(file: string, what: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: ioError(file, what) })

/** The operations that only read or change a file in place (no directory to create first). */
const fileOps = (resolve: (p: string) => string) => {
  const read = (p: string) =>
    io(resolve(p), "Reading", async () => {
      const handle = await fs.open(resolve(p), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW).catch((e: unknown) =>
        isNotFound(e) ? undefined : Promise.reject(e)
      )
      if (handle === undefined) return Option.none<Uint8Array>()
      try {
        return Option.some(new Uint8Array(await handle.readFile()))
      } finally {
        await handle.close()
      }
    })
  const readText = (p: string) => read(p).pipe(Effect.map(Option.map((b) => Buffer.from(b).toString("utf8"))))
  const readCapped = (p: string, cap: number, options?: CappedReadOptions) =>
    Effect.try({ try: () => readCappedSync(resolve(p), cap, options), catch: ioError(resolve(p), "Reading") })
  const rename = (from: string, to: string, options?: WriteOptions) =>
    io(resolve(to), "Renaming onto", async () => {
      if (options?.mode !== undefined) {
        const handle = await fs.open(
          resolve(from),
          fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK
        )
        try {
          await handle.chmod(options.mode)
        } finally {
          await handle.close()
        }
      }
      await fs.rename(resolve(from), resolve(to))
      await fsyncDir(path.dirname(resolve(to)))
    })
  const remove = (p: string) =>
    io(resolve(p), "Removing", async () => {
      const file = resolve(p)
      const existed = await fs.unlink(file).then(
        () => true,
        (e: unknown) => (isNotFound(e) ? false : Promise.reject(e))
      )
      if (existed) await fsyncDir(path.dirname(file))
      return existed
    })
  const exists = (p: string) =>
    io(
      resolve(p),
      "Checking",
      () => fs.lstat(resolve(p)).then(() => true, (e: unknown) => (isNotFound(e) ? false : Promise.reject(e)))
    )
  const syncDir = (p: string) => io(resolve(p), "Syncing directory", () => fsyncDir(resolve(p)))
  return { read, readText, readCapped, rename, remove, exists, fsyncDir: syncDir }
}

/** Builds the StateDir for `root`, creating it (0700) if needed. */
export const makeStateDir = (root: string, steps: FsSteps = nodeSteps): Effect.Effect<StateDirShape, StateDirError> =>
  Effect.gen(function*() {
    const absRoot = path.resolve(root)
    const resolve = (p: string) => (path.isAbsolute(p) ? p : path.join(absRoot, p))
    yield* ensureRoot(absRoot)

    const ensureDir = (relative: string) =>
      Effect.gen(function*() {
        const target = resolve(relative)
        const rel = path.relative(absRoot, target)
        if (rel === "") return absRoot
        if (rel.startsWith("..") || path.isAbsolute(rel)) {
          yield* ensureOne(target)
          return target
        }
        let current = absRoot
        for (const segment of rel.split(path.sep)) {
          current = path.join(current, segment)
          yield* ensureOne(current)
        }
        return target
      })

    // The parent of a file under the state dir is created (0700) first; one elsewhere must exist.
    const withParent = <A>(p: string, what: string, f: (file: string) => Promise<A>) =>
      Effect.gen(function*() {
        const file = resolve(p)
        const dir = path.dirname(file)
        const rel = path.relative(absRoot, dir)
        if (!(rel.startsWith("..") || path.isAbsolute(rel))) yield* ensureDir(dir)
        return yield* io(file, what, () => f(file))
      })

    const writeAtomic = (p: string, data: string | Uint8Array, options?: WriteOptions) =>
      withParent(p, "Writing", (file) => writeAtomicFile(file, data, options?.mode ?? 0o600, steps.rename))
    const createExclusive = (p: string, data: string | Uint8Array, options?: WriteOptions) =>
      withParent(p, "Creating", (file) => createExclusiveFile(file, data, options?.mode ?? 0o600))
    const append = (p: string, text: string) => withParent(p, "Appending to", (file) => appendDurableFile(file, text))

    return {
      root: absRoot,
      resolve,
      ensureDir,
      writeAtomic,
      createExclusive,
      append,
      ...fileOps(resolve)
    } satisfies StateDirShape
  })

/** The StateDir at `CARAPACE_STATE_DIR` or the platform default. */
export const StateDirLive = Layer.effect(StateDir, Effect.suspend(() => makeStateDir(resolveStateDirPath())))

/** A StateDir rooted at an explicit path (tests, `--state-dir`). */
export const StateDirAt = (root: string) => Layer.effect(StateDir, makeStateDir(root))
