// `cara config show|get|set`, `cara` without a config, `--completions` and `--version`, through the built CLI.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import JSON5 from "json5"
import * as fs from "node:fs"
import * as path from "node:path"
import { makeStateDir } from "../../src/layers/StateDirLive.js"
import { acquireRekeyLock } from "../../src/layers/StorePassphraseLive.js"
import { cleanEnv, runCli, tempStateDir } from "../support/cli.js"

const CONFIG = `// my config
{
  // where the control API listens
  gateway: { port: 18790, auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
  anthropic: { apiKey: "sk-ant-plaintext-secret-0123456789" },
}
`

const withConfig = (text = CONFIG) => {
  const dir = tempStateDir()
  fs.writeFileSync(path.join(dir, "carapace.json5"), text, { mode: 0o600 })
  return dir
}

describe("cara config show / get", () => {
  it("show prints the effective config with every secret masked; --json too", () => {
    const dir = withConfig()
    const env = cleanEnv(dir, { CARAPACE_GATEWAY_TOKEN: "gw-token-0123456789abcdef" })
    const r = runCli(["config", "show"], env)
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toContain(path.join(dir, "carapace.json5"))
    expect(r.stdout).toContain("\"port\": 18790")
    expect(r.stdout).toContain("<secret at anthropic.apiKey>")
    const json = runCli(["config", "show", "--json"], env)
    expect(json.status, json.stderr).toBe(0)
    const parsed = JSON.parse(json.stdout) as { config: { gateway: { port: number; auth: { token: string } } } }
    expect(parsed.config.gateway.port).toBe(18790)
    expect(parsed.config.gateway.auth.token).toMatch(/^<secret/)
    for (const out of [r.stdout + r.stderr, json.stdout + json.stderr]) {
      expect(out).not.toContain("sk-ant-plaintext-secret")
      expect(out).not.toContain("gw-token-0123456789abcdef")
    }
  })

  it("get prints one value (defaults included), masks a secret, and exits 1 on an unknown path", () => {
    const env = cleanEnv(withConfig())
    const port = runCli(["config", "get", "gateway.port"], env)
    expect(port.status, port.stderr).toBe(0)
    expect(port.stdout.trim()).toBe("18790")
    expect(JSON.parse(runCli(["config", "get", "gateway.port", "--json"], env).stdout)).toEqual({
      path: "gateway.port",
      value: 18790
    })
    const secret = runCli(["config", "get", "anthropic.apiKey"], env)
    expect(secret.stdout.trim()).toBe("<secret at anthropic.apiKey>")
    const missing = runCli(["config", "get", "gateway.nope"], env)
    expect(missing.status).toBe(1)
    expect(missing.stderr).toContain("[config-path-not-found]")
    expect(missing.stderr).not.toMatch(/\n\s+at /)
  })
})

describe("cara config set", () => {
  it("writes a plain value in place and keeps the comments", () => {
    const dir = withConfig()
    const r = runCli(["config", "set", "gateway.port", "18791"], cleanEnv(dir))
    expect(r.status, r.stderr).toBe(0)
    const text = fs.readFileSync(path.join(dir, "carapace.json5"), "utf8")
    expect(text).toContain("// where the control API listens")
    expect(text).toContain("// my config")
    expect((JSON5.parse(text) as { gateway: { port: number } }).gateway.port).toBe(18791)
    expect(fs.statSync(path.join(dir, "carapace.json5")).mode & 0o777).toBe(0o600)
  })

  it("refuses a value the config would reject, and leaves the file as it was", () => {
    const dir = withConfig()
    const r = runCli(["config", "set", "gateway.port", "not-a-port"], cleanEnv(dir))
    expect(r.status).toBe(1)
    expect(r.stderr).toContain("[config-write-refused]")
    expect(fs.readFileSync(path.join(dir, "carapace.json5"), "utf8")).toBe(CONFIG)
  })

  it("seals a value given for a secret field; without the password it refuses", () => {
    const dir = withConfig()
    const refused = runCli(["config", "set", "openai.apiKey", "sk-openai-new-secret-value"], cleanEnv(dir))
    expect(refused.status).toBe(1)
    expect(refused.stderr).toContain("CARAPACE_CONFIG_PASSWORD")
    const r = runCli(
      ["config", "set", "openai.apiKey", "sk-openai-new-secret-value"],
      cleanEnv(dir, { CARAPACE_CONFIG_PASSWORD: "correct horse battery" })
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toContain("sealed")
    const text = fs.readFileSync(path.join(dir, "carapace.json5"), "utf8")
    expect(text).not.toContain("sk-openai-new-secret-value")
    expect((JSON5.parse(text) as { openai: { apiKey: string } }).openai.apiKey).toMatch(/^enc:v2:/)
    expect(r.stdout + r.stderr).not.toContain("sk-openai-new-secret-value")
    // a ${VAR} reference is not a secret: written as it is
    const ref = runCli(
      ["config", "set", "openai.apiKey", "${OPENAI_API_KEY}"],
      cleanEnv(dir, { CARAPACE_CONFIG_PASSWORD: "correct horse battery", OPENAI_API_KEY: "sk-from-the-environment" })
    )
    expect(ref.status, ref.stderr).toBe(0)
    expect(fs.readFileSync(path.join(dir, "carapace.json5"), "utf8")).toContain("\"${OPENAI_API_KEY}\"")
  })

  it.scoped("refuses a value the daemon owns while the daemon holds the state dir", () =>
    Effect.gen(function*() {
      const dir = withConfig()
      yield* acquireRekeyLock(yield* makeStateDir(dir), "daemon")
      const r = runCli(["config", "set", "matrix.deviceId", "NEWDEVICE"], cleanEnv(dir))
      expect(r.status).toBe(1)
      expect(r.stderr).toContain("[config-set-daemon-running]")
      expect(fs.readFileSync(path.join(dir, "carapace.json5"), "utf8")).toBe(CONFIG)
      // a value the daemon does not own is written (read at the next start)
      expect(runCli(["config", "set", "gateway.port", "18792"], cleanEnv(dir)).status).toBe(0)
    }))
})

describe("cara without a config, --completions, --version", () => {
  it("cara with no config says where it looked and how to create one, exit 1, no stack trace", () => {
    const dir = tempStateDir()
    const r = runCli([], cleanEnv(dir))
    expect(r.status).toBe(1)
    expect(r.stderr).toContain(path.join(dir, "carapace.json5"))
    expect(r.stderr).toContain("cara setup")
    expect(r.stderr).toContain("[config-missing]")
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })

  it("--completions prints a script for bash, zsh and fish", () => {
    const env = cleanEnv(tempStateDir())
    for (const shell of ["bash", "zsh", "fish"]) {
      const r = runCli(["--completions", shell], env)
      expect(r.status, `${shell}: ${r.stderr}`).toBe(0)
      expect(r.stdout).toContain("rekey-store")
    }
    expect(runCli(["--completions", "bash"], env).stdout).toContain("complete -F _cara_bash_completions")
  })

  it("--version prints the version alone", () => {
    const r = runCli(["--version"], cleanEnv(tempStateDir()))
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+\n$/)
  })
})
