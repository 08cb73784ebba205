import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Option } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { makeStateDir, resolveStateDirPath } from "../../src/layers/StateDirLive.js"
import { tmpDir } from "../support/tmp.js"

const tempRoot = () => tmpDir("cara-statedir-")
const mode = (p: string) => fs.statSync(p).mode & 0o777

describe("StateDir", () => {
  it("resolves CARAPACE_STATE_DIR first, else ~/.config/carapace", () => {
    expect(resolveStateDirPath({ CARAPACE_STATE_DIR: "/srv/cara" })).toBe("/srv/cara")
    expect(resolveStateDirPath({ HOME: "/home/x" })).toBe(path.join(os.homedir(), ".config", "carapace"))
    expect(resolveStateDirPath({ XDG_CONFIG_HOME: "/xdg" })).toBe("/xdg/carapace")
    expect(resolveStateDirPath({ CARAPACE_STATE_DIR: "  ", XDG_CONFIG_HOME: "/xdg" })).toBe("/xdg/carapace")
  })

  it.effect("creates the state dir with mode 0700 and tightens a loose one", () =>
    Effect.gen(function*() {
      const parent = tempRoot()
      const root = path.join(parent, "state")
      const dir = yield* makeStateDir(root)
      expect(dir.root).toBe(root)
      expect(mode(root)).toBe(0o700)
      fs.chmodSync(root, 0o755)
      yield* makeStateDir(root)
      expect(mode(root)).toBe(0o700)
    }))

  it.effect("writes files atomically with mode 0600 and subdirectories with 0700", () =>
    Effect.gen(function*() {
      const dir = yield* makeStateDir(tempRoot())
      yield* dir.writeAtomic("matrix/recovery_key", "first\n")
      yield* dir.writeAtomic("matrix/recovery_key", "second\n")
      const file = path.join(dir.root, "matrix", "recovery_key")
      expect(fs.readFileSync(file, "utf8")).toBe("second\n")
      expect(mode(file)).toBe(0o600)
      expect(mode(path.join(dir.root, "matrix"))).toBe(0o700)
      expect(fs.readdirSync(path.join(dir.root, "matrix"))).toEqual(["recovery_key"])
      expect(Option.getOrThrow(yield* dir.readText("matrix/recovery_key"))).toBe("second\n")
      expect(Option.isNone(yield* dir.readText("matrix/absent"))).toBe(true)
    }))

  it.effect("a pre-existing file with loose permissions ends up 0600 after a write", () =>
    Effect.gen(function*() {
      const dir = yield* makeStateDir(tempRoot())
      const file = path.join(dir.root, "loose")
      fs.writeFileSync(file, "old", { mode: 0o644 })
      yield* dir.writeAtomic("loose", "new")
      expect(mode(file)).toBe(0o600)
    }))

  it.effect("refuses a symlinked state subdirectory, and a symlinked file on read", () =>
    Effect.gen(function*() {
      const dir = yield* makeStateDir(tempRoot())
      const elsewhere = tempRoot()
      fs.symlinkSync(elsewhere, path.join(dir.root, "matrix"))
      const exit = yield* Effect.exit(dir.writeAtomic("matrix/store_passphrase", "x"))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = yield* Effect.flip(dir.ensureDir("matrix"))
      expect(error.kind).toBe("state-dir-symlink")
      expect(error.message).toContain("symbolic link")
      expect(fs.readdirSync(elsewhere)).toEqual([])

      fs.writeFileSync(path.join(elsewhere, "target"), "secret")
      fs.symlinkSync(path.join(elsewhere, "target"), path.join(dir.root, "link"))
      const readError = yield* Effect.flip(dir.read("link"))
      expect(readError.kind).toBe("state-dir-io")
    }))

  it.effect("removes files and reports existence", () =>
    Effect.gen(function*() {
      const dir = yield* makeStateDir(tempRoot())
      yield* dir.writeAtomic("a", "1")
      expect(yield* dir.exists("a")).toBe(true)
      yield* dir.remove("a")
      yield* dir.remove("a")
      expect(yield* dir.exists("a")).toBe(false)
    }))

  it.effect("a failed rename leaves the old file intact and no temp file behind", () =>
    Effect.gen(function*() {
      const root = tempRoot()
      const dir = yield* makeStateDir(root, {
        rename: () => Promise.reject(Object.assign(new Error("EIO"), { code: "EIO" }))
      })
      fs.writeFileSync(path.join(root, "config"), "old")
      const error = yield* Effect.flip(dir.writeAtomic("config", "new"))
      expect(error.kind).toBe("state-dir-io")
      expect(error.message).toContain("EIO")
      expect(fs.readFileSync(path.join(root, "config"), "utf8")).toBe("old")
      expect(fs.readdirSync(root)).toEqual(["config"])
    }))

  it("a process killed between write and rename leaves the old file intact", () => {
    const root = tempRoot()
    fs.chmodSync(root, 0o700)
    fs.writeFileSync(path.join(root, "installation_id"), "old-content\n", { mode: 0o600 })
    const child = spawnSync(process.execPath, [
      "test/fixtures/crash-during-write.mjs",
      root,
      "installation_id",
      "new-content\n"
    ], {
      encoding: "utf8"
    })
    expect(child.signal).toBe("SIGKILL")
    expect(fs.readFileSync(path.join(root, "installation_id"), "utf8")).toBe("old-content\n")
    // The fsynced temp file is what the crash left; the target was never half-written.
    const leftovers = fs.readdirSync(root).filter((f) => f !== "installation_id")
    expect(leftovers).toHaveLength(1)
    expect(fs.readFileSync(path.join(root, leftovers[0]!), "utf8")).toBe("new-content\n")
  })
})
