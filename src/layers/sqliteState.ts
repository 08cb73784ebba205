// The two things every SQLite state file of the daemon needs (the Matrix stores, the inbound ledger,
// carapace.sqlite): creation that is atomic, and a look at an existing file that never writes to it.
//
// Creation: the database is built complete (schema and first rows) under a temporary name, closed (so no
// WAL is left), fsynced, hard-linked into place (a link never replaces a file that appeared meanwhile) and
// the directory fsynced. A crash at any point leaves either no file or a complete one, never an empty
// file that would later pass for "new" — so an existing file that is empty or has no schema is damage,
// and the daemon refuses it instead of building a new store over it.
import * as fs from "node:fs"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"

const codeOf = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code
const errText = (e: unknown) => (e instanceof Error ? (codeOf(e) ?? e.message) : String(e))

const TEMP_INFIX = ".creating."
let tempCounter = 0

const fsyncPath = (p: string, flags: number) => {
  const fd = fs.openSync(p, flags)
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return codeOf(e) === "EPERM"
  }
}

/** Removes the temporaries of creations that a dead process left behind (a crash mid-creation). */
const removeStaleTemps = (file: string) => {
  const dir = path.dirname(file)
  const prefix = `.${path.basename(file)}${TEMP_INFIX}`
  let names: Array<string>
  try {
    names = fs.readdirSync(dir)
  } catch {
    return
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue
    const pid = Number(name.slice(prefix.length).split(".")[0])
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !alive(pid)) {
      fs.rmSync(path.join(dir, name), { force: true })
    }
  }
}

/**
 * Creates `file` as a complete SQLite database: `init` runs in one transaction on a temporary file, which
 * is linked into place only once it is durable. Returns false (and leaves the existing file alone) when
 * `file` appeared meanwhile. Mode 0600.
 */
export const createSqliteAtomically = (file: string, init: (db: DatabaseSync) => void): boolean => {
  removeStaleTemps(file)
  const temp = path.join(path.dirname(file), `.${path.basename(file)}${TEMP_INFIX}${process.pid}.${++tempCounter}`)
  const cleanup = () => {
    for (const f of [temp, `${temp}-journal`, `${temp}-wal`, `${temp}-shm`]) fs.rmSync(f, { force: true })
  }
  try {
    fs.closeSync(
      fs.openSync(
        temp,
        fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
        0o600
      )
    )
    const db = new DatabaseSync(temp)
    try {
      db.exec("PRAGMA synchronous = FULL")
      db.exec("BEGIN IMMEDIATE")
      try {
        init(db)
        db.exec("COMMIT")
      } catch (e) {
        if (db.isTransaction) db.exec("ROLLBACK")
        throw e
      }
    } finally {
      db.close()
    }
    fsyncPath(temp, fs.constants.O_RDONLY)
    try {
      fs.linkSync(temp, file)
    } catch (e) {
      if (codeOf(e) === "EEXIST") return false
      throw e
    }
    fsyncPath(path.dirname(file), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    return true
  } finally {
    cleanup()
  }
}

export type SqliteInspection =
  | { readonly state: "absent" }
  | { readonly state: "ok" }
  /** Another connection holds the file (a running daemon): nothing can be said about it now. */
  | { readonly state: "busy" }
  | { readonly state: "bad"; readonly reason: string }

const isBusy = (e: unknown) => {
  const err = e as { errcode?: number; message?: string } | undefined
  return err?.errcode === 5 || err?.errcode === 6 || /database is locked/i.test(err?.message ?? "")
}

/** The names of the tables in `db`. */
export const tablesOf = (db: DatabaseSync): ReadonlySet<string> =>
  new Set(
    (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as Array<{ name: string }>).map((r) =>
      r.name
    )
  )

/** The reason for a file with none of `required`, or with only some of them. */
export const missingTables = (db: DatabaseSync, required: ReadonlyArray<string>): string | undefined => {
  const tables = tablesOf(db)
  if (tables.size === 0) return "it holds no tables (an empty database)"
  const missing = required.filter((t) => !tables.has(t))
  return missing.length === 0 ? undefined : `it lacks the table${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`
}

/**
 * Looks at an existing state file without writing to it: a regular file, non-empty, an SQLite database
 * (the header's page count matches the file, so a truncated file is caught), and `validate` (the expected
 * tables and rows) returns no reason. A file in WAL mode may be read back from its WAL; that is all.
 */
export const inspectSqlite = (file: string, validate: (db: DatabaseSync) => string | undefined): SqliteInspection => {
  let st: fs.Stats
  try {
    st = fs.lstatSync(file)
  } catch (e) {
    if (codeOf(e) === "ENOENT") return { state: "absent" }
    return { state: "bad", reason: `it cannot be examined (${errText(e)})` }
  }
  if (st.isSymbolicLink()) return { state: "bad", reason: "it is a symbolic link, not a regular file" }
  if (!st.isFile()) return { state: "bad", reason: "it is not a regular file" }
  const wal = (() => {
    try {
      return fs.statSync(`${file}-wal`).size
    } catch {
      return 0
    }
  })()
  if (st.size === 0 && wal === 0) return { state: "bad", reason: "it is empty (0 bytes)" }
  // the smallest SQLite page is 512 bytes, and a database file is whole pages
  if (st.size > 0 && st.size < 512 && wal === 0) {
    return {
      state: "bad",
      reason: `it is ${st.size} byte${st.size === 1 ? "" : "s"}, too short to be an SQLite database (truncated)`
    }
  }
  let db: DatabaseSync | undefined
  try {
    db = new DatabaseSync(file, { timeout: 0 })
    const reason = validate(db)
    return reason === undefined ? { state: "ok" } : { state: "bad", reason }
  } catch (e) {
    if (isBusy(e)) return { state: "busy" }
    const errcode = (e as { errcode?: number }).errcode
    if (errcode === 26) return { state: "bad", reason: "it is not an SQLite database" }
    if (errcode === 11) return { state: "bad", reason: "SQLite reports it as damaged or truncated" }
    return { state: "bad", reason: `it cannot be read as an SQLite database (${(e as Error).message ?? errText(e)})` }
  } finally {
    try {
      db?.close()
    } catch {
      // a failed look has nothing to flush
    }
  }
}
