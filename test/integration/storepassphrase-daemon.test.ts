// The daemon holds `.matrix-rekey.lock` for its whole life: a second daemon and `rekey-store` are refused
// with a message that names it; once it stops (cleanly or SIGKILLed) the lock is free again.
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { cleanEnv, runCli, type RunningDaemon, startDaemon } from "../support/cli.js"
import { BASE_ENV, PASSWORD, tempRoot } from "../support/rekey-fixtures.js"

let running: RunningDaemon | undefined
afterEach(() => {
  running?.child.kill("SIGKILL")
  running = undefined
})

// A gateway-only config: the lock does not depend on Matrix being configured.
const gatewayOnly =
  `{ gateway: { port: 0, bind: "loopback", auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } } }`

describe("the daemon and the maintenance lock", () => {
  it("a second daemon and rekey-store are refused while the daemon runs, naming it; free after it stops", async () => {
    const root = tempRoot(gatewayOnly)
    const env = cleanEnv(root, { ...BASE_ENV, CARAPACE_CONFIG_PASSWORD: PASSWORD })
    running = await startDaemon(env)
    const pid = running.child.pid!
    const holder = JSON.parse(fs.readFileSync(path.join(root, ".matrix-rekey.lock.holder"), "utf8")) as Record<
      string,
      unknown
    >
    expect(holder).toMatchObject({ pid, holder: "daemon" })

    const second = runCli([], env)
    expect(second.status).toBe(1)
    expect(second.stderr).toContain(
      `Matrix rekey lock at ${path.join(root, ".matrix-rekey.lock")} is held by the cara daemon (pid ${pid})`
    )
    expect(second.stderr).toContain("Stop the daemon first")
    expect(second.stderr).toContain("[rekey-lock-held]")
    expect(second.stdout + second.stderr).not.toContain("ready: gateway listening")

    // rekey-store needs a Matrix config; write one now (the daemon read its config at start).
    fs.writeFileSync(
      path.join(root, "carapace.json5"),
      `{
      gateway: { port: 0, auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } },
      matrix: { homeserverUrl: "http://127.0.0.1:8008", userId: "@bot:example.org", accessToken: "\${MATRIX_ACCESS_TOKEN}", deviceId: "D" },
    }`
    )
    const rekey = runCli(["matrix", "rekey-store", "--new"], env)
    expect(rekey.status).toBe(1)
    expect(rekey.stderr).toContain(`is held by the cara daemon (pid ${pid})`)
    expect(rekey.stderr).toContain("[rekey-lock-held]")

    running.child.kill("SIGKILL")
    await running.exited
    running = undefined
    fs.writeFileSync(path.join(root, "carapace.json5"), gatewayOnly)
    // The killed daemon's lock is gone with it: the next one starts at once.
    running = await startDaemon(env)
    running.child.kill("SIGTERM")
    expect((await running.exited).code).toBe(0)
    running = undefined
    expect(fs.existsSync(path.join(root, ".matrix-rekey.lock.holder"))).toBe(false) // a clean stop removes the sidecar
  }, 90_000)

  it(
    "a daemon started while `cara doctor` holds the lock is refused and names doctor as the holder (#17.7)",
    async () => {
      const root = tempRoot(gatewayOnly)
      const env = cleanEnv(root, { ...BASE_ENV, CARAPACE_CONFIG_PASSWORD: PASSWORD })
      // hold the lock under doctor's name, as `cara doctor` does while it opens the stores
      const holderScript = `
      const { Effect } = await import(${JSON.stringify(path.resolve("node_modules/effect/dist/esm/index.js"))})
      const { acquireRekeyLock } = await import(${
        JSON.stringify(path.resolve("dist/src/layers/StorePassphraseLive.js"))
      })
      const { makeStateDir } = await import(${JSON.stringify(path.resolve("dist/src/layers/StateDirLive.js"))})
      await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        yield* acquireRekeyLock(yield* makeStateDir(process.env.LOCK_ROOT), "doctor")
        process.stdout.write("held\\n")
        yield* Effect.never
      })))`
      const doctor = spawn(process.execPath, ["--input-type=module", "-e", holderScript], {
        env: { ...process.env, LOCK_ROOT: root },
        stdio: ["ignore", "pipe", "inherit"]
      })
      try {
        await new Promise<void>((resolve, reject) => {
          doctor.stdout.on("data", (d: Buffer) => d.toString().includes("held") && resolve())
          doctor.once("exit", () => reject(new Error("the lock holder exited")))
        })
        const refused = runCli([], env)
        expect(refused.status).toBe(1)
        expect(refused.stderr).toContain(`is held by \`cara doctor\` (pid ${doctor.pid})`)
        expect(refused.stderr).toContain("[rekey-lock-held]")
        expect(refused.stdout + refused.stderr).not.toContain("ready: gateway listening")
      } finally {
        doctor.kill("SIGKILL")
      }
    },
    60_000
  )
})
