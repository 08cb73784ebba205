import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { dedupeHelpPaths } from "./helpText.js"
import { cli } from "./main.js"
import { runCommand } from "./runtime.js"

const isHelpRequest = (args: ReadonlyArray<string>) => args.includes("--help") || args.includes("-h")

/** Console.log with `dedupeHelpPaths` applied; everything else as the default console does it. */
const helpConsole = Effect.map(Console.consoleWith(Effect.succeed), (c): Console.Console => ({
  ...c,
  log: (...args: ReadonlyArray<unknown>) => c.log(...args.map((a) => (typeof a === "string" ? dedupeHelpPaths(a) : a)))
}))

/** Runs the command line: one runtime, stderr logging, operator-facing failure reports, exit codes. */
export const run = (argv: ReadonlyArray<string>) => {
  const program = cli(argv)
  return runCommand(
    (isHelpRequest(argv.slice(2)) ? Effect.flatMap(helpConsole, (c) => Console.withConsole(program, c)) : program)
      .pipe(Effect.provide(NodeContext.layer))
  )
}
