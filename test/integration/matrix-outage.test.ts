// Issue 17, points 2 and 3 against a real homeserver: Synapse is killed while three answers are on their way,
// and stays down for longer than the bot's attempt budget (matrix.outbound.sendAttempts: 2, about a second).
// The answers become pending replies (in `cara status`, /metrics and /health/ready, with the age of the last
// sync), the sync is stamped sync-loop-give-up (threshold shortened for the test), and once Synapse is back
// every question is answered exactly once, in order, without restarting cara; the stamp clears by itself.
// It runs on its own Synapse: the shared one must not be killed under the other test files.
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { afterAll, beforeAll, expect, it } from "vitest"
import { RestartableSynapse } from "../../scripts/chaos.js"
import { runCli } from "../support/cli.js"
import { eventually } from "../support/eventually.js"
import type { FakeLlmServer } from "../support/fake-llm.js"
import { Human } from "../support/human.js"
import { describeSynapse, startSynapse } from "../support/synapse/index.js"
import { roomHistory, tally } from "../support/tally.js"
import { type Bot, count, makeBot, startFakeLlm } from "./matrix-support.js"
import { inReplyTo } from "./matrix-world.js"

const poll = <A>(
  what: string,
  timeoutMs: number,
  bot: Bot,
  check: () => Promise<A | undefined> | A | undefined
): Promise<A> => eventually(what, check, { timeoutMs, intervalMs: 250, context: () => bot.output().slice(-5000) })

