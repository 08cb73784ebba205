// The durable-file primitives of the project, in one place: directory fsync, atomic replace, exclusive
// create, durable append and a capped read. `StateDirLive` wraps them as `StateDir` operations; the few
// synchronous callers (probes that run outside an Effect) use `readCappedSync` directly. Promise-based and
// free of Effect so the crash tests can drive them step by step.
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import type { CappedReadOptions, CappedResult } from "../services/StateDir.js"

const codeOf = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code

/** fsyncs a directory, so a rename, link, create or unlink in it survives a power cut. */
export const fsyncDir = async (dir: string): Promise<void> => {
  const handle = await fs.open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY)
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

let tempCounter = 0

/** A fresh temp name beside `file` (same directory, so a rename or link of it stays on one file system). */
export const tempPathFor = (file: string, infix = "tmp"): string =>
  path.join(path.dirname(file), `.${path.basename(file)}.${infix}.${process.pid}.${++tempCounter}`)

/** Writes `data` to a new temp file beside `file` (O_EXCL, `mode`, fsync'd) and returns its path. */
export const writeTempFile = async (file: string, data: string | Uint8Array, mode: number): Promise<string> => {
  const temp = tempPathFor(file)
  const handle = await fs.open(
    temp,
    fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW,
    mode
  )
  try {
    await handle.writeFile(data)
    await handle.chmod(mode)
    await handle.sync()
  } catch (e) {
    await handle.close().catch(() => undefined)
    await fs.rm(temp, { force: true }).catch(() => undefined)
    throw e
  }
  await handle.close()
  return temp
}

/** The rename step of an atomic replace; tests swap it to crash between the temp write and the rename. */
export type Rename = (from: string, to: string) => Promise<void>

/** Replaces `file` atomically: temp + fsync + rename + directory fsync. The temp is removed on failure. */
export const writeAtomicFile = async (
  file: string,
  data: string | Uint8Array,
  mode: number,
  rename: Rename = (from, to) => fs.rename(from, to)
): Promise<void> => {
  const temp = await writeTempFile(file, data, mode)
  try {
    await rename(temp, file)
  } catch (e) {
    await fs.rm(temp, { force: true }).catch(() => undefined)
    throw e
  }
  await fsyncDir(path.dirname(file))
}

/**
 * Creates `file` only if it does not exist: temp + fsync + hard link (which never replaces) + directory
 * fsync, so racing creators converge on the first one linked. `"exists"` when another file was there.
 */
export const createExclusiveFile = async (
  file: string,
  data: string | Uint8Array,
  mode: number
): Promise<"created" | "exists"> => {
  const temp = await writeTempFile(file, data, mode)
  try {
    await fs.link(temp, file)
  } catch (e) {
    if (codeOf(e) === "EEXIST") return "exists"
    throw e
  } finally {
    await fs.rm(temp, { force: true }).catch(() => undefined)
  }
  await fsyncDir(path.dirname(file))
  return "created"
}

/**
 * Appends `text` (whole lines) and fsyncs; the file is 0600 (a widened mode is reset), never followed
 * through a symlink, and its directory is fsync'd when the append created it. A line a crash left without
 * its newline is closed first, so the next line is never glued onto it.
 */
export const appendDurableFile = async (file: string, text: string): Promise<void> => {
  const handle = await fs.open(
    file,
    fsConstants.O_RDWR | fsConstants.O_APPEND | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW,
    0o600
  )
  let created = false
  try {
    const st = await handle.stat()
    created = st.size === 0
    if ((st.mode & 0o777) !== 0o600) await handle.chmod(0o600)
    let prefix = ""
    if (st.size > 0) {
      const last = Buffer.alloc(1)
      await handle.read(last, 0, 1, st.size - 1)
      if (last[0] !== 0x0a) prefix = "\n"
    }
    await handle.write(prefix + text)
    await handle.sync()
  } finally {
    await handle.close()
  }
  if (created) await fsyncDir(path.dirname(file))
}

/**
 * Reads at most `cap` bytes of a regular file as UTF-8, without blocking on a FIFO (O_NONBLOCK) and never
 * trusting the stat'd size alone. Synchronous (small files; also used by probes outside an Effect); an
 * I/O error other than ENOENT/ELOOP is thrown.
 */
export const readCappedSync = (file: string, cap: number, options?: CappedReadOptions): CappedResult => {
  let fd: number
  try {
    const nofollow = options?.followSymlink === true ? 0 : fsConstants.O_NOFOLLOW
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | nofollow)
  } catch (e) {
    if (codeOf(e) === "ENOENT") return { state: "absent" }
    if (codeOf(e) === "ELOOP") return { state: "refused", reason: "symlink" }
    throw e
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) return { state: "refused", reason: "not-file" }
    if (st.size > cap) return { state: "refused", reason: "too-large", size: st.size }
    const buf = Buffer.alloc(cap + 1)
    let n = 0
    for (;;) {
      const r = readSync(fd, buf, n, buf.length - n, n)
      if (r === 0) break
      n += r
      if (n > cap) return { state: "refused", reason: "too-large" }
    }
    return { state: "ok", text: buf.subarray(0, n).toString("utf8") }
  } finally {
    closeSync(fd)
  }
}
