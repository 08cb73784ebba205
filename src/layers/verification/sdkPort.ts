import type { MatrixClient } from "matrix-js-sdk"
import { VerificationPhase, type VerificationRequest, type Verifier } from "matrix-js-sdk/lib/crypto-api/index.js"

/**
 * The one place that reaches past matrix-js-sdk's public CryptoApi into the Rust backend (`RustCrypto` and
 * its `OlmMachine`), plus the two getters of the Rust request wrapper that throw. Everything else in the
 * verification layer goes through the functions here. Each private member is looked up at call time and
 * feature-detected: without it the caller gets a "not available" answer and degrades as documented, never a
 * TypeError. `probeInternals` lists what is present; test/unit/verification-sdkport.test.ts checks it against
 * the installed SDK, so an SDK upgrade that renames one of these fails that test instead of degrading quietly.
 */

type Method = (...args: Array<unknown>) => Promise<unknown>

/** The members of the Rust OlmMachine used here (the wasm bindings' public API, reached through RustCrypto). */
interface OlmMachineLike {
  readonly updateTrackedUsers?: (ids: Array<unknown>) => Promise<void>
  readonly queryKeysForUsers?: (ids: Array<unknown>) => unknown
}

/** The members of the Rust backend used here; only `markAllTrackedUsersAsDirty` is public CryptoApi. */
interface RustCryptoLike {
  readonly getOlmMachineOrThrow?: () => OlmMachineLike
  readonly outgoingRequestProcessor?: { readonly makeOutgoingRequest?: (req: unknown) => Promise<void> }
  readonly outgoingRequestsManager?: { readonly doProcessOutgoingRequests?: () => Promise<void> }
  readonly markAllTrackedUsersAsDirty?: () => Promise<void>
  readonly processSyncChanges?: Method
  readonly onKeyVerificationEvent?: Method
}

const backendOf = (client: MatrixClient): RustCryptoLike | undefined =>
  client.getCrypto() as unknown as RustCryptoLike | undefined

const machineOf = (crypto: RustCryptoLike | undefined): OlmMachineLike | undefined => {
  if (typeof crypto?.getOlmMachineOrThrow !== "function") return undefined
  try {
    return crypto.getOlmMachineOrThrow()
  } catch {
    return undefined // the backend was stopped
  }
}

/** The backend's entry points for a sync's to-device events and for in-room verification events. */
export const SYNC_ENTRY_POINTS = ["processSyncChanges", "onKeyVerificationEvent"] as const

/** Which internals the backend of a client has (each true on the matrix-js-sdk 43 Rust backend). */
export interface InternalsProbe {
  readonly olmMachine: boolean
  readonly updateTrackedUsers: boolean
  readonly queryKeysForUsers: boolean
  readonly outgoingRequestProcessor: boolean
  readonly outgoingRequestsManager: boolean
  readonly markAllTrackedUsersAsDirty: boolean
  readonly processSyncChanges: boolean
  readonly onKeyVerificationEvent: boolean
}

export const probeInternals = (crypto: unknown): InternalsProbe => {
  const c = crypto as RustCryptoLike | undefined
  const m = machineOf(c)
  return {
    olmMachine: m !== undefined,
    updateTrackedUsers: typeof m?.updateTrackedUsers === "function",
    queryKeysForUsers: typeof m?.queryKeysForUsers === "function",
    outgoingRequestProcessor: typeof c?.outgoingRequestProcessor?.makeOutgoingRequest === "function",
    outgoingRequestsManager: typeof c?.outgoingRequestsManager?.doProcessOutgoingRequests === "function",
    markAllTrackedUsersAsDirty: typeof c?.markAllTrackedUsersAsDirty === "function",
    processSyncChanges: typeof c?.processSyncChanges === "function",
    onKeyVerificationEvent: typeof c?.onKeyVerificationEvent === "function"
  }
}

/** The names of the probed internals that are missing (empty on the supported SDK). */
export const missingInternals = (p: InternalsProbe): ReadonlyArray<string> =>
  Object.entries(p).filter(([, present]) => !present).map(([name]) => name)

const wasmUserIds = async (users: ReadonlyArray<string>): Promise<Array<unknown>> => {
  const { UserId } = await import("@matrix-org/matrix-sdk-crypto-wasm")
  return users.map((u) => new UserId(u))
}

/** Sends the backend's queued outgoing requests now (a /keys/query, say) instead of after the next sync. */
const flushOutgoing = async (crypto: RustCryptoLike) => {
  const manager = crypto.outgoingRequestsManager
  if (typeof manager?.doProcessOutgoingRequests === "function") await manager.doProcessOutgoingRequests()
}

