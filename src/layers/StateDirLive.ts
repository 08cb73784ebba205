import * as fs from "node:fs/promises"
import { constants as fsConstants } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Layer, Option } from "effect"
import { StateDirError } from "../domain/errors.js"
import { StateDir, type StateDirShape, type WriteOptions } from "../services/StateDir.js"

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
    message: `${what} ${p} failed (${describe(cause)}). Check that the state directory is writable by this user and the disk is not full.`
  })

const isNotFound = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code === "ENOENT"

let tempCounter = 0

const fsyncDir = async (dir: string) => {
  const handle = await fs.open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY)
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** Builds the StateDir for `root`, creating it (0700) if needed. */
export const makeStateDir = (root: string, steps: FsSteps = nodeSteps): Effect.Effect<StateDirShape, StateDirError> =>
  Effect.gen(function*() {
    const absRoot = path.resolve(root)

    const resolve = (p: string) => (path.isAbsolute(p) ? p : path.join(absRoot, p))

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
    yield* Effect.tryPromise({
      try: async () => {
        await fs.mkdir(absRoot, { recursive: true, mode: 0o700 })
        const st = await fs.stat(absRoot)
        if (!st.isDirectory()) throw Object.assign(new Error("not a directory"), { code: "ENOTDIR" })
        if ((st.mode & 0o777) !== 0o700) await fs.chmod(absRoot, 0o700)
      },
      catch: ioError(absRoot, "Creating the state directory")
    })

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

    const parentOf = (file: string) => {
      const dir = path.dirname(file)
      const rel = path.relative(absRoot, dir)
      return rel.startsWith("..") || path.isAbsolute(rel) ? Effect.succeed(dir) : ensureDir(dir)
    }

    const writeAtomic = (p: string, data: string | Uint8Array, options?: WriteOptions) =>
      Effect.gen(function*() {
        const file = resolve(p)
        const dir = yield* parentOf(file)
        const mode = options?.mode ?? 0o600
        const temp = path.join(dir, `.${path.basename(file)}.tmp.${process.pid}.${++tempCounter}`)
        yield* Effect.tryPromise({
          try: async () => {
            const handle = await fs.open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, mode)
            try {
              await handle.writeFile(data)
              await handle.chmod(mode)
              await handle.sync()
            } finally {
              await handle.close()
            }
            await steps.rename(temp, file)
            await fsyncDir(dir)
          },
          catch: ioError(file, "Writing")
        }).pipe(Effect.tapError(() => Effect.promise(() => fs.rm(temp, { force: true }).catch(() => undefined))))
      })

    const read = (p: string) =>
      Effect.tryPromise({
        try: async () => {
          const file = resolve(p)
          const handle = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW).catch((e: unknown) =>
            isNotFound(e) ? undefined : Promise.reject(e)
          )
          if (handle === undefined) return Option.none<Uint8Array>()
          try {
            return Option.some(new Uint8Array(await handle.readFile()))
          } finally {
            await handle.close()
          }
        },
        catch: ioError(resolve(p), "Reading")
      })

    const readText = (p: string) => read(p).pipe(Effect.map(Option.map((b) => Buffer.from(b).toString("utf8"))))

    const remove = (p: string) =>
      Effect.tryPromise({
        try: async () => {
          const file = resolve(p)
          await fs.rm(file, { force: true })
          await fsyncDir(path.dirname(file))
        },
        catch: ioError(resolve(p), "Removing")
      })

    const exists = (p: string) =>
      Effect.tryPromise({
        try: () => fs.lstat(resolve(p)).then(() => true, (e: unknown) => (isNotFound(e) ? false : Promise.reject(e))),
        catch: ioError(resolve(p), "Checking")
      })

    return { root: absRoot, resolve, ensureDir, writeAtomic, read, readText, remove, exists } satisfies StateDirShape
  })

/** The StateDir at `CARAPACE_STATE_DIR` or the platform default. */
export const StateDirLive = Layer.effect(StateDir, Effect.suspend(() => makeStateDir(resolveStateDirPath())))

/** A StateDir rooted at an explicit path (tests, `--state-dir`). */
export const StateDirAt = (root: string) => Layer.effect(StateDir, makeStateDir(root))
