// The action commands lite.ts answers (src/cli/directArgs.ts `readActionArgs`) read their words as @effect/cli
// reads them with the tree's own options and arguments (src/cli/tree.ts `actionConfigs`): wherever the strict
// reading answers, the handler would get the same values; where it cannot be sure, it answers nothing.
import * as Command from "@effect/cli/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import { ACTION_COMMANDS, type ActionCommand, readActionArgs } from "../../src/cli/directArgs.js"
import { actionConfigs } from "../../src/cli/tree.js"

/** What @effect/cli hands the handler for `words` after the command path (`undefined` when it refuses them). */
const treeReading = (command: ActionCommand, words: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    let got: Record<string, unknown> | undefined
    const cmd = Command.make("x", actionConfigs[command] as never, (a) => Effect.sync(() => void (got = a)))
    const run = yield* Command.run(cmd, { name: "cara", version: "0" })(["node", "cara", ...words]).pipe(
      Effect.provide(NodeContext.layer),
      Effect.either
    )
    return Either.isRight(run) ? got : undefined
  })

/** The lite reading in the handler's terms: every option and argument of the tree's config. */
const liteReading = (command: ActionCommand, words: ReadonlyArray<string>) => {
  const r = readActionArgs([...command.split(" "), ...words])
  if (r === undefined) return undefined
  const out: Record<string, unknown> = {
    host: Option.fromNullable(r.flags.host),
    port: Option.fromNullable(r.flags.port),
    json: r.flags.json
  }
  const spec = ACTION_COMMANDS[command]
  spec.args.forEach((name, i) => {
    out[name] = i < spec.required ? r.args[name] : Option.fromNullable(r.args[name])
  })
  for (const s of spec.switches) out[s] = r.switches.has(s)
  return out
}

const ACCEPTED: { readonly [K in ActionCommand]: ReadonlyArray<ReadonlyArray<string>> } = {
  "matrix dlq show": [["abc"], ["abc", "--json"], ["--json", "abc"], ["abc", "--reveal"], [
    "--reveal",
    "a:b",
    "-p",
    "1"
  ]],
  "matrix dlq replay": [["abc"], ["--all"], ["--all", "--json"], ["abc", "--port", "5"], ["--host", "::1", "x"], []],
  "matrix dlq purge": [["abc", "--yes"], ["--all", "--yes"], ["--yes", "--all", "--json"], ["abc"], ["--all"]],
  "matrix accept": [["mvr_abc-DEF"], ["mvr_x", "--json"], ["--port=9", "mvr_x"]],
  "matrix cancel": [["mvr_abc"], ["--json", "mvr_abc", "--host=127.0.0.1"]],
  "matrix verify": [["@a:b"], ["@a:b", "DEV"], ["@a:b", "DEV", "--json"], ["--json", "@a:b"], ["@a:b", "-p", "3", "D"]]
}

const REFUSED: { readonly [K in ActionCommand]: ReadonlyArray<ReadonlyArray<string>> } = {
  "matrix dlq show": [[], ["a", "b"], ["-x"], ["abc", "--reveal", "--reveal"], ["abc", "--reveal", "true"], [" a"]],
  "matrix dlq replay": [["--all", "--all"], ["a", "b"], ["--all=true"], ["--help"], ["true"], ["a", "--yes"]],
  "matrix dlq purge": [["--yes", "--yes"], ["--", "a"], ["a", "--yes", "false"], ["-y"]],
  "matrix accept": [[], ["a", "b"], [""], ["a "], ["-a"], ["a", "--json", "--json"]],
  "matrix cancel": [["a", "--wizard"], ["a", "--all"]],
  "matrix verify": [[], ["@a:b", "D", "E"], ["@a:b", ""], ["@a:b", "--reveal"], ["@a:b", "0"]]
}

describe("the strict reading of the action commands", () => {
  it.effect("reads every accepted set of words exactly as the command tree does", () =>
    Effect.gen(function*() {
      for (
        const [command, cases] of Object.entries(ACCEPTED) as Array<[ActionCommand, typeof ACCEPTED[ActionCommand]]>
      ) {
        for (const words of cases) {
          const lite = liteReading(command, words)
          expect(lite, `${command} ${words.join(" ")}`).toBeDefined()
          expect(yield* treeReading(command, words), `${command} ${words.join(" ")}`).toEqual(lite)
        }
      }
    }))

  it("leaves anything it does not fully understand to the command tree", () => {
    for (const [command, cases] of Object.entries(REFUSED) as Array<[ActionCommand, typeof REFUSED[ActionCommand]]>) {
      for (const words of cases) expect(liteReading(command, words), `${command} ${words.join(" ")}`).toBeUndefined()
    }
    expect(readActionArgs(["matrix", "accept", "x"], { CARA_DIRECT: "off" })).toBeUndefined()
    expect(readActionArgs(["matrix", "confirm", "x", "--match"])).toBeUndefined()
  })
})
