import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { traceWait } from "./eventually.js"

/** The built CLI (`npm test` builds dist/ before vitest runs). */
export const CLI = path.resolve("dist/cli/bin.js")

export const tempStateDir = (): string => fs.mkdtempSync(path.join(os.tmpdir(), "cara-state-"))

/** An environment with nothing of the caller's cara settings in it, rooted at `stateDir`. */
export const cleanEnv = (stateDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const key of ["PATH", "HOME", "LANG", "TMPDIR"]) if (process.env[key] !== undefined) env[key] = process.env[key]
  return { ...env, CARAPACE_STATE_DIR: stateDir, ...extra }
}

export const runCli = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv, input?: string) => {
  const startedAt = Date.now()
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: "utf8", input: input ?? "", timeout: 60_000 })
  traceWait(`cara ${args.join(" ")}`, startedAt)
  return r
}

/** `runCli` without blocking this process (for a stand-in daemon in the same process to answer it). */
export const runCliAsync = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv) =>
  new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    child.on("error", reject)
    child.on("close", (status) => resolve({ status, stdout, stderr }))
  })

const MODULE_TRACER = path.resolve("bench/_module-trace.mjs")
let moduleTraces = 0

/**
 * `env` with bench/_module-trace.mjs preloaded, writing into `dir`; `loaded()` then lists the module URLs the
 * run loaded (which start of the CLI answered).
 */
export const moduleTrace = (dir: string, env: NodeJS.ProcessEnv) => {
  const file = path.join(dir, `module-trace-${process.pid}-${moduleTraces++}.json`)
  return {
    env: { ...env, NODE_OPTIONS: `--import=${MODULE_TRACER}`, CARA_BENCH_MODULE_TRACE: file },
    loaded: (): ReadonlyArray<string> =>
      (JSON.parse(fs.readFileSync(file, "utf8")) as Array<[string, unknown]>).map(([u]) => u)
  }
}

export interface RunningDaemon {
  readonly child: ChildProcess
  readonly baseUrl: string
  readonly output: () => string
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/**
 * Runs argv[1:] on a pseudo-terminal (python3's pty) and copies what it writes to stdout; SIGTERM and SIGINT are
 * passed on, and the exit code is the child's. For what cara does only on a terminal (progress lines).
 */
const PTY_WRAPPER = `
import os, pty, signal, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda sig, _: os.kill(pid, sig))
while True:
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    os.write(1, data)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
`

export interface StartDaemonOptions {
  /** stdout and stderr on a pseudo-terminal instead of pipes */
  readonly terminal?: boolean
}

/** Starts `cara` and waits for its ready line; fails with the daemon's output if it exits first. */
export const startDaemon = (
  env: NodeJS.ProcessEnv,
  timeoutMs = 30_000,
  options: StartDaemonOptions = {}
): Promise<RunningDaemon> =>
  new Promise((resolve, reject) => {
    const [cmd, args] = options.terminal === true
      ? ["python3", ["-c", PTY_WRAPPER, process.execPath, CLI]] as const
      : [process.execPath, [CLI]] as const
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
      child.once("exit", (code, signal) => res({ code, signal }))
    )
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`daemon not ready after ${timeoutMs} ms:\n${out}`))
    }, timeoutMs)
    const onData = (chunk: Buffer) => {
      out += chunk.toString("utf8")
      const ready = /ready: gateway listening on (http:\/\/\S+)/.exec(out)
      if (ready !== null) {
        clearTimeout(timer)
        resolve({ child, baseUrl: ready[1]!, output: () => out, exited })
      }
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    void exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`daemon exited (code ${code}, signal ${signal}) before it was ready:\n${out}`))
    })
  })
