// Shared by bench/matrix-*.ts (the leading underscore keeps scripts/bench.mjs from running it as a bench).
// Everything end to end goes through the test helpers: a fresh Synapse from the harness, the loopback fake
// Anthropic server, the real daemon process (makeBot) and the Element-like Human client. What is added here is
// only measurement: the daemon's CPU time, RSS and bytes written (from /proc), percentiles, and a summary of a
// V8 CPU profile.
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import {
  type Bot,
  type BotOptions,
  makeBot,
  startFakeLlm,
  UNBOUNDED_BUDGET
} from "../test/integration/matrix-support.js"
import type { FakeLlmServer } from "../test/support/fake-llm.js"
import { Human } from "../test/support/human.js"
import { startSynapse, type SynapseServer } from "../test/support/synapse/harness.js"
import type { SharedSynapse } from "../test/support/synapse/index.js"

export const envNumber = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < 0) {
    throw new Error(`${name}=${raw} is not a non-negative number; unset it or give a number`)
  }
  return n
}

export const log = (line: string): void => {
  process.stderr.write(`[bench] ${line}\n`)
}

/** Prints the bench's one JSON result line (scripts/bench.mjs reads the last stdout line). */
export const emit = (result: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

export const shared = (s: SynapseServer): SharedSynapse => ({
  baseUrl: s.baseUrl,
  serverName: s.serverName,
  synapseVersion: s.synapseVersion,
  registerUser: (...a) => s.registerUser(...a)
})

export interface World {
  readonly synapse: SynapseServer
  readonly hs: SharedSynapse
  readonly llm: FakeLlmServer
  readonly humans: Array<Human>
  readonly bots: Array<Bot>
  human(): Promise<Human>
  bot(options?: BotOptions): Promise<Bot>
  close(): Promise<void>
}

/** A fresh Synapse + fake model; humans and bots made through it are stopped by close(). */
export const world = async (): Promise<World> => {
  const synapse = await startSynapse()
  const { llm, close: closeLlm } = await startFakeLlm()
  const hs = shared(synapse)
  const humans: Array<Human> = []
  const bots: Array<Bot> = []
  return {
    synapse,
    hs,
    llm,
    humans,
    bots,
    human: async () => {
      const u = await hs.registerUser()
      const h = await Human.login(hs.baseUrl, u.userId, u.password)
      humans.push(h)
      await h.start()
      return h
    },
    bot: async (options = {}) => {
      // info, not debug: the benches measure the daemon, not its debug logging
      // CARA_NODE_FLAGS passes through, so a run can compare the daemon's V8 settings with Node's defaults ("none")
      const flags = process.env["CARA_NODE_FLAGS"] === undefined
        ? {}
        : { CARA_NODE_FLAGS: process.env["CARA_NODE_FLAGS"] }
      const b = await makeBot(hs, llm, {
        matrixExtra: UNBOUNDED_BUDGET,
        ...options,
        env: { CARA_LOG_LEVEL: "info", ...flags, ...options.env }
      })
      bots.push(b)
      return b
    },
    close: async () => {
      for (const b of bots) await b.stop("SIGKILL").catch(() => undefined)
      for (const h of humans) await h.stop().catch(() => undefined)
      await closeLlm()
      await synapse.stop()
      for (const b of bots) {
        if (process.env["BENCH_KEEP"] === undefined) fs.rmSync(b.dir, { recursive: true, force: true })
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ /proc

const CLK_TCK = 100 // USER_HZ on Linux

export interface ProcSample {
  /** user + system CPU seconds of the whole process (all threads) */
  readonly cpuSeconds: number
  /** bytes this process caused to be written to storage (page-cache dirtying, /proc/pid/io write_bytes) */
  readonly writeBytes: number
  readonly rssMB: number
  readonly at: number
}

export const sample = (pid: number): ProcSample => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  // fields after the ")" of the command name: state is field 3, utime 14, stime 15
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  const utime = Number(rest[11])
  const stime = Number(rest[12])
  const io = fs.readFileSync(`/proc/${pid}/io`, "utf8")
  const writeBytes = Number(/write_bytes:\s*(\d+)/.exec(io)?.[1] ?? 0)
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const rssKb = Number(/VmRSS:\s*(\d+)/.exec(status)?.[1] ?? 0)
  return { cpuSeconds: (utime + stime) / CLK_TCK, writeBytes, rssMB: Math.round(rssKb / 1024), at: performance.now() }
}

export const pidOf = (bot: Bot): number => {
  const pid = bot.running?.child.pid
  if (pid === undefined) throw new Error("the bot is not running")
  return pid
}

/** The total size of the files under `dir` (what the state dir holds, for context next to bytes written). */
export const dirSize = (dir: string): number => {
  let total = 0
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) total += dirSize(p)
    else if (e.isFile()) total += fs.statSync(p).size
  }
  return total
}

// ------------------------------------------------------------------------------------------------ stats

export const percentile = (xs: ReadonlyArray<number>, p: number): number => {
  if (xs.length === 0) return 0
  const s = [...xs].sort((a, b) => a - b)
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))
  return s[i]!
}

