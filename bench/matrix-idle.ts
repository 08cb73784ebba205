// Idle cost: the daemon joined to BENCH_IDLE_ROOMS (20) encrypted rooms (one message answered in each, so
// every room has a Megolm session), then left alone for BENCH_IDLE_SECONDS (300): CPU % of one core, bytes
// written to storage per minute (/proc/pid/io write_bytes: the daemon writes files only under its state dir),
// and RSS at the end. A settle pause (BENCH_IDLE_SETTLE_SECONDS, 15) after the last reply is not measured.
// BENCH_IDLE_TRACE_STORES=1 preloads bench/_idb-write-trace.mjs into the daemon and adds, per IndexedDB
// database/object store, the write requests made during the idle window (count and serialized bytes per
// minute): what the daemon re-saves while nothing happens. BENCH_IDLE_PROFILE=1 runs the daemon under
// `--cpu-prof` and adds a summary of its self time during the idle window (what the idle CPU is spent on);
// BENCH_IDLE_TRACE_GC=1 runs it with `--trace-gc` and adds the collections V8 made during the idle window.
// Run: `npm run bench -- matrix-idle` or `node_modules/.bin/vite-node bench/matrix-idle.ts`.
import * as fs from "node:fs"
import * as path from "node:path"
import { DEFAULT_DAEMON_FLAGS } from "../src/domain/v8flags.js"
import {
  dirSize,
  emit,
  envNumber,
  idbWriteTracer,
  log,
  newestProfile,
  pidOf,
  replyTo,
  round,
  sample,
  sleep,
  storeWrites,
  summariseProfile,
  world
} from "./_matrix-lib.js"

const ROOMS = envNumber("BENCH_IDLE_ROOMS", 20)
const SECONDS = envNumber("BENCH_IDLE_SECONDS", 300)
const SETTLE = envNumber("BENCH_IDLE_SETTLE_SECONDS", 15)
const TRACE = envNumber("BENCH_IDLE_TRACE_STORES", 0) > 0
const PROFILE = envNumber("BENCH_IDLE_PROFILE", 0) > 0
const TRACE_GC = envNumber("BENCH_IDLE_TRACE_GC", 0) > 0

/** `--trace-gc` lines of one window, by kind: count, pause ms, and the reasons V8 gave. */
const gcSummary = (text: string): string => {
  const kinds = new Map<string, { n: number; ms: number; reasons: Map<string, number> }>()
  const line =
    /ms: (Scavenge|Mark-Compact|Minor Mark-Sweep|Mark-Sweep)\b.*?, ([\d.]+) \/ [\d.]+ ms\s+\(average mu[^)]*\)\s*([^;\n]*)/g
  for (const m of text.matchAll(line)) {
    const k = kinds.get(m[1]!) ?? { n: 0, ms: 0, reasons: new Map<string, number>() }
    k.n++
    k.ms += Number(m[2])
    const reason = (m[3] ?? "").replace(/^[,\s]+/, "").trim() || "(none given)"
    k.reasons.set(reason, (k.reasons.get(reason) ?? 0) + 1)
    kinds.set(m[1]!, k)
  }
  return [...kinds].map(([kind, k]) =>
    `${kind} ${k.n}× ${round(k.ms, 1)} ms (${[...k.reasons].map(([r, n]) => `${n}× ${r}`).join(", ")})`
  ).join("; ") || "none"
}
const main = async () => {
  const w = await world()
  try {
    const alice = await w.human()
    const bot = await w.bot({ allowUsers: [alice.userId] })
    const profDir = path.join(bot.dir, "cpu-profile")
    if (PROFILE) fs.mkdirSync(profDir, { recursive: true })
    const nodeOptions = [
      TRACE ? `--import=${idbWriteTracer}` : "",
      PROFILE ? `--cpu-prof --cpu-prof-dir=${profDir}` : ""
    ].join(" ").trim()
    // --trace-gc is refused in NODE_OPTIONS: it goes with the daemon's own V8 flags (its re-exec applies them)
    const gcFlags = TRACE_GC
      ? { CARA_NODE_FLAGS: `${process.env["CARA_NODE_FLAGS"] ?? DEFAULT_DAEMON_FLAGS.join(" ")} --trace-gc` }
      : {}
    await bot.start({ ...(nodeOptions === "" ? {} : { NODE_OPTIONS: nodeOptions }), ...gcFlags })
    const rooms: Array<string> = []
    for (let i = 0; i < ROOMS; i++) rooms.push(await alice.createEncryptedRoom([bot.user.userId], `idle ${i}`))
    for (const r of rooms) {
      await alice.waitForMembership(r, bot.user.userId, "join", 60_000)
      await replyTo(alice, r, bot.user.userId, await alice.sendText(r, "hello"))
    }
    const status = await bot.status()
    log(`${ROOMS} rooms joined and answered; settling ${SETTLE} s, then idle for ${SECONDS} s`)
    await sleep(SETTLE * 1000)
    const pid = pidOf(bot)
    const a = sample(pid)
    const fromWall = Date.now()
    const idleStart = performance.now()
    const outputFrom = bot.output().length
    await sleep(SECONDS * 1000)
    const b = sample(pid)
    const idleEnd = performance.now()
    const gc = TRACE_GC ? { gcIdle: gcSummary(bot.output().slice(outputFrom)) } : {}
    const minutes = (b.at - a.at) / 60_000
    const stateBytes = dirSize(bot.dir) // before a profiled daemon stops and writes its profile there
    const traced = TRACE ? { idbWritesIdle: storeWrites(bot.output(), fromWall, Date.now(), minutes, "min") } : {}
    let profile: Record<string, string | number> = {}
    if (PROFILE) {
      const exit = await bot.stop("SIGTERM")
      const stopMs = performance.now() - idleEnd
      const file = newestProfile(profDir)
      if (file === undefined) profile = { note: `no profile written (daemon exit ${JSON.stringify(exit)})` }
      else {
        const p = summariseProfile(file, { beforeEndMs: stopMs, lengthMs: idleEnd - idleStart })
        profile = {
          note:
            `self time of the daemon during the idle window (${SECONDS} s, without start-up and shutdown), ${p.totalMs} ms busy; ` +
            "shares are of the busy time; the profiler's own sampling inflates cpuPercent in this run",
          topFunctions: p.functions,
          topPackages: p.owners
        }
      }
    }
    emit({
      bench: "matrix-idle",
      rooms: ROOMS,
      // what the daemon itself reports (/control/channels → extra.encryptedRoomCount)
      joinedEncryptedRooms: Number(
        (status?.["extra"] as Record<string, unknown> | undefined)?.["encryptedRoomCount"] ?? -1
      ),
      seconds: SECONDS,
      cpuPercent: round((100 * (b.cpuSeconds - a.cpuSeconds)) / ((b.at - a.at) / 1000), 3),
      bytesWrittenPerMinute: Math.round((b.writeBytes - a.writeBytes) / minutes),
      rssMB: b.rssMB,
      stateDirBytes: stateBytes,
      ...traced,
      ...gc,
      ...(PROFILE ? { profile } : {}),
      note: "CPU % of one core; /proc counts CPU in 10 ms ticks, so short runs are coarse"
    })
  } finally {
    await w.close()
  }
}

await main()
process.exit(0)
