// Wall time of the `cara` command line, next to `node -e 0` measured in the same run (the floor: Node's own
// start on this machine). BENCH_CLI_RUNS (15) runs of each, interleaved so load changes hit all alike, after
// two warm-ups (page cache). `cara status`, `cara matrix dlq list`, `cara matrix verifications` and `cara matrix
// devices` talk to a running daemon (one bot on a fresh Synapse), as an operator's would, and take the start
// without Effect (src/cli/lite.ts); so do `dlq show|replay|purge`, `accept`, `cancel` and `verify`
// (src/cli/liteActions.ts), each on a record / flow / device that does not exist (the daemon's not-found answer); `statusDirect` / `verificationsDirect` are the same commands on the Effect
// start of src/cli/direct.ts (CARA_LITE=off: the path they took before lite.ts), `statusTree` `cara status` parsed
// by the full @effect/cli tree (CARA_DIRECT=off), `acceptDirect` `cara matrix accept` on the tree (CARA_LITE=off). Target (issue 19 §5):
// ≤ 250 ms and ≤ 5 × `node -e 0`.
// Run: `npm run bench -- cli-wall` or `node_modules/.bin/vite-node bench/cli-wall.ts`.
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { CLI } from "../test/support/cli.js"
import { emit, envNumber, log, percentile, round, world } from "./_matrix-lib.js"

const RUNS = Math.max(1, envNumber("BENCH_CLI_RUNS", 15))

const wallMs = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv, exit = 0): number => {
  const t0 = performance.now()
  const r = spawnSync(process.execPath, args, {
    env,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 60_000
  })
  const ms = performance.now() - t0
  if (r.status !== exit) throw new Error(`${args.join(" ")} exited ${r.status}: ${r.stderr.slice(-2000)}`)
  return ms
}

const main = async () => {
  const w = await world()
  try {
    const alice = await w.human()
    const bot = await w.bot({ allowUsers: [alice.userId] })
    await bot.start()
    const env = bot.cliEnv()
    const port = new URL(bot.running!.baseUrl).port
    const commands: Record<string, ReadonlyArray<string>> = {
      nodeE0: ["-e", "0"],
      version: [CLI, "--version"],
      help: [CLI, "--help"],
      statusHelp: [CLI, "status", "--help"],
      status: [CLI, "status", "--port", port],
      statusJson: [CLI, "status", "--json", "--port", port],
      dlqList: [CLI, "matrix", "dlq", "list", "--port", port],
      verifications: [CLI, "matrix", "verifications", "--port", port],
      devices: [CLI, "matrix", "devices", "--port", port],
      // the commands that take an argument or act (src/cli/liteActions.ts), on a record / flow / device that does
      // not exist: the daemon's not-found answer (exit 1), still a full round trip, and nothing changes
      dlqShow: [CLI, "matrix", "dlq", "show", "dlq_missing", "--port", port],
      dlqReplay: [CLI, "matrix", "dlq", "replay", "dlq_missing", "--port", port],
      dlqPurge: [CLI, "matrix", "dlq", "purge", "dlq_missing", "--yes", "--port", port],
      accept: [CLI, "matrix", "accept", "mvr_missing", "--port", port],
      cancel: [CLI, "matrix", "cancel", "mvr_missing", "--port", port],
      verify: [CLI, "matrix", "verify", alice.userId, "NODEVICE", "--port", port],
      // the same commands on the Effect start (CARA_LITE=off), and through the full @effect/cli tree (CARA_DIRECT=off)
      statusDirect: [CLI, "status", "--port", port],
      verificationsDirect: [CLI, "matrix", "verifications", "--port", port],
      acceptDirect: [CLI, "matrix", "accept", "mvr_missing", "--port", port],
      statusTree: [CLI, "status", "--port", port]
    }
    const envOf = (name: string): NodeJS.ProcessEnv =>
      name === "statusTree"
        ? { ...env, CARA_DIRECT: "off" }
        : name.endsWith("Direct")
        ? { ...env, CARA_LITE: "off" }
        : env
    const EXIT_1 = new Set(["dlqShow", "dlqReplay", "dlqPurge", "accept", "cancel", "verify", "acceptDirect"])
    const exitOf = (name: string) => (EXIT_1.has(name) ? 1 : 0)
    const times: Record<string, Array<number>> = Object.fromEntries(Object.keys(commands).map((k) => [k, []]))
    log(`${RUNS} runs of ${Object.keys(commands).join(", ")}`)
    for (let i = -2; i < RUNS; i++) {
      for (const [name, args] of Object.entries(commands)) {
        const ms = wallMs(args, envOf(name), exitOf(name))
        if (i >= 0) times[name]!.push(ms)
      }
    }
    // which start answered each command (bench/_module-trace.mjs): lite.ts, or the Effect start of direct.ts
    const traceFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "cli-wall-")), "trace.json")
    const startOf = (name: string) => {
      wallMs(commands[name]!, {
        ...envOf(name),
        NODE_OPTIONS: `--import=${path.resolve("bench/_module-trace.mjs")}`,
        CARA_BENCH_MODULE_TRACE: traceFile
      }, exitOf(name))
      const urls = (JSON.parse(fs.readFileSync(traceFile, "utf8")) as Array<[string, unknown]>).map(([u]) => u)
      return urls.some((u) => /\/run-[A-Z0-9]+\.js$/.test(u))
        ? "tree"
        : urls.some((u) => /\/direct-[A-Z0-9]+\.js$/.test(u))
        ? "direct"
        : urls.some((u) => /\/liteActions-[A-Z0-9]+\.js$/.test(u))
        ? "liteActions"
        : urls.some((u) => /\/lite-[A-Z0-9]+\.js$/.test(u))
        ? "lite"
        : "other"
    }
    const starts = Object.fromEntries(
      ["status", "statusJson", "dlqList", "verifications", "devices", "statusDirect", ...EXIT_1].map((
        n
      ) => [n, startOf(n)])
    )
    const p50 = (name: string) => round(percentile(times[name]!, 50))
    const floor = p50("nodeE0")
    const figures = Object.fromEntries(
      Object.keys(commands).map((
        name
      ) => [name, { p50: p50(name), p95: round(percentile(times[name]!, 95)), overNode: round(p50(name) / floor, 2) }])
    )
    emit({
      bench: "cli-wall",
      runs: RUNS,
      ...figures,
      starts,
      note: "wall ms per command incl. Node start; overNode = p50 / p50 of `node -e 0`"
    })
  } finally {
    await w.close()
  }
}

await main()
process.exit(0)
