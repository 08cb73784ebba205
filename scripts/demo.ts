// `npm run demo`: the whole path on one machine. A throwaway Synapse (the test harness's), a bot account and a
// human account, a config, the real daemon with E2EE, an encrypted DM from the human and the bot's answer,
// decrypted by the human's client. Ctrl-C at any step stops everything and removes the temporary files.
// Without an API key it uses the built-in test model local:echo; `--once` exits right after the first answer
// (for scripts), otherwise on a terminal the human keeps chatting until an empty line or Ctrl-D.
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
// type only: the harness is loaded lazily, after the pure parts (the unit test imports this file)
import type { Human } from "../test/support/human.js"

export type DemoEnv = Readonly<Record<string, string | undefined>>

export interface DemoProvider {
  readonly provider: "anthropic" | "openai" | "local"
  readonly model: string
  /** The env variable the daemon reads the key from (never written into the config); none for local. */
  readonly keyEnv?: "ANTHROPIC_API_KEY" | "OPENAI_API_KEY"
  readonly key?: string
  readonly baseUrl?: string
  readonly describe: string
}

export const REAL_MODEL_HINT = `For answers from a real model, set one of:

  ANTHROPIC_API_KEY=sk-ant-...            Anthropic (model: CARA_DEMO_MODEL, default claude-sonnet-4-6)
  OPENAI_API_KEY=sk-...                   OpenAI (model: CARA_DEMO_MODEL, default gpt-4o-mini)
  CARA_DEMO_OPENAI_BASE_URL=http://127.0.0.1:11434/v1 CARA_DEMO_MODEL=llama3.2
                                          any OpenAI-compatible server (Ollama, vLLM, llama.cpp);
                                          OPENAI_API_KEY is sent if set

then run it again, e.g.  ANTHROPIC_API_KEY=sk-ant-... npm run demo`

/** No key in the environment: cara's built-in deterministic test model, which repeats the message. */
export const LOCAL_DEMO_PROVIDER: DemoProvider = {
  provider: "local",
  model: "echo",
  describe: "local:echo (no API key in the environment: the built-in test model, which repeats your message)"
}

const nonEmpty = (
  v: string | undefined
): string | undefined => (v === undefined || v.trim() === "" ? undefined : v.trim())

/** Which model the demo's agent uses, from the environment; a string says what is wrong with it. */
export const demoProvider = (env: DemoEnv): DemoProvider | string => {
  const model = nonEmpty(env["CARA_DEMO_MODEL"])
  const base = nonEmpty(env["CARA_DEMO_OPENAI_BASE_URL"])
  if (base !== undefined) {
    try {
      new URL(base)
    } catch {
      return `CARA_DEMO_OPENAI_BASE_URL is not a URL (got "${base}"); use e.g. http://127.0.0.1:11434/v1`
    }
    if (model === undefined) {
      return `CARA_DEMO_OPENAI_BASE_URL is set: also set CARA_DEMO_MODEL to a model that server serves (e.g. llama3.2)`
    }
    return {
      provider: "openai",
      model,
      keyEnv: "OPENAI_API_KEY",
      key: nonEmpty(env["OPENAI_API_KEY"]) ?? "not-needed",
      baseUrl: base,
      describe: `openai:${model} at ${base}`
    }
  }
  const anthropic = nonEmpty(env["ANTHROPIC_API_KEY"])
  if (anthropic !== undefined) {
    const m = model ?? "claude-sonnet-4-6"
    return { provider: "anthropic", model: m, keyEnv: "ANTHROPIC_API_KEY", key: anthropic, describe: `anthropic:${m}` }
  }
  const openai = nonEmpty(env["OPENAI_API_KEY"])
  if (openai !== undefined) {
    const m = model ?? "gpt-4o-mini"
    return { provider: "openai", model: m, keyEnv: "OPENAI_API_KEY", key: openai, describe: `openai:${m}` }
  }
  return LOCAL_DEMO_PROVIDER
}

