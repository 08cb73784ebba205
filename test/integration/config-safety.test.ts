// Issue 16 points 7 and 9: config errors never print values; a config file that another user could write,
// or that is not a regular file, is refused with the reason; a repeated JSON5 key is a warning naming its
// path. Pure checks first, then the loader, then `cara config check` and the daemon as processes.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit, Schema } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { CaraConfig, schemaProblems } from "../../src/domain/config.js"
import { duplicateKeys, parseWithPositions } from "../../src/domain/json5edit.js"
import { configFileProblem, ConfigSecretsWith, loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { ConfigSecrets } from "../../src/services/ConfigSecrets.js"
import { cleanEnv, runCli, tempStateDir } from "../support/cli.js"

const API_KEY = "sk-ant-api03-MISPLACED-KEY-VALUE"
const URL_WITH_CREDENTIALS = "https://operator:hunter2-password@matrix.example.com"

const writeConfig = (dir: string, text: string, mode = 0o600) => {
  const file = path.join(dir, "carapace.json5")
  fs.writeFileSync(file, text)
  fs.chmodSync(file, mode)
  return file
}

const load = (dir: string, env: Record<string, string> = {}) =>
  Effect.runPromise(loadConfigSnapshot({ CARAPACE_STATE_DIR: dir, ...env }).pipe(Effect.provide(StateDirAt(dir))))

describe("schema errors print the path and the expected kind, never the value", () => {
  const problems = (input: unknown) => {
    const r = Schema.decodeUnknownEither(CaraConfig)(input, { errors: "all", onExcessProperty: "ignore" })
    if (Either.isRight(r)) throw new Error("expected a schema error")
    return schemaProblems(r.left).map((p) => `${p.path.join(".")}: ${p.message}`)
  }

  it("a key where an object belongs, a URL where a number belongs, a URL where a literal belongs", () => {
    expect(problems({ anthropic: API_KEY })).toEqual(["anthropic: expected an object, got a string"])
    expect(problems({ gateway: { port: URL_WITH_CREDENTIALS } })).toEqual([
      "gateway.port: expected an integer and a number between 0 and 65535, got a string"
    ])
    expect(problems({ gateway: { auth: { mode: URL_WITH_CREDENTIALS } } })).toEqual([
      "gateway.auth.mode: expected \"token\", \"password\" or \"none\", got a string"
    ])
    expect(problems({ matrix: { homeserverUrl: 8448, autoJoin: { allowUsers: [API_KEY, 7] } } })).toEqual([
      "matrix.homeserverUrl: expected a string, got a number",
      "matrix.autoJoin.allowUsers.1: expected a string, got a number"
    ])
  })

  it("the loader's findings and the daemon's startup error carry no value either", async () => {
    const dir = tempStateDir()
    writeConfig(
      dir,
      `{ anthropic: "${API_KEY}", gateway: { port: "${URL_WITH_CREDENTIALS}", bind: "${URL_WITH_CREDENTIALS}" },
         agents: { default: { model: "${API_KEY}" } } }`
    )
    const snap = await load(dir)
    const text = snap.findings.map((f) => `${f.path} ${f.message}`).join("\n")
    expect(text).toContain(".anthropic .anthropic: expected an object, got a string")
    expect(text).toContain(".gateway.port")
    expect(text).not.toContain("MISPLACED")
    expect(text).not.toContain("hunter2")

    const exit = await Effect.runPromiseExit(
      ConfigSecrets.pipe(
        Effect.provide(ConfigSecretsWith({ env: { CARAPACE_STATE_DIR: dir } })),
        Effect.provide(StateDirAt(dir))
      )
    )
    expect(Exit.isFailure(exit)).toBe(true)
    const shown = JSON.stringify(exit)
    expect(shown).toContain("config-invalid")
    expect(shown).not.toContain("MISPLACED")
    expect(shown).not.toContain("hunter2")
  })

  it("semantic findings do not echo a misplaced value in model or gateway.bind", async () => {
    const dir = tempStateDir()
    writeConfig(dir, `{ gateway: { bind: "${API_KEY}" }, agents: { default: { model: "${API_KEY}" } } }`)
    const snap = await load(dir)
    expect(snap.findings.map((f) => f.path)).toEqual(expect.arrayContaining([".gateway.bind", ".agents.default.model"]))
    expect(JSON.stringify(snap.findings)).not.toContain("MISPLACED")
  })
})

describe("config file safety", () => {
  const regular = { isFile: true, isFifo: false, isDevice: false, mode: 0o100600, uid: 1000 }

  it("configFileProblem: world-writable, another user's, FIFO and device are refused; own and root's are fine", () => {
    expect(configFileProblem("/c", regular, 1000)).toBeUndefined()
    expect(configFileProblem("/c", { ...regular, uid: 0 }, 1000)).toBeUndefined()
    expect(configFileProblem("/c", { ...regular, mode: 0o100640 }, 1000)).toBeUndefined()
    expect(configFileProblem("/c", { ...regular, mode: 0o100666 }, 1000)).toMatch(
      /world-writable \(mode 0666\).*chmod 600 \/c/
    )
    expect(configFileProblem("/c", { ...regular, uid: 1001 }, 1000)).toMatch(
      /owned by uid 1001, not by the user cara runs as \(uid 1000\).*chown 1000 \/c/
    )
    expect(configFileProblem("/c", { ...regular, isFile: false, isFifo: true }, 1000)).toMatch(
      /is a FIFO; the config must be a regular file/
    )
    expect(configFileProblem("/c", { ...regular, isFile: false, isDevice: true }, 1000)).toMatch(/is a device/)
  })

  it("a world-writable file is refused at load with the reason, and the daemon's layer fails with config-file-unsafe", async () => {
    const dir = tempStateDir()
    const file = writeConfig(dir, `{ gateway: { port: 18789 } }`, 0o666)
    const snap = await load(dir)
    expect(snap.refused).toBe("config-file-unsafe")
    expect(snap.findings).toEqual([
      expect.objectContaining({ severity: "error", path: ".", message: expect.stringContaining(`chmod 600 ${file}`) })
    ])
    const exit = await Effect.runPromiseExit(
      ConfigSecrets.pipe(
        Effect.provide(ConfigSecretsWith({ env: { CARAPACE_STATE_DIR: dir } })),
        Effect.provide(StateDirAt(dir))
      )
    )
    expect(JSON.stringify(exit)).toContain("config-file-unsafe")
  })

  it("a file owned by another user is refused (the test runs as root, so it can hand the file away)", async () => {
    if (process.getuid?.() !== 0) throw new Error("this test needs to chown; run it as root (the CI container is)")
    const dir = tempStateDir()
    const file = writeConfig(dir, `{ gateway: { port: 18789 } }`)
    fs.chownSync(file, 4242, 4242)
    const snap = await load(dir)
    // root is the current uid here, and a file owned by uid 4242 is someone else's.
    expect(snap.findings[0]?.message).toMatch(/owned by uid 4242, not by the user cara runs as \(uid 0\)/)
  })

  it("a FIFO or a device as CARAPACE_CONFIG_PATH is refused at once instead of hanging", async () => {
    const dir = tempStateDir()
    const fifo = path.join(dir, "carapace.fifo")
    execFileSync("mkfifo", [fifo])
    const viaFifo = await load(dir, { CARAPACE_CONFIG_PATH: fifo })
    expect(viaFifo.findings[0]?.message).toContain(`${fifo} is a FIFO`)
    const viaDevice = await load(dir, { CARAPACE_CONFIG_PATH: "/dev/zero" })
    expect(viaDevice.findings[0]?.message).toContain("/dev/zero is a device")
  })
})

describe("duplicate JSON5 keys", () => {
  const text = `{
  matrix: {
    autoJoin: {
      allowUsers: ["@alice:example.com"],
      allowServerNames: [],
      // added later, further down, by someone else
      allowUsers: ["@bob:example.com"],
    },
  },
  "gateway": { port: 1 }, gateway: { port: 2 },
}`

  it("duplicateKeys names each repeated member with both lines", () => {
    const tree = parseWithPositions(text)
    if (Either.isLeft(tree)) throw new Error(tree.left.reason)
    expect(duplicateKeys(text, tree.right)).toEqual([
      { path: ["matrix", "autoJoin", "allowUsers"], first: { line: 4, column: 7 }, again: { line: 7, column: 7 } },
      { path: ["gateway"], first: { line: 10, column: 3 }, again: { line: 10, column: 27 } }
    ])
  })

  it("the loader warns, naming the path; the config still loads (JSON5 keeps the last value)", async () => {
    const dir = tempStateDir()
    writeConfig(dir, text)
    const snap = await load(dir)
    const dup = snap.findings.filter((f) => f.message.startsWith("duplicate key"))
    expect(dup.map((f) => [f.severity, f.path])).toEqual([["warning", ".matrix.autoJoin.allowUsers"], [
      "warning",
      ".gateway"
    ]])
    expect(dup[0]!.message).toMatch(/lines 4 and 7\); only the last one is used/)
    expect(snap.config.gateway.port).toBe(2)
  })
})

