// vitest globalSetup: one Synapse for the whole run, shared by the integration test files (each registers its
// own users). It never throws: a machine without Python/PyPI must still run the unit tests, so a failure is
// handed to the integration tests, which then fail with this message (see test/support/synapse/index.ts).
import type { TestProject } from "vitest/node"
import { startSynapse, type SynapseServer } from "./synapse/harness.js"

/** What the integration tests receive through inject("synapse"): serialisable values only. */
export type SynapseProvided =
  | { readonly skipped: true }
  | { readonly error: string }
  | {
    readonly baseUrl: string
    readonly serverName: string
    readonly registrationSecret: string
    readonly synapseVersion: string
  }

declare module "vitest" {
  export interface ProvidedContext {
    synapse: SynapseProvided
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env["CARA_SKIP_SYNAPSE"] === "1") {
    process.stderr.write("[synapse] CARA_SKIP_SYNAPSE=1: not starting Synapse; integration tests are skipped\n")
    project.provide("synapse", { skipped: true })
    return async () => {}
  }
  let server: SynapseServer | undefined
  try {
    server = await startSynapse()
    process.stderr.write(
      `[synapse] Synapse ${server.synapseVersion} ready on ${server.baseUrl} in ${
        (server.readyMs / 1000).toFixed(1)
      } s\n`
    )
    project.provide("synapse", {
      baseUrl: server.baseUrl,
      serverName: server.serverName,
      registrationSecret: server.registrationSecret,
      synapseVersion: server.synapseVersion
    })
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e)
    process.stderr.write(`[synapse] could not provide a Synapse; integration tests will fail:\n${message}\n`)
    project.provide("synapse", { error: message })
  }
  return async () => {
    await server?.stop()
  }
}
