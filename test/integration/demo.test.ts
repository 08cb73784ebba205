// `npm run demo -- --once` with no API key in the environment: the demo's own Synapse, the real daemon with
// E2EE, the built-in local:echo model, and an exit 0 right after the decrypted answer is printed.
import { spawn } from "node:child_process"
import * as os from "node:os"
import { describe, expect, it } from "vitest"
import { skipSynapse } from "../support/synapse/index.js"

const runDemo = (env: NodeJS.ProcessEnv) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    // async: the demo runs for a minute or more and must not block the vitest worker
    const child = spawn("npm", ["run", "--silent", "demo", "--", "--once"], { env, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()))
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()))
    const timer = setTimeout(() => child.kill("SIGINT"), 420_000)
    child.on("error", reject)
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

// Needs Python and PyPI like the other integration tests (the demo provisions and starts its own Synapse).
describe.skipIf(skipSynapse())("npm run demo -- --once", () => {
  it("answers with local:echo over an encrypted DM and exits 0 after printing it", { timeout: 480_000 }, async () => {
    const message = `demo probe ${process.pid}`
    // no ANTHROPIC_API_KEY / OPENAI_API_KEY: only what npm and the demo need
    const run = await runDemo({
      PATH: process.env["PATH"] ?? "",
      HOME: process.env["HOME"] ?? os.tmpdir(),
      CARA_DEMO_MESSAGE: message
    })
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0)
    expect(run.stdout).toContain("model: local:echo")
    expect(run.stdout).toContain("cara answered (end-to-end encrypted, decrypted by the human's client):")
    expect(run.stdout).toContain(`  echo: ${message}`)
    // --once: nothing after the answer but the shutdown line
    expect(
      run.stdout.slice(run.stdout.indexOf(`echo: ${message}`)).trim().split("\n").slice(1).filter((l) =>
        l.trim() !== ""
      )
    ).toEqual([
      "Done. Stopping everything …"
    ])
  })
})
