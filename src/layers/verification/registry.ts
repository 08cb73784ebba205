import { Clock, Duration, Effect, Option, Queue, Ref, Runtime } from "effect"
import type { ShowSasCallbacks, VerificationRequest, Verifier } from "matrix-js-sdk/lib/crypto-api/index.js"
import {
  type FlowId,
  flowIdOf,
  isTerminal,
  sanitizeDisplay,
  sanitizeUserId,
  VerificationFlow,
  VerificationFlowNotFound,
  type VerificationState
} from "../../domain/verification.js"
import { ChannelStatus, type ChannelStatusShape } from "../../services/ChannelStatus.js"
import { EventBus, publishVerification } from "../../services/EventBus.js"
import type { VerificationAttachment } from "../../services/Verification.js"
import { type CryptoGate, makeGate } from "./cryptoGate.js"
import { type HandledIds, makeHandledIds } from "./handled.js"

/** A flow with no change for this long is cancelled (on the peer too, best effort). */
export const INACTIVITY_EXPIRY = Duration.minutes(10)
/** Terminal flows stay listed this long so an operator sees how they ended. */
export const TERMINAL_RETENTION = Duration.minutes(30)
export const MAX_FLOWS = 256

/** One flow: the record an operator sees and the SDK objects and local decisions behind it. */
export interface Entry {
  record: VerificationFlow
  readonly rawUserId: string
  readonly rawProtocolId: string
  request: VerificationRequest | undefined
  verifier: Verifier | undefined
  sas: ShowSasCallbacks | undefined
  /** The callbacks `record.sas` was captured from (the SAS is re-read only when they change). */
  sasFrom: ShowSasCallbacks | undefined
  /** The operator accepted (or started) the flow: SAS is started and answered without asking again. */
  engaged: boolean
  /** Who starts SAS in this flow, decided once (see flow.ts, maybeStartSas); undefined until the request is ready. */
  sasDecision: "deciding" | "bot" | "peer" | "failed" | undefined
  verifyCalled: Set<Verifier>
  /** The SDK's SAS confirm succeeded (set only then, see actions.ts). */
  confirmed: boolean
  mismatched: boolean
  /** Local terminal override (expiry, or a cancel whose SDK view is gone). */
  forced: VerificationState | undefined
  /** The sync count when the flow was first seen terminal (the Rust machine forgets it two syncs later). */
  terminalAtSync: number | undefined
}

/** A gate that serialises only the bot's own calls (no client attached). */
export const detachedGate = (): CryptoGate => ({ ...makeGate(), wrapsSdk: false, uninstall: () => undefined })

/**
 * The flows by id and the state every part of the layer shares: the attached client, the sync count, the
 * crypto gate, the handled request ids and the work queue the SDK callbacks feed. One per Verification layer;
 * the other modules here are functions of it.
 */
export interface Registry {
  readonly entries: Map<FlowId, Entry>
  readonly byRequest: WeakMap<VerificationRequest, FlowId>
  readonly attached: Ref.Ref<Option.Option<VerificationAttachment>>
  readonly work: Queue.Queue<Effect.Effect<void>>
  /** Completed syncs of the attached client (the Rust machine drops finished flows at the start of each). */
  readonly sync: { count: number }
  /** Serialises the bot's SAS start with the SDK's processing of peer events; replaced by attach. */
  readonly gate: { current: CryptoGate }
  /** Transaction ids of to-device requests the SDK announced (so a dropped one is recognised). */
  readonly announced: Set<string>
  /** Dropped to-device requests already fed to the crypto again (one retry each). */
  readonly refed: Set<string>
  readonly handled: HandledIds
  readonly status: ChannelStatusShape
  /** Queues work from an SDK callback; one fiber runs it in order, so a flow's events are published in order. */
  readonly enqueue: (e: Effect.Effect<void>) => void
  /** Runs a log line (or another effect that never fails) from an SDK callback. */
  readonly fork: (e: Effect.Effect<void>) => void
  /** Publishes a record change (a WS event) and the pending count. */
  readonly publish: (event: "requested" | "updated", record: VerificationFlow) => Effect.Effect<void>
}