export const round = (x: number, digits = 1): number => Number(x.toFixed(digits))

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** The reply to `eventId` from `sender` (resolves when the human has decrypted it). */
export const replyTo = (human: Human, roomId: string, sender: string, eventId: string, timeoutMs = 60_000) =>
  human.waitForMessage(
    roomId,
    (m) =>
      m.sender === sender &&
      (m.content["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]
          ?.event_id === eventId,
    timeoutMs
  )

/** An encrypted DM from the human to the bot, with the bot joined. */
export const dmWithBot = async (human: Human, bot: Bot): Promise<string> => {
  const roomId = await human.createEncryptedDm(bot.user.userId)
  await human.waitForMembership(roomId, bot.user.userId, "join", 60_000)
  return roomId
}

/**
 * Two humans ping-pong in an encrypted room (one sends, the other answers once it has decrypted): the floor any
 * bot on this Synapse could reach; ms per round trip after `warmup` unmeasured ones.
 */
export const floorRoundTrips = async (alice: Human, bob: Human, count: number, warmup = 5): Promise<Array<number>> => {
  const roomId = await alice.createEncryptedRoom([bob.userId])
  await bob.joinRoom(roomId, 30_000)
  await alice.waitForMembership(roomId, bob.userId, "join", 30_000)
  const times: Array<number> = []
  for (let i = -warmup; i < count; i++) {
    const answered = (async () => {
      const m = await bob.waitForMessage(roomId, (m) => m.sender === alice.userId && m.body === `ping ${i}`, 60_000)
      await bob.client.sendEvent(roomId, "m.room.message" as never, {
        msgtype: "m.text",
        body: `pong ${i}`,
        "m.relates_to": { "m.in_reply_to": { event_id: m.eventId } }
      } as never)
    })()
    const t0 = performance.now()
    const sent = await alice.sendText(roomId, `ping ${i}`)
    await replyTo(alice, roomId, bob.userId, sent)
    if (i >= 0) times.push(performance.now() - t0)
    await answered
  }
  return times
}

// ------------------------------------------------------------------------------------------------ store writes

/** Preload (`NODE_OPTIONS=--import=...`) that logs the daemon's IndexedDB write requests. */
export const idbWriteTracer = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "_idb-write-trace.mjs")

/**
 * The `[idb-write]` lines (bench/_idb-write-trace.mjs) between two wall-clock instants, summed per db/store and
 * divided by `per` (minutes, replies), as one note line.
 */
export const storeWrites = (output: string, from: number, to: number, per: number, unit: string): string => {
  const totals = new Map<string, { n: number; bytes: number; same: number }>()
  for (const m of output.matchAll(/\[idb-write\] (\d+) (\w+) db=(\S+) store=(\S+) bytes=(-?\d+)(?: same=(\d))?/g)) {
    const at = Number(m[1])
    if (at < from || at > to) continue
    const key = `${m[3]}/${m[4]} ${m[2]}`
    const t = totals.get(key) ?? { n: 0, bytes: 0, same: 0 }
    totals.set(key, { n: t.n + 1, bytes: t.bytes + Math.max(0, Number(m[5])), same: t.same + Number(m[6] ?? 0) })
  }
  const writes = [...totals].sort((a, b) => b[1].bytes - a[1].bytes)
    .map(([k, t]) =>
      `${k}: ${round(t.n / per, 2)}/${unit}, ${
        Math.round(t.bytes / per)
      } B/${unit}, ${t.same} of ${t.n} identical to the last put`
    )
    .join("; ") || "none"
  // The durable store's own view (rows written, puts skipped as unchanged), when the tracer could hook it
  const sqlite = { transactions: 0, committed: 0, rows: 0, unchanged: 0, withinMs: 0 }
  for (
    const m of output.matchAll(
      /\[idb-commit\] (\d+) role=(\S+) committed=(\d+) rows=(\d+) unchanged=(\d+)(?: gapUs=(-?\d+))?/g
    )
  ) {
    const at = Number(m[1])
    if (at < from || at > to) continue
    sqlite.transactions++
    sqlite.committed += Number(m[3])
    sqlite.rows += Number(m[4])
    sqlite.unchanged += Number(m[5])
    const gap = Number(m[6] ?? -1)
    if (gap >= 0 && gap < 1000) sqlite.withinMs++
  }
  const commits = sqlite.transactions === 0 ?
    "" :
    `; sqlite: ${round(sqlite.transactions / per, 2)} IndexedDB transactions/${unit}, ${
      round(sqlite.committed / per, 2)
    } SQLite commits/${unit}, ` +
    `${round(sqlite.rows / per, 2)} rows written/${unit}, ${
      round(sqlite.unchanged / per, 2)
    } unchanged puts skipped/${unit}, ` +
    `${sqlite.withinMs} of ${sqlite.transactions} began < 1 ms after the previous one ended`
  return writes + commits
}

// ------------------------------------------------------------------------------------------------ CPU profile

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
}
interface CpuProfile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
  readonly startTime: number
}

