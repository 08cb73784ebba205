// Issue 16 point 7 against the real daemon and the real Synapse: the model provider answers with an error
// body that echoes the API key and every other secret the daemon holds (the Matrix access token it got at
// login, the Matrix password, the gateway token, the config password). None of them may appear in the
// room's reply, in the daemon's log (at debug level), or in audit.jsonl.
import { Effect } from "effect"
import JSON5 from "json5"
import * as fs from "node:fs"
import * as path from "node:path"
import { expect, it } from "vitest"
import { open } from "../../src/domain/secrets.js"
import { describeSynapse } from "../support/synapse/index.js"
import { CONFIG_PASSWORD } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

describeSynapse("secrets in provider errors (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)

  it("an error body echoing every configured secret is redacted in the reply, the log and the audit file", async () => {
    const { alice, bot, roomId } = await world.botInDm()
    // The daemon sealed the token it got at its first login into the config; open it as the operator could.
    const sealed = (JSON5.parse(bot.config()) as { matrix: { accessToken: string } }).matrix.accessToken
    const accessToken = await Effect.runPromise(open(CONFIG_PASSWORD, sealed))
    const env = bot.cliEnv()
    const secrets = {
      apiKey: "test-key",
      accessToken,
      matrixPassword: env["MATRIX_PASSWORD"]!,
      gatewayToken: env["CARAPACE_GATEWAY_TOKEN"]!,
      configPassword: CONFIG_PASSWORD
    }
    world.llm.enqueue({
      type: "error",
      status: 401,
      errorType: "authentication_error",
      message: `invalid x-api-key ${Object.values(secrets).join(" / ")} (${encodeURIComponent(accessToken)})`
    })
    const sent = await alice.sendText(roomId, "hello?")
    const reply = await world.replyTo(alice, bot, roomId, sent)
    expect(reply.body).toMatch(/rejected the API key/)
    await bot.waitForLog(/invalid x-api-key \[REDACTED\]/)

    const audit = path.join(bot.dir, "audit.jsonl")
    const places = {
      reply: JSON.stringify(reply.content),
      log: bot.output(),
      audit: fs.existsSync(audit) ? fs.readFileSync(audit, "utf8") : ""
    }
    for (const [where, text] of Object.entries(places)) {
      for (const [name, value] of Object.entries(secrets)) {
        expect(text.includes(value), `${name} in the ${where}`).toBe(false)
      }
      expect(text.includes(encodeURIComponent(accessToken)), `URL-encoded token in the ${where}`).toBe(false)
    }
  }, 240_000)
})