/** The demo's config file: the README's shape, pointed at the local Synapse; secrets stay `${VAR}`. */
export const demoConfig = (
  p: { homeserverUrl: string; botUserId: string; humanUserId: string; provider: DemoProvider }
): string => {
  const json = (v: unknown) => JSON.stringify(v)
  return `{
  // written by scripts/demo.ts
  gateway: { bind: "loopback", port: 0, auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
  matrix: {
    enabled: true,
    homeserverUrl: ${json(p.homeserverUrl)},
    userId: ${json(p.botUserId)},
    // first login only; the daemon replaces it with a sealed access token
    password: "\${MATRIX_PASSWORD}",
    encrypted: true,
    autoJoin: { allowUsers: [${json(p.humanUserId)}], allowServerNames: [] },
  },
${
    p.provider.keyEnv === undefined
      ? "  // local:echo is built in: no provider section, no key\n"
      : `  ${p.provider.provider}: { apiKey: "\${${p.provider.keyEnv}}"${
        p.provider.baseUrl !== undefined ? `, baseUrl: ${json(p.provider.baseUrl)}` : ""
      } },\n`
  }  agents: { default: { model: ${
    json(`${p.provider.provider}:${p.provider.model}`)
  }, systemPrompt: "You are cara, a helpful assistant in a Matrix chat. Answer briefly." } },
}
`
}

// ---------------------------------------------------------------------------------------------------------

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const log = (line: string) => process.stdout.write(`${line}\n`)

interface DemoAnswer {
  readonly body: string
  readonly encrypted: boolean
  readonly eventId: string
}

const printAnswer = (answer: DemoAnswer) => {
  log("")
  log(
    `cara answered (${answer.encrypted ? "end-to-end encrypted, decrypted by the human's client" : "NOT encrypted"}):`
  )
  log("")
  for (const line of answer.body.split("\n")) log(`  ${line}`)
  log("")
}

/** On a terminal: the human keeps writing (one line per message) until an empty line or Ctrl-D. */
const chat = async (human: Human, roomId: string, bot: string, lastAnswer: string) => {
  const readline = await import("node:readline/promises")
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout })
  const seen = new Set([lastAnswer])
  try {
    log("Write to cara as the human (an empty line or Ctrl-D ends the demo).")
    for (;;) {
      const line = await rl.question("you> ").catch(() => "")
      if (line.trim() === "") return
      await human.sendText(roomId, line)
      const answer = await human.waitForMessage(roomId, (m) => m.sender === bot && !seen.has(m.eventId), 180_000)
      seen.add(answer.eventId)
      printAnswer(answer)
    }
  } finally {
    rl.close()
  }
}

