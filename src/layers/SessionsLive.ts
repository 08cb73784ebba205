import { Clock, Effect, Layer, Option } from "effect"
import { lstatSync } from "node:fs"
import * as fs from "node:fs/promises"
import { DatabaseSync } from "node:sqlite"
import type { ChatRole } from "../domain/agent.js"
import { corruptHistoryMessage } from "../domain/stateFiles.js"
import {
  type NewMessage,
  Sessions,
  type SessionsShape,
  SessionStoreError,
  type StoredMessage
} from "../services/Sessions.js"
import { StateDir } from "../services/StateDir.js"
// Layer imports by design: the SQLite helpers shared by the stores.
import { createSqliteAtomically, inspectSqlite, missingTables } from "./sqliteState.js"

/** The project's SQLite database, relative to the state dir. */
export const DATABASE_FILE = "carapace.sqlite"

const storeError = (what: string) => (cause: unknown) =>
  new SessionStoreError({
    kind: "agent-history-io",
    message: `${what} failed (${
      cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.cause ?? cause.message) : String(cause)
    }). Check that ${DATABASE_FILE} in the state directory is writable and the disk is not full.`
  })

/** Forces 0600 on the database and its WAL companions (they may predate us or come from another umask). */
const tightenModes = (file: string) =>
  Effect.promise(() =>
    Promise.all(
      [file, `${file}-wal`, `${file}-shm`, `${file}-journal`].map((f) => fs.chmod(f, 0o600).catch(() => undefined))
    )
  )

// IF NOT EXISTS rather than a migrator: other subsystems share the database and its migration table.
const AGENT_MESSAGES_TABLE = `CREATE TABLE IF NOT EXISTS agent_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    sender_id TEXT,
    sender_name TEXT,
    event_id TEXT,
    reply_to TEXT,
    agent TEXT,
    model TEXT,
    created_at INTEGER NOT NULL,
    sender_label TEXT,
    thread_id TEXT
  )`

/**
 * Columns added after the table's first version, with their type: a database from before gains them (NULL
 * in the existing rows: no label, the room's main timeline, which is what those rows are).
 */
const ADDED_COLUMNS: ReadonlyArray<readonly [string, string]> = [["sender_label", "TEXT"], ["thread_id", "TEXT"]]

const addMissingColumns = (db: DatabaseSync) => {
  const have = new Set(
    (db.prepare("PRAGMA table_info(agent_messages)").all() as Array<{ name: string }>).map((c) => c.name)
  )
  for (const [name, type] of ADDED_COLUMNS) {
    if (!have.has(name)) db.exec(`ALTER TABLE agent_messages ADD COLUMN ${name} ${type}`)
  }
}

/** Why an existing `carapace.sqlite` is not the history database, or undefined (read-only look). */
export const inspectHistoryFile = (file: string) => inspectSqlite(file, (db) => missingTables(db, ["agent_messages"]))

/**
 * Opens `{state_dir}/carapace.sqlite`, mode 0600 including `-wal` / `-shm` (SQLite gives its WAL files the
 * mode of the database file). A new file is created complete (atomically, with its table), so an existing
 * one that is empty, truncated, not SQLite or without the table is damage: `session-history-corrupt`, and
 * the file is left as it is. node:sqlite (built into Node 24), not a native addon: nothing to rebuild for
 * the Node that runs cara.
 */
const openHistoryDatabase = Effect.fn("Sessions.open")(function*(file: string) {
  const look = yield* Effect.try({
    try: () => {
      // lstat, not exists: a planted symlink is not "absent" (and is refused below)
      const absent = (() => {
        try {
          lstatSync(file)
          return false
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") return true
          throw e
        }
      })()
      if (absent) createSqliteAtomically(file, (db) => db.exec(AGENT_MESSAGES_TABLE))
      return inspectHistoryFile(file)
    },
    catch: storeError(`Opening ${file}`)
  })
  if (look.state === "bad") {
    return yield* new SessionStoreError({
      kind: "session-history-corrupt",
      message: corruptHistoryMessage(file, look.reason)
    })
  }
  const db = yield* Effect.acquireRelease(
    Effect.try({
      try: () => {
        const db = new DatabaseSync(file)
        try {
          db.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")
        } catch (e) {
          db.close()
          throw e
        }
        return db
      },
      catch: storeError(`Opening ${file}`)
    }),
    (db) => Effect.sync(() => db.close())
  )
  yield* tightenModes(file)
  return db
})

interface Row {
  readonly id: number
  readonly room_id: string
  readonly role: string
  readonly content: string
  readonly sender_id: string | null
  readonly sender_name: string | null
  readonly sender_label: string | null
  readonly thread_id: string | null
  readonly event_id: string | null
  readonly reply_to: string | null
  readonly agent: string | null
  readonly model: string | null
  readonly created_at: number
}

