// `npm run chaos`: nothing lost, nothing doubled, under crashes.
//
//   phase 1: 5 encrypted DMs, 100 messages sent by the human at random moments while the daemon is SIGKILLed
//            at random moments and restarted, 20 times; half-way, Synapse itself is SIGKILLed and restarted,
//            and the bot must answer a message sent after that without being restarted (it recovers by itself).
//   phase 2: a rate-limited Synapse (rc_message 1/s, burst 2): a burst of messages, a few more kills, and
//            every reply still arrives.
// The verdict is the human's count: the room histories are paged from the server and decrypted by the human
// client, and every message must have exactly one reply from the bot, and no reply may point at anything
// else. Exit code 0 only when both phases hold.
//
// Knobs: CHAOS_ROOMS (5), CHAOS_MESSAGES (100), CHAOS_KILLS (20), CHAOS_RATE_MESSAGES (20),
// CHAOS_RATE_KILLS (3), CHAOS_SEED (random; printed so a failing run can be replayed).
// test/integration/chaos-short.test.ts runs runChaos() with a few rounds as part of `npm test`.
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import { type Bot, makeBot, startFakeLlm, UNBOUNDED_BUDGET } from "../test/integration/matrix-support.js"
import type { FakeLlmServer } from "../test/support/fake-llm.js"
import { Human } from "../test/support/human.js"
import { startSynapse, type SynapseServer } from "../test/support/synapse/harness.js"
import { provisionSynapse } from "../test/support/synapse/provision.js"
import { type Tally, tally } from "../test/support/tally.js"

// ------------------------------------------------------------------------------------------------ helpers

/** A small seeded PRNG (mulberry32), so a run is reproducible from its printed seed. */
export const prng = (seed: number): () => number => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** One holder at a time: the sender holds it around a send, the Synapse restart around the outage. */
class Mutex {
  private tail: Promise<void> = Promise.resolve()
  async lock<A>(body: () => Promise<A>): Promise<A> {
    const prev = this.tail
    let release!: () => void
    this.tail = new Promise<void>((r) => (release = r))
    await prev
    try {
      return await body()
    } finally {
      release()
    }
  }
}

const healthy = (baseUrl: string) =>
  fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok).catch(() => false)

/**
 * The harness's Synapse, made killable: SIGKILL the process and start it again on the same config, port and
 * database. The harness's own stop() later removes the data dir; close() must run first.
 */
export class RestartableSynapse {
  private respawned: ChildProcess | undefined
  private readonly killOnExit = () => this.respawned?.kill("SIGKILL")

  constructor(readonly server: SynapseServer) {
    process.on("exit", this.killOnExit)
  }

  private currentPid(): number {
    return this.respawned?.pid ?? this.server.pid
  }

  /** SIGKILL, wait `downMs`, start again; resolves once /health answers. Returns the outage in ms. */
  async killAndRestart(downMs: number): Promise<number> {
    const t0 = performance.now()
    await this.kill()
    await sleep(downMs)
    await this.start()
    return performance.now() - t0
  }

  /** SIGKILL; resolves once the process is gone and /health no longer answers. */
  async kill(): Promise<void> {
    const old = this.respawned
    const gone = old === undefined
      ? Promise.resolve()
      : new Promise<void>((r) => (old.exitCode !== null || old.signalCode !== null ? r() : old.once("exit", () => r())))
    process.kill(this.currentPid(), "SIGKILL")
    await gone
    for (let i = 0; i < 100 && (await healthy(this.server.baseUrl)); i++) await sleep(50)
  }

  /** Starts the killed Synapse again on its config, port and database; resolves once /health answers. */
  async start(): Promise<void> {
    const { python } = await provisionSynapse({})
    const logFd = fs.openSync(`${this.server.dataDir}/synapse.log`, "a", 0o600)
    const child = spawn(python, [
      "-m",
      "synapse.app.homeserver",
      "--config-path",
      `${this.server.dataDir}/homeserver.yaml`
    ], {
      cwd: this.server.dataDir,
      stdio: ["ignore", logFd, logFd],
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1" }
    })
    fs.closeSync(logFd)
    this.respawned = child
    const deadline = Date.now() + 60_000
    while (!(await healthy(this.server.baseUrl))) {
      if (child.exitCode !== null) {
        throw new Error(`restarted Synapse exited (code ${child.exitCode}):\n${await this.server.logTail(30)}`)
      }
      if (Date.now() > deadline) {
        throw new Error(`restarted Synapse not healthy within 60 s:\n${await this.server.logTail(30)}`)
      }
      await sleep(100)
    }
  }

  async close(): Promise<void> {
    const child = this.respawned
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once("exit", () => r()))
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
      await exited
      clearTimeout(timer)
    }
    process.off("exit", this.killOnExit)
    await this.server.stop()
  }
}

