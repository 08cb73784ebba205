import { Effect, Option } from "effect"
import * as readline from "node:readline/promises"
import { StateDirLive } from "../layers/StateDirLive.js"
import { type Prompter, setup, type SetupFlags } from "../programs/setup.js"

/** Questions on the terminal (stdout), one line each, `[default]` shown. */
const terminalPrompter = Effect.acquireRelease(
  Effect.sync(() => readline.createInterface({ input: process.stdin, output: process.stdout })),
  (rl) => Effect.sync(() => rl.close())
).pipe(
  Effect.map((rl): Prompter => ({
    ask: (question, fallback) =>
      Effect.promise(() =>
        rl.question(`${question}${fallback !== undefined && fallback !== "" ? ` [${fallback}]` : ""}: `)
      ).pipe(
        Effect.map((a) => a.trim())
      )
  }))
)

/** `cara setup`: interactive on a terminal unless --yes. */
export const setupHandler = (flags: SetupFlags) =>
  Effect.scoped(
    Effect.gen(function*() {
      const interactive = process.stdin.isTTY === true && !flags.yes
      const prompter = interactive ? Option.some(yield* terminalPrompter) : Option.none()
      const ok = yield* setup(flags, { env: { ...process.env }, prompter, now: () => new Date() })
      // the check's findings above are the message
      if (!ok) process.exitCode = 1
    })
  ).pipe(Effect.provide(StateDirLive))
