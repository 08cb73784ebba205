// The command tree: help lists each path once, docs/cli.md is what the tree generates, and the small pure
// pieces behind the CLI (remediation, progress, config masking, the no-config check).
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { channelEnabled, configCandidates } from "../../src/cli/daemon.js"
import { COMMAND_NOTES, commandPaths, helpOf, renderCliDocs, tidyHelp } from "../../src/cli/docs.js"
import { dedupeHelpPaths } from "../../src/cli/helpText.js"
import { SecretRef } from "../../src/domain/config.js"
import { progressLine, renderCount } from "../../src/domain/progress.js"
import { REMEDIATION, remediationFor } from "../../src/domain/remediation.js"
import { maskConfig, parsePath, parseValue, valueAt } from "../../src/programs/configEdit.js"

describe("cara --help", () => {
  it("puts a path printed with its parent twice back to how it is typed", () => {
    expect(dedupeHelpPaths("  - matrix matrix dlq list [--json]  List")).toBe("  - matrix dlq list [--json]  List")
    expect(dedupeHelpPaths("  - matrix dlq  Inspect")).toBe("  - matrix dlq  Inspect")
    expect(dedupeHelpPaths("  - config check [--json]  Load")).toBe("  - config check [--json]  Load")
  })

  it.effect("lists every command once, setup among them", () =>
    Effect.gen(function*() {
      const help = yield* helpOf([])
      expect(help).not.toMatch(/matrix matrix/)
      const paths = commandPaths(help)
      expect(new Set(paths).size).toBe(paths.length)
      for (
        const p of [
          "setup",
          "status",
          "verify",
          "config show",
          "config get",
          "config set",
          "matrix dlq list",
          "matrix recovery-key restore"
        ]
      ) {
        expect(paths).toContain(p)
      }
    }))

  it("a command's help on the page carries its full path and no built-in options", () => {
    const help =
      "cara\n\nUSAGE\n\n$ list [--json]   \n\nOPTIONS\n\n--json\n\n  print\n\n--wizard\n\n  Start wizard mode\n"
    expect(tidyHelp(help, "matrix dlq list")).toBe(
      "USAGE\n\n$ cara matrix dlq list [--json]\n\nOPTIONS\n\n--json\n\n  print"
    )
  })
})

describe("docs/cli.md", () => {
  it.effect("is what `npm run docs:cli` generates from the tree", () =>
    Effect.gen(function*() {
      const generated = yield* renderCliDocs
      const onDisk = fs.readFileSync("docs/cli.md", "utf8")
      expect(onDisk, "docs/cli.md is stale: run `npm run docs:cli`").toBe(`${generated}\n`)
    }))

  it.effect("has exit codes and an example for every command, and none for a command that is gone", () =>
    Effect.gen(function*() {
      const paths = ["", ...commandPaths(yield* helpOf([]))]
      expect(Object.keys(COMMAND_NOTES).sort()).toEqual([...paths].sort())
    }))
})

describe("remediation: one table", () => {
  it("gives the advice for a kind once, and none when the message already says it", () => {
    expect(remediationFor("room-not-found")).toBe(REMEDIATION["room-not-found"])
    expect(remediationFor("room-not-found", `502 BadGateway: no such room; ${REMEDIATION["room-not-found"]}.`))
      .toBeUndefined()
    expect(remediationFor("a-kind-from-a-newer-daemon")).toBeUndefined()
    expect(remediationFor(undefined)).toBeUndefined()
  })

  it("every entry is a sentence of its own", () => {
    const texts = Object.values(REMEDIATION)
    for (const t of texts) expect(t.trim().length).toBeGreaterThan(10)
  })
})

describe("progress", () => {
  const sink = (isTTY: boolean) => {
    const out: Array<string> = []
    return { out, sink: { isTTY, write: (t: string) => out.push(t) } }
  }

  it.effect("prints nothing when stderr is not a terminal, or when disabled (--json)", () =>
    Effect.gen(function*() {
      for (const [tty, enabled] of [[false, true], [true, false]] as const) {
        const s = sink(tty)
        const p = progressLine("rekey-store", { enabled, sink: s.sink })
        expect(p.hooks.progress).toBeUndefined()
        expect(p.hooks.count).toBeUndefined()
        yield* p.done
        expect(s.out).toEqual([])
      }
    }))

  it.effect("on a terminal: a line per step, a counter that rewrites its line, ended by the next line", () =>
    Effect.gen(function*() {
      const s = sink(true)
      const p = progressLine("rekey-store", { sink: s.sink })
      yield* p.hooks.count!("stores re-wrapped", 1, 3)
      yield* p.hooks.count!("stores re-wrapped", 2, 3)
      yield* p.hooks.progress!("pinning the new passphrase")
      yield* p.done
      const text = s.out.join("")
      expect(text).toContain("\rrekey-store: stores re-wrapped 2/3 (66%)".replace("\r", "\r\u001b[2K"))
      expect(text.endsWith("\nrekey-store: pinning the new passphrase\n")).toBe(true)
      expect(renderCount("keys", 0, 0)).toBe("keys 0/0")
    }))
})

describe("cara config show/get: masking and paths", () => {
  it("masks every secret by where it comes from, never by what it is", () => {
    const masked = maskConfig({
      gateway: { auth: { mode: "token", token: new SecretRef({ path: "gateway.auth.token", source: "config" }) } },
      anthropic: { apiKey: new SecretRef({ path: "anthropic.apiKey", source: "env", env: "ANTHROPIC_API_KEY" }) },
      list: [1, "a"],
      gone: undefined
    })
    expect(masked).toEqual({
      gateway: { auth: { mode: "token", token: "<secret at gateway.auth.token>" } },
      anthropic: { apiKey: "<secret from $ANTHROPIC_API_KEY>" },
      list: [1, "a"]
    })
  })

  it("reads dotted paths and JSON5 values", () => {
    expect(parsePath("gateway.port")).toEqual(Either.right(["gateway", "port"]))
    expect(Either.isLeft(parsePath("gateway..port"))).toBe(true)
    expect(valueAt({ a: { b: 0 } }, ["a", "b"])).toEqual(Option.some(0))
    expect(valueAt({ a: { b: 0 } }, ["a", "c"])).toEqual(Option.none())
    expect(parseValue("42")).toBe(42)
    expect(parseValue("[\"@a:x\"]")).toEqual(["@a:x"])
    expect(parseValue("@cara:example.org")).toBe("@cara:example.org")
    expect(parseValue("true")).toBe(true)
  })
})

describe("cara with no config", () => {
  it("looks at CARAPACE_CONFIG_PATH, else carapace.json5 and carapace.json in the state dir", () => {
    expect(configCandidates({ CARAPACE_CONFIG_PATH: "/etc/cara.json5" })).toEqual(["/etc/cara.json5"])
    expect(configCandidates({ CARAPACE_STATE_DIR: "/s" })).toEqual(["/s/carapace.json5", "/s/carapace.json"])
  })

  it("knows a config without an enabled channel", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cara-tree-"))
    const file = path.join(dir, "c.json5")
    for (
      const [text, enabled] of [
        ["{ gateway: { port: 1 } }", false],
        ["{ matrix: { enabled: false } }", false],
        ["{ matrix: { userId: '@a:b' } }", true],
        ["{ not json5", true]
      ] as const
    ) {
      fs.writeFileSync(file, text)
      expect(channelEnabled(file), text).toBe(enabled)
    }
  })
})
