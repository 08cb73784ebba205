import { Duration, Effect, Layer, Queue, Schedule } from "effect"
import { Verification, type VerificationShape } from "../services/Verification.js"
import { makeActions } from "./verification/actions.js"
import { makeAttach } from "./verification/attach.js"
import { makeFlows } from "./verification/flow.js"
import { makeHandledIds } from "./verification/handled.js"
import { makeOutgoing } from "./verification/outgoing.js"
import { makeRegistry } from "./verification/registry.js"

const SWEEP_EVERY = Duration.seconds(30)

/**
 * The Verification service, composed from its parts under ./verification/: the registry of flows and the
 * state they share, the handled request ids (durable), the per-flow SDK tracking, the operator's actions, the
 * bot-initiated requests and the attachment to a Matrix client. Only sdkPort.ts there reaches past the SDK's
 * public API.
 */
export const makeVerification = Effect.gen(function*() {
  const reg = yield* makeRegistry
  const handled = yield* makeHandledIds
  const flows = makeFlows(reg)
  const actions = makeActions(reg, flows)
  const outgoing = makeOutgoing(reg, flows, handled)
  const { attach } = makeAttach(reg, flows, handled)

  // one item's defect (a throwing SDK getter, say) must not stop the worker, or every later flow would stall
  yield* Effect.forkScoped(Effect.forever(Effect.flatten(Queue.take(reg.work)).pipe(
    Effect.catchAllCause((c) => Effect.logError("a verification work item failed", c))
  )))
  yield* Effect.forkScoped(Effect.repeat(actions.sweep, Schedule.spaced(SWEEP_EVERY)))

  return {
    attach,
    list: actions.list,
    accept: actions.accept,
    confirm: actions.confirm,
    cancel: actions.cancel,
    start: outgoing.start,
    devices: outgoing.devices
  } satisfies VerificationShape
})

/** Needs EventBus, ChannelStatus and StateDir (the daemon provides them once, shared with the gateway). */
export const VerificationLive = Layer.scoped(Verification, makeVerification)