const toStored = (r: Row): StoredMessage => ({
  id: r.id,
  roomId: r.room_id,
  role: r.role as ChatRole,
  content: r.content,
  senderId: r.sender_id ?? undefined,
  senderName: r.sender_name ?? undefined,
  senderLabel: r.sender_label ?? undefined,
  threadId: r.thread_id ?? undefined,
  eventId: r.event_id ?? undefined,
  replyTo: r.reply_to ?? undefined,
  agent: r.agent ?? undefined,
  model: r.model ?? undefined,
  createdAt: r.created_at
})

const HISTORY_INDEXES = `
  CREATE INDEX IF NOT EXISTS agent_messages_room ON agent_messages (room_id, id);
  CREATE INDEX IF NOT EXISTS agent_messages_conversation ON agent_messages (room_id, thread_id, id);
  CREATE UNIQUE INDEX IF NOT EXISTS agent_messages_event ON agent_messages (room_id, event_id)
    WHERE event_id IS NOT NULL;
  CREATE UNIQUE INDEX IF NOT EXISTS agent_messages_reply ON agent_messages (room_id, reply_to)
    WHERE reply_to IS NOT NULL;`

const prepareStatements = (db: DatabaseSync) => ({
  insert: db.prepare(`INSERT OR IGNORE INTO agent_messages
    (room_id, role, content, sender_id, sender_name, event_id, reply_to, agent, model, created_at, sender_label,
     thread_id)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *`),
  byEvent: db.prepare("SELECT * FROM agent_messages WHERE room_id = ? AND event_id = ?"),
  byReply: db.prepare("SELECT * FROM agent_messages WHERE room_id = ? AND reply_to = ?"),
  history: db.prepare(`SELECT * FROM (
      SELECT * FROM agent_messages WHERE room_id = ? AND thread_id IS ? ORDER BY id DESC LIMIT ?
    ) ORDER BY id ASC`),
  count: db.prepare("SELECT COUNT(*) AS n FROM agent_messages WHERE room_id = ? AND thread_id IS ?"),
  remove: db.prepare("DELETE FROM agent_messages WHERE room_id = ? AND thread_id IS ?")
})

/** Sessions over an open history database (the caller owns its lifetime). */
export const makeSessions = Effect.fn("Sessions.make")(function*(db: DatabaseSync) {
  // IF NOT EXISTS: a database from before an index gains it here
  const q = yield* Effect.try({
    try: () => {
      db.exec(AGENT_MESSAGES_TABLE)
      addMissingColumns(db)
      db.exec(HISTORY_INDEXES)
      return prepareStatements(db)
    },
    catch: storeError("Creating the agent history table")
  })
  // node:sqlite is synchronous: each operation below runs whole, with no other statement in between.
  const run = <A>(what: string, f: () => A) => Effect.try({ try: f, catch: storeError(what) })

  const append = (roomId: string, m: NewMessage) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      run("Saving a message to the agent history", () => {
        const inserted = q.insert.get(
          roomId,
          m.role,
          m.content,
          m.senderId ?? null,
          m.senderName ?? null,
          m.eventId ?? null,
          m.replyTo ?? null,
          m.agent ?? null,
          m.model ?? null,
          now,
          m.senderLabel ?? null,
          m.threadId ?? null
        ) as Row | undefined
        if (inserted !== undefined) return inserted
        // Ignored: the event (or the answer to it) is already stored; hand back that row.
        return (m.eventId !== undefined
          ? q.byEvent.get(roomId, m.eventId)
          : q.byReply.get(roomId, m.replyTo ?? null)) as
            | Row
            | undefined
      })).pipe(
        Effect.flatMap((row) =>
          row === undefined
            ? Effect.dieMessage("agent_messages insert ignored without a conflicting row")
            : Effect.succeed(toStored(row))
        ),
        Effect.withSpan("Sessions.append")
      )

  const history = (roomId: string, limit: number, threadId?: string) =>
    run(
      "Reading the agent history",
      () =>
        (q.history.all(roomId, threadId ?? null, Math.max(0, Math.floor(limit))) as unknown as Array<Row>).map(
          toStored
        )
    )

  const replyTo = (roomId: string, eventId: string) =>
    run(
      "Reading the agent history",
      () => Option.map(Option.fromNullable(q.byReply.get(roomId, eventId) as Row | undefined), toStored)
    )

  const reset = (roomId: string, threadId?: string) =>
    run("Resetting the agent history", () => {
      db.exec("BEGIN IMMEDIATE")
      try {
        const n = (q.count.get(roomId, threadId ?? null) as { n: number } | undefined)?.n ?? 0
        q.remove.run(roomId, threadId ?? null)
        db.exec("COMMIT")
        return n
      } catch (e) {
        if (db.isTransaction) db.exec("ROLLBACK")
        throw e
      }
    })

  return { append, history, replyTo, reset } satisfies SessionsShape
})

/** Sessions in `{state_dir}/carapace.sqlite`; the database closes with the layer's scope. */
export const SessionsLive: Layer.Layer<Sessions, SessionStoreError, StateDir> = Layer.scoped(
  Sessions,
  Effect.gen(function*() {
    const stateDir = yield* StateDir
    const db = yield* openHistoryDatabase(stateDir.resolve(DATABASE_FILE))
    return yield* makeSessions(db)
  })
)
