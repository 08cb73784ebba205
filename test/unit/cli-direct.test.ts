// The commands started without the @effect/cli tree (src/cli/direct.ts) read their flags as @effect/cli does:
// wherever the strict reading answers, it gives the handler what the tree would; where it cannot be sure,
// it answers nothing and the tree parses (and reports) as before.
import * as Command from "@effect/cli/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import { DIRECT_COMMANDS, directArgs, type GatewayArgs, parseGatewayFlags } from "../../src/cli/direct.js"
import { commandPaths, helpOf } from "../../src/cli/docs.js"
import { gatewayOptions } from "../../src/cli/tree.js"

/** What @effect/cli hands a handler with the gateway flags for these words (`Left` when it refuses them). */
const treeReading = (words: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    let got: GatewayArgs | undefined
    const cmd = Command.make("status", gatewayOptions, (a) => Effect.sync(() => void (got = a)))
    const run = yield* Command.run(cmd, { name: "cara", version: "0" })(["node", "cara", ...words]).pipe(
      Effect.provide(NodeContext.layer),
      Effect.either
    )
    return Either.isRight(run) && got !== undefined ? Either.right(got) : Either.left("refused")
  })

const ACCEPTED: ReadonlyArray<ReadonlyArray<string>> = [
  [],
  ["--json"],
  ["--port", "18789"],
  ["--port=18789"],
  ["-p", "0"],
  ["--host", "localhost"],
  ["--host=::1"],
  ["--host=a=b"],
  ["--port=0", "--host=h", "--json"],
  ["--host", "127.0.0.1", "--port", "1", "--json"],
  ["--json", "-p", "65535", "--host", "[::1]"]
]

const REFUSED: ReadonlyArray<ReadonlyArray<string>> = [
  ["--json", "--json"],
  ["--port", "1", "--port", "2"],
  ["--host", "a", "--host", "b"],
  ["--port"],
  ["--port", "x"],
  ["--port", "-1"],
  ["--port", "1.5"],
  ["--port", "007"],
  ["--port="],
  ["-p=80"],
  ["-p80"],
  ["--host"],
  ["--host", "--json"],
  ["--host="],
  ["--json=true"],
  ["--json", "true"],
  ["--help"],
  ["-h"],
  ["--log-level", "debug"],
  ["--wizard"],
  ["extra"],
  ["--unknown"]
]

describe("the direct start of the read-only gateway commands", () => {
  it.effect("reads every accepted set of flags exactly as the command tree does", () =>
    Effect.gen(function*() {
      for (const words of ACCEPTED) {
        const direct = parseGatewayFlags(words)
        expect(direct, words.join(" ")).toBeDefined()
        const tree = yield* treeReading(words)
        expect(Either.getOrUndefined(tree), words.join(" ")).toEqual(direct)
      }
    }))

  it("leaves anything it does not fully understand to the command tree", () => {
    for (const words of REFUSED) expect(parseGatewayFlags(words), words.join(" ")).toBeUndefined()
  })

  it("starts only its own commands, by their exact path", () => {
    expect(directArgs(["status"])).toEqual({
      command: "status",
      flags: { host: Option.none(), port: Option.none(), json: false }
    })
    expect(directArgs(["matrix", "dlq", "list", "--json"])?.command).toBe("matrix dlq list")
    expect(directArgs(["matrix", "verifications", "-p", "5"])?.flags.port).toEqual(Option.some(5))
    expect(directArgs(["matrix", "devices"])?.command).toBe("matrix devices")
    for (
      const args of [
        [],
        ["--version"],
        ["matrix"],
        ["matrix", "dlq"],
        ["matrix", "dlq", "show", "abc"],
        ["matrix", "dlq", "list", "extra"],
        ["matrix", "accept", "flow"],
        ["config", "show"],
        ["Status"],
        ["--json", "status"],
        ["status", "--help"]
      ]
    ) expect(directArgs(args), args.join(" ")).toBeUndefined()
    expect(directArgs(["status"], { CARA_DIRECT: "off" })).toBeUndefined()
  })

  it.effect("names only commands of the tree that take exactly the gateway flags", () =>
    Effect.gen(function*() {
      const paths = commandPaths(yield* helpOf([]))
      for (const command of DIRECT_COMMANDS) {
        expect(paths).toContain(command)
        const help = yield* helpOf(command.split(" "))
        const usage = help.split("\n").find((l) => l.startsWith("$ "))
        expect(usage, command).toMatch(/^\$ \S+ (\[--host text\] \[\(-p, --port integer\)\] \[--json\])$/)
      }
    }))
})
