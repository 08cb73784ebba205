// `cara doctor` against a real installation: the daemon's first start (password login, cross-signing bootstrap,
// key backup) on the test Synapse, then doctor with the daemon stopped and with it running.
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import { runDoctor } from "../../src/programs/doctor.js"
import type { FakeLlmServer } from "../support/fake-llm.js"
import { describeSynapse } from "../support/synapse/index.js"
import { makeBot, startFakeLlm } from "./matrix-support.js"

describeSynapse("cara doctor on a real installation", (hs) => {
  let llm: FakeLlmServer
  let closeLlm: () => Promise<void>
  beforeAll(async () => {
    ;({ llm, close: closeLlm } = await startFakeLlm())
  })
  afterAll(async () => {
    await closeLlm()
  })

  it(
    "after the first start: token, stores, cross-signing and backup are ok; a running daemon holds the lock",
    async () => {
      const bot = await makeBot(hs, llm, { allowUsers: ["@nobody:localhost"] })
      try {
        await bot.start()
        // The first start mints the recovery key and creates the backup after the first sync: wait for it on disk.
        const matrixDir = path.join(bot.dir, "matrix")
        const deadline = Date.now() + 90_000
        while (
          !(fs.existsSync(path.join(matrixDir, "recovery_key")) &&
            !fs.existsSync(path.join(matrixDir, "recovery_key.minting")))
        ) {
          if (Date.now() > deadline) {
            throw new Error(
              `no recovery key after 90 s: ${fs.readdirSync(matrixDir).join(", ")}\n${bot.output().slice(-4000)}`
            )
          }
          await new Promise((r) => setTimeout(r, 250))
        }
        const env = Object.fromEntries(
          Object.entries((bot as unknown as { env: NodeJS.ProcessEnv }).env).filter((e): e is [string, string] =>
            e[1] !== undefined
          )
        )
        const running = await Effect.runPromise(runDoctor({ env }))
        const check = (r: typeof running, id: string) => r.findings.find((f) => f.check === id)
        expect(check(running, "lock")?.message).toMatch(/held by daemon/)
        expect(check(running, "stores")?.status).toBe("skip")
        expect(check(running, "homeserver")?.status).toBe("ok")

        await bot.stop("SIGTERM")
        const stopped = await Effect.runPromise(runDoctor({ env }))
        const summary = stopped.findings.map((f) => `${f.status} ${f.check}: ${f.message}`).join("\n")
        expect(stopped.findings.filter((f) => f.status === "error"), summary).toEqual([])
        for (const id of ["token", "stores", "cross-signing", "backup", "file-modes", "lock", "rekey", "recovery"]) {
          expect(check(stopped, id)?.status, `${id}\n${summary}`).toBe("ok")
        }
        expect(check(stopped, "token")?.message).toContain(bot.user.userId)
      } finally {
        await bot.stop("SIGKILL")
      }
    },
    180_000
  )
})
