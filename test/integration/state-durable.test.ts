// StateDir's durable operations (src/layers/durableFile.ts): append, capped read, exclusive create, rename
// with a mode, remove reporting whether there was a file; and the Audit service over them.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseAuditLog } from "../../src/domain/audit.js"
import { makeAudit } from "../../src/layers/AuditLive.js"
import { readCappedSync } from "../../src/layers/durableFile.js"
import { makeStateDir } from "../../src/layers/StateDirLive.js"

const tempRoot = () => fs.mkdtempSync(path.join(os.tmpdir(), "cara-durable-"))
const mode = (p: string) => fs.statSync(p).mode & 0o777

describe("StateDir durable operations", () => {
  it.effect("append creates the file 0600 (and its directory), resets a widened mode, closes a torn line", () =>
    Effect.gen(function*() {
      const root = tempRoot()
      const dir = yield* makeStateDir(root)
      yield* dir.append("sub/log.jsonl", "a\n")
      expect(mode(path.join(root, "sub"))).toBe(0o700)
      expect(mode(path.join(root, "sub/log.jsonl"))).toBe(0o600)
      fs.appendFileSync(path.join(root, "sub/log.jsonl"), "torn")
      fs.chmodSync(path.join(root, "sub/log.jsonl"), 0o644)
      yield* dir.append("sub/log.jsonl", "b\n")
      expect(fs.readFileSync(path.join(root, "sub/log.jsonl"), "utf8")).toBe("a\ntorn\nb\n")
      expect(mode(path.join(root, "sub/log.jsonl"))).toBe(0o600)
    }))

  it.effect("append refuses to write through a symlink", () =>
    Effect.gen(function*() {
      const root = tempRoot()
      const dir = yield* makeStateDir(root)
      fs.writeFileSync(path.join(root, "target"), "")
      fs.symlinkSync(path.join(root, "target"), path.join(root, "link"))
      const error = yield* Effect.flip(dir.append("link", "x\n"))
      expect(error.kind).toBe("state-dir-io")
      expect(fs.readFileSync(path.join(root, "target"), "utf8")).toBe("")
    }))

  it.effect("readCapped: absent, text, and refusals (symlink unless followed, not a file, over the cap)", () =>
    Effect.gen(function*() {
      const root = tempRoot()
      const dir = yield* makeStateDir(root)
      expect(yield* dir.readCapped("none", 10)).toEqual({ state: "absent" })
      fs.writeFileSync(path.join(root, "small"), "hello")
      expect(yield* dir.readCapped("small", 10)).toEqual({ state: "ok", text: "hello" })
      expect(yield* dir.readCapped("small", 4)).toEqual({ state: "refused", reason: "too-large", size: 5 })
      fs.symlinkSync(path.join(root, "small"), path.join(root, "link"))
      expect(yield* dir.readCapped("link", 10)).toEqual({ state: "refused", reason: "symlink" })
      expect(yield* dir.readCapped("link", 10, { followSymlink: true })).toEqual({ state: "ok", text: "hello" })
      fs.mkdirSync(path.join(root, "adir"))
      expect(yield* dir.readCapped("adir", 10)).toEqual({ state: "refused", reason: "not-file" })
    }))

  it("readCappedSync never blocks on a FIFO", () => {
    const root = tempRoot()
    const fifo = path.join(root, "fifo")
    spawnSync("mkfifo", [fifo])
    if (!fs.existsSync(fifo)) return
    expect(readCappedSync(fifo, 10)).toEqual({ state: "refused", reason: "not-file" })
  })

  it.effect("createExclusive never replaces and leaves no temp file", () =>
    Effect.gen(function*() {
      const root = tempRoot()
      const dir = yield* makeStateDir(root)
      expect(yield* dir.createExclusive("id", "first\n")).toBe("created")
      expect(yield* dir.createExclusive("id", "second\n")).toBe("exists")
      expect(fs.readFileSync(path.join(root, "id"), "utf8")).toBe("first\n")
      expect(mode(path.join(root, "id"))).toBe(0o600)
      expect(fs.readdirSync(root)).toEqual(["id"])
    }))

  it.effect("rename with a mode tightens the source first; remove says whether there was a file", () =>
    Effect.gen(function*() {
      const root = tempRoot()
      const dir = yield* makeStateDir(root)
      fs.writeFileSync(path.join(root, "pending"), "k", { mode: 0o644 })
      yield* dir.rename("pending", "key", { mode: 0o600 })
      expect(mode(path.join(root, "key"))).toBe(0o600)
      expect(fs.existsSync(path.join(root, "pending"))).toBe(false)
      expect(yield* dir.remove("key")).toBe(true)
      expect(yield* dir.remove("key")).toBe(false)
      yield* dir.fsyncDir(".")
    }))
})

describe("Audit", () => {
  it.effect("appends one redacted record per call to audit.jsonl, 0600", () =>
    Effect.gen(function*() {
      const root = tempRoot()
      const dir = yield* makeStateDir(root)
      const audit = makeAudit(dir)
      yield* audit.append("first", { n: 1 })
      yield* audit.append("second", { n: 2 })
      const text = fs.readFileSync(path.join(root, "audit.jsonl"), "utf8")
      expect(mode(path.join(root, "audit.jsonl"))).toBe(0o600)
      const records = parseAuditLog(`${text}{"torn`)
      expect(records.map((r) => [r.event, r.data])).toEqual([["first", { n: 1 }], ["second", { n: 2 }]])
      expect(Number.isNaN(Date.parse(records[0]!.ts))).toBe(false)
    }))
})
