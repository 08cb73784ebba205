import { describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { APPLIED_MARKER, daemonReexec, DEFAULT_DAEMON_FLAGS, requestedFlags } from "../../src/domain/v8flags.js"
import { cleanEnv, CLI, tempStateDir } from "../support/cli.js"

const daemon = (env: Record<string, string | undefined> = {}, execArgv: Array<string> = []) => ({
  argv: ["/usr/bin/node", "/app/dist/src/cli/bin.js"],
  execArgv,
  env: { PATH: "/usr/bin", ...env }
})

describe("daemon node flags (pure)", () => {
  it("re-execs the daemon with the default flags and malloc setting, marking the new process", () => {
    const r = daemonReexec(daemon())!
    expect(r.args).toEqual(["/usr/bin/node", ...DEFAULT_DAEMON_FLAGS, "/app/dist/src/cli/bin.js"])
    expect(r.env["MALLOC_ARENA_MAX"]).toBe("2")
    expect(r.env["PATH"]).toBe("/usr/bin")
    expect(r.env[APPLIED_MARKER]).toBe([...DEFAULT_DAEMON_FLAGS, "MALLOC_ARENA_MAX=2"].join(" "))
  })

  it("leaves CLI commands and an already re-exec'd daemon alone", () => {
    expect(daemonReexec({ ...daemon(), argv: ["/usr/bin/node", "/app/bin.js", "status"] })).toBeUndefined()
    expect(daemonReexec(daemon({ [APPLIED_MARKER]: "" }))).toBeUndefined()
  })

  it("keeps the operator's flags: NODE_OPTIONS and the command line win, execArgv is carried over", () => {
    const fromOptions = daemonReexec(daemon({ NODE_OPTIONS: "--inspect --max_semi_space_size=16" }))!
    expect(fromOptions.args.filter((a) => a.startsWith("--max"))).toEqual([])
    expect(fromOptions.added).toEqual(["MALLOC_ARENA_MAX=2"])
    const fromArgv = daemonReexec(daemon({}, ["--max-semi-space-size=8", "--cpu-prof"]))!
    expect(fromArgv.args).toEqual([
      "/usr/bin/node",
      "--max-semi-space-size=8",
      "--cpu-prof",
      "/app/dist/src/cli/bin.js"
    ])
    expect(daemonReexec(daemon({ MALLOC_ARENA_MAX: "4" }, ["--max-semi-space-size=8"]))).toBeUndefined()
  })

  it("CARA_NODE_FLAGS replaces the list; empty or none turns the re-exec off", () => {
    expect(requestedFlags({ CARA_NODE_FLAGS: " --optimize-for-size  --max-semi-space-size=1 " })).toEqual([
      "--optimize-for-size",
      "--max-semi-space-size=1"
    ])
    expect(daemonReexec(daemon({ CARA_NODE_FLAGS: "" }))).toBeUndefined()
    expect(daemonReexec(daemon({ CARA_NODE_FLAGS: "none" }))).toBeUndefined()
    expect(daemonReexec(daemon({ CARA_NODE_FLAGS: "--optimize-for-size" }))!.args).toContain("--optimize-for-size")
  })
})

/** Runs the built daemon with a preload that prints pid, execArgv and the marker in each process image. */
const probe = (extra: Record<string, string>): Promise<Array<string>> => {
  const dir = tempStateDir()
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "cara-probe-")), "probe.mjs")
  fs.writeFileSync(
    file,
    "process.stderr.write(`probe pid=${process.pid} argv=${JSON.stringify(process.execArgv)} marker=${process.env.CARA_NODE_FLAGS_APPLIED} arena=${process.env.MALLOC_ARENA_MAX}\\n`)\n"
  )
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI], {
      env: cleanEnv(dir, { NODE_OPTIONS: `--import=${file}`, ...extra }),
      stdio: ["ignore", "ignore", "pipe"]
    })
    let err = ""
    child.stderr.on("data", (c: Buffer) => (err += c.toString("utf8")))
    // the daemon itself fails at once on the empty state dir (no config); only the probe lines matter
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
    child.once("exit", () => {
      clearTimeout(timer)
      fs.rmSync(dir, { recursive: true, force: true })
      fs.rmSync(path.dirname(file), { recursive: true, force: true })
      resolve(err.split("\n").filter((l) => l.startsWith("probe ")))
    })
  })
}

describe("daemon node flags (the built bin.js)", () => {
  it("replaces itself once, same pid, with the flags applied", async () => {
    const lines = await probe({})
    expect(lines).toHaveLength(2)
    const pids = lines.map((l) => /pid=(\d+)/.exec(l)?.[1])
    expect(pids[0]).toBe(pids[1])
    expect(lines[0]).toContain("argv=[] marker=undefined arena=undefined")
    expect(lines[1]).toContain(`argv=${JSON.stringify(DEFAULT_DAEMON_FLAGS)}`)
    expect(lines[1]).toContain("arena=2")
  }, 30_000)

  it("runs once with Node's defaults when CARA_NODE_FLAGS=none", async () => {
    const lines = await probe({ CARA_NODE_FLAGS: "none" })
    expect(lines).toEqual([expect.stringContaining("argv=[] marker=undefined")])
  }, 30_000)
})
