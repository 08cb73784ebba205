// The SDK port (src/layers/verification/sdkPort.ts) against the installed matrix-js-sdk: every private member
// of the Rust backend it reaches for must exist on a real client's crypto, and the public objects the
// verification layer drives must keep their shape. If this file fails after an SDK upgrade, the port needs
// a look before anything else: at runtime it would degrade quietly (see the port's comments).
import type { MatrixClient } from "matrix-js-sdk"
import { VerificationPhase, type VerificationRequest } from "matrix-js-sdk/lib/crypto-api/index.js"
import { RustSASVerifier, RustVerificationRequest } from "matrix-js-sdk/lib/rust-crypto/verification.js"
import { describe, expect, it } from "vitest"
import {
  interceptSyncEntryPoints,
  missingInternals,
  phaseOf,
  probeInternals,
  refreshUsers,
  SYNC_ENTRY_POINTS,
  toDeviceFeed,
  trackUsers,
  verifierOf
} from "../../src/layers/verification/sdkPort.js"
import { rustClient } from "../support/rustClient.js"

const asClient = (crypto: object | undefined) => ({ getCrypto: () => crypto }) as unknown as MatrixClient

describe("verification SDK port", () => {
  it("finds every Rust-backend internal it uses on the installed matrix-js-sdk", async () => {
    const client = await rustClient()
    try {
      const probe = probeInternals(client.getCrypto())
      // one message naming what is gone, so an upgrade's failure says where to look
      expect(missingInternals(probe), "matrix-js-sdk internals used by src/layers/verification/sdkPort.ts are missing")
        .toEqual([])
      expect(Object.values(probe).every((present) => present)).toBe(true)
      expect(typeof toDeviceFeed(client)).toBe("function")
    } finally {
      client.stopClient()
    }
  }, 30_000)

  it("wraps the backend's sync entry points on the instance and puts them back", async () => {
    const client = await rustClient()
    try {
      const crypto = client.getCrypto() as unknown as Record<string, unknown>
      const before = SYNC_ENTRY_POINTS.map((n) => crypto[n])
      const calls: Array<number> = []
      const { wrapped, restore } = interceptSyncEntryPoints(client, (original) => (...args) => {
        calls.push(args.length)
        return original(...args)
      })
      expect(wrapped).toBe(SYNC_ENTRY_POINTS.length)
      for (const n of SYNC_ENTRY_POINTS) expect(Object.prototype.hasOwnProperty.call(crypto, n)).toBe(true)
      await toDeviceFeed(client)!([])
      expect(calls).toEqual([1])
      restore()
      // the SDK's own methods (on the prototype) are back, no own property left behind
      expect(SYNC_ENTRY_POINTS.map((n) => crypto[n])).toEqual(before)
      for (const n of SYNC_ENTRY_POINTS) expect(Object.prototype.hasOwnProperty.call(crypto, n)).toBe(false)
    } finally {
      client.stopClient()
    }
  }, 30_000)

  it("the SDK's request and SAS verifier keep the members the registry drives", () => {
    const getter = (proto: object, name: string) => typeof Object.getOwnPropertyDescriptor(proto, name)?.get
    for (
      const name of ["phase", "verifier", "otherUserId", "otherDeviceId", "roomId", "transactionId", "initiatedByMe"]
    ) {
      expect(getter(RustVerificationRequest.prototype, name), `RustVerificationRequest.${name}`).toBe("function")
    }
    for (const name of ["accept", "cancel", "startVerification", "otherPartySupportsMethod", "on", "off"]) {
      expect(
        typeof (RustVerificationRequest.prototype as unknown as Record<string, unknown>)[name],
        `RustVerificationRequest.${name}()`
      ).toBe("function")
    }
    const sas = RustSASVerifier.prototype as unknown as Record<string, unknown>
    for (const name of ["verify", "getShowSasCallbacks", "on"]) {
      expect(typeof sas[name], `RustSASVerifier.${name}()`).toBe("function")
    }
    let proto: object | null = RustSASVerifier.prototype
    let hasCancelled = false
    for (; proto !== null && !hasCancelled; proto = Object.getPrototypeOf(proto)) {
      hasCancelled = getter(proto, "hasBeenCancelled") === "function"
    }
    expect(hasCancelled, "RustSASVerifier.hasBeenCancelled").toBe(true)
  })

  it("degrades without the internals: tracking answers false, refresh falls back to the public call", async () => {
    expect(probeInternals(undefined)).toMatchObject({ olmMachine: false, processSyncChanges: false })
    expect(missingInternals(probeInternals({}))).toHaveLength(8)
    expect(await trackUsers(asClient(undefined), ["@a:b"])).toBe(false)
    expect(await trackUsers(asClient({}), ["@a:b"])).toBe(false)
    expect(await trackUsers(asClient({}), [])).toBe(true)
    // a stopped backend throws from getOlmMachineOrThrow: treated as absent, not as an error
    const stopped = {
      getOlmMachineOrThrow: () => {
        throw new Error("stopped")
      }
    }
    expect(await trackUsers(asClient(stopped), ["@a:b"])).toBe(false)
    let dirty = 0
    let flushed = 0
    const publicOnly = {
      markAllTrackedUsersAsDirty: async () => {
        dirty++
      },
      outgoingRequestsManager: {
        doProcessOutgoingRequests: async () => {
          flushed++
        }
      }
    }
    expect(await refreshUsers(asClient(publicOnly), ["@a:b"])).toBe(true)
    expect([dirty, flushed]).toEqual([1, 1])
    expect(await refreshUsers(asClient({}), ["@a:b"])).toBe(false)
    expect(toDeviceFeed(asClient({}))).toBeUndefined()
    expect(interceptSyncEntryPoints(asClient({}), (f) => f).wrapped).toBe(0)
  })

  it("reads a request's phase and verifier through the Rust wrapper's throwing instant", () => {
    const throwing = {
      get phase(): VerificationPhase {
        throw new Error("no verifier yet")
      },
      get verifier(): undefined {
        throw new Error("no verifier yet")
      }
    } as unknown as VerificationRequest
    expect(phaseOf(throwing)).toBe(VerificationPhase.Started)
    expect(verifierOf(throwing)).toBeUndefined()
    const ready = { phase: VerificationPhase.Ready, verifier: undefined } as unknown as VerificationRequest
    expect(phaseOf(ready)).toBe(VerificationPhase.Ready)
  })
})
