// Memory over a long run: the daemon's RSS idle with one encrypted room, idle with BENCH_SOAK_ROOMS (20), then
// while answering BENCH_SOAK_REPLIES (10,000) messages spread over those rooms (one message per room per
// round, the rooms' messages in flight together), sampled every BENCH_SOAK_SAMPLE_EVERY (500) replies; the
// slope (MB per 1,000 replies, least squares over the samples) and the last sample over the 20-room idle
// figure (target ≤ 1.2). BENCH_SOAK_SETTLE_SECONDS (10) of quiet before each idle reading.
// BENCH_SOAK_INSPECT=1 runs the daemon under `--inspect=127.0.0.1:0` and adds process.memoryUsage() at each
// idle reading, the RSS after a forced full GC at the end, and a heap snapshot summary (by constructor,
// module source text and compiled code by package); off by default, the inspector costs memory itself.
// Run: `npm run bench -- matrix-soak`, or a short run: `BENCH_SOAK_REPLIES=1000 node_modules/.bin/vite-node bench/matrix-soak.ts`.
import * as fs from "node:fs"
import * as path from "node:path"
import { connectInspector, type Inspector, memoryUsageMB, summariseHeap } from "./_heap.js"
import { emit, envNumber, log, pidOf, replyTo, round, sample, sleep, world } from "./_matrix-lib.js"

const REPLIES = envNumber("BENCH_SOAK_REPLIES", 10_000)
const ROOMS = Math.max(1, envNumber("BENCH_SOAK_ROOMS", 20))
const EVERY = Math.max(1, envNumber("BENCH_SOAK_SAMPLE_EVERY", 500))
const SETTLE = envNumber("BENCH_SOAK_SETTLE_SECONDS", 10)
const INSPECT = envNumber("BENCH_SOAK_INSPECT", 0) > 0

/** Least-squares slope of y over x. */
const slope = (points: ReadonlyArray<readonly [number, number]>): number => {
  const n = points.length
  if (n < 2) return 0
  const mx = points.reduce((a, [x]) => a + x, 0) / n
  const my = points.reduce((a, [, y]) => a + y, 0) / n
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0)
  const sxy = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0)
  return sxx === 0 ? 0 : sxy / sxx
}

const main = async () => {
  const w = await world()
  try {
    const alice = await w.human()
    const bot = await w.bot({ allowUsers: [alice.userId] })
    await bot.start(INSPECT ? { NODE_OPTIONS: "--inspect=127.0.0.1:0" } : {})
    const pid = pidOf(bot)
    const inspector: Inspector | undefined = INSPECT ? await connectInspector(bot.output()) : undefined
    const usage = async () => (inspector ? { memoryUsageMB: await memoryUsageMB(inspector) } : {})

    const rooms: Array<string> = []
    const openRoom = async (i: number) => {
      const r = await alice.createEncryptedRoom([bot.user.userId], `soak ${i}`)
      await alice.waitForMembership(r, bot.user.userId, "join", 60_000)
      await replyTo(alice, r, bot.user.userId, await alice.sendText(r, "hello"))
      rooms.push(r)
    }
    await openRoom(0)
    await sleep(SETTLE * 1000)
    const idle1 = { rssMB: sample(pid).rssMB, ...(await usage()) }
    for (let i = 1; i < ROOMS; i++) await openRoom(i)
    await sleep(SETTLE * 1000)
    const idleRooms = { rssMB: sample(pid).rssMB, ...(await usage()) }
    log(`idle RSS ${idle1.rssMB} MB with 1 room, ${idleRooms.rssMB} MB with ${ROOMS}; now ${REPLIES} replies`)

    const samples: Array<readonly [number, number]> = [[0, idleRooms.rssMB]]
    const before = sample(pid)
    let done = 0
    for (let round_ = 0; done < REPLIES; round_++) {
      const batch = rooms.slice(0, Math.min(rooms.length, REPLIES - done))
      await Promise.all(
        batch.map(async (r) => replyTo(alice, r, bot.user.userId, await alice.sendText(r, `soak ${round_}`)))
      )
      const prev = done
      done += batch.length
      if (Math.floor(done / EVERY) > Math.floor(prev / EVERY) || done === REPLIES) {
        const s = sample(pid)
        samples.push([done, s.rssMB])
        log(`${done} replies: RSS ${s.rssMB} MB`)
      }
    }
    const after = sample(pid)
    await sleep(SETTLE * 1000)
    const idleAfter = { rssMB: sample(pid).rssMB, ...(await usage()) }

    let heap: Record<string, unknown> = {}
    if (inspector !== undefined) {
      await inspector.collectGarbage()
      const rssAfterGcMB = sample(pid).rssMB
      const file = path.join(bot.dir, "soak.heapsnapshot")
      await inspector.heapSnapshot(file)
      heap = { rssAfterGcMB, snapshot: summariseHeap(file) }
      if (process.env["BENCH_KEEP"] === undefined) fs.rmSync(file, { force: true })
      inspector.close()
    }
    const last = samples[samples.length - 1]![1]
    emit({
      bench: "matrix-soak",
      rooms: ROOMS,
      replies: REPLIES,
      idleOneRoom: idle1,
      idle: idleRooms,
      rssSamplesMB: samples.map(([, y]) => y).join(" "),
      slopeMBPer1000Replies: round(slope(samples) * 1000, 2),
      rssAtEndOverIdle: round(last / Math.max(1, idleRooms.rssMB), 2),
      idleAfter,
      cpuSecondsPerReply: round((after.cpuSeconds - before.cpuSeconds) / REPLIES, 4),
      bytesWrittenPerReply: Math.round((after.writeBytes - before.writeBytes) / REPLIES),
      repliesPerSecond: round(REPLIES / ((after.at - before.at) / 1000), 1),
      ...heap,
      note: `RSS from /proc; ${ROOMS} rooms answered together each round; ${
        INSPECT ? "under --inspect (adds memory)" : "no inspector"
      }`
    })
  } finally {
    await w.close()
  }
}

await main()
process.exit(0)
