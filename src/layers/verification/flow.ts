import { Clock, Effect, Option } from "effect"
import {
  type ShowSasCallbacks,
  VerificationPhase,
  type VerificationRequest,
  VerificationRequestEvent,
  type Verifier,
  VerifierEvent
} from "matrix-js-sdk/lib/crypto-api/index.js"
import {
  flowIdOf,
  isTerminal,
  sanitizeDisplay,
  VerificationFlow,
  type VerificationState
} from "../../domain/verification.js"
import { deriveState, isFinishedPhase, sasValuesOf } from "../../domain/verificationState.js"
import { describe } from "./calls.js"
import { GATE_HOLD_MS } from "./cryptoGate.js"
import { type Entry, newEntry, type Registry } from "./registry.js"
import { phaseOf, verifierOf } from "./sdkPort.js"

/*
 * Following one flow in the SDK: its request's change events, its (possibly replaced) SAS verifier, the
 * bot's one decision to start SAS, and re-reading all that into the record, published when it changes.
 */

export const currentState = (e: Entry): VerificationState => {
  if (e.forced !== undefined) return e.forced
  if (e.request === undefined) return e.record.state
  return deriveState({
    phase: phaseOf(e.request),
    hasVerifier: e.verifier !== undefined,
    verifyCalled: e.verifier !== undefined && e.verifyCalled.has(e.verifier),
    sasCaptured: e.sas !== undefined,
    confirmed: e.confirmed,
    mismatched: e.mismatched
  })
}

/** Re-reads the SDK view of a flow; a real change (state or SAS) is stored and published as `updated`. */
export const refresh = (reg: Registry, e: Entry) =>
  Effect.gen(function*() {
    if (isTerminal(e.record.state)) return
    // glare: the SDK may have replaced the verifier inside the same request
    const current = e.request === undefined ? undefined : verifierOf(e.request)
    if (current !== undefined && current !== e.verifier) attachVerifier(reg, e, current)
    if (e.request !== undefined && e.engaged) maybeStartSas(reg, e)
    const state = currentState(e)
    const sas = e.sas === undefined || e.sas === e.sasFrom ? e.record.sas : (sasValuesOf(e.sas.sas) ?? e.record.sas)
    e.sasFrom = e.sas
    const deviceId = e.record.deviceId ??
      (e.request?.otherDeviceId === undefined ? undefined : sanitizeDisplay(e.request.otherDeviceId))
    if (state === e.record.state && sas === e.record.sas && deviceId === e.record.deviceId) return
    const now = yield* Clock.currentTimeMillis
    e.record = new VerificationFlow({
      ...e.record,
      state,
      ...(sas === undefined ? {} : { sas }),
      ...(deviceId === undefined ? {} : { deviceId }),
      updatedAt: now
    })
    if (isTerminal(state)) e.terminalAtSync = reg.sync.count
    yield* reg.publish("updated", e.record)
  })

export const refreshLater = (reg: Registry, e: Entry) => reg.enqueue(refresh(reg, e))

export const callVerify = (reg: Registry, e: Entry, v: Verifier) => {
  if (e.verifyCalled.has(v) || v.hasBeenCancelled) return
  e.verifyCalled.add(v)
  // resolves at done, rejects on cancel (or when glare replaced this verifier): the request's change
  // events carry the outcome, so the promise itself only needs to be observed
  v.verify().then(
    () => refreshLater(reg, e),
    (err: unknown) => {
      reg.fork(Effect.logDebug(`verifier ended: ${describe(err)}`))
      refreshLater(reg, e)
    }
  )
}

const attachVerifier = (reg: Registry, e: Entry, v: Verifier) => {
  e.verifier = v
  const onShow = (cb: ShowSasCallbacks) => {
    if (e.verifier !== v) return
    e.sas = cb
    refreshLater(reg, e)
  }
  v.on(VerifierEvent.ShowSas, onShow)
  const already = v.getShowSasCallbacks()
  if (already !== null) e.sas = already
  if (e.engaged) callVerify(reg, e, v)
}

/**
 * The one decision point per flow on who starts SAS (issue 17.5). The quick check outside the gate only
 * avoids queueing needless work; the check that counts runs inside the gate, where no peer event can be
 * processed until the bot's start has been sent (see cryptoGate.ts). A flow is decided once: after the peer
 * started (or the bot did), the bot never starts again, whatever the request does next.
 */
const maybeStartSas = (reg: Registry, e: Entry) => {
  const req = e.request
  if (req === undefined || e.sasDecision !== undefined) return
  if (phaseOf(req) !== VerificationPhase.Ready || verifierOf(req) !== undefined) return
  if (!req.otherPartySupportsMethod("m.sas.v1")) return
  e.sasDecision = "deciding"
  reg.gate.current.run(async () => {
    const phase = phaseOf(req)
    if (phase === VerificationPhase.Ready && verifierOf(req) === undefined) {
      const v = await req.startVerification("m.sas.v1")
      return { decision: "bot" as const, verifier: v }
    }
    // started by the peer (or moved on while the flow waited for the gate); still ready-less: decide later
    return { decision: phase === VerificationPhase.Requested ? undefined : "peer" as const, verifier: undefined }
  }, GATE_HOLD_MS).then(
    ({ decision, verifier }) => {
      e.sasDecision = decision
      if (verifier !== undefined && e.verifier !== verifier && verifierOf(req) === verifier) {
        attachVerifier(reg, e, verifier)
      }
      refreshLater(reg, e)
    },
    (err: unknown) => {
      e.sasDecision = "failed"
      reg.fork(Effect.logWarning(`starting SAS failed: ${describe(err)}`))
      refreshLater(reg, e)
    }
  )
}

const watch = (reg: Registry, e: Entry, req: VerificationRequest) => {
  e.request = req
  reg.byRequest.set(req, e.record.flowId)
  const onChange = () => {
    try {
      refreshLater(reg, e)
      if (isFinishedPhase(phaseOf(req))) req.off(VerificationRequestEvent.Change, onChange)
    } catch (err) {
      reg.fork(Effect.logError(`verification change handler failed: ${describe(err)}`))
    }
  }
  req.on(VerificationRequestEvent.Change, onChange)
  const v = verifierOf(req)
  if (v !== undefined) attachVerifier(reg, e, v)
}

/** Inserts a new flow (`requested` event) or returns the existing one; none when the registry is full. */
export const insert = (
  reg: Registry,
  req: VerificationRequest,
  rawProtocolId: string,
  engaged: boolean,
  targetDevice?: string
) =>
  Effect.gen(function*() {
    const existing = reg.entries.get(flowIdOf(req.otherUserId, rawProtocolId))
    if (existing !== undefined) return Option.some(existing)
    const made = yield* newEntry(reg, req, rawProtocolId, engaged, targetDevice)
    if (Option.isNone(made)) return made
    const e = made.value
    e.request = req
    const state = currentState(e)
    e.request = undefined
    e.record = new VerificationFlow({ ...e.record, state })
    reg.entries.set(e.record.flowId, e)
    watch(reg, e, req)
    yield* reg.publish("requested", e.record)
    return Option.some(e)
  })
