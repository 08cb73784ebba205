// What the daemon and the CLI load (not a bench: the leading underscore keeps scripts/bench.mjs from running
// it). The daemon answers one encrypted message under bench/_module-trace.mjs, then stops; `cara --version`
// and `cara status` run under it too. For each process: module count and source bytes per package, and the
// biggest files with the import chain from our own code that pulls each in.
// Run: `node_modules/.bin/vite-node bench/_modules.ts`.
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { CLI } from "../test/support/cli.js"
import { ownerOfUrl } from "./_heap.js"
import { dmWithBot, emit, log, replyTo, world } from "./_matrix-lib.js"

const tracer = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "_module-trace.mjs")

type Trace = Array<[string, { parent: string | null; specifier: string }]>

const short = (url: string) => url.replace(/^file:\/\/.*?node_modules\//, "").replace(/^file:\/\/.*?\/dist\//, "")

const summarise = (file: string, top = 15) => {
  const trace = JSON.parse(fs.readFileSync(file, "utf8")) as Trace
  const parents = new Map(trace)
  const sizes = new Map<string, number>()
  for (const [url] of trace) {
    if (!url.startsWith("file:")) continue
    try {
      sizes.set(url, fs.statSync(fileURLToPath(url)).size)
    } catch {
      // a resolved URL that was never a file (a data: import, a deleted temp file)
    }
  }
  const byPackage = new Map<string, { n: number; bytes: number }>()
  for (const [url, bytes] of sizes) {
    const p = ownerOfUrl(url)
    const t = byPackage.get(p) ?? { n: 0, bytes: 0 }
    byPackage.set(p, { n: t.n + 1, bytes: t.bytes + bytes })
  }
  // the chain up to (and including) the first file of our own, e.g. "cara src/layers/X.js → @effect/platform → ..."
  const chain = (url: string) => {
    const hops: Array<string> = []
    for (let u: string | null = url, i = 0; u !== null && i < 40; i++) {
      hops.unshift(`${short(u)}`)
      if (u.includes("/dist/src/")) break
      u = parents.get(u)?.parent ?? null
    }
    return hops.join(" → ")
  }
  const total = [...sizes.values()].reduce((a, b) => a + b, 0)
  return {
    modules: sizes.size,
    sourceMB: Number((total / 2 ** 20).toFixed(1)),
    byPackage: [...byPackage].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, top)
      .map(([p, t]) => `${p} ${(t.bytes / 2 ** 20).toFixed(2)} MB ×${t.n}`).join("; "),
    biggestFiles: [...sizes].sort((a, b) => b[1] - a[1]).slice(0, top)
      .map(([u, b]) => `${(b / 1024).toFixed(0)} KB ${chain(u)}`)
  }
}

const main = async () => {
  const w = await world()
  try {
    const alice = await w.human()
    const bot = await w.bot({ allowUsers: [alice.userId] })
    const daemonTrace = path.join(bot.dir, "modules-daemon.json")
    await bot.start({ NODE_OPTIONS: `--import=${tracer}`, CARA_BENCH_MODULE_TRACE: daemonTrace })
    const roomId = await dmWithBot(alice, bot)
    await replyTo(alice, roomId, bot.user.userId, await alice.sendText(roomId, "what do you load?"))
    const cli: Record<string, ReturnType<typeof summarise>> = {}
    for (const args of [["--version"], ["status"]]) {
      const file = path.join(bot.dir, `modules-cli-${args[0]!.replace(/^-+/, "")}.json`)
      spawnSync(process.execPath, [CLI, ...args], {
        env: bot.cliEnv({ NODE_OPTIONS: `--import=${tracer}`, CARA_BENCH_MODULE_TRACE: file }),
        stdio: "ignore"
      })
      cli[args.join(" ")] = summarise(file)
    }
    await bot.stop("SIGTERM")
    log("daemon stopped; summarising")
    emit({ bench: "modules", daemon: summarise(daemonTrace), cli })
  } finally {
    await w.close()
  }
}

await main()
process.exit(0)
