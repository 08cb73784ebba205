// `cara verify` against a daemon on its very first start (issue 17.6): the channel reports `connected` before
// the first sync, so verify must not pass until the start-up sequence is over (cross-signing bootstrapped,
// matrix.password removed from the config); `crossSigning` is listed as `pending` from the start.
import { expect, it } from "vitest"
import { runCli } from "../support/cli.js"
import { describeSynapse } from "../support/synapse/index.js"
import type { Bot } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

const portOf = (bot: Bot) => new URL(bot.running!.baseUrl).port
const extraOf = async (bot: Bot) => ((await bot.status())?.["extra"] ?? {}) as Record<string, unknown>

describeSynapse("cara verify on a first start (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)

  it(
    "crossSigning is pending from the start; verify passes only once the bootstrap is done and the password is gone",
    async () => {
      const bot = await world.bot()
      // the gateway is up; the Matrix runtime has only begun (no login, no sync yet)
      await bot.start({}, /ready: gateway listening/)
      expect(bot.config()).toMatch(/password: "\$\{MATRIX_PASSWORD\}"/)
      expect((await extraOf(bot))["crossSigning"]).toBe("pending")

      const verify = runCli(["verify", "--outcome", "matrix", "--port", portOf(bot)], bot.cliEnv())
      // read at once: when verify passed, the first start was already over
      const config = bot.config()
      const extra = await extraOf(bot)
      expect(verify.status, verify.stdout + verify.stderr).toBe(0)
      expect(config).not.toContain("MATRIX_PASSWORD")
      expect(["bootstrapped", "verified"]).toContain(extra["crossSigning"])

      const lines = verify.stdout.split("\n").filter((l) => l.startsWith("["))
      expect(lines).toEqual([
        expect.stringMatching(/^\[PASS\] Matrix configuration: Matrix user @\S+ is configured$/),
        "[PASS] Matrix encrypted store: encrypted Matrix store secret is available",
        expect.stringMatching(/^\[PASS\] Gateway reachability: service is reachable at 127\.0\.0\.1:\d+$/),
        "[PASS] Matrix runtime registration: matrix channel is connected",
        expect.stringMatching(
          /^\[PASS\] Matrix start-up: start-up sequence finished; cross-signing (bootstrapped|verified)$/
        ),
        "[PASS] Matrix verification API: daemon verification endpoint is reachable",
        "[SKIP] Matrix send path: Matrix room id not provided; send-path test skipped"
      ])
      expect(verify.stdout).toContain("Outcome verification passed with skipped checks.")
    },
    180_000
  )
})