describeSynapse("Matrix: the homeserver is down for longer than the attempt budget (real daemon)", () => {
  let synapse: RestartableSynapse | undefined
  let llm: FakeLlmServer
  let closeLlm: (() => Promise<void>) | undefined
  let bot: Bot | undefined
  let alice: Human | undefined

  beforeAll(async () => {
    synapse = new RestartableSynapse(await startSynapse())
    ;({ llm, close: closeLlm } = await startFakeLlm())
  })
  afterAll(async () => {
    await bot?.stop("SIGKILL")
    await alice?.stop()
    await closeLlm?.()
    await synapse?.close()
  })

  it(
    "pending replies show while Synapse is down; once it is back every question is answered once, in order, without a restart",
    async () => {
      const s = synapse!.server
      const u = await s.registerUser()
      alice = await Human.login(s.baseUrl, u.userId, u.password)
      await alice.start()
      bot = await makeBot(
        {
          baseUrl: s.baseUrl,
          serverName: s.serverName,
          synapseVersion: s.synapseVersion,
          registerUser: s.registerUser.bind(s)
        },
        llm,
        {
          allowUsers: [alice.userId],
          matrixExtra: "outbound: { sendAttempts: 2 },",
          env: { CARA_TEST_SYNC_GIVE_UP_MS: "8000" }
        }
      )
      await bot.start()
      const b = bot
      const port = new URL(b.running!.baseUrl).port
      const roomId = await alice.createEncryptedDm(b.user.userId)
      await alice.waitForMembership(roomId, b.user.userId, "join", 30_000)
      // one round trip first: the room key is shared and the bot's recovery set-up is done
      const warm = await alice.sendText(roomId, "hello before the outage")
      await alice.waitForMessage(roomId, (m) => m.sender === b.user.userId && inReplyTo(m) === warm, 60_000)
      await b.waitForLog(/Matrix start-up finished/, 60_000)

      // three questions; the model holds its answers until Synapse is gone
      let release = () => {}
      const held = new Promise<void>((r) => (release = r))
      llm.enqueue(
        { type: "text", chunks: ["answer one"], until: held },
        { type: "text", chunks: ["answer two"], until: held },
        { type: "text", chunks: ["answer three"], until: held }
      )
      const asked = [
        await alice.sendText(roomId, "question one"),
        await alice.sendText(roomId, "question two"),
        await alice.sendText(roomId, "question three")
      ]
      // all three are durably claimed by the bot (read from its ledger, so this holds however slow the machine is)
      const ledger = new DatabaseSync(path.join(b.dir, "matrix", "inbound-ledger.sqlite"), { readOnly: true })
      try {
        await poll("the bot to claim the three questions", 60_000, b, () => {
          const rows = ledger.prepare(`SELECT count(*) AS n FROM inbound WHERE event_id IN (?, ?, ?)`).get(
            ...asked
          ) as { n: number }
          return rows.n === 3 ? true : undefined
        })
      } finally {
        ledger.close()
      }

      await synapse!.kill()
      const downAt = Date.now()
      release()

      // every answer is pending, counted in the status, the metrics and `cara status`
      const channel = () => b.status().then((c) => c as { status: string; extra: Record<string, unknown> })
      await poll(
        "three pending replies",
        60_000,
        b,
        async () => ((await channel()).extra["outboundPendingCount"] === 3 ? true : undefined)
      )
      const metrics = await (await fetch(`${b.running!.baseUrl}/metrics`)).text()
      expect(metrics).toContain("carapace_matrix_outbound_pending_replies 3\n")
      expect(Number(/^carapace_matrix_outbound_pending_oldest_age_seconds (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThan(
        0
      )
      // no successful sync for longer than the (shortened) give-up threshold: the stamp, and a 503 that says how long
      await poll(
        "sync-loop-give-up",
        60_000,
        b,
        async () => ((await channel()).extra["lastErrorKind"] === "sync-loop-give-up" ? true : undefined)
      )
      const ready = await fetch(`${b.running!.baseUrl}/health/ready`)
      expect(ready.status).toBe(503)
      const readyBody = (await ready.json()) as {
        channels: Array<{ id: string; lastSuccessfulSyncAgoSeconds?: number | null }>
        reasons: Array<string>
      }
      expect(readyBody.reasons.join()).toContain("sync-loop-give-up")
      expect(readyBody.channels.find((c) => c.id === "matrix")?.lastSuccessfulSyncAgoSeconds).toBeGreaterThanOrEqual(8)
      const status = runCli(["status", "--port", port], b.cliEnv())
      expect(status.status, status.stderr).toBe(0)
      expect(status.stdout).toMatch(/Pending replies: +3 \(oldest first failed \S+ \(\d+[smh].* ago\)\)/)
      expect(status.stdout).toMatch(/Last successful sync: +\S+ \((\d+[dhm] )*\d+s ago\)/)
      expect(status.stdout).toContain("[sync-loop-give-up]")
      // longer than the attempt budget (two attempts a second apart), so the first tries are over
      await b.waitForLog(/Matrix reply not sent yet; it stays pending/, 30_000)
      expect(Date.now() - downAt).toBeGreaterThan(3_000)

      await synapse!.start()
      // the bot recovers by itself: the replies go out, the pending count and the stamp go
      await poll(
        "no pending replies",
        120_000,
        b,
        async () => ((await channel()).extra["outboundPendingCount"] === undefined ? true : undefined)
      )
      await poll("the channel connected again", 60_000, b, async () => {
        const c = await channel()
        return c.status === "connected" && c.extra["lastErrorKind"] === undefined ? true : undefined
      })
      const sent = new Set([warm, ...asked])
      const t = await poll("every question answered", 60_000, b, async () => {
        const x = await tally(alice!, [roomId], b.user.userId, sent)
        return [...x.replies.values()].every((r) => r.size > 0) ? x : undefined
      })
      expect([...t.replies.entries()].map(([q, r]) => [q, r.size])).toEqual([...sent].map((q) => [q, 1]))
      expect(t.strays).toEqual([])
      // in the order they were asked (the room's history from the server, newest first)
      const order = (await roomHistory(alice, roomId))
        .filter((e) => e.getSender() === b.user.userId && e.getType() === "m.room.message")
        .map((e) =>
          (e.getContent()["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]
            ?.event_id
        )
        .reverse()
      expect(order.filter((r) => r !== undefined && asked.includes(r))).toEqual(asked)
      // one daemon process throughout
      expect(b.running).toBeDefined()
      expect(count(b.output(), /Matrix client synced/)).toBe(1)
      expect(b.output()).toMatch(/sync-loop-give-up cleared/)
    },
    300_000
  )
})
