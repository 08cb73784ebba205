// The inbound DLQ end to end (real daemon, real Synapse, fake LLM): a session-write fault sends messages to the
// encrypted DLQ with counters; clearing the fault gets them replayed automatically, each answered once; a
// SIGKILL in the middle of a replay loses nothing and duplicates nothing; a rekey with a non-empty DLQ keeps
// the records replayable under the new passphrase.
import * as fs from "node:fs"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { expect, it } from "vitest"
import { decodeLine, deriveDlqKey } from "../../src/domain/dlq.js"
import { deriveStorePassphrase } from "../../src/layers/StorePassphraseLive.js"
import { cleanEnv, runCli } from "../support/cli.js"
import { eventually } from "../support/eventually.js"
import { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { type Bot, CONFIG_PASSWORD, count, messagesFrom } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

describeSynapse("Matrix: inbound DLQ (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)
  const llm = () => world.llm

  const human = world.human

  /** A bot whose session writes fail while `faultFile` exists. */
  const faultyBot = async (alice: Human) => {
    const bot = await world.bot({ allowUsers: [alice.userId] })
    const faultFile = path.join(bot.dir, "session-write.fault")
    fs.writeFileSync(faultFile, "on\n")
    return { bot, faultFile, fault: { CARA_TEST_FAULT: `session-write:${faultFile}` } }
  }

  const dmWithBot = async (alice: Human, bot: Bot) => {
    const roomId = await alice.createEncryptedDm(bot.user.userId)
    await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
    return roomId
  }

  const dlqLines = (bot: Bot) => {
    const f = path.join(bot.dir, "matrix", "inbound_dlq.jsonl")
    return fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").filter((l) => l !== "") : []
  }

  const waitFor = (what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, bot: Bot) =>
    eventually(what, check, { timeoutMs, intervalMs: 250, context: () => bot.output().slice(-4000) })

  const repliesTo = (alice: Human, roomId: string, bot: Bot) =>
    messagesFrom(alice, roomId, bot.user.userId).map((m) => m.inReplyTo)

  it(
    "session writes fail -> messages land in the encrypted DLQ with counters; fault cleared -> replayed automatically, each answered once",
    async () => {
      const alice = await human()
      const { bot, fault, faultFile } = await faultyBot(alice)
      await bot.start(fault)
      const roomId = await dmWithBot(alice, bot)
      const m1 = await alice.sendText(roomId, "first dead letter")
      const m2 = await alice.sendText(roomId, "second dead letter")
      await waitFor("two DLQ records", () => dlqLines(bot).length === 2, 45_000, bot)

      // encrypted at rest, 0600, counted
      const lines = dlqLines(bot)
      expect(lines.every((l) => Object.keys(JSON.parse(l) as object).sort().join() === "ciphertext,nonce,version"))
        .toBe(true)
      expect(lines.join("\n")).not.toContain("dead letter")
      expect(fs.statSync(path.join(bot.dir, "matrix", "inbound_dlq.jsonl")).mode & 0o777).toBe(0o600)
      const extra = async () => (await bot.status())!["extra"] as Record<string, unknown>
      // the counter follows the file write
      await waitFor("the status counter", async () => (await extra())["inboundDlqRecordCount"] === 2, 15_000, bot)
      expect((await extra())["inboundDispatchFailureTotal"]).toBeGreaterThanOrEqual(2)
      expect(repliesTo(alice, roomId, bot)).toEqual([])

      fs.rmSync(faultFile)
      await waitFor("the DLQ to drain", () => dlqLines(bot).length === 0, 120_000, bot)
      await waitFor("both answers", () => repliesTo(alice, roomId, bot).length >= 2, 45_000, bot)
      await waitFor("the status counter", async () => (await extra())["inboundDlqRecordCount"] === 0, 15_000, bot)
      const after = await extra()
      expect(after["inboundDlqReplayedTotal"]).toBe(2)
      // a later message is answered normally; the replayed ones exactly once
      const m3 = await alice.sendText(roomId, "live again")
      await waitFor("the live answer", () => repliesTo(alice, roomId, bot).includes(m3), 45_000, bot)
      expect(repliesTo(alice, roomId, bot)).toEqual([m1, m2, m3])
    },
    300_000
  )

  it("SIGKILL during a replay: after a restart no message is answered twice and none is lost", async () => {
    const alice = await human()
    const { bot, fault, faultFile } = await faultyBot(alice)
    await bot.start(fault)
    // The first start's recovery-key set-up is made durable by a clean stop before this test kills anything:
    // a SIGKILL soon after the first start can lose the secret-storage account data from the sync cache, and
    // the restart then refuses (recovery-key-restore-failed); that is RecoveryKey's crash case, not the DLQ's.
    await bot.waitForLog(/Matrix recovery key created and stored locally/, 60_000)
    expect((await bot.stop("SIGTERM")).code).toBe(0)
    await bot.start(fault)
    const roomId = await dmWithBot(alice, bot)
    const sent = [
      await alice.sendText(roomId, "kill one"),
      await alice.sendText(roomId, "kill two"),
      await alice.sendText(roomId, "kill three")
    ]
    await waitFor("three DLQ records", () => dlqLines(bot).length === 3, 45_000, bot)
    const answeredBefore = count(bot.output(), /Matrix message answered/)

    // the second and third answers are held until after the kill, so it lands in the middle of the replay
    // however slow the machine is
    let release = () => {}
    const held = new Promise<void>((r) => (release = r))
    llm().enqueue({ type: "text", chunks: ["one"] }, { type: "text", chunks: ["two"], until: held }, {
      type: "text",
      chunks: ["three"],
      until: held
    })
    fs.rmSync(faultFile)
    // the first replayed answer is committed: kill the daemon before the replay finishes and rewrites the DLQ
    await waitFor(
      "the first replayed answer",
      () => count(bot.output(), /Matrix message answered/) > answeredBefore,
      120_000,
      bot
    )
    expect((await bot.stop("SIGKILL")).signal).toBe("SIGKILL")
    release()
    // killed mid-replay: one answer committed, no record removed yet
    expect(dlqLines(bot)).toHaveLength(3)
    expect(dlqLines(bot).length).toBeGreaterThan(0)

    await bot.start()
    await waitFor("the DLQ to drain after the restart", () => dlqLines(bot).length === 0, 120_000, bot)
    await waitFor("three answers", () => repliesTo(alice, roomId, bot).length >= 3, 45_000, bot)
    const next = await alice.sendText(roomId, "after the crash")
    await waitFor("the live answer", () => repliesTo(alice, roomId, bot).includes(next), 45_000, bot)
    const replies = repliesTo(alice, roomId, bot)
    expect([...replies].sort()).toEqual([...sent, next].sort())
    expect(new Set(replies).size).toBe(replies.length)
    expect(fs.existsSync(path.join(bot.dir, "matrix", "inbound_dlq.corrupt.jsonl"))).toBe(false)
  }, 360_000)

  it(
    "rekey-store with a non-empty DLQ: the records move to the new passphrase and are replayed after the restart",
    async () => {
      const alice = await human()
      const { bot, fault, faultFile } = await faultyBot(alice)
      await bot.start(fault)
      const roomId = await dmWithBot(alice, bot)
      const sent = await alice.sendText(roomId, "survive the rekey")
      await waitFor("one DLQ record", () => dlqLines(bot).length === 1, 45_000, bot)
      expect((await bot.stop("SIGTERM")).code).toBe(0)

      const iid = fs.readFileSync(path.join(bot.dir, "installation_id"), "utf8").trim()
      const oldKey = deriveDlqKey(deriveStorePassphrase(CONFIG_PASSWORD, iid), iid)
      expect(decodeLine(dlqLines(bot)[0]!, oldKey)._tag).toBe("Record")

      const r = runCli(
        ["matrix", "rekey-store", "--new"],
        cleanEnv(bot.dir, {
          CARAPACE_CONFIG_PASSWORD: CONFIG_PASSWORD,
          CARAPACE_GATEWAY_TOKEN: "unused-token-0123456789abcdef",
          // the config may still name it (it is removed once cross-signing is bootstrapped)
          MATRIX_PASSWORD: bot.user.password
        })
      )
      expect(r.status, r.stderr + r.stdout).toBe(0)
      const pinned = fs.readFileSync(path.join(bot.dir, "matrix", "store_passphrase"), "utf8").trim()
      const newKey = deriveDlqKey(pinned, iid)
      expect(decodeLine(dlqLines(bot)[0]!, oldKey)._tag).toBe("Corrupt")
      expect(decodeLine(dlqLines(bot)[0]!, newKey)).toMatchObject({
        _tag: "Record",
        record: { eventId: sent, text: "survive the rekey" }
      })

      fs.rmSync(faultFile)
      await bot.start()
      await waitFor("the DLQ to drain under the new passphrase", () => dlqLines(bot).length === 0, 120_000, bot)
      await waitFor("the answer", () => repliesTo(alice, roomId, bot).length >= 1, 45_000, bot)
      expect(repliesTo(alice, roomId, bot)).toEqual([sent])
      expect(fs.existsSync(path.join(bot.dir, "matrix", "inbound_dlq.corrupt.jsonl"))).toBe(false)
      expect(bot.output()).not.toMatch(/dlq-crypto/)
    },
    300_000
  )

  it(
    "a reply the room refuses is an outbound DLQ record: listed as a reply, committed, and sent once by `dlq replay` when the room lets the bot post again",
    async () => {
      const alice = await human()
      const bot = await world.bot({ allowUsers: [alice.userId] })
      await bot.start()
      // a private room (not a trusted DM, where the invitee gets the creator's power level): the bot is at 0
      const roomId = await alice.createEncryptedRoom([bot.user.userId], "refusals")
      await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      const warm = await alice.sendText(roomId, "warm up")
      await world.replyTo(alice, bot, roomId, warm, 60_000)
      // the bot (power level 0) may no longer post: its sends are refused with M_FORBIDDEN
      const pl = alice.client.getRoom(roomId)!.currentState.getStateEvents("m.room.power_levels", "")!.getContent()
      await alice.client.sendStateEvent(
        roomId,
        "m.room.power_levels" as never,
        { ...pl, events_default: 50 } as never,
        ""
      )
      llm().enqueue({ type: "text", chunks: ["the refused answer"] })
      const asked = await alice.sendText(roomId, "answer me when you may")
      await waitFor("an outbound DLQ record", () => dlqLines(bot).length === 1, 60_000, bot)
      // sealed like every record, and the answer (not the question) is what it holds
      const iid = fs.readFileSync(path.join(bot.dir, "installation_id"), "utf8").trim()
      const key = deriveDlqKey(deriveStorePassphrase(CONFIG_PASSWORD, iid), iid)
      expect(dlqLines(bot)[0]).not.toContain("refused answer")
      expect(decodeLine(dlqLines(bot)[0]!, key)).toMatchObject({
        _tag: "Record",
        record: { eventId: asked, direction: "outbound", text: "the refused answer" }
      })
      const port = new URL(bot.running!.baseUrl).port
      const listed = runCli(["matrix", "dlq", "list", "--json", "--port", port], bot.cliEnv())
      expect(listed.status, listed.stderr).toBe(0)
      expect((JSON.parse(listed.stdout) as { records: Array<Record<string, unknown>> }).records).toMatchObject([{
        direction: "outbound",
        eventId: asked
      }])
      expect(runCli(["matrix", "dlq", "list", "--port", port], bot.cliEnv()).stdout).toMatch(/^[0-9a-f]{16} {2}reply /m)
      // handled (it is in the DLQ): the event is committed, so a restart does not answer it again
      const ledger = new DatabaseSync(path.join(bot.dir, "matrix", "inbound-ledger.sqlite"), { readOnly: true })
      expect(ledger.prepare("SELECT state FROM inbound WHERE event_id = ?").get(asked)).toEqual({ state: "committed" })
      expect(ledger.prepare("SELECT count(*) AS n FROM outbound_pending").get()).toEqual({ n: 0 })
      ledger.close()
      expect(repliesTo(alice, roomId, bot)).toEqual([warm])

      await alice.client.sendStateEvent(roomId, "m.room.power_levels" as never, pl as never, "")
      // (an automatic replay after a sync may be first; either way the answer goes out once)
      const replayed = runCli(["matrix", "dlq", "replay", "--all", "--port", port], bot.cliEnv())
      expect(replayed.status, replayed.stderr + replayed.stdout).toBe(0)
      const reply = await world.replyTo(alice, bot, roomId, asked, 60_000)
      expect(reply.body).toBe("the refused answer")
      await waitFor("the DLQ to drain", () => dlqLines(bot).length === 0, 60_000, bot)
      const next = await alice.sendText(roomId, "and now?")
      await world.replyTo(alice, bot, roomId, next, 60_000)
      expect(repliesTo(alice, roomId, bot)).toEqual([warm, asked, next])
    },
    240_000
  )
})
