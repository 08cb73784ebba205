import type { MatrixClient } from "matrix-js-sdk"
import { interceptSyncEntryPoints } from "./sdkPort.js"

/**
 * One lane through the Rust crypto for everything that moves a verification flow: the SDK's own processing
 * of a sync's to-device events (`processSyncChanges`) and of in-room verification events
 * (`onKeyVerificationEvent`), and the bot's own decision to start SAS.
 *
 * Why: `VerificationRequest.startVerification` awaits (a device lookup, then the Rust `start_sas`, itself
 * asynchronous) before it starts. A peer's `m.key.verification.start` processed in that gap moves the request
 * on, and the Rust `start_sas` on a request the peer already started opens a second SAS in the same flow,
 * which ends in an `m.user` cancel. Run inside the gate, the bot's check-then-start cannot interleave with the
 * SDK's handling of the peer's start: either the peer's start was processed before (the bot sees it and does
 * not start), or it is processed after the bot's start was sent (the spec's glare rule, which the SDK
 * resolves identically on both sides).
 *
 * The SDK calls both methods on the crypto backend instance, so wrapping the instance's properties is
 * enough (sdkPort.ts does the wrapping). Promise-based because the SDK calls it; feature-detected (without the
 * methods it only serialises the bot's own calls).
 */
export interface CryptoGate {
  /** Runs `f` when nothing else holds the gate; the gate is released when `f` settles or after `holdMs`. */
  readonly run: <A>(f: () => Promise<A>, holdMs?: number) => Promise<A>
  /** True when the SDK's processing goes through the gate (the Rust backend's methods were found). */
  readonly wrapsSdk: boolean
  /** Puts the SDK's methods back. */
  readonly uninstall: () => void
}

/** The bot never holds the gate longer than this: a stuck send must not stall the sync loop. */
export const GATE_HOLD_MS = 10_000

export const makeGate = (): Pick<CryptoGate, "run"> => {
  let tail: Promise<void> = Promise.resolve()
  const run = <A>(f: () => Promise<A>, holdMs?: number): Promise<A> => {
    const result = tail.then(f)
    const released = result.then(() => undefined, () => undefined)
    tail = holdMs === undefined
      ? released
      : Promise.race([released, new Promise<void>((r) => setTimeout(r, holdMs).unref())])
    return result
  }
  return { run }
}

export const installCryptoGate = (client: MatrixClient): CryptoGate => {
  const gate = makeGate()
  const { wrapped, restore } = interceptSyncEntryPoints(
    client,
    (original) => (...args) => gate.run(() => original(...args))
  )
  return { run: gate.run, wrapsSdk: wrapped > 0, uninstall: restore }
}