export const makeRegistry = Effect.gen(function*() {
  const bus = yield* EventBus
  const status = yield* ChannelStatus
  const handled = yield* makeHandledIds
  const runFork = Runtime.runFork(yield* Effect.runtime<never>())
  const entries = new Map<FlowId, Entry>()
  const work = yield* Queue.unbounded<Effect.Effect<void>>()
  const publishPending = Effect.suspend(() => {
    let n = 0
    for (const e of entries.values()) if (!isTerminal(e.record.state)) n++
    return status.updateMatrix((x) => (x.pendingVerificationCount === n ? x : { ...x, pendingVerificationCount: n }))
  })
  const registry: Registry = {
    entries,
    byRequest: new WeakMap(),
    attached: yield* Ref.make(Option.none<VerificationAttachment>()),
    work,
    sync: { count: 0 },
    gate: { current: detachedGate() },
    announced: new Set(),
    refed: new Set(),
    handled,
    status,
    enqueue: (e) => {
      Queue.unsafeOffer(work, e)
    },
    fork: (e) => {
      runFork(e)
    },
    publish: (event, record) =>
      publishVerification(event, record).pipe(Effect.provideService(EventBus, bus), Effect.zipRight(publishPending))
  }
  return registry
})

/** Makes room for one more record: drop the oldest terminal one, else the same peer's oldest `requested`. */
const makeRoom = (entries: Map<FlowId, Entry>, rawUserId: string): boolean => {
  if (entries.size < MAX_FLOWS) return true
  const all = [...entries.values()].sort((a, b) => a.record.updatedAt - b.record.updatedAt)
  const victim = all.find((x) => isTerminal(x.record.state)) ??
    all.find((x) => x.rawUserId === rawUserId && x.record.state === "requested")
  if (victim === undefined) return false
  entries.delete(victim.record.flowId)
  return true
}

/** A new entry for `req` (not stored yet), or none when the registry is full (counted). */
export const newEntry = (
  reg: Registry,
  req: VerificationRequest,
  rawProtocolId: string,
  engaged: boolean,
  targetDevice?: string
) =>
  Effect.gen(function*() {
    if (!makeRoom(reg.entries, req.otherUserId)) {
      yield* reg.status.updateMatrix((x) => ({
        ...x,
        peerDropVerificationCapFullTotal: x.peerDropVerificationCapFullTotal + 1
      }))
      yield* Effect.logWarning("Matrix verification registry is full; request refused")
      return Option.none<Entry>()
    }
    const now = yield* Clock.currentTimeMillis
    // our own to-device request names its device before the peer answers (the SDK knows it only then)
    const device = req.otherDeviceId ?? targetDevice
    const record = new VerificationFlow({
      flowId: flowIdOf(req.otherUserId, rawProtocolId),
      protocolFlowId: sanitizeDisplay(rawProtocolId),
      userId: sanitizeUserId(req.otherUserId),
      ...(device === undefined ? {} : { deviceId: sanitizeDisplay(device) }),
      ...(req.roomId === undefined ? {} : { roomId: sanitizeDisplay(req.roomId) }),
      state: "requested",
      createdAt: now,
      updatedAt: now
    })
    return Option.some<Entry>({
      record,
      rawUserId: req.otherUserId,
      rawProtocolId,
      request: undefined,
      verifier: undefined,
      sas: undefined,
      sasFrom: undefined,
      engaged,
      sasDecision: undefined,
      verifyCalled: new Set(),
      confirmed: false,
      mismatched: false,
      forced: undefined,
      terminalAtSync: undefined
    })
  })

export const find = (reg: Registry, flowId: FlowId) =>
  Effect.suspend(() => {
    const e = reg.entries.get(flowId)
    return e === undefined ? Effect.fail(VerificationFlowNotFound.of(flowId)) : Effect.succeed(e)
  })

/** Every record, newest first. */
export const listed = (reg: Registry) =>
  [...reg.entries.values()].map((e) => e.record).sort((a, b) => b.createdAt - a.createdAt)
