// V8's compiled code of the files `cara` loads, cached on disk between runs (Node's module compile cache), so a
// command does not re-parse and re-compile the same ~2 MB of JavaScript each time it starts (docs/benchmarks.md,
// cli-wall). The cache holds compiled public code, nothing secret, but code it holds runs in cara: it lives in a
// directory only this user can write (the user's cache directory, 0700, owned by us) or is not used at all.
import * as fs from "node:fs"
import * as module from "node:module"
import * as os from "node:os"
import * as path from "node:path"

/**
 * Where the cache goes: `CARA_COMPILE_CACHE` (a directory, or `off`), else `$XDG_CACHE_HOME/cara/compile-cache`,
 * else `~/.cache/cara/compile-cache`; `undefined` when it is switched off or there is no home directory.
 */
export const compileCacheDir = (env: NodeJS.ProcessEnv, home: string): string | undefined => {
  const set = env["CARA_COMPILE_CACHE"]
  if (set !== undefined && set !== "") return set === "off" ? undefined : path.resolve(set)
  const base = env["XDG_CACHE_HOME"] !== undefined && path.isAbsolute(env["XDG_CACHE_HOME"])
    ? env["XDG_CACHE_HOME"]
    : home === ""
    ? undefined
    : path.join(home, ".cache")
  return base === undefined ? undefined : path.join(base, "cara", "compile-cache")
}

/** A directory no one else can write: ours, not a symlink, no group or other write bit. */
export const isPrivateDir = (dir: string, uid: number): boolean => {
  try {
    const st = fs.lstatSync(dir)
    return st.isDirectory() && st.uid === uid && (st.mode & 0o022) === 0
  } catch {
    return false
  }
}

/** Turns the cache on where it is safe; any problem (read-only home, foreign owner) leaves it off, silently. */
export const enableCompileCache = (env: NodeJS.ProcessEnv = process.env): void => {
  const dir = compileCacheDir(env, os.homedir())
  if (dir === undefined || typeof module.enableCompileCache !== "function" || process.getuid === undefined) return
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  } catch {
    return
  }
  if (isPrivateDir(dir, process.getuid())) module.enableCompileCache(dir)
}
