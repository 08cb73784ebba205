import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { DATABASE_FILE, SessionsLive } from "../../src/layers/SessionsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { Sessions } from "../../src/services/Sessions.js"
import { scopedTmpDir } from "../support/tmp.js"

const tempDir = scopedTmpDir("cara-sessions-")

/** Runs `body` with Sessions over `{dir}/carapace.sqlite`, closing the database afterwards. */
const withSessions = <A, E>(dir: string, body: Effect.Effect<A, E, Sessions>) =>
  Effect.scoped(Effect.provide(body, SessionsLive.pipe(Layer.provide(StateDirAt(dir)))))

const mode = (file: string) => Effect.promise(() => fs.stat(file).then((s) => s.mode & 0o777))

describe("SessionsLive", () => {
  it.scopedLive("stores carapace.sqlite and its WAL files with mode 0600", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const db = path.join(dir, DATABASE_FILE)
      yield* withSessions(
        dir,
        Effect.gen(function*() {
          const sessions = yield* Sessions
          yield* sessions.append("!a:hs", { role: "user", content: "hello", eventId: "$1" })
          const files = yield* Effect.promise(() => fs.readdir(dir))
          expect(files).toContain(DATABASE_FILE)
          expect(files).toContain(`${DATABASE_FILE}-wal`)
          for (const f of files.filter((f) => f.startsWith(DATABASE_FILE))) {
            expect(yield* mode(path.join(dir, f))).toBe(0o600)
          }
        })
      )
      expect(yield* mode(db)).toBe(0o600)
    }))

  it.scopedLive("tightens a database file that was created with a loose mode", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const db = path.join(dir, DATABASE_FILE)
      // a real history file (an empty one would be refused as damaged), loosened afterwards
      yield* withSessions(
        dir,
        Effect.flatMap(Sessions, (s) => s.append("!a:hs", { role: "user", content: "x", eventId: "$x" }))
      )
      yield* Effect.promise(() => fs.chmod(db, 0o644))
      expect((yield* withSessions(dir, Effect.flatMap(Sessions, (s) => s.history("!a:hs", 10)))).length).toBe(1)
      expect(yield* mode(db)).toBe(0o600)
    }))

  it.scopedLive("returns history in order, newest N, per room, and survives a reopen", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      yield* withSessions(
        dir,
        Effect.gen(function*() {
          const sessions = yield* Sessions
          for (let i = 1; i <= 5; i++) {
            yield* sessions.append("!a:hs", { role: "user", content: `q${i}`, eventId: `$q${i}`, senderId: "@u:hs" })
            yield* sessions.append("!a:hs", { role: "assistant", content: `a${i}`, replyTo: `$q${i}` })
          }
          yield* sessions.append("!b:hs", { role: "user", content: "other room", eventId: "$b1" })
        })
      )
      yield* withSessions(
        dir,
        Effect.gen(function*() {
          const sessions = yield* Sessions
          const last3 = yield* sessions.history("!a:hs", 3)
          expect(last3.map((m) => m.content)).toEqual(["a4", "q5", "a5"])
          const all = yield* sessions.history("!a:hs", 100)
          expect(all).toHaveLength(10)
          expect(all[0]).toMatchObject({ role: "user", content: "q1", senderId: "@u:hs", eventId: "$q1" })
          expect((yield* sessions.history("!b:hs", 100)).map((m) => m.content)).toEqual(["other room"])
        })
      )
    }))

  it.scopedLive("appending the same event or a second answer to it does not add rows", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      yield* withSessions(
        dir,
        Effect.gen(function*() {
          const sessions = yield* Sessions
          const first = yield* sessions.append("!a:hs", { role: "user", content: "hi", eventId: "$e" })
          const again = yield* sessions.append("!a:hs", { role: "user", content: "hi", eventId: "$e" })
          expect(again.id).toBe(first.id)
          const answer = yield* sessions.append("!a:hs", { role: "assistant", content: "one", replyTo: "$e" })
          const second = yield* sessions.append("!a:hs", { role: "assistant", content: "two", replyTo: "$e" })
          expect(second).toMatchObject({ id: answer.id, content: "one" })
          expect(yield* sessions.history("!a:hs", 100)).toHaveLength(2)
          expect(Option.map(yield* sessions.replyTo("!a:hs", "$e"), (m) => m.content)).toEqual(Option.some("one"))
          expect(Option.isNone(yield* sessions.replyTo("!a:hs", "$other"))).toBe(true)
          // The same event id in another room is a different message.
          yield* sessions.append("!b:hs", { role: "user", content: "hi", eventId: "$e" })
          expect(yield* sessions.history("!b:hs", 100)).toHaveLength(1)
        })
      )
    }))

  it.scopedLive("reset forgets one room's conversation only", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      yield* withSessions(
        dir,
        Effect.gen(function*() {
          const sessions = yield* Sessions
          yield* sessions.append("!a:hs", { role: "user", content: "x", eventId: "$1" })
          yield* sessions.append("!a:hs", { role: "assistant", content: "y", replyTo: "$1" })
          yield* sessions.append("!b:hs", { role: "user", content: "z", eventId: "$2" })
          expect(yield* sessions.reset("!a:hs")).toBe(2)
          expect(yield* sessions.history("!a:hs", 100)).toEqual([])
          expect(yield* sessions.history("!b:hs", 100)).toHaveLength(1)
        })
      )
    }))

  it.scopedLive("reads a history file written before the move to node:sqlite (same table and columns)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      // the schema and rows exactly as the @effect/sql-sqlite-node version left them (WAL mode, indexes)
      const old = new DatabaseSync(path.join(dir, DATABASE_FILE))
      old.exec(`PRAGMA journal_mode = WAL;
        CREATE TABLE agent_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, room_id TEXT NOT NULL,
          role TEXT NOT NULL CHECK (role IN ('user', 'assistant')), content TEXT NOT NULL, sender_id TEXT,
          sender_name TEXT, event_id TEXT, reply_to TEXT, agent TEXT, model TEXT, created_at INTEGER NOT NULL);
        CREATE INDEX agent_messages_room ON agent_messages (room_id, id);
        CREATE UNIQUE INDEX agent_messages_event ON agent_messages (room_id, event_id) WHERE event_id IS NOT NULL;
        CREATE UNIQUE INDEX agent_messages_reply ON agent_messages (room_id, reply_to) WHERE reply_to IS NOT NULL;
        INSERT INTO agent_messages (room_id, role, content, sender_id, event_id, created_at)
          VALUES ('!a:hs', 'user', 'before', '@u:hs', '$old', 1700000000000);
        INSERT INTO agent_messages (room_id, role, content, reply_to, agent, model, created_at)
          VALUES ('!a:hs', 'assistant', 'answer', '$old', 'main', 'anthropic:m', 1700000000001);`)
      old.close()
      yield* withSessions(
        dir,
        Effect.gen(function*() {
          const sessions = yield* Sessions
          const before = yield* sessions.history("!a:hs", 10)
          expect(before.map((m) => [m.id, m.role, m.content, m.senderId, m.eventId, m.replyTo, m.model, m.createdAt]))
            .toEqual([
              [1, "user", "before", "@u:hs", "$old", undefined, undefined, 1700000000000],
              [2, "assistant", "answer", undefined, undefined, "$old", "anthropic:m", 1700000000001]
            ])
          expect(Option.map(yield* sessions.replyTo("!a:hs", "$old"), (m) => m.content)).toEqual(Option.some("answer"))
          // a redelivered old event is recognised; a new one continues the ids
          expect((yield* sessions.append("!a:hs", { role: "user", content: "dup", eventId: "$old" })).id).toBe(1)
          expect((yield* sessions.append("!a:hs", { role: "user", content: "new", eventId: "$new" })).id)
            .toBeGreaterThan(2)
        })
      )
    }))

  it.scopedLive("refuses a symlink planted where the database should be", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const elsewhere = path.join(dir, "elsewhere")
      yield* Effect.promise(() => fs.writeFile(elsewhere, ""))
      yield* Effect.promise(() => fs.symlink(elsewhere, path.join(dir, DATABASE_FILE)))
      const exit = yield* Effect.exit(withSessions(dir, Effect.flatMap(Sessions, (s) => s.history("!a:hs", 1))))
      expect(exit._tag).toBe("Failure")
      expect(JSON.stringify(exit)).toContain("session-history-corrupt")
      expect(JSON.stringify(exit)).toContain("symbolic link")
    }))
})
