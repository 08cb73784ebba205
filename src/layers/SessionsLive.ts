import * as fs from "node:fs/promises"
import { lstatSync } from "node:fs"
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Clock, Effect, Layer, Option } from "effect"
import type { ChatRole } from "../domain/agent.js"
import { StateDir } from "../services/StateDir.js"
import { corruptHistoryMessage } from "../domain/stateFiles.js"
import { type NewMessage, Sessions, type SessionsShape, SessionStoreError, type StoredMessage } from "../services/Sessions.js"
import { createSqliteAtomically, inspectSqlite, missingTables } from "./sqliteState.js"

/** The project's SQLite database, relative to the state dir. */
export const DATABASE_FILE = "carapace.sqlite"

const storeError = (what: string) => (cause: SqlError | unknown) =>
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
    created_at INTEGER NOT NULL
  )`

/** Why an existing `carapace.sqlite` is not the history database, or undefined (read-only look). */
export const inspectHistoryFile = (file: string) => inspectSqlite(file, (db) => missingTables(db, ["agent_messages"]))

/**
 * `{state_dir}/carapace.sqlite` as an SqlClient, mode 0600 including `-wal` / `-shm` (SQLite gives its WAL
 * files the mode of the database file). A new file is created complete (atomically, with its table), so an
 * existing one that is empty, truncated, not SQLite or without the table is damage: `session-history-corrupt`,
 * and the file is left as it is.
 */
export const CaraSqliteLive: Layer.Layer<SqliteClient.SqliteClient | SqlClient.SqlClient, SessionStoreError, StateDir> =
  Layer.unwrapEffect(
    Effect.gen(function*() {
      const stateDir = yield* StateDir
      const file = stateDir.resolve(DATABASE_FILE)
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
        return yield* new SessionStoreError({ kind: "session-history-corrupt", message: corruptHistoryMessage(file, look.reason) })
      }
      return SqliteClient.layer({ filename: file }).pipe(
        Layer.tap(() => tightenModes(file)),
        Layer.orDie
      )
    })
  )

interface Row {
  readonly id: number
  readonly room_id: string
  readonly role: string
  readonly content: string
  readonly sender_id: string | null
  readonly sender_name: string | null
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
  eventId: r.event_id ?? undefined,
  replyTo: r.reply_to ?? undefined,
  agent: r.agent ?? undefined,
  model: r.model ?? undefined,
  createdAt: r.created_at
})

/** Sessions over any SqlClient (the daemon shares one database file between subsystems). */
export const makeSessions = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient

  yield* sql.unsafe(AGENT_MESSAGES_TABLE).pipe(Effect.mapError(storeError("Creating the agent history table")))
  yield* sql`CREATE INDEX IF NOT EXISTS agent_messages_room ON agent_messages (room_id, id)`.pipe(
    Effect.mapError(storeError("Creating the agent history index"))
  )
  yield* sql`CREATE UNIQUE INDEX IF NOT EXISTS agent_messages_event ON agent_messages (room_id, event_id)
    WHERE event_id IS NOT NULL`.pipe(Effect.mapError(storeError("Creating the agent history index")))
  yield* sql`CREATE UNIQUE INDEX IF NOT EXISTS agent_messages_reply ON agent_messages (room_id, reply_to)
    WHERE reply_to IS NOT NULL`.pipe(Effect.mapError(storeError("Creating the agent history index")))

  const append = (roomId: string, m: NewMessage) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const inserted = yield* sql<Row>`INSERT OR IGNORE INTO agent_messages
        (room_id, role, content, sender_id, sender_name, event_id, reply_to, agent, model, created_at)
        VALUES (${roomId}, ${m.role}, ${m.content}, ${m.senderId ?? null}, ${m.senderName ?? null},
          ${m.eventId ?? null}, ${m.replyTo ?? null}, ${m.agent ?? null}, ${m.model ?? null}, ${now})
        RETURNING *`
      const row = inserted[0]
      if (row !== undefined) return toStored(row)
      // Ignored: the event (or the answer to it) is already stored; hand back that row.
      const existing = m.eventId !== undefined
        ? yield* sql<Row>`SELECT * FROM agent_messages WHERE room_id = ${roomId} AND event_id = ${m.eventId}`
        : yield* sql<Row>`SELECT * FROM agent_messages WHERE room_id = ${roomId} AND reply_to = ${m.replyTo ?? null}`
      const found = existing[0]
      if (found === undefined) return yield* Effect.dieMessage("agent_messages insert ignored without a conflicting row")
      return toStored(found)
    }).pipe(Effect.mapError(storeError("Saving a message to the agent history")), Effect.withSpan("Sessions.append"))

  const history = (roomId: string, limit: number) =>
    sql<Row>`SELECT * FROM (
        SELECT * FROM agent_messages WHERE room_id = ${roomId} ORDER BY id DESC LIMIT ${Math.max(0, Math.floor(limit))}
      ) ORDER BY id ASC`.pipe(
      Effect.map((rows) => rows.map(toStored)),
      Effect.mapError(storeError("Reading the agent history"))
    )

  const replyTo = (roomId: string, eventId: string) =>
    sql<Row>`SELECT * FROM agent_messages WHERE room_id = ${roomId} AND reply_to = ${eventId}`.pipe(
      Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toStored)),
      Effect.mapError(storeError("Reading the agent history"))
    )

  const reset = (roomId: string) =>
    sql<{ readonly n: number }>`SELECT COUNT(*) AS n FROM agent_messages WHERE room_id = ${roomId}`.pipe(
      Effect.zipLeft(sql`DELETE FROM agent_messages WHERE room_id = ${roomId}`),
      sql.withTransaction,
      Effect.map((rows) => rows[0]?.n ?? 0),
      Effect.mapError(storeError("Resetting the agent history"))
    )

  return { append, history, replyTo, reset } satisfies SessionsShape
})

/** Sessions over an SqlClient provided by the caller. */
export const SessionsFromSql: Layer.Layer<Sessions, SessionStoreError, SqlClient.SqlClient> = Layer.effect(
  Sessions,
  makeSessions
)

/** Sessions in `{state_dir}/carapace.sqlite`. */
export const SessionsLive: Layer.Layer<Sessions, SessionStoreError, StateDir> = SessionsFromSql.pipe(
  Layer.provide(CaraSqliteLive)
)
