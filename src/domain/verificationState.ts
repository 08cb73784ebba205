import { VerificationPhase } from "matrix-js-sdk/lib/crypto-api/index.js"
import type { SasValues, VerificationState } from "./verification.js"

/**
 * The pure part of a flow's state (reference §6.2): from what the SDK says about a request and its SAS
 * verifier, plus what the registry did itself, to the wire state an operator sees. The SAS view wins over the
 * request view; a local mismatch wins over both. (`VerificationPhase` is a plain enum of the SDK's public
 * crypto API; nothing here touches an SDK object.)
 */

/** Inputs of the state derivation. */
export interface StateInputs {
  readonly phase: VerificationPhase
  /** The request has a verifier (phase Started, after the instant the Rust wrapper has none). */
  readonly hasVerifier: boolean
  /** The registry called `verify()` on that verifier (the operator accepted or started the flow). */
  readonly verifyCalled: boolean
  /** The verifier showed its SAS. */
  readonly sasCaptured: boolean
  /** The SDK's SAS confirm succeeded (never set before; see the confirm action). */
  readonly confirmed: boolean
  /** The operator said the SAS does not match (`mismatch()` was sent). */
  readonly mismatched: boolean
}

export const deriveState = (i: StateInputs): VerificationState => {
  if (i.mismatched) return "mismatched"
  switch (i.phase) {
    case VerificationPhase.Unsent:
      return "created"
    case VerificationPhase.Requested:
      return "requested"
    case VerificationPhase.Ready:
      return "ready"
    case VerificationPhase.Cancelled:
      return "cancelled"
    case VerificationPhase.Done:
      return "done"
    case VerificationPhase.Started:
      if (i.confirmed) return "confirmed"
      if (i.sasCaptured) return "keys_exchanged"
      if (i.verifyCalled) return "accepted"
      return i.hasVerifier ? "started" : "transitioned"
  }
  return "requested"
}

/** True for the request phases the SDK never leaves (a flow in them needs no more SDK calls). */
export const isFinishedPhase = (p: VerificationPhase): boolean =>
  p === VerificationPhase.Cancelled || p === VerificationPhase.Done

/** The short authentication string as the SDK's SAS callbacks carry it. */
export interface SasInput {
  readonly emoji?: ReadonlyArray<readonly [string, string]> | undefined
  readonly decimal?: readonly [number, number, number] | undefined
}

/** Our view of the SAS: each part present only when the method gives it; undefined when neither is. */
export const sasValuesOf = (sas: SasInput): SasValues | undefined => {
  const emoji = sas.emoji?.map(([symbol, description]) => ({ symbol, description }))
  const decimals = sas.decimal
  if (emoji === undefined && decimals === undefined) return undefined
  return {
    ...(emoji === undefined ? {} : { emoji }),
    ...(decimals === undefined ? {} : { decimals: [decimals[0], decimals[1], decimals[2]] as const })
  }
}
