// The shared test helpers themselves: test/support/tmp.ts and test/support/eventually.ts.
import { it as effectIt } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import { afterAll, beforeEach, describe, expect, it } from "vitest"
import { eventually } from "../support/eventually.js"
import { scopedTmpDir, tmpDir } from "../support/tmp.js"

describe("tmpDir", () => {
  const fileLevel = tmpDir("cara-tmp-file-")
  let fromBeforeEach = ""
  const seen: Array<string> = []
  beforeEach(() => {
    fromBeforeEach = tmpDir("cara-tmp-each-")
  })
  afterAll(() => {
    // the per-test directories are gone once their test finished; the suite's ones are removed after this hook
    for (const dir of seen) expect(fs.existsSync(dir)).toBe(false)
  })

  it("creates a fresh directory in a test, removed when the test has finished", () => {
    const dir = tmpDir("cara-tmp-test-")
    expect(fs.statSync(dir).isDirectory()).toBe(true)
    expect(dir).toContain("cara-tmp-test-")
    expect(fs.readdirSync(dir)).toEqual([])
    seen.push(dir, fromBeforeEach)
  })

  it("the previous test's directories are gone, the suite's are still there", () => {
    expect(seen).toHaveLength(2)
    for (const dir of seen) expect(fs.existsSync(dir)).toBe(false)
    expect(fs.existsSync(fileLevel)).toBe(true)
    expect(fs.existsSync(fromBeforeEach)).toBe(true)
    seen.push(fromBeforeEach)
  })
})

describe("scopedTmpDir", () => {
  effectIt.effect("is removed when its scope closes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const dir = yield* scopedTmpDir("cara-tmp-scoped-").pipe(Scope.extend(scope))
      expect(fs.statSync(dir).isDirectory()).toBe(true)
      yield* Scope.close(scope, Exit.void)
      expect(fs.existsSync(dir)).toBe(false)
    }))
})

describe("eventually", () => {
  it("returns the first answer that is not undefined, null or false", async () => {
    const answers: Array<number | undefined | null | false> = [undefined, null, false, 0, 7]
    await expect(eventually("a number", () => answers.shift(), { intervalMs: 1 })).resolves.toBe(0)
  })

  it("a boolean probe resolves to true", async () => {
    let n = 0
    await expect(eventually("three probes", async () => ++n === 3, { intervalMs: 1 })).resolves.toBe(true)
    expect(n).toBe(3)
  })

  it("fails naming what it waited for, with the context", async () => {
    await expect(
      eventually("the impossible", () => false, { timeoutMs: 20, intervalMs: 5, context: () => "last output" })
    )
      .rejects.toThrow("timed out after 20 ms waiting for the impossible:\nlast output")
  })
})
