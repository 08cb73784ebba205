// The short chaos run (scripts/chaos.ts, `npm run chaos` for the full one): a few SIGKILLs of the real daemon at
// random moments while the human keeps writing in 5 encrypted rooms, plus one SIGKILL + restart of Synapse that
// the bot must survive without a restart. The human counts: every message has exactly one reply.
// It runs on its own Synapse (the shared one must not be killed under the other test files).
import { afterAll, beforeAll, expect, it } from "vitest"
import { RestartableSynapse, runChaos } from "../../scripts/chaos.js"
import type { FakeLlmServer } from "../support/fake-llm.js"
import { describeSynapse, startSynapse } from "../support/synapse/index.js"
import { startFakeLlm } from "./matrix-support.js"

describeSynapse("chaos (short): SIGKILLed daemon and homeserver, nothing lost or doubled", () => {
  let synapse: RestartableSynapse | undefined
  let llm: FakeLlmServer
  let closeLlm: (() => Promise<void>) | undefined

  beforeAll(async () => {
    synapse = new RestartableSynapse(await startSynapse())
    ;({ llm, close: closeLlm } = await startFakeLlm())
  })
  afterAll(async () => {
    await closeLlm?.()
    await synapse?.close()
  })

  it("every message is answered exactly once across daemon kills and a Synapse kill", async () => {
    const seed = Number(process.env["CHAOS_SEED"] ?? Math.floor(Math.random() * 2 ** 31))
    const lines: Array<string> = []
    const result = await runChaos(synapse!, llm, {
      rooms: 5,
      messages: 20,
      kills: 3,
      restartSynapse: true,
      seed,
      settleTimeoutMs: 60_000,
      log: (l) => {
        lines.push(l)
        process.stderr.write(`[chaos] ${l}\n`)
      }
    })
    const context = `seed ${seed} (CHAOS_SEED replays it)\n${lines.join("\n")}`
    expect(result.kills, context).toBe(3)
    expect(result.sent, context).toBe(21) // 20 + the probe after the Synapse restart
    expect(result.unanswered, context).toBe(0)
    expect(result.doubled, context).toBe(0)
    expect(result.strays, context).toBe(0)
    expect(result.answeredOnce, context).toBe(result.sent)
    expect(result.synapseRecoveryMs, context).toBeDefined()
  }, 170_000)
})
