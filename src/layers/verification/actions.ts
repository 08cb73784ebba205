import { Clock, Duration, Effect } from "effect"
import { VerificationPhase } from "matrix-js-sdk/lib/crypto-api/index.js"
import {
  type FlowId,
  isTerminal,
  VerificationFlowNotReady,
  VerificationFlowTerminal
} from "../../domain/verification.js"
import { isFinishedPhase } from "../../domain/verificationState.js"
import { describe, sdkCall, verificationFailed } from "./calls.js"
import { callVerify, currentState, refresh, refreshLater } from "./flow.js"
import { type Entry, find, INACTIVITY_EXPIRY, listed, type Registry, TERMINAL_RETENTION } from "./registry.js"
import { phaseOf } from "./sdkPort.js"

/*
 * The operator's actions on a listed flow (accept, confirm or mismatch, cancel) and the sweep that expires
 * idle flows and prunes old terminal ones. The bot never accepts or confirms anything by itself.
 */

/** The flow, re-read from the SDK, unless it is terminal (410). */
const live = (reg: Registry, flowId: FlowId) =>
  Effect.gen(function*() {
    const e = yield* find(reg, flowId)
    yield* refresh(reg, e)
    if (isTerminal(e.record.state)) return yield* VerificationFlowTerminal.of(e.record.flowId, e.record.state)
    return e
  })

export const accept = (reg: Registry, flowId: FlowId) =>
  Effect.gen(function*() {
    const e = yield* live(reg, flowId)
    const req = e.request
    if (req === undefined) {
      return yield* VerificationFlowNotReady.of(e.record.flowId, "accept", "the SDK no longer knows this flow")
    }
    e.engaged = true
    if (phaseOf(req) === VerificationPhase.Requested && !req.initiatedByMe) {
      yield* sdkCall("accept", () => req.accept())
    }
    if (e.verifier !== undefined) callVerify(reg, e, e.verifier)
    yield* refresh(reg, e)
    return e.record
  })

/**
 * The SDK's confirm, and `confirmed` only once it succeeded: a confirm that fails (or never answers) leaves
 * the flow in keys_exchanged. One that lands after the caller's timeout still marks the flow.
 */
const confirmMatch = (reg: Registry, e: Entry, confirm: () => Promise<void>) =>
  Effect.gen(function*() {
    const marked = () =>
      confirm().then(() => {
        e.confirmed = true
        refreshLater(reg, e)
      })
    yield* sdkCall("confirm", marked)
    yield* Effect.logWarning("matrix_device_verification_confirmed").pipe(
      Effect.annotateLogs({ flowId: e.record.flowId, peer: e.record.userId, device: e.record.deviceId ?? "" })
    )
  })

export const confirm = (reg: Registry, flowId: FlowId, match: boolean) =>
  Effect.gen(function*() {
    const e = yield* live(reg, flowId)
    const sas = e.sas
    if (sas === undefined || e.record.sas === undefined) {
      return yield* VerificationFlowNotReady.of(
        e.record.flowId,
        "confirm",
        `no SAS captured yet, state ${e.record.state}`
      )
    }
    if (match) {
      yield* confirmMatch(reg, e, () => sas.confirm())
    } else {
      // only mismatch() sends m.mismatched_sas (request.cancel() always sends m.user)
      yield* Effect.try({
        try: () => sas.mismatch(),
        catch: (err) => verificationFailed(`Matrix verification mismatch failed: ${describe(err)}`)
      })
      e.mismatched = true
    }
    yield* refresh(reg, e)
    return e.record
  })

export const cancel = (reg: Registry, flowId: FlowId) =>
  Effect.gen(function*() {
    const e = yield* find(reg, flowId)
    yield* refresh(reg, e)
    if (isTerminal(e.record.state)) return e.record
    const req = e.request
    if (req === undefined) {
      return yield* VerificationFlowNotReady.of(e.record.flowId, "cancel", "the SDK no longer knows this flow")
    }
    if (!isFinishedPhase(phaseOf(req))) {
      yield* sdkCall("cancel", () => req.cancel())
    }
    const state = currentState(e)
    if (state !== "cancelled" && state !== "done") e.forced = "cancelled"
    yield* refresh(reg, e)
    return e.record
  })

/** Expires flows without progress for INACTIVITY_EXPIRY (on the peer too) and prunes old terminal ones. */
export const sweep = (reg: Registry) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    for (const e of [...reg.entries.values()]) {
      if (isTerminal(e.record.state)) {
        if (now - e.record.updatedAt >= Duration.toMillis(TERMINAL_RETENTION)) reg.entries.delete(e.record.flowId)
        continue
      }
      yield* refresh(reg, e)
      if (isTerminal(e.record.state)) continue
      if (now - e.record.updatedAt >= Duration.toMillis(INACTIVITY_EXPIRY)) {
        const req = e.request
        if (req !== undefined && !isFinishedPhase(phaseOf(req))) req.cancel().catch(() => undefined)
        e.forced = "cancelled"
        yield* refresh(reg, e)
        yield* Effect.logInfo("Matrix verification flow expired after 10 minutes without progress").pipe(
          Effect.annotateLogs({ flowId: e.record.flowId })
        )
      }
    }
  })

/** Every flow after a sweep, newest first. */
export const list = (reg: Registry) => Effect.map(sweep(reg), () => listed(reg))
