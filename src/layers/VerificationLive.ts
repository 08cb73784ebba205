import { Duration, Effect, Layer, Queue, Schedule } from "effect"
import { Verification, type VerificationShape } from "../services/Verification.js"
import * as Actions from "./verification/actions.js"
import { attach } from "./verification/attach.js"
import * as Outgoing from "./verification/outgoing.js"
import { makeRegistry } from "./verification/registry.js"

const SWEEP_EVERY = Duration.seconds(30)

/**
 * The Verification service, composed from its parts under ./verification/: the registry of flows and the
 * state they share (registry.ts, handled.ts), the per-flow SDK tracking (flow.ts), the operator's actions
 * (actions.ts), the bot-initiated requests (outgoing.ts) and the attachment to a Matrix client (attach.ts).
 * Only sdkPort.ts there reaches past the SDK's public API.
 */
export const makeVerification = Effect.gen(function*() {
  const reg = yield* makeRegistry

  // one item's defect (a throwing SDK getter, say) must not stop the worker, or every later flow would stall
  yield* Effect.forkScoped(Effect.forever(
    Effect.flatten(Queue.take(reg.work)).pipe(
      Effect.catchAllCause((c) => Effect.logError("a verification work item failed", c))
    )
  ))
  yield* Effect.forkScoped(Effect.repeat(Actions.sweep(reg), Schedule.spaced(SWEEP_EVERY)))

  return {
    attach: (a) => attach(reg, a),
    list: Actions.list(reg),
    accept: (flowId) => Actions.accept(reg, flowId),
    confirm: (flowId, match) => Actions.confirm(reg, flowId, match),
    cancel: (flowId) => Actions.cancel(reg, flowId),
    start: (userId, deviceId) => Outgoing.start(reg, userId, deviceId),
    devices: Outgoing.devices(reg)
  } satisfies VerificationShape
})

/** Needs EventBus, ChannelStatus and StateDir (the daemon provides them once, shared with the gateway). */
export const VerificationLive = Layer.scoped(Verification, makeVerification)
