// `cara setup` against the real Synapse: with flags (given URL and .well-known discovery), the refusal to
// overwrite and the backup with --force, and the interactive questions on a pseudo-terminal.
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { expect, it } from "vitest"
import { loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { cleanEnv, CLI, tempStateDir } from "../support/cli.js"
import { describeSynapse } from "../support/synapse/index.js"

const run = (
  args: ReadonlyArray<string>,
  env: NodeJS.ProcessEnv,
  cmd = process.execPath,
  argv0: ReadonlyArray<string> = [CLI]
) =>
  new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const child = spawn(cmd, [...argv0, ...args], { env, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    child.stdout.on("data", (c: Buffer) => (out += c.toString()))
    child.stderr.on("data", (c: Buffer) => (out += c.toString()))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, out }))
  })

const SECRET_ENV = {
  CARAPACE_CONFIG_PASSWORD: "setup-test-pw",
  CARAPACE_GATEWAY_TOKEN: "t".repeat(64),
  MATRIX_PASSWORD: "bot-pw"
}

const loads = (dir: string, extra: Record<string, string> = {}) =>
  Effect.runPromise(
    loadConfigSnapshot({ CARAPACE_STATE_DIR: dir, ...SECRET_ENV, ...extra }).pipe(Effect.provide(StateDirAt(dir)))
  )

describeSynapse("cara setup", (hs) => {
  it("flags: writes a commented 0600 config with ${VAR} secrets, prints the exports, and runs config check", async () => {
    const dir = tempStateDir()
    const r = await run(
      [
        "setup",
        "--homeserver",
        hs.baseUrl,
        "--user",
        "@bot:localhost",
        "--allow-user",
        "@you:localhost",
        "--allow-server",
        "localhost",
        "--provider",
        "local",
        "--yes"
      ],
      cleanEnv(dir)
    )
    expect(r.code, r.out).toBe(0)
    const file = path.join(dir, "carapace.json5")
    expect(fs.statSync(file).mode & 0o777).toBe(0o600)
    const text = fs.readFileSync(file, "utf8")
    expect(text).toMatch(/^\/\/ carapace\.json5, written by `cara setup`/)
    expect(text).toContain("password: \"${MATRIX_PASSWORD}\"")
    expect(text).toContain("token: \"${CARAPACE_GATEWAY_TOKEN}\"")
    expect(r.out).toContain(`Homeserver ${hs.baseUrl} offers password login.`)
    for (const v of ["CARAPACE_CONFIG_PASSWORD", "CARAPACE_GATEWAY_TOKEN", "MATRIX_PASSWORD"]) {
      expect(r.out).toMatch(new RegExp(`^  export ${v}=`, "m"))
    }
    expect(r.out).toContain(
      "cara config check (as if CARAPACE_CONFIG_PASSWORD, CARAPACE_GATEWAY_TOKEN, MATRIX_PASSWORD were set):"
    )
    expect(r.out).toContain(`Config file: ${file}`)
    expect(r.out).toMatch(/OK \(\d+ warning\(s\)\)/)
    const snap = await loads(dir)
    expect(snap.findings.filter((f) => f.severity === "error")).toEqual([])
    expect(snap.config.matrix?.homeserverUrl).toBe(hs.baseUrl)
    expect(snap.config.matrix?.autoJoin.allowUsers).toEqual(["@you:localhost"])
    expect(snap.config.matrix?.autoJoin.allowServerNames).toEqual(["localhost"])
    expect(snap.config.agents["default"]?.model).toBe("local:echo")

    // never overwrites without --force; with it, the old file is kept as a backup
    const again = await run(["setup", "--homeserver", hs.baseUrl, "--user", "@bot2:localhost", "--yes"], cleanEnv(dir))
    expect(again.code).not.toBe(0)
    expect(again.out).toContain("setup-config-exists")
    expect(fs.readFileSync(file, "utf8")).toBe(text)
    const forced = await run([
      "setup",
      "--homeserver",
      hs.baseUrl,
      "--user",
      "@bot2:localhost",
      "--provider",
      "anthropic",
      "--yes",
      "--force"
    ], cleanEnv(dir, SECRET_ENV))
    expect(forced.code, forced.out).toBe(0)
    const backups = fs.readdirSync(dir).filter((f) => f.startsWith("carapace.json5.bak-"))
    expect(backups).toHaveLength(1)
    expect(fs.readFileSync(path.join(dir, backups[0]!), "utf8")).toBe(text)
    expect(fs.statSync(path.join(dir, backups[0]!)).mode & 0o777).toBe(0o600)
    const replaced = fs.readFileSync(file, "utf8")
    expect(replaced).toContain("\"@bot2:localhost\"")
    expect(replaced).toContain("apiKey: \"${ANTHROPIC_API_KEY}\"")
    // the variables already in the environment are not asked for again; the missing key is
    expect(forced.out).not.toMatch(/export MATRIX_PASSWORD=/)
    expect(forced.out).toMatch(/export ANTHROPIC_API_KEY=/)
  })

  it("flags: finds the homeserver from the user id when no URL is given", async () => {
    const dir = tempStateDir()
    const server = new URL(hs.baseUrl).host // 127.0.0.1:<port>: discovery falls back to the server name itself
    const r = await run(["setup", "--user", `@bot:${server}`, "--provider", "local", "--yes"], cleanEnv(dir))
    expect(r.code, r.out).toBe(0)
    expect(r.out).toContain(`Homeserver ${hs.baseUrl.replace(/\/$/, "")} offers password login.`)
    const snap = await loads(dir)
    expect(snap.config.matrix?.homeserverUrl).toBe(hs.baseUrl.replace(/\/$/, ""))
    expect(fs.readFileSync(path.join(dir, "carapace.json5"), "utf8")).toContain("found from")
  })

  it("interactive: asks on a terminal, takes the defaults on empty answers", async () => {
    const dir = tempStateDir()
    // python3's pty gives cara a real terminal; each answer is typed once its question has appeared
    const driver = `
import os, pty, sys, time
answers = [("user id", "@bot:localhost"), ("Homeserver URL", ${JSON.stringify(hs.baseUrl)}),
  ("accept invites from", "@you:localhost"), ("Homeservers whose", ""), ("Model provider", "local"), ("Model", "")]
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
def read_until(s, deadline):
    global out
    while s.encode() not in out:
        if time.time() > deadline: raise SystemExit("timeout waiting for %r; got:\\n%s" % (s, out.decode(errors="replace")))
        try: out += os.read(fd, 4096)
        except OSError: raise SystemExit("cara ended early:\\n" + out.decode(errors="replace"))
for q, a in answers:
    read_until(q, time.time() + 60)
    out = out[out.index(q.encode()) + len(q):]
    os.write(fd, (a + "\\r").encode())
rest = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk: break
    rest += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write((out + rest).decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
`
    const r = await run([], cleanEnv(dir), "python3", ["-c", driver, process.execPath, CLI, "setup"])
    expect(r.code, r.out).toBe(0)
    expect(r.out).toContain("cara config check (as if")
    const snap = await loads(dir)
    expect(snap.config.matrix?.userId).toBe("@bot:localhost")
    expect(snap.config.matrix?.homeserverUrl).toBe(hs.baseUrl.replace(/\/$/, ""))
    expect(snap.config.matrix?.autoJoin.allowUsers).toEqual(["@you:localhost"])
    expect(snap.config.agents["default"]?.model).toBe("local:echo")
  })
})
