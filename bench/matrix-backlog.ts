// Backlog: BENCH_BACKLOG_MESSAGES (1,000) encrypted messages from an allowed user in BENCH_BACKLOG_ROOMS (10)
// rooms, sent while the daemon is stopped; then the daemon starts: time from spawn to the first sync and until
// every message is answered (the daemon's "Matrix message answered" lines), and events per second. Afterwards
// the human checks from the server history that each message got exactly one reply.
// BENCH_BACKLOG_PROFILE=1 runs the catch-up under `--cpu-prof` and adds a summary of the daemon's self time
// from its first sync until every message is answered; BENCH_BACKLOG_TRACE_STORES=1 adds the IndexedDB writes
// and SQLite commits per event (bench/_idb-write-trace.mjs). Neither is on by default: both slow the daemon.
// Run: `npm run bench -- matrix-backlog` or `node_modules/.bin/vite-node bench/matrix-backlog.ts`.
import * as fs from "node:fs"
import * as path from "node:path"
import { count } from "../test/integration/matrix-support.js"
import { tally } from "../test/support/tally.js"
import {
  emit,
  envNumber,
  idbWriteTracer,
  log,
  newestProfile,
  pidOf,
  round,
  sample,
  sleep,
  storeWrites,
  summariseProfile,
  world
} from "./_matrix-lib.js"

const MESSAGES = envNumber("BENCH_BACKLOG_MESSAGES", 1000)
const ROOMS = envNumber("BENCH_BACKLOG_ROOMS", 10)
const PROFILE = envNumber("BENCH_BACKLOG_PROFILE", 0) > 0
const TRACE = envNumber("BENCH_BACKLOG_TRACE_STORES", 0) > 0
const STALL_S = envNumber("BENCH_BACKLOG_STALL_SECONDS", 120)

const main = async () => {
  const w = await world()
  try {
    const alice = await w.human()
    const bot = await w.bot({ allowUsers: [alice.userId] })
    await bot.start()
    const rooms: Array<string> = []
    for (let i = 0; i < ROOMS; i++) rooms.push(await alice.createEncryptedRoom([bot.user.userId], `backlog ${i}`))
    for (const r of rooms) await alice.waitForMembership(r, bot.user.userId, "join", 60_000)
    await bot.stop("SIGTERM")

    log(`sending ${MESSAGES} messages in ${ROOMS} rooms while the bot is down`)
    const sent = new Set<string>()
    await Promise.all(rooms.map(async (r, ri) => {
      for (let i = ri; i < MESSAGES; i += ROOMS) sent.add(await alice.sendText(r, `backlog ${i}`))
    }))

    const profDir = path.join(bot.dir, "cpu-profile")
    if (PROFILE) fs.mkdirSync(profDir, { recursive: true })
    const nodeOptions = [
      TRACE ? `--import=${idbWriteTracer}` : "",
      PROFILE ? `--cpu-prof --cpu-prof-dir=${profDir}` : ""
    ]
      .filter((o) => o !== "").join(" ")
    const t0 = performance.now()
    const fromWall = Date.now()
    await bot.start(nodeOptions === "" ? {} : { NODE_OPTIONS: nodeOptions })
    const syncedMs = performance.now() - t0
    const atSync = sample(pidOf(bot))
    const answered = () => count(bot.output(), /Matrix message answered/)
    // A catch-up that stops making progress is a result (the unanswered count below), not a hung bench:
    // after STALL_S seconds without a new answer the figures are taken up to the last one.
    let lastCount = 0
    let lastAt = performance.now()
    while (answered() < MESSAGES) {
      const n = answered()
      if (n !== lastCount) [lastCount, lastAt] = [n, performance.now()]
      if (performance.now() - lastAt > STALL_S * 1000 || performance.now() - t0 > 30 * 60_000) {
        log(`stalled: ${n} of ${MESSAGES} answered, none for ${STALL_S} s`)
        break
      }
      await sleep(20)
    }
    const done = answered()
    const stalled = done < MESSAGES
    // BENCH_KEEP: the daemon's output is kept beside its state (what a stalled catch-up did)
    if (process.env["BENCH_KEEP"] !== undefined) fs.writeFileSync(path.join(bot.dir, "daemon.log"), bot.output())
    const allMs = (stalled ? lastAt : performance.now()) - t0
    const s = sample(pidOf(bot))
    const traced = TRACE
      ? { idbWritesPerEvent: storeWrites(bot.output(), fromWall, Date.now(), Math.max(1, done), "event") }
      : {}
    let profile: Record<string, string | number> = {}
    if (PROFILE) {
      const stopAt = performance.now()
      const exit = await bot.stop("SIGTERM")
      const stopMs = performance.now() - stopAt
      const file = newestProfile(profDir)
      if (file === undefined) profile = { note: `no profile written (daemon exit ${JSON.stringify(exit)})` }
      else {
        log(`profile: ${file}`)
        const p = summariseProfile(file, {
          beforeEndMs: stopMs + (stopAt - (t0 + allMs)),
          lengthMs: allMs - syncedMs
        })
        profile = {
          note:
            `self time of the daemon from its first sync until all ${MESSAGES} were answered, ${p.totalMs} ms busy; ` +
            "shares are of the busy time",
          topFunctions: p.functions,
          topPackages: p.owners
        }
      }
    }

    // the human's count, from the server history
    const repliesPerMessage = async () =>
      [...(await tally(alice, rooms, bot.user.userId, sent)).replies.values()].map((s) => s.size)
    let counts = await repliesPerMessage()
    for (let i = 0; i < 30 && counts.some((c) => c === 0); i++) {
      await sleep(2_000)
      counts = await repliesPerMessage()
    }
    emit({
      bench: "matrix-backlog",
      messages: MESSAGES,
      rooms: ROOMS,
      startToFirstSyncMs: Math.round(syncedMs),
      startToAllAnsweredMs: Math.round(allMs),
      eventsPerSecond: round(MESSAGES / (allMs / 1000), 1),
      eventsPerSecondAfterSync: round(MESSAGES / ((allMs - syncedMs) / 1000), 1),
      answeredByTheDaemon: done,
      answeredOnce: counts.filter((c) => c === 1).length,
      unanswered: counts.filter((c) => c === 0).length,
      doubled: counts.filter((c) => c > 1).length,
      cpuSecondsTotal: round(s.cpuSeconds, 2),
      cpuMsPerEvent: round((1000 * s.cpuSeconds) / MESSAGES, 1),
      // per answered event (a stalled run answered fewer than it was sent)
      cpuMsPerEventAfterSync: round((1000 * (s.cpuSeconds - atSync.cpuSeconds)) / Math.max(1, done), 1),
      bytesWrittenPerEvent: Math.round((s.writeBytes - atSync.writeBytes) / Math.max(1, done)),
      rssMBAfter: s.rssMB,
      ...traced,
      profile
    })
  } finally {
    await w.close()
  }
}

await main()
process.exit(0)