/** Where the code lives: a package name, node: internals, the V8 pseudo-frames, or our own file. */
const ownerOf = (url: string, name: string): string => {
  if (url === "") return name.startsWith("(") ? name : "(native)"
  if (url.startsWith("wasm://")) return "matrix-sdk-crypto (wasm)"
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (pkg) return pkg[1]!
  if (url.startsWith("node:")) return "node (internals)"
  const ours = /\/(dist\/)?(src\/.+)$/.exec(url)
  return ours ? `cara ${ours[2]}` : path.basename(url)
}

/**
 * Self time by function and by owner (package) from a .cpuprofile: the top entries as one line each,
 * `name (owner) share%`, so the bench output says where the daemon's CPU went.
 */
export const summariseProfile = (
  file: string,
  options: {
    readonly top?: number
    readonly fromMs?: number
    readonly beforeEndMs?: number
    readonly lengthMs?: number
  } = {}
): { functions: string; owners: string; totalMs: number } => {
  const top = options.top ?? 12
  const prof = JSON.parse(fs.readFileSync(file, "utf8")) as CpuProfile
  const byId = new Map(prof.nodes.map((n) => [n.id, n]))
  const selfUs = new Map<number, number>()
  // fromMs: only samples taken that long after the profile started (skips start-up when measuring replies)
  let fromUs = (options.fromMs ?? 0) * 1000
  // beforeEndMs + lengthMs: only the lengthMs that ended beforeEndMs before the profile did (an idle window
  // without the shutdown after it, counted from the profile's own end, which needs no clock shared with the bench)
  let toUs = Infinity
  if (options.beforeEndMs !== undefined && options.lengthMs !== undefined) {
    const totalUs = prof.timeDeltas.reduce((a, b) => a + b, 0)
    toUs = totalUs - options.beforeEndMs * 1000
    fromUs = toUs - options.lengthMs * 1000
  }
  let elapsedUs = 0
  prof.samples.forEach((id, i) => {
    const d = prof.timeDeltas[i] ?? 0
    elapsedUs += d
    if (elapsedUs >= fromUs && elapsedUs < toUs) selfUs.set(id, (selfUs.get(id) ?? 0) + d)
  })
  const fnTotals = new Map<string, number>()
  const ownerTotals = new Map<string, number>()
  let total = 0
  for (const [id, us] of selfUs) {
    const n = byId.get(id)
    if (n === undefined) continue
    total += us
    const owner = ownerOf(n.callFrame.url, n.callFrame.functionName)
    const fn = `${n.callFrame.functionName || "(anonymous)"} (${owner}${
      n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ""
    })`
    fnTotals.set(fn, (fnTotals.get(fn) ?? 0) + us)
    ownerTotals.set(owner, (ownerTotals.get(owner) ?? 0) + us)
  }
  const busy = total - (ownerTotals.get("(idle)") ?? 0)
  const line = (m: Map<string, number>) =>
    [...m]
      .filter(([k]) => k !== "(idle)" && !k.startsWith("(idle)"))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, us]) => `${k} ${((100 * us) / Math.max(1, busy)).toFixed(1)}%`)
      .join("; ")
  return { functions: line(fnTotals), owners: line(ownerTotals), totalMs: Math.round(busy / 1000) }
}

/** The newest .cpuprofile in `dir`. */
export const newestProfile = (dir: string): string | undefined => {
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith(".cpuprofile")) : []
  return files
    .map((f) => path.join(dir, f))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0]
}