/**
 * Makes the Rust crypto track `users` and downloads their device lists now. The Rust machine only processes
 * `m.key.verification.request` from devices it tracks, and it tracks only members of shared encrypted rooms;
 * the public `getUserDeviceInfo(users, true)` downloads untracked users' keys over HTTP *without* tracking them.
 * The CryptoApi has no tracking call, so this uses the Rust backend's own machine (without it the call does
 * nothing, answers false, and only shared-room peers can verify).
 */
export const trackUsers = async (client: MatrixClient, users: ReadonlyArray<string>): Promise<boolean> => {
  if (users.length === 0) return true
  const crypto = backendOf(client)
  const machine = machineOf(crypto)
  if (crypto === undefined || typeof machine?.updateTrackedUsers !== "function") return false
  await machine.updateTrackedUsers(await wasmUserIds(users))
  await flushOutgoing(crypto)
  return true
}

/**
 * Re-downloads `users`' device lists into the Rust machine now (tracking them first). Synapse announces a new
 * device (`device_lists.changed`) only to users who share a room with its owner, so a person who verifies
 * before inviting the bot and later adds a device would stay unknown: the machine drops that device's
 * requests and `verify <user> <device>` cannot find it. An out-of-band /keys/query for just these users
 * fixes that; without the Rust internals it falls back to the public "every tracked user is outdated".
 */
export const refreshUsers = async (client: MatrixClient, users: ReadonlyArray<string>): Promise<boolean> => {
  if (users.length === 0) return true
  const crypto = backendOf(client)
  if (crypto === undefined) return false
  const machine = machineOf(crypto)
  if (typeof machine?.updateTrackedUsers === "function") {
    await machine.updateTrackedUsers(await wasmUserIds(users))
    const processor = crypto.outgoingRequestProcessor
    if (typeof machine.queryKeysForUsers === "function" && typeof processor?.makeOutgoingRequest === "function") {
      // the processor sends the query and hands the response back to the machine (markRequestAsSent)
      await processor.makeOutgoingRequest(machine.queryKeysForUsers(await wasmUserIds(users)))
      return true
    }
  }
  if (typeof crypto.markAllTrackedUsersAsDirty !== "function") return false
  await crypto.markAllTrackedUsersAsDirty()
  await flushOutgoing(crypto)
  return true
}

/** A to-device event as the backend's sync entry point takes it. */
export interface RawToDeviceEvent {
  readonly sender: string
  readonly type: string
  readonly content: object
}

/**
 * Hands to-device events to the backend as if a sync had delivered them (the MSC4186 variant leaves the
 * one-time key counts alone), or undefined when the backend has no such entry point. Looked up at call time,
 * so a gate installed around it (cryptoGate.ts) is honoured.
 */
export const toDeviceFeed = (
  client: MatrixClient
): ((events: ReadonlyArray<RawToDeviceEvent>) => Promise<unknown>) | undefined => {
  const crypto = backendOf(client)
  if (typeof crypto?.processSyncChanges !== "function") return undefined
  return (events) => {
    const feed = crypto.processSyncChanges
    if (typeof feed !== "function") return Promise.resolve(undefined)
    return feed.call(crypto, { toDeviceEvents: [...events], useMsc4186: true })
  }
}

/**
 * Replaces each of the backend's sync entry points present on this client's crypto by `around(original)`,
 * on the instance (the SDK calls them on the instance). Returns how to put them back and how many it wrapped.
 */
export const interceptSyncEntryPoints = (
  client: MatrixClient,
  around: (original: Method) => Method
): { readonly wrapped: number; readonly restore: () => void } => {
  const crypto = client.getCrypto() as unknown as Record<string, unknown> | undefined
  const restore: Array<() => void> = []
  if (crypto !== undefined) {
    for (const name of SYNC_ENTRY_POINTS) {
      const original = crypto[name]
      if (typeof original !== "function") continue
      const own = Object.prototype.hasOwnProperty.call(crypto, name)
      crypto[name] = around((original as Method).bind(crypto))
      restore.push(() => {
        if (own) crypto[name] = original
        else delete crypto[name]
      })
    }
  }
  return {
    wrapped: restore.length,
    restore: () => {
      for (const r of restore.splice(0)) r()
    }
  }
}

/** The request's phase. The Rust wrapper throws in the instant between a peer's start and its verifier: started. */
export const phaseOf = (req: VerificationRequest): VerificationPhase => {
  try {
    return req.phase
  } catch {
    return VerificationPhase.Started
  }
}

/** The request's current verifier (undefined outside phase Started, and in the instant described above). */
export const verifierOf = (req: VerificationRequest): Verifier | undefined => {
  try {
    return req.verifier
  } catch {
    return undefined
  }
}