// ------------------------------------------------------------------------------------------------ counting

const summary = (t: Tally) => {
  const counts = [...t.replies.values()].map((s) => s.size)
  return {
    answeredOnce: counts.filter((c) => c === 1).length,
    unanswered: counts.filter((c) => c === 0).length,
    doubled: counts.filter((c) => c > 1).length,
    strays: t.strays.length,
    undecrypted: t.undecrypted
  }
}

// ------------------------------------------------------------------------------------------------ the run

export interface ChaosOptions {
  readonly rooms: number
  readonly messages: number
  readonly kills: number
  /** kill and restart Synapse once, half-way through the kills */
  readonly restartSynapse: boolean
  readonly seed: number
  /** how long to wait for the last answers after the last kill */
  readonly settleTimeoutMs?: number
  readonly log?: (line: string) => void
}

export interface ChaosResult {
  readonly seed: number
  readonly sent: number
  readonly kills: number
  readonly answeredOnce: number
  readonly unanswered: number
  readonly doubled: number
  readonly strays: number
  readonly undecrypted: number
  /** from Synapse killed to the bot's answer to a message sent after the restart (ms) */
  readonly synapseRecoveryMs: number | undefined
  readonly wallMs: number
  readonly ok: boolean
}

/**
 * One chaos phase against `synapse` (which this function may kill and restart): a fresh bot and human, DMs,
 * messages sent at random moments while the daemon is SIGKILLed and restarted. Resolves with the human's
 * count; the caller owns the Synapse and the fake model.
 */
