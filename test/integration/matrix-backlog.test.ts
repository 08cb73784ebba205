// A backlog larger than the sync filter's timeline limit (20): messages sent while the bot was down reach it
// in a `limited` /sync that holds only the newest ones. The bot back-fills the gap from /messages, and the
// human, paging the whole room history from the server, counts exactly one reply per message. The restart is
// on a pseudo-terminal, where the catch-up shows its progress.
import { expect, it } from "vitest"
import { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import { tally } from "../support/tally.js"
import { type Bot, count, UNBOUNDED_BUDGET } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

describeSynapse("Matrix: a backlog sent while the bot was down is answered exactly once", (hs) => {
  const world = useMatrixWorld(hs)
  const llm = () => world.llm

  it("60 messages in 2 rooms while the bot is down: each answered once after it starts", async () => {
    const human = await world.human()
    const bot = await world.bot({
      allowUsers: [human.userId],
      matrixExtra: UNBOUNDED_BUDGET,
      env: { CARA_LOG_LEVEL: "info" }
    })
    await bot.start()
    const botUser = bot.user.userId
    const rooms = [
      await human.createEncryptedRoom([botUser], "backlog 0"),
      await human.createEncryptedRoom([botUser], "backlog 1")
    ]
    for (const r of rooms) await human.waitForMembership(r, botUser, "join", 60_000)

    // one answered message per room first: the room keys are shared and the bot has synced past the joins
    const sent = new Set<string>()
    for (const r of rooms) {
      const id = await human.sendText(r, `before the stop in ${r}`)
      sent.add(id)
      await human.waitForMessage(
        r,
        (m) =>
          m.sender === botUser &&
          (m.content["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]
              ?.event_id === id,
        60_000
      )
    }
    const stopped = await bot.stop("SIGTERM")
    expect(stopped.code).toBe(0)

    // 30 per room while the bot is down: more than the 20 events a /sync timeline carries
    for (let i = 0; i < 30; i++) {
      for (const r of rooms) sent.add(await human.sendText(r, `backlog message ${i}`))
    }
    expect(sent.size).toBe(62)

    // this start runs on a pseudo-terminal: the catch-up shows its progress there (issue 21.5)
    await bot.start({}, /Matrix client synced/, { terminal: true })
    const deadline = Date.now() + 120_000
    let t = await tally(human, rooms, botUser, sent)
    const unanswered = () => [...t.replies.values()].filter((s) => s.size === 0).length
    while (unanswered() > 0 && Date.now() < deadline) {
      await sleep(2_000)
      t = await tally(human, rooms, botUser, sent)
    }
    // a little longer, so a late duplicate would show
    await sleep(3_000)
    t = await tally(human, rooms, botUser, sent)
    const sizes = [...t.replies.values()].map((s) => s.size)
    expect(sizes.filter((n) => n === 0).length, "unanswered").toBe(0)
    expect(sizes.filter((n) => n > 1).length, "answered twice").toBe(0)
    expect(t.strays, "bot messages that answer nothing sent").toEqual([])
    expect(sizes.filter((n) => n === 1).length).toBe(62)
    // the gap was real: older messages came from the back-fill, not from the limited sync itself
    expect(count(bot.output(), /Matrix back-fill: offering events missed by a limited sync/)).toBeGreaterThanOrEqual(2)
    // the terminal showed the catch-up's count, up to the end of a run
    expect(bot.output()).toMatch(/cara: catching up: answered \d+\/\d+ \(\d+%\)/)
    expect(bot.output()).toMatch(/cara: catching up: answered (\d+)\/\1 \(100%\)/)
  }, 240_000)

  it("a room joined just before a crash: what was sent meanwhile is answered once after the restart", async () => {
    const human = await world.human()
    const bot = await world.bot({
      allowUsers: [human.userId],
      matrixExtra: UNBOUNDED_BUDGET,
      env: { CARA_LOG_LEVEL: "info" }
    })
    await bot.start()
    const botUser = bot.user.userId
    const room = await human.createEncryptedRoom([botUser], "joined, then killed")
    await human.waitForMembership(room, botUser, "join", 60_000)
    // killed at once: the saved sync state predates the join, so after the restart the room is new to the
    // client and the SDK only hands over the newest 20 events, without a timeline reset
    await bot.stop("SIGKILL")
    const sent = new Set<string>()
    for (let i = 0; i < 25; i++) sent.add(await human.sendText(room, `sent while down ${i}`))

    await bot.start()
    const deadline = Date.now() + 120_000
    let t = await tally(human, [room], botUser, sent)
    const unanswered = () => [...t.replies.values()].filter((s) => s.size === 0).length
    while (unanswered() > 0 && Date.now() < deadline) {
      await sleep(2_000)
      t = await tally(human, [room], botUser, sent)
    }
    await sleep(3_000)
    t = await tally(human, [room], botUser, sent)
    const sizes = [...t.replies.values()].map((s) => s.size)
    expect(sizes.filter((n) => n === 0).length, "unanswered").toBe(0)
    expect(sizes.filter((n) => n > 1).length, "answered twice").toBe(0)
    expect(sizes.length).toBe(25)
    // the 5 oldest came from the back-fill (of the room new to the client, or of a reset timeline had the
    // sync state been saved after the join)
    expect(bot.output()).toMatch(/Matrix back-fill: offering events missed by a limited sync/)
  }, 240_000)
})