describe("as processes", () => {
  it("cara config check: a duplicate key is a warning naming the path, exit 0", () => {
    const dir = tempStateDir()
    writeConfig(dir, `{ gateway: { port: 18789, port: 18790 } }`)
    const r = runCli(["config", "check"], cleanEnv(dir))
    expect(r.stdout).toMatch(/^warning \.gateway\.port: duplicate key gateway\.port in .*\(lines 1 and 1\)/m)
    expect(r.status).toBe(0)
  })

  it("cara config check: a world-writable config is refused with the chmod to run, exit 1", () => {
    const dir = tempStateDir()
    const file = writeConfig(dir, `{ anthropic: { apiKey: "${API_KEY}" } }`, 0o666)
    const r = runCli(["config", "check"], cleanEnv(dir))
    expect(r.stdout).toContain(`error   .: ${file} is world-writable (mode 0666)`)
    expect(r.stdout).toContain(`chmod 600 ${file}`)
    expect(r.stdout + r.stderr).not.toContain("MISPLACED")
    expect(r.status).toBe(1)
  })

  it("cara config check: a schema error with a credentialed URL prints path and kind only", () => {
    const dir = tempStateDir()
    writeConfig(dir, `{ matrix: { enabled: false, deviceId: 7 }, gateway: { port: "${URL_WITH_CREDENTIALS}" } }`)
    const r = runCli(["config", "check", "--json"], cleanEnv(dir))
    expect(r.status).toBe(1)
    const report = JSON.parse(r.stdout) as { findings: Array<{ path: string; message: string }> }
    expect(report.findings).toContainEqual(
      expect.objectContaining({ path: ".gateway.port", message: expect.stringContaining("got a string") })
    )
    expect(r.stdout + r.stderr).not.toContain("hunter2")
  })

  it("the daemon with a FIFO as its config exits at once with config-file-unsafe", () => {
    const dir = tempStateDir()
    const fifo = path.join(dir, "config.fifo")
    execFileSync("mkfifo", [fifo])
    const r = runCli([], cleanEnv(dir, { CARAPACE_CONFIG_PATH: fifo }))
    expect(r.error).toBeUndefined() // not killed by the 60 s timeout
    expect(r.status).toBe(1)
    expect(r.stderr).toContain("[config-file-unsafe]")
    expect(r.stderr).toContain(`${fifo} is a FIFO`)
  })
})
