// Shared by the test/integration/matrix-*.test.ts files: the real daemon process (`node dist/cli/bin.js`)
// with a config file in a temp state dir, Matrix pointed at the test Synapse and the agent at a loopback fake
// Anthropic server, so a test goes end to end: human client → Synapse → daemon → fake LLM → Synapse → human.
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { cleanEnv, type RunningDaemon, startDaemon, type StartDaemonOptions, tempStateDir } from "../support/cli.js"
import { traceWait } from "../support/eventually.js"
import { fakeAnthropic, type FakeLlmServer } from "../support/fake-llm.js"
import type { RegisteredUser, SharedSynapse } from "../support/synapse/index.js"

export const CONFIG_PASSWORD = "integration-config-password-0123456789"

/** A fake Anthropic server for the life of the returned handle. */
export const startFakeLlm = async (): Promise<{ llm: FakeLlmServer; close: () => Promise<void> }> => {
  const scope = Effect.runSync(Scope.make())
  const llm = await Effect.runPromise(Scope.extend(fakeAnthropic, scope))
  return { llm, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

export interface BotOptions {
  readonly allowUsers?: ReadonlyArray<string>
  readonly allowServerNames?: ReadonlyArray<string>
  /** extra `matrix.*` members, as JSON5 text (e.g. `encrypted: false,`) */
  readonly matrixExtra?: string
  readonly env?: Record<string, string>
  /** leave matrix.homeserverUrl out: the daemon discovers it from the user id */
  readonly omitHomeserverUrl?: boolean
}

export class Bot {
  running: RunningDaemon | undefined
  private offset = 0

  constructor(
    readonly dir: string,
    readonly user: RegisteredUser,
    private readonly env: NodeJS.ProcessEnv
  ) {}

  /** The environment the daemon runs with (for `cara ...` commands run beside it, as an operator would). */
  cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return { ...this.env, ...extra }
  }

  get configPath(): string {
    return path.join(this.dir, "carapace.json5")
  }

  config(): string {
    return fs.readFileSync(this.configPath, "utf8")
  }

  /** Starts the daemon and waits until its Matrix client has synced (or the channel failed). */
  async start(
    extraEnv: Record<string, string> = {},
    waitFor: RegExp = /Matrix client synced/,
    options: StartDaemonOptions = {}
  ): Promise<void> {
    const startedAt = Date.now()
    this.running = await startDaemon({ ...this.env, ...extraEnv }, 60_000, options)
    this.offset = 0
    await this.waitForLog(waitFor, 60_000)
    traceWait(`bot start until ${waitFor}`, startedAt)
  }

  output(): string {
    return this.running?.output() ?? ""
  }

  /** Resolves once the daemon's output (since start) matches; rejects with the output on timeout or exit. */
  async waitForLog(re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
    const running = this.running
    if (running === undefined) throw new Error("the bot is not running")
    const startedAt = Date.now()
    const deadline = startedAt + timeoutMs
    let exited = false
    void running.exited.then(() => {
      exited = true
    })
    for (;;) {
      const m = re.exec(running.output().slice(this.offset))
      if (m) {
        traceWait(`log ${re}`, startedAt)
        return m
      }
      if (exited) throw new Error(`daemon exited while waiting for ${re}:\n${running.output().slice(-6000)}`)
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${re} in the daemon output:\n${running.output().slice(-6000)}`)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const running = this.running
    if (running === undefined) return { code: 0, signal: null }
    this.running = undefined
    const startedAt = Date.now()
    running.child.kill(signal)
    const exit = await running.exited
    traceWait(`bot stop (${signal})`, startedAt)
    return exit
  }

  async status(): Promise<Record<string, unknown> | undefined> {
    const token = this.env["CARAPACE_GATEWAY_TOKEN"]
    const res = await fetch(`${this.running!.baseUrl}/control/channels`, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` }
    })
    const body = (await res.json()) as { channels?: Array<Record<string, unknown>> }
    return body.channels?.find((c) => c["id"] === "matrix")
  }
}

/** The gateway token every bot made here runs with (tests call its control API with it). */
export const GATEWAY_TOKEN = "integration-gateway-token-0123456789abcdef"

/** A verification flow as `GET /control/matrix/verifications` lists it (the fields the tests read). */
export interface ApiFlow {
  flowId: string
  protocolFlowId: string
  userId: string
  deviceId?: string
  roomId?: string
  state: string
  sas?: { emoji?: Array<{ symbol: string; description: string }>; decimals?: [number, number, number] }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * `matrixExtra` for a bot that must answer a burst from one person (a backlog, a benchmark, chaos): the
 * default inbound budget (#16.6) would rightly refuse most of it.
 */
export const UNBOUNDED_BUDGET =
  "inboundBudget: { roomBurst: 100000, roomPerMinute: 100000, senderBurst: 100000, senderPerMinute: 100000 },"

/** Registers a bot account, writes its config (password login on first start) and returns the handle. */
export const makeBot = async (hs: SharedSynapse, llm: FakeLlmServer, options: BotOptions = {}): Promise<Bot> => {
  const user = await hs.registerUser()
  const dir = tempStateDir()
  const json = (v: unknown) => JSON.stringify(v)
  fs.writeFileSync(
    path.join(dir, "carapace.json5"),
    `{
  // written by test/integration/matrix-support.ts
  gateway: { port: 0, bind: "loopback", auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
  matrix: {
    enabled: true,
    ${options.omitHomeserverUrl === true ? "" : `homeserverUrl: ${json(hs.baseUrl)},`}
    userId: ${json(user.userId)},
    // first login only
    password: "\${MATRIX_PASSWORD}",
    autoJoin: { allowUsers: ${json(options.allowUsers ?? [])}, allowServerNames: ${
      json(options.allowServerNames ?? [])
    } },
    ${options.matrixExtra ?? ""}
  },
  anthropic: { apiKey: "test-key", baseUrl: ${json(llm.baseUrl)} },
  agents: { default: { model: "anthropic:claude-test" } },
}
`,
    { mode: 0o600 }
  )
  const env = cleanEnv(dir, {
    CARAPACE_CONFIG_PASSWORD: CONFIG_PASSWORD,
    CARAPACE_GATEWAY_TOKEN: GATEWAY_TOKEN,
    MATRIX_PASSWORD: user.password,
    CARA_LOG_LEVEL: "debug",
    ...options.env
  })
  return new Bot(dir, user, env)
}

/** The decrypted `m.room.message`s the human's client holds from `sender` in the room, oldest first. */
export const messagesFrom = (
  human: { client: import("matrix-js-sdk").MatrixClient },
  roomId: string,
  sender: string
): Array<{ eventId: string; body: string; inReplyTo: string | undefined }> =>
  (human.client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [])
    .filter((e) => e.getSender() === sender && e.getType() === "m.room.message" && e.status === null)
    .map((e) => {
      const c = e.getContent() as { body?: string; "m.relates_to"?: { "m.in_reply_to"?: { event_id?: string } } }
      return { eventId: e.getId() ?? "", body: c.body ?? "", inReplyTo: c["m.relates_to"]?.["m.in_reply_to"]?.event_id }
    })

/** Counts occurrences of `re` in the text. */
export const count = (text: string, re: RegExp): number => (text.match(new RegExp(re.source, "g")) ?? []).length
