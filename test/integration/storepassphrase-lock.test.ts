// The maintenance lock `{state_dir}/.matrix-rekey.lock`: one holder at a time across processes, the
// refusal names what holds it, and a SIGKILLed holder never blocks the next start. The cross-process tests
// run real child processes on the built sources (`npm run build` first; `npm test` does it).
import { Effect, Either, Exit, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import { acquireRekeyLock, LOCK_HOLDER_FILE, processStartTime } from "../../src/layers/StorePassphraseLive.js"
import { tempRoot } from "../support/rekey-fixtures.js"

const LIVE = path.resolve("dist/src/layers/StorePassphraseLive.js")
const STATEDIR = path.resolve("dist/src/layers/StateDirLive.js")

// holds the lock as argv holder until killed; prints `acquired <pid>` or `refused <holder> <message>`
const CHILD = `
  const { Effect } = await import("effect")
  const { acquireRekeyLock } = await import(${JSON.stringify(LIVE)})
  const { makeStateDir } = await import(${JSON.stringify(STATEDIR)})
  const program = Effect.scoped(Effect.gen(function*() {
    const sd = yield* makeStateDir(process.env.LOCK_ROOT)
    const r = yield* Effect.either(acquireRekeyLock(sd, process.env.LOCK_HOLDER))
    if (r._tag === "Left") { process.stdout.write("refused " + r.left.holder + " " + r.left.message + "\\n"); return }
    process.stdout.write("acquired " + process.pid + "\\n")
    yield* Effect.never
  }))
  await Effect.runPromise(program)
`

interface Child {
  readonly proc: ChildProcess
  readonly firstLine: Promise<string>
  readonly exited: Promise<void>
}

const children: Array<ChildProcess> = []
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL")
})

const startChild = (root: string, holder: string): Child => {
  const proc = spawn(process.execPath, ["--input-type=module", "-e", CHILD], {
    env: { ...process.env, LOCK_ROOT: root, LOCK_HOLDER: holder },
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.push(proc)
  let out = ""
  let err = ""
  const exited = new Promise<void>((r) => proc.once("exit", () => r()))
  const firstLine = new Promise<string>((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => {
      out += d.toString()
      const nl = out.indexOf("\n")
      if (nl >= 0) resolve(out.slice(0, nl))
    })
    proc.stderr!.on("data", (d: Buffer) => (err += d.toString()))
    void exited.then(() => reject(new Error(`child exited without a line: ${err}`)))
  })
  return { proc, firstLine, exited }
}

const inProcess = (root: string, holder: "daemon" | "rekey-store" | "recovery-key", scope: Scope.Scope) =>
  Effect.runPromise(
    Effect.either(Effect.flatMap(makeStateDir(root), (sd) => acquireRekeyLock(sd, holder))).pipe(Scope.extend(scope))
  )

describe("the maintenance lock", () => {
  it("in one process: a second holder is refused naming the first; released by the scope, then free again", async () => {
    const root = tempRoot(null)
    const scope = await Effect.runPromise(Scope.make())
    const first = await inProcess(root, "daemon", scope)
    expect(Either.isRight(first)).toBe(true)
    expect(fs.statSync(path.join(root, ".matrix-rekey.lock")).mode & 0o777).toBe(0o600)
    const holder = JSON.parse(fs.readFileSync(path.join(root, LOCK_HOLDER_FILE), "utf8")) as Record<string, unknown>
    expect(holder).toMatchObject({ pid: process.pid, holder: "daemon" })

    const scope2 = await Effect.runPromise(Scope.make())
    const second = await inProcess(root, "rekey-store", scope2)
    expect(Either.isLeft(second)).toBe(true)
    if (Either.isLeft(second)) {
      expect(second.left).toMatchObject({
        _tag: "RekeyLockHeldError",
        kind: "rekey-lock-held",
        holder: "daemon",
        holderPid: process.pid
      })
      expect(second.left.message).toContain(`is held by the cara daemon (pid ${process.pid})`)
      expect(second.left.message).toContain("Stop the daemon first")
    }
    await Effect.runPromise(Scope.close(scope2, Exit.void))
    // The refused attempt's own open and close did not drop the first holder's record lock (POSIX drops
    // all of a process's locks on a file when any fd of it closes; the lock must survive that).
    const again = startChild(root, "rekey-store")
    expect(await again.firstLine).toMatch(/^refused daemon /)

    await Effect.runPromise(Scope.close(scope, Exit.void))
    expect(fs.existsSync(path.join(root, LOCK_HOLDER_FILE))).toBe(false)
    expect(fs.existsSync(path.join(root, ".matrix-rekey.lock"))).toBe(true) // the lock file itself stays

    const scope3 = await Effect.runPromise(Scope.make())
    const third = await inProcess(root, "recovery-key", scope3)
    expect(Either.isRight(third)).toBe(true)
    await Effect.runPromise(Scope.close(scope3, Exit.void))
  })

  it("across processes: of several racing starters exactly one holds it; SIGKILL frees it for the next", async () => {
    const root = tempRoot(null)
    const racers = Array.from({ length: 5 }, (_, i) => startChild(root, i % 2 === 0 ? "daemon" : "rekey-store"))
    const lines = await Promise.all(racers.map((c) => c.firstLine))
    const winners = lines.filter((l) => l.startsWith("acquired "))
    expect(winners).toHaveLength(1)
    for (const l of lines.filter((l) => !l.startsWith("acquired "))) {
      expect(l).toMatch(/^refused (daemon|rekey-store|unknown) Matrix rekey lock at .* is held by /)
    }
    const winner = racers[lines.findIndex((l) => l.startsWith("acquired "))]!

    // While it lives, a later starter is refused and told what holds it.
    const late = startChild(root, "daemon")
    const lateLine = await late.firstLine
    const winnerKind = JSON.parse(fs.readFileSync(path.join(root, LOCK_HOLDER_FILE), "utf8")).holder as string
    expect(lateLine).toContain(`refused ${winnerKind} `)
    expect(lateLine).toContain(`(pid ${winner.proc.pid})`)

    // A killed holder leaves its sidecar behind but never blocks: the next start gets the lock at once.
    winner.proc.kill("SIGKILL")
    await winner.exited
    expect(fs.existsSync(path.join(root, LOCK_HOLDER_FILE))).toBe(true)
    const next = startChild(root, "rekey-store")
    expect(await next.firstLine).toMatch(/^acquired /)
    expect(JSON.parse(fs.readFileSync(path.join(root, LOCK_HOLDER_FILE), "utf8"))).toMatchObject({
      pid: next.proc.pid,
      holder: "rekey-store"
    })
  })

  it("names the holder only when its pid is alive with the recorded start time (pid reuse is reported as unknown)", async () => {
    const root = tempRoot(null)
    const holder = startChild(root, "recovery-key")
    expect(await holder.firstLine).toMatch(/^acquired /)
    const pid = holder.proc.pid!
    const sidecar = path.join(root, LOCK_HOLDER_FILE)

    const contender = () => startChild(root, "daemon").firstLine
    expect(await contender()).toContain("refused recovery-key ")
    expect(await contender()).toContain("`cara matrix recovery-key`")

    // Same pid, another start time: a different process now owns that pid.
    fs.writeFileSync(sidecar, JSON.stringify({ pid, holder: "daemon", startTime: "1" }))
    const reused = await contender()
    expect(reused).toContain("refused unknown ")
    expect(reused).toContain("another cara process")

    fs.writeFileSync(sidecar, JSON.stringify({ pid, holder: "daemon", startTime: processStartTime(pid) }))
    expect(await contender()).toContain("refused daemon ")
  })
})