const main = async (): Promise<number> => {
  const once = process.argv.slice(2).includes("--once")
  const provider = demoProvider(process.env)
  if (typeof provider === "string") {
    process.stderr.write(`${provider}\n`)
    return 2
  }
  const cleanups: Array<() => Promise<unknown> | unknown> = []
  let stopping = false
  let stopped: Promise<void> = Promise.resolve()
  const cleanup = async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c()
      } catch {
        // keep stopping the rest
      }
    }
  }
  process.once("SIGINT", () => {
    if (stopping) return
    stopping = true
    log("\nCtrl-C: stopping the daemon, the human client and Synapse …")
    stopped = cleanup()
    void stopped.then(() => process.exit(130))
  })

  try {
    const steps = 7
    let n = 0
    const step = (s: string) => log(`[${++n}/${steps}] ${s}`)

    step(`model: ${provider.describe}`)
    if (provider.provider === "local") log(REAL_MODEL_HINT.replace(/^/gm, "      "))
    const bin = path.join(root, "dist/cli/bin.js")
    if (!fs.existsSync(bin)) {
      log("      building cara (dist/ is missing) …")
      const built = spawnSync(process.execPath, [
        path.join(root, "node_modules/typescript/bin/tsc"),
        "-p",
        path.join(root, "tsconfig.build.json")
      ], { stdio: "inherit" })
      if (built.status !== 0) throw new Error("the build failed; run `npm run build` and fix what it reports")
    }

    step("starting a local Synapse (the first run installs it into .venv-synapse/, about 25 s) …")
    const { startSynapse } = await import("../test/support/synapse/harness.js")
    const synapse = await startSynapse()
    cleanups.push(() => synapse.stop())
    log(`      Synapse ${synapse.synapseVersion} on ${synapse.baseUrl}`)

    step("registering a bot account and a human account …")
    const botUser = await synapse.registerUser(`cara-demo-${process.pid}`)
    const humanUser = await synapse.registerUser(`human-demo-${process.pid}`)
    log(`      bot ${botUser.userId}, human ${humanUser.userId}`)

    step("writing the config …")
    const { cleanEnv, startDaemon, tempStateDir } = await import("../test/support/cli.js")
    const stateDir = tempStateDir()
    // Removed last: on Ctrl-C the daemon (which gets the signal too) may still be writing while it shuts down.
    cleanups.unshift(() => fs.rmSync(stateDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 }))
    fs.writeFileSync(
      path.join(stateDir, "carapace.json5"),
      demoConfig({
        homeserverUrl: synapse.baseUrl,
        botUserId: botUser.userId,
        humanUserId: humanUser.userId,
        provider
      }),
      { mode: 0o600 }
    )
    log(`      ${path.join(stateDir, "carapace.json5")}`)

    step("starting the cara daemon with E2EE (first login, cross-signing bootstrap, first sync) …")
    const random = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex")
    const daemon = await startDaemon(
      cleanEnv(stateDir, {
        CARAPACE_CONFIG_PASSWORD: random(),
        CARAPACE_GATEWAY_TOKEN: random(),
        MATRIX_PASSWORD: botUser.password,
        ...(provider.keyEnv !== undefined && provider.key !== undefined ? { [provider.keyEnv]: provider.key } : {})
      }),
      90_000
    )
    cleanups.push(async () => {
      daemon.child.kill("SIGTERM")
      await daemon.exited
    })
    const deadline = Date.now() + 90_000
    while (!/Matrix client synced/.test(daemon.output())) {
      if (daemon.child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`the daemon did not sync:\n${daemon.output().slice(-3000)}`)
      }
      await new Promise((r) => setTimeout(r, 200))
    }
    log(`      gateway on ${daemon.baseUrl}; Matrix synced`)

    step("the human opens an encrypted DM with the bot …")
    const { Human } = await import("../test/support/human.js")
    const human = await Human.login(synapse.baseUrl, humanUser.userId, humanUser.password)
    cleanups.push(() => human.stop())
    await human.start()
    const roomId = await human.createEncryptedDm(botUser.userId)
    await human.waitForMembership(roomId, botUser.userId, "join", 60_000)
    log(`      room ${roomId}; the bot joined`)

    const question = nonEmpty(process.env["CARA_DEMO_MESSAGE"]) ?? "Hello! In one sentence: what can you do for me?"
    step(`sending "${question}" and waiting for the answer …`)
    await human.sendText(roomId, question)
    const answer = await human.waitForMessage(roomId, (m) => m.sender === botUser.userId, 180_000)
    printAnswer(answer)
    if (!answer.encrypted) return 1
    if (!once && process.stdin.isTTY) await chat(human, roomId, botUser.userId, answer.eventId)
    log("Done. Stopping everything …")
    return 0
  } catch (e) {
    // A step interrupted by Ctrl-C fails here: let the cleanup the signal started finish before exiting.
    if (stopping) {
      await stopped
      return 130
    }
    process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`)
    return 1
  } finally {
    if (!stopping) await cleanup()
  }
}

// Run unless imported by the unit test (vitest sets VITEST in its workers), which uses the pure parts only.
if (process.env["VITEST"] === undefined) {
  void main().then((code) => process.exit(code))
}
