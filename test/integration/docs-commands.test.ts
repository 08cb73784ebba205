// Every `cara …` command in the operator docs must exist in the built CLI with every flag it uses: each
// subcommand path is run with `--help` through `node dist/cli/bin.js` (npm test builds dist/ first).
import { describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { CLI } from "../support/cli.js"
import { docCommands, readDocs } from "../support/docs.js"

const help = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args, "--help"], {
      env: { PATH: process.env["PATH"] ?? "", NO_COLOR: "1" }
    })
    let out = ""
    child.stdout.on("data", (c: Buffer) => (out += c.toString("utf8")))
    child.stderr.on("data", (c: Buffer) => (out += c.toString("utf8")))
    child.on("close", (code) => resolve({ code, out: out.replace(/\x1b\[[0-9;]*m/g, "") }))
  })

describe("docs: commands", () => {
  const commands = docCommands(readDocs())

  it("the docs name the seed's commands", () => {
    const paths = new Set(commands.map((c) => c.path.join(" ")))
    for (
      const p of [
        "",
        "verify",
        "status",
        "doctor",
        "config check",
        "config rekey",
        "matrix verifications",
        "matrix accept",
        "matrix confirm",
        "matrix verify",
        "matrix recovery-key show",
        "matrix recovery-key restore",
        "matrix recovery-key rotate",
        "matrix rekey-store"
      ]
    ) expect(paths, `no documented \`cara ${p}\``).toContain(p)
    expect(commands.length).toBeGreaterThan(40)
  })

  it("every documented command and flag exists in the built CLI", async () => {
    expect(fs.existsSync(CLI), `${CLI} is missing: run \`npm run build\` (npm test does it first)`).toBe(true)
    const byPath = new Map<string, Set<string>>()
    for (const c of commands) {
      const key = c.path.join(" ")
      const flags = byPath.get(key) ?? new Set<string>()
      c.flags.forEach((f) => flags.add(f))
      byPath.set(key, flags)
    }
    // Controls: an unknown subcommand and an unknown flag must be caught, or the check proves nothing.
    byPath.set("matrix no-such-command", new Set())
    byPath.set("status", new Set([...(byPath.get("status") ?? []), "--no-such-flag"]))
    const entries = [...byPath.entries()]
    const problems: Array<string> = []
    // Four at a time: the machine has two cores and each run starts a Node process.
    for (let i = 0; i < entries.length; i += 4) {
      problems.push(
        ...(await Promise.all(entries.slice(i, i + 4).map(([key, flags]) => checkCommand(key, flags)))).flat()
      )
    }
    expect(problems.filter((p) => p.includes("no-such"))).toHaveLength(2)
    expect(problems.filter((p) => !p.includes("no-such"))).toEqual([])
  }, 180_000)
})

const checkCommand = async (key: string, flags: ReadonlySet<string>): Promise<Array<string>> => {
  const words = key === "" ? [] : key.split(" ")
  const { code, out } = await help(words)
  const usage = /\$ (\S+)([^\n]*)/.exec(out)
  const name = words.length === 0 ? "cara" : words[words.length - 1]!
  // @effect/cli answers `--help` of an unknown subcommand with its parent's help: check the name.
  if (code !== 0 || usage === null || usage[1] !== name) {
    return [`\`cara ${key}\`: not a command (--help exit ${code}, usage: ${usage?.[0] ?? "none"})`]
  }
  return [...flags]
    .filter((f) => f !== "--help" && f !== "--version")
    // @effect/cli's built-in options are listed in the help text, not in the usage line
    .filter((f) => !(f === "--completions" && key === "" && /--completions sh \| bash \| fish \| zsh/.test(out)))
    .filter((f) => !new RegExp(`(^|[\\s(\\[])${f}([\\s)\\]]|$)`).test(usage[2]!))
    .map((f) => `\`cara ${key}\`: no option ${f} (usage: ${usage[0]})`)
}
