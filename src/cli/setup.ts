import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Effect, Option } from "effect"
import * as readline from "node:readline/promises"
import { StateDirLive } from "../layers/StateDirLive.js"
import { type Prompter, setup } from "../programs/setup.js"

/** Questions on the terminal (stdout), one line each, `[default]` shown. */
const terminalPrompter = Effect.acquireRelease(
  Effect.sync(() => readline.createInterface({ input: process.stdin, output: process.stdout })),
  (rl) => Effect.sync(() => rl.close())
).pipe(
  Effect.map((rl): Prompter => ({
    ask: (question, fallback) =>
      Effect.promise(() => rl.question(`${question}${fallback !== undefined && fallback !== "" ? ` [${fallback}]` : ""}: `)).pipe(
        Effect.map((a) => a.trim())
      )
  }))
)

const list = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.repeated)

export const setupCommand = Command.make(
  "setup",
  {
    homeserver: Options.text("homeserver").pipe(
      Options.withDescription("the homeserver URL (default: found from --user through .well-known/matrix/client)"),
      Options.optional
    ),
    user: Options.text("user").pipe(Options.withDescription("the bot's Matrix user id, e.g. @cara:example.org"), Options.optional),
    allowUsers: list("allow-user", "a user who may invite cara and get answers (repeatable)"),
    allowServers: list("allow-server", "a homeserver whose users may all invite cara (repeatable)"),
    provider: Options.text("provider").pipe(
      Options.withDescription("anthropic, openai or local (the built-in test model local:echo)"),
      Options.optional
    ),
    model: Options.text("model").pipe(Options.withDescription("the model name, e.g. claude-sonnet-4-6"), Options.optional),
    yes: Options.boolean("yes").pipe(Options.withDescription("ask nothing: take the flags and the defaults")),
    force: Options.boolean("force").pipe(Options.withDescription("replace an existing config (a .bak-<time> copy is kept)"))
  },
  (flags) =>
    Effect.scoped(
      Effect.gen(function*() {
        const interactive = process.stdin.isTTY === true && !flags.yes
        const prompter = interactive ? Option.some(yield* terminalPrompter) : Option.none()
        const ok = yield* setup(flags, { env: { ...process.env }, prompter, now: () => new Date() })
        // the check's findings above are the message
        if (!ok) process.exitCode = 1
      })
    ).pipe(Effect.provide(StateDirLive))
).pipe(
  Command.withDescription(
    "Write carapace.json5 for a bot account: finds the homeserver, checks it offers password login, keeps secrets as ${VAR} references, prints the exports still needed and runs `cara config check`. Interactive on a terminal; scriptable with flags and --yes. Never overwrites without --force."
  )
)