export const runChaos = async (
  synapse: RestartableSynapse,
  llm: FakeLlmServer,
  options: ChaosOptions
): Promise<ChaosResult> => {
  const say = options.log ?? (() => {})
  const rnd = prng(options.seed)
  const t0 = performance.now()
  const s = synapse.server
  const hs = {
    baseUrl: s.baseUrl,
    serverName: s.serverName,
    synapseVersion: s.synapseVersion,
    registerUser: s.registerUser.bind(s)
  }
  const u = await s.registerUser()
  // A strict limiter is there for the bot; the human stands in for many people and is exempt, so that its
  // room set-up and messages are not what the limiter throttles.
  const exempt = await fetch(
    `${s.baseUrl}/_synapse/admin/v1/users/${encodeURIComponent(u.userId)}/override_ratelimit`,
    {
      method: "POST",
      headers: { authorization: `Bearer ${s.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ messages_per_second: 0, burst_count: 0 })
    }
  )
  if (!exempt.ok) throw new Error(`override_ratelimit for the human failed: ${exempt.status}`)
  const human = await Human.login(s.baseUrl, u.userId, u.password)
  let bot: Bot | undefined
  try {
    await human.start()
    bot = await makeBot(hs, llm, {
      allowUsers: [human.userId],
      matrixExtra: UNBOUNDED_BUDGET,
      env: { CARA_LOG_LEVEL: process.env["CHAOS_LOG_LEVEL"] ?? "info" }
    })
    await bot.start()
    const botUser = bot.user.userId
    const rooms: Array<string> = []
    for (let i = 0; i < options.rooms; i++) rooms.push(await human.createEncryptedRoom([botUser], `chaos ${i}`))
    for (const r of rooms) await human.waitForMembership(r, botUser, "join", 60_000)
    say(`bot ${botUser} joined ${rooms.length} rooms`)

    const sent = new Set<string>()
    const gate = new Mutex()
    const send = (roomId: string, body: string) =>
      gate.lock(async () => {
        const id = await human.sendText(roomId, body)
        sent.add(id)
        return id
      })

    // the human: messages at random moments, round-robin over the rooms
    const sender = (async () => {
      for (let i = 0; i < options.messages; i++) {
        await send(rooms[i % rooms.length]!, `chaos message ${i}`)
        await sleep(50 + rnd() * 400)
      }
    })()

    // the chaos: SIGKILL the daemon at random moments; once, Synapse too
    let synapseRecoveryMs: number | undefined
    let kills = 0
    for (let k = 0; k < options.kills; k++) {
      await sleep(200 + rnd() * 2_000)
      const output = bot.output()
      const exit = await bot.stop("SIGKILL")
      if (exit.signal !== "SIGKILL") {
        fs.writeFileSync(`${bot.dir}/daemon-output.log`, output)
        throw new Error(
          `the daemon had already exited (${JSON.stringify(exit)}) before kill ${
            k + 1
          } (output in ${bot.dir}/daemon-output.log):\n${output.slice(-4000)}`
        )
      }
      kills++
      await sleep(rnd() * 500)
      await bot.start()
      say(`kill ${kills}/${options.kills}: restarted`)
      if (options.restartSynapse && k === Math.floor(options.kills / 2)) {
        const killedAt = performance.now()
        const outage = await gate.lock(() => synapse.killAndRestart(500 + rnd() * 1_500))
        say(`Synapse killed and back after ${Math.round(outage)} ms`)
        // the bot was not restarted: it must pick up again by itself
        const probe = await send(rooms[0]!, "after the homeserver came back")
        await human.waitForMessage(
          rooms[0]!,
          (m) =>
            m.sender === botUser &&
            (m.content["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]
                ?.event_id === probe,
          options.settleTimeoutMs ?? 120_000
        )
        synapseRecoveryMs = Math.round(performance.now() - killedAt)
        say(`the bot answered after the Synapse restart (${synapseRecoveryMs} ms after the kill)`)
      }
    }
    await sender

    // wait until every message is answered (or the time is up), then a little longer so a late duplicate shows
    const deadline = Date.now() + (options.settleTimeoutMs ?? 120_000)
    let t = await tally(human, rooms, botUser, sent)
    while (summary(t).unanswered > 0 && Date.now() < deadline) {
      await sleep(2_000)
      t = await tally(human, rooms, botUser, sent)
    }
    await sleep(3_000)
    t = await tally(human, rooms, botUser, sent)
    const sum = summary(t)
    say(
      `sent ${sent.size}, answered once ${sum.answeredOnce}, unanswered ${sum.unanswered}, doubled ${sum.doubled}, strays ${sum.strays}`
    )
    if (sum.unanswered + sum.doubled + sum.strays > 0) {
      const file = `${bot.dir}/daemon-output.log`
      fs.writeFileSync(file, bot.output())
      say(`daemon output of the last run in ${file}`)
    }
    return {
      seed: options.seed,
      sent: sent.size,
      kills,
      ...sum,
      synapseRecoveryMs,
      wallMs: Math.round(performance.now() - t0),
      ok: sum.answeredOnce === sent.size && sum.strays === 0 &&
        (!options.restartSynapse || synapseRecoveryMs !== undefined)
    }
  } catch (e) {
    const out = bot?.running?.output()
    if (bot !== undefined && out !== undefined) {
      fs.writeFileSync(`${bot.dir}/daemon-output.log`, out)
      say(`daemon output of the last run in ${bot.dir}/daemon-output.log`)
    }
    throw e
  } finally {
    await bot?.stop("SIGKILL")
    await human.stop()
  }
}

// ------------------------------------------------------------------------------------------------ main

const num = (name: string, fallback: number) => {
  const raw = process.env[name]
  const n = raw === undefined || raw === "" ? fallback : Number(raw)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${raw} is not a non-negative integer`)
  return n
}

const main = async () => {
  const seed = num("CHAOS_SEED", Math.floor(Math.random() * 2 ** 31))
  const log = (line: string) => process.stderr.write(`[chaos] ${line}\n`)
  log(`seed ${seed} (CHAOS_SEED=${seed} replays the same random moments)`)
  const { llm, close: closeLlm } = await startFakeLlm()
  const results: Record<string, ChaosResult> = {}
  try {
    const plain = new RestartableSynapse(await startSynapse())
    try {
      log("phase 1: daemon SIGKILLs + one Synapse kill")
      results["crashes"] = await runChaos(plain, llm, {
        rooms: num("CHAOS_ROOMS", 5),
        messages: num("CHAOS_MESSAGES", 100),
        kills: num("CHAOS_KILLS", 20),
        restartSynapse: true,
        seed,
        log
      })
    } finally {
      await plain.close()
    }
    const limited = new RestartableSynapse(await startSynapse({ strictMessageRateLimit: { perSecond: 1, burst: 2 } }))
    try {
      log("phase 2: rate-limited Synapse (rc_message 1/s, burst 2)")
      results["rateLimited"] = await runChaos(limited, llm, {
        rooms: num("CHAOS_ROOMS", 5),
        messages: num("CHAOS_RATE_MESSAGES", 20),
        kills: num("CHAOS_RATE_KILLS", 3),
        restartSynapse: false,
        seed: seed + 1,
        settleTimeoutMs: 240_000,
        log
      })
    } finally {
      await limited.close()
    }
  } finally {
    await closeLlm()
  }
  const ok = Object.values(results).every((r) => r.ok)
  process.stdout.write(`${JSON.stringify({ ok, ...results })}\n`)
  log(ok ? "PASS: every message answered exactly once" : "FAIL: see the counts above")
  process.exit(ok ? 0 : 1)
}

// run only as a script: vitest sets VITEST in its workers, where the short test imports runChaos (vite-node
// leaves process.argv pointing at itself, so the script's own name cannot be looked for there)
if (process.env["VITEST"] === undefined) {
  main().catch((e) => {
    process.stderr.write(`[chaos] failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`)
    process.exit(1)
  })
}
