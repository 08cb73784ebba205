import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { makeBacklogCounter } from "../../src/domain/backlogProgress.js"
import { progressLine } from "../../src/domain/progress.js"

describe("backlog progress", () => {
  it("shows nothing for a few messages at a time", () => {
    const c = makeBacklogCounter(3)
    for (let i = 0; i < 3; i++) expect(c.started()).toBeUndefined()
    for (let i = 0; i < 3; i++) expect(c.finished()).toBeUndefined()
  })

  it("counts a run from the moment more than the threshold wait, to the last answer", () => {
    const c = makeBacklogCounter(2)
    c.started()
    c.started()
    expect(c.started()).toEqual({ done: 0, total: 3, end: false })
    expect(c.finished()).toEqual({ done: 1, total: 3, end: false })
    expect(c.started()).toEqual({ done: 1, total: 4, end: false })
    c.finished()
    c.finished()
    expect(c.finished()).toEqual({ done: 4, total: 4, end: true })
    // a new run starts from zero
    expect(c.started()).toBeUndefined()
    expect(c.finished()).toBeUndefined()
  })

  it("writes the counter to a terminal and nothing elsewhere", () => {
    const written: Array<string> = []
    const tty = progressLine("cara", { sink: { isTTY: true, write: (t) => written.push(t) } })
    Effect.runSync(tty.hooks.count!("catching up: answered", 2, 8))
    Effect.runSync(tty.done)
    expect(written.join("")).toContain("cara: catching up: answered 2/8 (25%)")
    expect(written.at(-1)).toBe("\n")
    const pipe = progressLine("cara", { sink: { isTTY: false, write: (t) => written.push(t) } })
    expect(pipe.hooks).toEqual({})
  })
})
