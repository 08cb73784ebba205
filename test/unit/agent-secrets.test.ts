// Issue 16 point 7, the reply path: a provider error that echoes the API key, or any other configured
// secret (the Matrix access token, the gateway token), is redacted before it reaches the log, the error the
// room's reply is built from, and the reply itself. The config is loaded by the real ConfigSecrets, so the
// registry is filled the way the daemon fills it.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { stderrLogger } from "../../src/cli/logging.js"
import { agentRuntime } from "../../src/layers/AgentLive.js"
import { ConfigSecretsWith } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { Agent, type TurnOutcome } from "../../src/services/Agent.js"
import { fakeAnthropic } from "../support/fake-llm.js"
import { tmpDir } from "../support/tmp.js"

const API_KEY = "sk-ant-api03-the-configured-key"
const MATRIX_TOKEN = "syt_bWF0cml4_the_access_token"
const GATEWAY_TOKEN = "gateway-token-4f1c9a"
const SECRETS = [API_KEY, MATRIX_TOKEN, GATEWAY_TOKEN]

/** Collects stderr (where the daemon's logger writes) while `body` runs. */
const capturingStderr = <A, E, R>(body: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const original = process.stderr.write.bind(process.stderr)
      const state = { out: "", original }
      process.stderr.write = ((chunk: string | Uint8Array) => {
        state.out += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8")
        return true
      }) as typeof process.stderr.write
      return state
    }),
    (state) => Effect.map(body, (a) => ({ result: a, stderr: () => state.out })),
    (state) => Effect.sync(() => (process.stderr.write = state.original))
  )

describe("provider errors that echo secrets", () => {
  it.scopedLive("never reach the log, the turn's error or the room's reply", () =>
    Effect.gen(function*() {
      const dir = tmpDir("cara-agent-secrets-")
      const ant = yield* fakeAnthropic
      fs.writeFileSync(
        path.join(dir, "carapace.json5"),
        `{
  gateway: { auth: { mode: "token", token: "\${GW_TOKEN}" } },
  matrix: { enabled: false, accessToken: "${MATRIX_TOKEN}", deviceId: "DEV" },
  anthropic: { apiKey: "\${ANT_KEY}", baseUrl: ${JSON.stringify(ant.baseUrl)} },
  agents: { default: { model: "anthropic:claude-test" } },
}`,
        { mode: 0o600 }
      )
      const echo = `key ${API_KEY} for ${encodeURIComponent(MATRIX_TOKEN)} via ${GATEWAY_TOKEN}`
      ant.enqueue(
        { type: "error", status: 401, errorType: "authentication_error", message: `invalid x-api-key: ${echo}` },
        { type: "error", status: 400, errorType: "invalid_request_error", message: `bad request: ${echo}` },
        { type: "stream-error", chunks: [], errorType: "invalid_request_error", message: `mid-stream: ${echo}` }
      )
      const env = { CARAPACE_STATE_DIR: dir, GW_TOKEN: GATEWAY_TOKEN, ANT_KEY: API_KEY }
      const runtime = agentRuntime({}).pipe(
        Layer.provide(ConfigSecretsWith({ env, failOnErrors: false })),
        Layer.provide(StateDirAt(dir)),
        Layer.provide(Logger.replace(Logger.defaultLogger, stderrLogger))
      )
      const { result: outcomes, stderr } = yield* capturingStderr(
        Effect.scoped(
          Effect.provide(
            Effect.flatMap(Agent, (agent) =>
              Effect.forEach(["one", "two", "three"], (text, i) =>
                agent.reply({ roomId: "!dm:hs", eventId: `$e${i}`, senderId: "@alice:hs", text, isGroup: false }))),
            runtime
          )
        )
      )
      expect(ant.requests).toHaveLength(3)
      const failures = outcomes.filter((o): o is Extract<TurnOutcome, { _tag: "Failed" }> =>
        o._tag === "Failed"
      )
      expect(failures).toHaveLength(3)
      for (const f of failures) {
        // The provider's text is kept for the operator, with every secret replaced.
        expect(f.error.message).toContain("[REDACTED]")
        for (const s of SECRETS) {
          expect(f.error.message).not.toContain(s)
          expect(f.text).not.toContain(s)
        }
      }
      expect(failures.map((f) => f.error.kind)).toEqual([
        "agent-auth",
        "agent-invalid-request",
        "agent-invalid-request"
      ])
      const logged = stderr()
      expect(logged).toContain("invalid x-api-key: key [REDACTED]")
      for (const s of SECRETS) {
        expect(logged).not.toContain(s)
        expect(logged).not.toContain(encodeURIComponent(s))
      }
    }))
})
