import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { compileCacheDir, isPrivateDir } from "../../src/cli/compileCache.js"

describe("the compile cache directory", () => {
  it("is the user's cache directory unless CARA_COMPILE_CACHE says otherwise", () => {
    expect(compileCacheDir({}, "/home/op")).toBe("/home/op/.cache/cara/compile-cache")
    expect(compileCacheDir({ XDG_CACHE_HOME: "/var/cache/op" }, "/home/op")).toBe("/var/cache/op/cara/compile-cache")
    // a relative XDG_CACHE_HOME is invalid by the spec: ignored
    expect(compileCacheDir({ XDG_CACHE_HOME: "rel" }, "/home/op")).toBe("/home/op/.cache/cara/compile-cache")
    expect(compileCacheDir({ CARA_COMPILE_CACHE: "off" }, "/home/op")).toBeUndefined()
    expect(compileCacheDir({ CARA_COMPILE_CACHE: "/srv/cc" }, "/home/op")).toBe("/srv/cc")
    expect(compileCacheDir({}, "")).toBeUndefined()
  })

  it("is used only when no one else can write it", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "cara-cc-"))
    const uid = process.getuid!()
    const mine = path.join(root, "mine")
    fs.mkdirSync(mine, { mode: 0o700 })
    expect(isPrivateDir(mine, uid)).toBe(true)
    const shared = path.join(root, "shared")
    fs.mkdirSync(shared)
    fs.chmodSync(shared, 0o777)
    expect(isPrivateDir(shared, uid)).toBe(false)
    const link = path.join(root, "link")
    fs.symlinkSync(mine, link)
    expect(isPrivateDir(link, uid)).toBe(false)
    expect(isPrivateDir(mine, uid + 1)).toBe(false)
    expect(isPrivateDir(path.join(root, "missing"), uid)).toBe(false)
    fs.rmSync(root, { recursive: true, force: true })
  })
})
