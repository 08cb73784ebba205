// Reply overhead and cost per reply, against a fresh Synapse from the test harness and the instant fake model.
//   bot:   the human sends an encrypted message in a DM, the bot's encrypted reply is decrypted by the human;
//          BENCH_REPLY_MESSAGES (200) sequential round trips; p50/p95/p99.
//   floor: the same round trip between two human clients in an encrypted room (one sends, the other answers
//          when it has decrypted the message), same count; the ratio bot/floor is the overhead we add.
//   cost:  the daemon's CPU seconds and bytes written to storage (/proc/pid/io) per answered message.
//   profile: a second daemon run under `node --cpu-prof` answering BENCH_PROFILE_MESSAGES (50), summarised
//          as the top functions and packages by self time (0 turns it off).
//   BENCH_REPLY_TRACE_STORES=1: the measured daemon runs with bench/_idb-write-trace.mjs preloaded and the result
//          adds the IndexedDB write requests per reply, by database/object store (the tracer costs some CPU).
// Run: `npm run bench -- matrix-reply` or `node_modules/.bin/vite-node bench/matrix-reply.ts`.
import * as fs from "node:fs"
import * as path from "node:path"
import {
  dirSize,
  dmWithBot,
  emit,
  envNumber,
  floorRoundTrips,
  idbWriteTracer,
  log,
  newestProfile,
  percentile,
  pidOf,
  replyTo,
  round,
  sample,
  storeWrites,
  summariseProfile,
  world
} from "./_matrix-lib.js"

const N = envNumber("BENCH_REPLY_MESSAGES", 200)
const WARMUP = envNumber("BENCH_REPLY_WARMUP", 5)
const PROFILE_N = envNumber("BENCH_PROFILE_MESSAGES", 50)
const TRACE = envNumber("BENCH_REPLY_TRACE_STORES", 0) > 0

const stats = (xs: ReadonlyArray<number>) => ({
  p50: round(percentile(xs, 50)),
  p95: round(percentile(xs, 95)),
  p99: round(percentile(xs, 99)),
  mean: round(xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length))
})

const main = async () => {
  const w = await world()
  try {
    const alice = await w.human()
    const bob = await w.human()

    log(`floor: ${N} round trips between two humans`)
    const floorMs = await floorRoundTrips(alice, bob, N, WARMUP)

    const bot = await w.bot({ allowUsers: [alice.userId] })
    await bot.start(TRACE ? { NODE_OPTIONS: `--import=${idbWriteTracer}` } : {})
    const roomId = await dmWithBot(alice, bot)
    for (let i = 0; i < WARMUP; i++) {
      await replyTo(alice, roomId, bot.user.userId, await alice.sendText(roomId, `warm-up ${i}`))
    }

    log(`bot: ${N} sequential encrypted messages`)
    const pid = pidOf(bot)
    const before = sample(pid)
    const fromWall = Date.now()
    const botMs: Array<number> = []
    for (let i = 0; i < N; i++) {
      const t0 = performance.now()
      const sent = await alice.sendText(roomId, `question ${i}`)
      await replyTo(alice, roomId, bot.user.userId, sent)
      botMs.push(performance.now() - t0)
    }
    const after = sample(pid)
    const traced = TRACE ? { idbWritesPerReply: storeWrites(bot.output(), fromWall, Date.now(), N, "reply") } : {}
    const stateBytes = dirSize(bot.dir)
    await bot.stop("SIGTERM")

    let profile: Record<string, string | number> = {}
    if (PROFILE_N > 0) {
      log(`profile: ${PROFILE_N} messages under --cpu-prof`)
      const profDir = path.join(bot.dir, "cpu-profile")
      fs.mkdirSync(profDir, { recursive: true })
      const spawnedAt = performance.now()
      await bot.start({ NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profDir}` })
      const repliesFrom = performance.now() - spawnedAt
      for (let i = 0; i < PROFILE_N; i++) {
        await replyTo(alice, roomId, bot.user.userId, await alice.sendText(roomId, `profiled ${i}`))
      }
      const exit = await bot.stop("SIGTERM")
      const file = newestProfile(profDir)
      if (file === undefined) {
        profile = { note: `no profile written (daemon exit ${JSON.stringify(exit)})` }
      } else {
        const s = summariseProfile(file, { fromMs: repliesFrom })
        profile = {
          note:
            `self time of the daemon from its first sync to its stop (${PROFILE_N} replies), ${s.totalMs} ms busy; ` +
            "shares are of the busy time",
          topFunctions: s.functions,
          topPackages: s.owners
        }
      }
    }

    const bs = stats(botMs)
    const fs_ = stats(floorMs)
    emit({
      bench: "matrix-reply",
      messages: N,
      replyMs: bs,
      floorMs: fs_,
      ratio: { p50: round(bs.p50 / fs_.p50, 2), p95: round(bs.p95 / fs_.p95, 2) },
      perReply: {
        cpuSeconds: round((after.cpuSeconds - before.cpuSeconds) / N, 4),
        bytesWritten: Math.round((after.writeBytes - before.writeBytes) / N)
      },
      rssMBAfter: after.rssMB,
      ...traced,
      stateDirBytes: stateBytes,
      profile
    })
  } finally {
    await w.close()
  }
}

await main()
process.exit(0)
