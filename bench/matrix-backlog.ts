// Backlog: BENCH_BACKLOG_MESSAGES (1,000) encrypted messages from an allowed user in BENCH_BACKLOG_ROOMS (10)
// rooms, sent while the daemon is stopped; then the daemon starts: time from spawn to the first sync and until
// every message is answered (the daemon's "Matrix message answered" lines), and events per second. Afterwards
// the human checks from the server history that each message got exactly one reply.
// Run: `npm run bench -- matrix-backlog` or `node_modules/.bin/vite-node bench/matrix-backlog.ts`.
import { tally } from "../scripts/chaos.js"
import { count } from "../test/integration/matrix-support.js"
import { emit, envNumber, log, pidOf, round, sample, sleep, world } from "./_matrix-lib.js"

const MESSAGES = envNumber("BENCH_BACKLOG_MESSAGES", 1000)
const ROOMS = envNumber("BENCH_BACKLOG_ROOMS", 10)

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

    const t0 = performance.now()
    await bot.start()
    const syncedMs = performance.now() - t0
    const answered = () => count(bot.output(), /Matrix message answered/)
    while (answered() < MESSAGES) {
      if (performance.now() - t0 > 30 * 60_000) {
        throw new Error(`only ${answered()} of ${MESSAGES} answered after 30 minutes`)
      }
      await sleep(20)
    }
    const allMs = performance.now() - t0
    const s = sample(pidOf(bot))

    // the human's count, from the server history
    let t = await tally(alice, rooms, bot.user.userId, sent)
    for (let i = 0; i < 30 && [...t.replies.values()].some((x) => x.size === 0); i++) {
      await sleep(2_000)
      t = await tally(alice, rooms, bot.user.userId, sent)
    }
    const counts = [...t.replies.values()].map((x) => x.size)
    emit({
      bench: "matrix-backlog",
      messages: MESSAGES,
      rooms: ROOMS,
      startToFirstSyncMs: Math.round(syncedMs),
      startToAllAnsweredMs: Math.round(allMs),
      eventsPerSecond: round(MESSAGES / (allMs / 1000), 1),
      eventsPerSecondAfterSync: round(MESSAGES / ((allMs - syncedMs) / 1000), 1),
      answeredOnce: counts.filter((c) => c === 1).length,
      unanswered: counts.filter((c) => c === 0).length,
      doubled: counts.filter((c) => c > 1).length,
      cpuSecondsTotal: round(s.cpuSeconds, 2),
      rssMBAfter: s.rssMB
    })
  } finally {
    await w.close()
  }
}

await main()
process.exit(0)
