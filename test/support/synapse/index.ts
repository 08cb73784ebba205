// What an integration test file uses to reach the run's shared Synapse:
//
//   describeSynapse("inbound DMs", (hs) => {
//     it("...", async () => { const alice = await hs.registerUser() ... })
//   })
//
// Skipped (and counted as skipped) only when CARA_SKIP_SYNAPSE=1. When the global setup could not provide a
// Synapse, the suite FAILS with the reason: a missing homeserver must never look like a pass or a skip.
import { describe, inject, it } from "vitest"
import type { SynapseProvided } from "../globalSetup.js"
import { type RegisteredUser, type RegisterOptions, registerWithSharedSecret } from "./harness.js"

export { type RegisteredUser, registerWithSharedSecret, startSynapse, type SynapseServer } from "./harness.js"

export interface SharedSynapse {
  readonly baseUrl: string
  readonly serverName: string
  readonly synapseVersion: string
  /** a fresh user on the shared server (random localpart and password unless given) */
  registerUser(localpart?: string, password?: string, options?: RegisterOptions): Promise<RegisteredUser>
}

export const skipSynapse = (): boolean => process.env["CARA_SKIP_SYNAPSE"] === "1"

const provided = (): SynapseProvided => {
  // inject() only works under vitest; outside of it there is nothing to share
  const value = inject("synapse") as SynapseProvided | undefined
  return value ?? { error: "no Synapse was provided: is test/support/globalSetup.ts listed in vitest.config.ts?" }
}

/** Why the shared Synapse is unusable, or undefined when it is ready. */
export const synapseUnavailable = (): string | undefined => {
  const p = provided()
  if ("skipped" in p) return "Synapse is skipped (CARA_SKIP_SYNAPSE=1)"
  if ("error" in p) return `no Synapse for the integration tests: ${p.error}`
  return undefined
}

/**
 * The shared server. Safe to call at collection time: when no server is available, the accessors throw the
 * reason when a test uses them (and describeSynapse fails every test up front).
 */
export const useSynapse = (): SharedSynapse => {
  const p = provided()
  const unavailable = () => {
    throw new Error(synapseUnavailable())
  }
  if (!("baseUrl" in p)) {
    return {
      get baseUrl(): string {
        return unavailable()
      },
      get serverName(): string {
        return unavailable()
      },
      get synapseVersion(): string {
        return unavailable()
      },
      registerUser: async () => unavailable()
    }
  }
  return {
    baseUrl: p.baseUrl,
    serverName: p.serverName,
    synapseVersion: p.synapseVersion,
    registerUser: (localpart, password, options) =>
      registerWithSharedSecret(p.baseUrl, p.registrationSecret, localpart, password, options)
  }
}

/** describe() for tests that need the shared Synapse; see the file comment for skip/fail rules. */
export const describeSynapse = (name: string, fn: (hs: SharedSynapse) => void): void => {
  if (skipSynapse()) {
    describe.skip(name, () => fn(useSynapse()))
    return
  }
  const reason = synapseUnavailable()
  if (reason !== undefined) {
    // The suite's own tests are not collected: their hooks would fail first and vitest would then report every
    // test below as skipped. One test fails in their place, with the reason and the fix.
    describe(name, () => {
      it("needs the integration-test Synapse", () => {
        throw new Error(reason)
      })
    })
    return
  }
  describe(name, () => fn(useSynapse()))
}
