import { randomUUID } from "node:crypto"
import { Clock, Duration, Effect, Layer, Option, Queue, Ref, Runtime, Schedule, type Scope } from "effect"
import { ClientEvent, KnownMembership, type MatrixClient, type MatrixEvent, SyncState } from "matrix-js-sdk"
import {
  CryptoEvent,
  type ShowSasCallbacks,
  type VerificationRequest,
  VerificationPhase,
  VerificationRequestEvent,
  type Verifier,
  VerifierEvent
} from "matrix-js-sdk/lib/crypto-api/index.js"
import {
  InvalidVerificationUser,
  isTerminal,
  type OwnDevice,
  rawHex,
  sanitizeDisplay,
  sanitizeUserId,
  type SasValues,
  USER_ID,
  VerificationFailed,
  VerificationFlow,
  VerificationFlowNotFound,
  VerificationFlowNotReady,
  VerificationFlowTerminal,
  type VerificationState,
  VerificationTargetNotFound,
  VerificationTimeout,
  VerificationUnavailable,
  flowIdOf
} from "../domain/verification.js"
import { ChannelStatus } from "../services/ChannelStatus.js"
import { publishVerification, EventBus } from "../services/EventBus.js"
import { StateDir } from "../services/StateDir.js"
import { type VerificationAttachment, Verification, type VerificationShape } from "../services/Verification.js"
import { type CryptoGate, GATE_HOLD_MS, installCryptoGate, makeGate } from "./cryptoGate.js"

/** A flow with no change for this long is cancelled (on the peer too, best effort). */
export const INACTIVITY_EXPIRY = Duration.minutes(10)
/** Terminal flows stay listed this long so an operator sees how they ended. */
export const TERMINAL_RETENTION = Duration.minutes(30)
export const MAX_FLOWS = 256
const SWEEP_EVERY = Duration.seconds(30)
const SDK_TIMEOUT = Duration.seconds(30)
/** Handled request ids (against phantom in-room requests re-emitted after a restart). */
export const HANDLED_FILE = "matrix/verification_handled.json"
const HANDLED_TTL_MS = 60 * 60 * 1000
const HANDLED_MAX = 2048

/** Inputs of the state derivation; the SAS view wins over the request view (§6.2). */
export interface StateInputs {
  readonly phase: VerificationPhase
  readonly hasVerifier: boolean
  readonly verifyCalled: boolean
  readonly sasCaptured: boolean
  readonly confirmed: boolean
  readonly mismatched: boolean
}

/**
 * Makes the Rust crypto track `users` and downloads their device lists now. The Rust machine only processes
 * `m.key.verification.request` from devices it tracks, and it tracks only members of shared encrypted rooms;
 * the public `getUserDeviceInfo(users, true)` downloads untracked users' keys over HTTP *without* tracking them.
 * The CryptoApi has no tracking call, so this uses the Rust backend's own machine (feature-detected: without
 * it the call does nothing and only shared-room peers can verify).
 */
export const trackUsers = async (client: MatrixClient, users: ReadonlyArray<string>): Promise<boolean> => {
  if (users.length === 0) return true
  const crypto = client.getCrypto() as unknown as {
    getOlmMachineOrThrow?: () => { updateTrackedUsers: (ids: Array<unknown>) => Promise<void> }
    outgoingRequestsManager?: { doProcessOutgoingRequests: () => Promise<void> }
  } | undefined
  const machine = crypto?.getOlmMachineOrThrow?.()
  if (machine === undefined) return false
  const { UserId } = await import("@matrix-org/matrix-sdk-crypto-wasm")
  await machine.updateTrackedUsers(users.map((u) => new UserId(u)))
  // send the /keys/query now instead of after the next sync completes (up to a long-poll later)
  await crypto?.outgoingRequestsManager?.doProcessOutgoingRequests()
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
  const crypto = client.getCrypto() as unknown as {
    getOlmMachineOrThrow?: () => {
      updateTrackedUsers: (ids: Array<unknown>) => Promise<void>
      queryKeysForUsers?: (ids: Array<unknown>) => unknown
    }
    outgoingRequestProcessor?: { makeOutgoingRequest: (req: unknown) => Promise<void> }
    outgoingRequestsManager?: { doProcessOutgoingRequests: () => Promise<void> }
    markAllTrackedUsersAsDirty?: () => Promise<void>
  } | undefined
  if (crypto === undefined) return false
  const machine = crypto.getOlmMachineOrThrow?.()
  if (machine !== undefined) {
    const { UserId } = await import("@matrix-org/matrix-sdk-crypto-wasm")
    await machine.updateTrackedUsers(users.map((u) => new UserId(u)))
    if (machine.queryKeysForUsers !== undefined && crypto.outgoingRequestProcessor !== undefined) {
      // the processor sends the query and hands the response back to the machine (markRequestAsSent)
      await crypto.outgoingRequestProcessor.makeOutgoingRequest(machine.queryKeysForUsers(users.map((u) => new UserId(u))))
      return true
    }
  }
  if (crypto.markAllTrackedUsersAsDirty === undefined) return false
  await crypto.markAllTrackedUsersAsDirty()
  await crypto.outgoingRequestsManager?.doProcessOutgoingRequests()
  return true
}

/** How often the allowlisted users' device lists are re-downloaded (see refreshUsers). */
export const DEVICE_REFRESH_EVERY = Duration.seconds(30)
/** To-device event type the bot sends to its own device to end the current /sync long-poll early. */
const SYNC_NUDGE_TYPE = "org.cara.sync_nudge"

/** The request's phase. The Rust wrapper throws in the instant between a peer's start and its verifier: started. */
const phaseOf = (req: VerificationRequest): VerificationPhase => {
  try {
    return req.phase
  } catch {
    return VerificationPhase.Started
  }
}

/** The request's current verifier (undefined outside phase Started, and in the instant described above). */
const verifierOf = (req: VerificationRequest): Verifier | undefined => {
  try {
    return req.verifier
  } catch {
    return undefined
  }
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

export const sasOf = (cb: ShowSasCallbacks): SasValues | undefined => {
  const emoji = cb.sas.emoji?.map(([symbol, description]) => ({ symbol, description }))
  const decimals = cb.sas.decimal
  if (emoji === undefined && decimals === undefined) return undefined
  return {
    ...(emoji === undefined ? {} : { emoji }),
    ...(decimals === undefined ? {} : { decimals: [decimals[0], decimals[1], decimals[2]] as const })
  }
}

interface Entry {
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
  /** Who starts SAS in this flow, decided once (see maybeStartSas); undefined until the request is ready. */
  sasDecision: "deciding" | "bot" | "peer" | "failed" | undefined
  verifyCalled: Set<Verifier>
  confirmed: boolean
  mismatched: boolean
  /** Local terminal override (expiry, or a cancel whose SDK view is gone). */
  forced: VerificationState | undefined
  /** The sync count when the flow was first seen terminal (the Rust machine forgets it two syncs later). */
  terminalAtSync: number | undefined
}

const describe = (e: unknown): string => {
  const m = (e as { message?: unknown } | undefined)?.message
  return sanitizeDisplay(typeof m === "string" ? m : String(e)).slice(0, 200)
}

const notConnected = () =>
  new VerificationUnavailable({
    kind: "not-connected",
    message: "The Matrix runtime is not connected (Matrix disabled, still starting, or stopped); check `cara status` and retry.",
    retryAfterMs: 5000
  })

const sdkCall = <A>(what: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (e) => new VerificationFailed({ kind: "verification", message: `Matrix verification ${what} failed: ${describe(e)}` }) }).pipe(
    Effect.timeoutFail({
      duration: SDK_TIMEOUT,
      onTimeout: () =>
        new VerificationTimeout({
          kind: "verification-timeout",
          message: `Matrix verification ${what} timed out; it may still land. Run \`cara matrix verifications\` to see the current state.`
        })
    })
  )

/** The Rust backend's sync entry point (not in the public CryptoApi), used to process a dropped request again. */
type ProcessSyncChanges = (changes: { toDeviceEvents: Array<object>; useMsc4186?: boolean }) => Promise<unknown>

/** Adds to a bounded insertion-ordered set (the oldest entry goes first). */
const remember = (set: Set<string>, key: string) => {
  set.add(key)
  while (set.size > HANDLED_MAX) set.delete(set.values().next().value as string)
}

export const makeVerification = Effect.gen(function*() {
  const bus = yield* EventBus
  const status = yield* ChannelStatus
  const stateDir = yield* StateDir
  const runtime = yield* Effect.runtime<never>()
  const fork = Runtime.runFork(runtime)

  const entries = new Map<string, Entry>()
  /** Completed syncs of the attached client (the Rust machine drops finished flows at the start of each). */
  let syncCount = 0
  const byRequest = new WeakMap<VerificationRequest, string>()
  /** Serialises the bot's SAS start with the SDK's processing of peer events; replaced by attach. */
  let gate: CryptoGate = { ...makeGate(), wrapsSdk: false, uninstall: () => undefined }
  /** Transaction ids of to-device requests the SDK announced (so a dropped one is recognised). */
  const announced = new Set<string>()
  /** Dropped to-device requests already fed to the crypto again (one retry each). */
  const refed = new Set<string>()
  const attached = yield* Ref.make(Option.none<VerificationAttachment>())
  // SDK callbacks only enqueue; one fiber applies them in order, so events of a flow are published in order.
  const work = yield* Queue.unbounded<Effect.Effect<void>>()
  const enqueue = (e: Effect.Effect<void>) => {
    Queue.unsafeOffer(work, e)
  }

  // --- handled request ids (durable) ------------------------------------------------------------------
  const handled = new Map<string, number>()
  const loaded = yield* stateDir.readText(HANDLED_FILE).pipe(Effect.orElseSucceed(() => Option.none<string>()))
  if (Option.isSome(loaded)) {
    try {
      const parsed = JSON.parse(loaded.value) as { ids?: Record<string, number> }
      for (const [id, at] of Object.entries(parsed.ids ?? {})) if (typeof at === "number") handled.set(id, at)
    } catch {
      yield* Effect.logWarning(`${HANDLED_FILE} is unreadable; starting with an empty list of handled verification requests`)
    }
  }
  const writeLock = yield* Effect.makeSemaphore(1)
  const rememberHandled = (id: string) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      handled.set(id, now)
      for (const [k, at] of handled) if (now - at > HANDLED_TTL_MS) handled.delete(k)
      while (handled.size > HANDLED_MAX) handled.delete(handled.keys().next().value as string)
      const ids = Object.fromEntries(handled)
      yield* stateDir.ensureDir("matrix").pipe(
        Effect.zipRight(stateDir.writeAtomic(HANDLED_FILE, JSON.stringify({ version: 1, ids }))),
        Effect.catchAll((e) => Effect.logWarning(`recording a handled verification request failed: ${e.message}`))
      )
    }).pipe(writeLock.withPermits(1))

  // --- records ---------------------------------------------------------------------------------------
  const publishPending = Effect.suspend(() => {
    let n = 0
    for (const e of entries.values()) if (!isTerminal(e.record.state)) n++
    return status.updateMatrix((x) => (x.pendingVerificationCount === n ? x : { ...x, pendingVerificationCount: n }))
  })

  const currentState = (e: Entry): VerificationState => {
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
  const refresh = (e: Entry) =>
    Effect.gen(function*() {
      if (isTerminal(e.record.state)) return
      // glare: the SDK may have replaced the verifier inside the same request
      const current = e.request === undefined ? undefined : verifierOf(e.request)
      if (current !== undefined && current !== e.verifier) attachVerifier(e, current)
      if (e.request !== undefined && e.engaged) maybeStartSas(e)
      const state = currentState(e)
      const sas = e.sas === undefined || e.sas === e.sasFrom ? e.record.sas : (sasOf(e.sas) ?? e.record.sas)
      e.sasFrom = e.sas
      const deviceId = e.record.deviceId ?? (e.request?.otherDeviceId === undefined ? undefined : sanitizeDisplay(e.request.otherDeviceId))
      if (state === e.record.state && sas === e.record.sas && deviceId === e.record.deviceId) return
      const now = yield* Clock.currentTimeMillis
      e.record = new VerificationFlow({
        ...e.record,
        state,
        ...(sas === undefined ? {} : { sas }),
        ...(deviceId === undefined ? {} : { deviceId }),
        updatedAt: now
      })
      if (isTerminal(state)) e.terminalAtSync = syncCount
      yield* publishVerification("updated", e.record).pipe(Effect.provideService(EventBus, bus))
      yield* publishPending
    })

  const refreshLater = (e: Entry) => enqueue(refresh(e))

  const callVerify = (e: Entry, v: Verifier) => {
    if (e.verifyCalled.has(v) || v.hasBeenCancelled) return
    e.verifyCalled.add(v)
    // resolves at done, rejects on cancel (or when glare replaced this verifier): the request's change
    // events carry the outcome, so the promise itself only needs to be observed
    v.verify().then(
      () => refreshLater(e),
      (err: unknown) => {
        fork(Effect.logDebug(`verifier ended: ${describe(err)}`))
        refreshLater(e)
      }
    )
  }

  function attachVerifier(e: Entry, v: Verifier) {
    e.verifier = v
    const onShow = (cb: ShowSasCallbacks) => {
      if (e.verifier !== v) return
      e.sas = cb
      refreshLater(e)
    }
    v.on(VerifierEvent.ShowSas, onShow)
    const already = v.getShowSasCallbacks()
    if (already !== null) e.sas = already
    if (e.engaged) callVerify(e, v)
  }

  /**
   * The one decision point per flow on who starts SAS (issue 17.5). The quick check outside the gate only
   * avoids queueing needless work; the check that counts runs inside the gate, where no peer event can be
   * processed until the bot's start has been sent (see cryptoGate.ts). A flow is decided once: after the peer
   * started (or the bot did), the bot never starts again, whatever the request does next.
   */
  function maybeStartSas(e: Entry) {
    const req = e.request
    if (req === undefined || e.sasDecision !== undefined) return
    if (phaseOf(req) !== VerificationPhase.Ready || verifierOf(req) !== undefined) return
    if (!req.otherPartySupportsMethod("m.sas.v1")) return
    e.sasDecision = "deciding"
    gate.run(async () => {
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
        if (verifier !== undefined && e.verifier !== verifier && verifierOf(req) === verifier) attachVerifier(e, verifier)
        refreshLater(e)
      },
      (err: unknown) => {
        e.sasDecision = "failed"
        fork(Effect.logWarning(`starting SAS failed: ${describe(err)}`))
        refreshLater(e)
      }
    )
  }

  const watch = (e: Entry, req: VerificationRequest) => {
    e.request = req
    byRequest.set(req, e.record.flowId)
    const onChange = () => {
      try {
        refreshLater(e)
        if (phaseOf(req) === VerificationPhase.Cancelled || phaseOf(req) === VerificationPhase.Done) {
          req.off(VerificationRequestEvent.Change, onChange)
        }
      } catch (err) {
        fork(Effect.logError(`verification change handler failed: ${describe(err)}`))
      }
    }
    req.on(VerificationRequestEvent.Change, onChange)
    const v = verifierOf(req)
    if (v !== undefined) attachVerifier(e, v)
  }

  /** Makes room for one more record: drop the oldest terminal one, else the same peer's oldest `requested`. */
  const makeRoom = (rawUserId: string): boolean => {
    if (entries.size < MAX_FLOWS) return true
    const all = [...entries.values()].sort((a, b) => a.record.updatedAt - b.record.updatedAt)
    const victim = all.find((x) => isTerminal(x.record.state)) ??
      all.find((x) => x.rawUserId === rawUserId && x.record.state === "requested")
    if (victim === undefined) return false
    entries.delete(victim.record.flowId)
    return true
  }

  /** Inserts a new flow (`requested` event) or returns the existing one. */
  const insert = (req: VerificationRequest, rawProtocolId: string, engaged: boolean, targetDevice?: string) =>
    Effect.gen(function*() {
      const flowId = flowIdOf(req.otherUserId, rawProtocolId)
      const existing = entries.get(flowId)
      if (existing !== undefined) return Option.some(existing)
      if (!makeRoom(req.otherUserId)) {
        yield* status.updateMatrix((x) => ({ ...x, peerDropVerificationCapFullTotal: x.peerDropVerificationCapFullTotal + 1 }))
        yield* Effect.logWarning("Matrix verification registry is full; request refused")
        return Option.none<Entry>()
      }
      const now = yield* Clock.currentTimeMillis
      const e: Entry = {
        record: new VerificationFlow({
          flowId,
          protocolFlowId: sanitizeDisplay(rawProtocolId),
          userId: sanitizeUserId(req.otherUserId),
          // our own to-device request names its device before the peer answers (the SDK knows it only then)
          ...(req.otherDeviceId === undefined
            ? (targetDevice === undefined ? {} : { deviceId: sanitizeDisplay(targetDevice) })
            : { deviceId: sanitizeDisplay(req.otherDeviceId) }),
          ...(req.roomId === undefined ? {} : { roomId: sanitizeDisplay(req.roomId) }),
          state: "requested",
          createdAt: now,
          updatedAt: now
        }),
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
      }
      e.record = new VerificationFlow({ ...e.record, state: currentStateOfNew(e, req) })
      entries.set(flowId, e)
      watch(e, req)
      yield* publishVerification("requested", e.record).pipe(Effect.provideService(EventBus, bus))
      yield* publishPending
      return Option.some(e)
    })

  const currentStateOfNew = (e: Entry, req: VerificationRequest) => {
    e.request = req
    const s = currentState(e)
    e.request = undefined
    return s
  }

  /** A peer's request (to-device or in-room). Runs on the work queue; never fails. */
  const onRequest = (req: VerificationRequest, a: VerificationAttachment) =>
    Effect.gen(function*() {
      if (req.initiatedByMe || byRequest.has(req)) return
      const user = req.otherUserId
      if (user !== a.botUserId && !a.isAllowed(user)) {
        yield* status.updateMatrix((x) => ({ ...x, peerDropAllowlistRejectionTotal: x.peerDropAllowlistRejectionTotal + 1 }))
        yield* Effect.logInfo("Matrix verification request ignored: sender not in matrix.autoJoin allowlist").pipe(
          Effect.annotateLogs({ sender: sanitizeUserId(user) })
        )
        return
      }
      const id = req.transactionId
      if (id === undefined) return
      if (handled.has(id)) {
        // Rust keeps verification state in memory only: after a restart, in-room requests from the cached
        // timeline come back as new ones. The peer's flow is long gone; listing it would mislead.
        yield* Effect.logDebug("ignoring a verification request already handled before").pipe(Effect.annotateLogs({ protocolFlowId: sanitizeDisplay(id) }))
        return
      }
      if (phaseOf(req) === VerificationPhase.Cancelled || phaseOf(req) === VerificationPhase.Done) return
      yield* rememberHandled(id)
      const e = yield* insert(req, id, false)
      if (Option.isSome(e)) {
        yield* Effect.logInfo("Matrix verification requested; run `cara matrix verifications` to review it").pipe(
          Effect.annotateLogs({ flowId: e.value.record.flowId, peer: e.value.record.userId, inRoom: req.roomId !== undefined })
        )
      }
    }).pipe(Effect.catchAllCause((c) => Effect.logError("handling a verification request failed", c)))

  // --- expiry and pruning ----------------------------------------------------------------------------
  const sweep = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    for (const e of [...entries.values()]) {
      if (isTerminal(e.record.state)) {
        if (now - e.record.updatedAt >= Duration.toMillis(TERMINAL_RETENTION)) entries.delete(e.record.flowId)
        continue
      }
      yield* refresh(e)
      if (isTerminal(e.record.state)) continue
      if (now - e.record.updatedAt >= Duration.toMillis(INACTIVITY_EXPIRY)) {
        const req = e.request
        if (req !== undefined && phaseOf(req) !== VerificationPhase.Cancelled && phaseOf(req) !== VerificationPhase.Done) {
          req.cancel().catch(() => undefined)
        }
        e.forced = "cancelled"
        yield* refresh(e)
        yield* Effect.logInfo("Matrix verification flow expired after 10 minutes without progress").pipe(
          Effect.annotateLogs({ flowId: e.record.flowId })
        )
      }
    }
  })

  // one item's defect (a throwing SDK getter, say) must not stop the worker, or every later flow would stall
  yield* Effect.forkScoped(Effect.forever(Effect.flatten(Queue.take(work)).pipe(
    Effect.catchAllCause((c) => Effect.logError("a verification work item failed", c))
  )))
  yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(SWEEP_EVERY)))

  // --- the API ---------------------------------------------------------------------------------------
  const listed = () => [...entries.values()].map((e) => e.record).sort((a, b) => b.createdAt - a.createdAt)

  const find = (flowId: string) =>
    Effect.suspend(() => {
      const e = entries.get(flowId)
      return e === undefined ? Effect.fail(VerificationFlowNotFound.of(flowId)) : Effect.succeed(e)
    })

  const live = (flowId: string) =>
    Effect.gen(function*() {
      const e = yield* find(flowId)
      yield* refresh(e)
      if (isTerminal(e.record.state)) return yield* VerificationFlowTerminal.of(e.record.flowId, e.record.state)
      return e
    })

  const client = Effect.flatMap(Ref.get(attached), Option.match({ onNone: () => Effect.fail(notConnected()), onSome: Effect.succeed }))

  const accept = (flowId: string) =>
    Effect.gen(function*() {
      const e = yield* live(flowId)
      const req = e.request
      if (req === undefined) return yield* VerificationFlowNotReady.of(e.record.flowId, "accept", "the SDK no longer knows this flow")
      e.engaged = true
      if (phaseOf(req) === VerificationPhase.Requested && !req.initiatedByMe) yield* sdkCall("accept", () => req.accept())
      if (e.verifier !== undefined) callVerify(e, e.verifier)
      yield* refresh(e)
      return e.record
    })

  const confirm = (flowId: string, match: boolean) =>
    Effect.gen(function*() {
      const e = yield* live(flowId)
      const sas = e.sas
      if (sas === undefined || e.record.sas === undefined) {
        return yield* VerificationFlowNotReady.of(e.record.flowId, "confirm", `no SAS captured yet, state ${e.record.state}`)
      }
      if (match) {
        e.confirmed = true
        yield* refresh(e)
        yield* sdkCall("confirm", () => sas.confirm())
        yield* Effect.logWarning("matrix_device_verification_confirmed").pipe(
          Effect.annotateLogs({ flowId: e.record.flowId, peer: e.record.userId, device: e.record.deviceId ?? "" })
        )
      } else {
        // only mismatch() sends m.mismatched_sas (request.cancel() always sends m.user)
        yield* Effect.try({ try: () => sas.mismatch(), catch: (err) => new VerificationFailed({ kind: "verification", message: `Matrix verification mismatch failed: ${describe(err)}` }) })
        e.mismatched = true
      }
      yield* refresh(e)
      return e.record
    })

  const cancel = (flowId: string) =>
    Effect.gen(function*() {
      const e = yield* find(flowId)
      yield* refresh(e)
      if (isTerminal(e.record.state)) return e.record
      const req = e.request
      if (req === undefined) return yield* VerificationFlowNotReady.of(e.record.flowId, "cancel", "the SDK no longer knows this flow")
      if (phaseOf(req) !== VerificationPhase.Cancelled && phaseOf(req) !== VerificationPhase.Done) {
        yield* sdkCall("cancel", () => req.cancel())
      }
      if (currentState(e) !== "cancelled" && currentState(e) !== "done") e.forced = "cancelled"
      yield* refresh(e)
      return e.record
    })

  const cryptoOf = (a: VerificationAttachment) =>
    Effect.suspend(() => {
      const c = a.client.getCrypto()
      return c === undefined
        ? Effect.fail(new VerificationFailed({ kind: "verification", message: "Matrix encryption is off (matrix.encrypted=false); verification needs it." }))
        : Effect.succeed(c)
    })

  /** Ends the bot's current /sync long-poll early: a to-device message to its own device. */
  const nudgeSync = (a: VerificationAttachment) =>
    Effect.tryPromise(() => {
      const device = a.client.getDeviceId()
      if (device === null) return Promise.resolve()
      return a.client.sendToDevice(SYNC_NUDGE_TYPE, new Map([[a.botUserId, new Map([[device, {}]])]])).then(() => undefined)
    }).pipe(Effect.catchAll((e) => Effect.logDebug(`sync nudge failed: ${describe(e)}`)))

  /**
   * The Rust machine cancels a new request (with m.user, on the peer too) while it still holds an earlier flow
   * with the same user that is not cancelled, a finished one included, until the clean-up at the start of the
   * next sync. So a bot-initiated request right after a flow with that user ended first waits for that
   * clean-up (two syncs after the end was seen), nudging the long-poll so each takes one round trip.
   */
  const settleFinished = (a: VerificationAttachment, rawUserId: string) =>
    Effect.gen(function*() {
      // before the first sync (or with a client that never syncs) there is no clean-up to wait for
      if (syncCount === 0) return
      let need = 0
      for (const e of entries.values()) {
        if (e.rawUserId === rawUserId && e.terminalAtSync !== undefined) need = Math.max(need, e.terminalAtSync + 2)
      }
      for (let round = 0; syncCount < need && round < 4; round++) {
        const before = syncCount
        yield* nudgeSync(a)
        for (let waited = 0; syncCount === before && waited < 100; waited++) yield* Effect.sleep(Duration.millis(100))
      }
      if (syncCount < need) yield* Effect.logWarning("the previous verification with this user is not cleaned up yet; the new request may be cancelled by the SDK")
    })

  /** The raw id of `deviceId` (exact, else the one that sanitizes to it) among the devices the machine knows. */
  const lookupDevice = (crypto: NonNullable<ReturnType<MatrixClient["getCrypto"]>>, userId: string, deviceId: string) =>
    Effect.gen(function*() {
      const map = yield* sdkCall("device lookup", () => crypto.getUserDeviceInfo([userId], true))
      const devices = map.get(userId) ?? new Map()
      if (devices.has(deviceId)) return deviceId as string | undefined
      const matches = [...devices.keys()].filter((d) => sanitizeDisplay(d) === deviceId)
      if (matches.length > 1) {
        return yield* new VerificationFailed({
          kind: "verification",
          message: `device ${sanitizeDisplay(deviceId)} matches multiple raw device ids under sanitization; refusing to pick. Run \`cara matrix devices\` and pass an exact id.`
        })
      }
      return matches[0]
    })

  const start = (userId: string, deviceId?: string) =>
    Effect.gen(function*() {
      if (!USER_ID.test(userId)) {
        return yield* new InvalidVerificationUser({ kind: "invalid-user-id", message: "userId must be a Matrix user id like @alice:example.com" })
      }
      const a = yield* client
      const crypto = yield* cryptoOf(a)
      let req: VerificationRequest
      let targetDevice: string | undefined
      if (deviceId !== undefined && deviceId !== "") {
        // the Rust machine must know the device itself, not just the HTTP download of it
        yield* sdkCall("device tracking", () => trackUsers(a.client, [userId]))
        let raw = yield* lookupDevice(crypto, userId, deviceId)
        if (raw === undefined) {
          // a device added since the last download (no shared room, so no device-list change from the server)
          yield* sdkCall("device refresh", () => refreshUsers(a.client, [userId]))
          raw = yield* lookupDevice(crypto, userId, deviceId)
        }
        if (raw === undefined) {
          return yield* new VerificationTargetNotFound({
            kind: "device-not-found",
            message: `device ${sanitizeDisplay(deviceId)} of ${sanitizeUserId(userId)} is not known to the bot. Check the id in the other client's session list; the user must be on the allowlist or share a room with the bot.`
          })
        }
        const target = raw
        targetDevice = raw
        yield* settleFinished(a, userId)
        req = yield* sdkCall("request", () => crypto.requestDeviceVerification(userId, target))
      } else if (userId === a.botUserId) {
        yield* settleFinished(a, userId)
        req = yield* sdkCall("request", () => crypto.requestOwnUserVerification())
      } else {
        const dm = a.client.getRooms().find((r) =>
          r.getMyMembership() === KnownMembership.Join &&
          r.getJoinedMemberCount() === 2 &&
          r.getMember(userId)?.membership === KnownMembership.Join
        )
        if (dm === undefined) {
          return yield* new VerificationTargetNotFound({
            kind: "user-identity-not-found",
            message: `the bot shares no DM room with ${sanitizeUserId(userId)}: pass a device id (\`cara matrix verify <user> <device>\`) or invite the bot to a DM first.`
          })
        }
        yield* settleFinished(a, userId)
        req = yield* sdkCall("request", () => crypto.requestVerificationDM(userId, dm.roomId))
      }
      const existing = byRequest.get(req)
      if (existing !== undefined) {
        const e = entries.get(existing)
        if (e !== undefined) {
          e.engaged = true
          return e.record
        }
      }
      const id = req.transactionId ?? `local-${randomUUID()}`
      yield* rememberHandled(id)
      const inserted = yield* insert(req, id, true, targetDevice)
      if (Option.isNone(inserted)) {
        return yield* new VerificationFailed({ kind: "verification", message: "the verification registry is full; cancel or finish some flows and retry" })
      }
      return inserted.value.record
    })

  const devices = Effect.gen(function*() {
    const a = yield* client
    const crypto = yield* cryptoOf(a)
    const map = yield* sdkCall("device list", () => crypto.getUserDeviceInfo([a.botUserId], true))
    const own = [...(map.get(a.botUserId)?.values() ?? [])].slice(0, 256)
    const sanitized = own.map((d) => sanitizeDisplay(d.deviceId))
    const out: Array<OwnDevice> = []
    for (const [i, d] of own.entries()) {
      const shown = sanitized[i] ?? ""
      const st = yield* Effect.promise(() => crypto.getDeviceVerificationStatus(a.botUserId, d.deviceId).catch(() => null))
      const name = sanitizeDisplay(d.displayName ?? "").slice(0, 256)
      const collides = sanitized.filter((s) => s === shown).length > 1
      out.push({
        userId: sanitizeUserId(a.botUserId),
        deviceId: shown,
        ...(name === "" ? {} : { displayName: name }),
        verified: st?.isVerified() ?? false,
        ...(shown !== d.deviceId || collides ? { rawDeviceIdHex: rawHex(d.deviceId) } : {})
      })
    }
    return out
  })

  const attach = (a: VerificationAttachment): Effect.Effect<void, never, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.gen(function*() {
        const onReq = (req: VerificationRequest) => {
          try {
            // synchronously, before the sync's ToDeviceEvent for the same request (see onToDevice)
            const id = req.roomId === undefined ? req.transactionId : undefined
            if (id !== undefined) remember(announced, `${req.otherUserId}\0${id}`)
            enqueue(onRequest(req, a))
          } catch {
            // never throw into the SDK's sync processing
          }
        }
        const onSync = (state: SyncState) => {
          try {
            if (state === SyncState.Syncing || state === SyncState.Prepared) syncCount++
            for (const e of entries.values()) if (!isTerminal(e.record.state)) refreshLater(e)
          } catch {
            // as above
          }
        }
        // The SDK emits a sync's to-device events after the crypto processed them, and announces a request
        // (VerificationRequestReceived) during that processing: a request seen here but never announced was
        // dropped by the Rust machine, which it does for a device it does not know yet (issue 17.4).
        const onToDevice = (ev: MatrixEvent) => {
          try {
            if (ev.getType() !== "m.key.verification.request") return
            const sender = ev.getSender()
            if (sender === undefined || !a.isAllowed(sender)) return
            const content = ev.getContent() as { from_device?: unknown; transaction_id?: unknown }
            const from = content.from_device
            const txn = content.transaction_id
            if (typeof from !== "string" || typeof txn !== "string") return
            if (announced.has(`${sender}\0${txn}`)) return
            enqueue(Effect.asVoid(Effect.forkDaemon(refeedDropped(a, { sender, type: ev.getType(), content: ev.getContent() }, from, txn))))
          } catch {
            // as above
          }
        }
        gate = installCryptoGate(a.client)
        if (!gate.wrapsSdk) yield* Effect.logDebug("the crypto backend has no sync entry points to serialise; SAS start is serialised only with itself")
        a.client.on(CryptoEvent.VerificationRequestReceived, onReq)
        a.client.on(ClientEvent.Sync, onSync)
        a.client.on(ClientEvent.ToDeviceEvent, onToDevice)
        if (a.trackUsers !== undefined && a.trackUsers.length > 0) {
          const users = a.trackUsers
          yield* Effect.tryPromise(() => trackUsers(a.client, users)).pipe(
            Effect.tap((ok) => ok ? Effect.void : Effect.logWarning("cannot track the allowlisted users' devices: verification before a shared room will not work")),
            Effect.catchAll((e) => Effect.logWarning(`tracking the allowlisted users' devices failed: ${describe(e)}`))
          )
        }
        yield* Ref.set(attached, Option.some(a))
        return { onReq, onSync, onToDevice }
      }),
      ({ onReq, onSync, onToDevice }) =>
        Effect.gen(function*() {
          a.client.off(CryptoEvent.VerificationRequestReceived, onReq)
          a.client.off(ClientEvent.Sync, onSync)
          a.client.off(ClientEvent.ToDeviceEvent, onToDevice)
          gate.uninstall()
          gate = { ...makeGate(), wrapsSdk: false, uninstall: () => undefined }
          yield* Ref.set(attached, Option.none())
        })
    ).pipe(
      // the allowlisted users' new devices, for people who share no room with the bot (see refreshUsers)
      Effect.zipRight(
        a.trackUsers !== undefined && a.trackUsers.length > 0
          ? Effect.forkScoped(Effect.repeat(refreshAllowed(a, a.trackUsers).pipe(Effect.delay(DEVICE_REFRESH_EVERY)), Schedule.forever))
          : Effect.void
      ),
      Effect.asVoid
    )

  /** The device ids the crypto knows for `users` (no download). */
  const knownDevices = (a: VerificationAttachment, users: ReadonlyArray<string>) =>
    Effect.tryPromise(() => a.client.getCrypto()?.getUserDeviceInfo([...users], false) ?? Promise.resolve(new Map())).pipe(
      Effect.map((m) => new Set([...m].flatMap(([u, ds]) => [...ds.keys()].map((d) => `${u}\0${d}`)))),
      Effect.orElseSucceed(() => new Set<string>())
    )

  /** The periodic refresh; a device it finds is logged (the person can verify it from now on). */
  const refreshAllowed = (a: VerificationAttachment, users: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const before = yield* knownDevices(a, users)
      yield* Effect.tryPromise(() => refreshUsers(a.client, users)).pipe(Effect.timeout(SDK_TIMEOUT))
      if (before.size === 0) return
      for (const key of yield* knownDevices(a, users)) {
        if (before.has(key)) continue
        const [user = "", device = ""] = key.split("\0")
        yield* Effect.logInfo("Matrix device list refresh: new device of an allowlisted user").pipe(
          Effect.annotateLogs({ peer: sanitizeUserId(user), device: sanitizeDisplay(device) })
        )
      }
    }).pipe(Effect.catchAllCause((c) => Effect.logDebug("refreshing the allowlisted users' devices failed", c)))

  /**
   * A to-device request the Rust machine dropped (its device was unknown): refresh the sender's device list,
   * then hand the same event to the crypto once more, so the person's first request is answered. Once per
   * request; only for allowlisted senders (checked by the caller).
   */
  const refeedDropped = (a: VerificationAttachment, raw: { sender: string; type: string; content: object }, deviceId: string, txn: string) =>
    Effect.gen(function*() {
      const key = `${raw.sender}\0${txn}`
      if (announced.has(key) || refed.has(key)) return
      remember(refed, key)
      const crypto = a.client.getCrypto() as (ReturnType<MatrixClient["getCrypto"]> & { processSyncChanges?: ProcessSyncChanges }) | undefined
      const feed = crypto?.processSyncChanges
      if (crypto === undefined || feed === undefined) return
      const log = (level: "Info" | "Warning", text: string) =>
        (level === "Info" ? Effect.logInfo(text) : Effect.logWarning(text)).pipe(
          Effect.annotateLogs({ peer: sanitizeUserId(raw.sender), device: sanitizeDisplay(deviceId) })
        )
      yield* log("Info", "Matrix verification request from a device the bot did not know yet; refreshing that user's devices and processing the request again")
      yield* Effect.tryPromise(() => refreshUsers(a.client, [raw.sender])).pipe(
        Effect.timeout(SDK_TIMEOUT),
        Effect.catchAllCause((c) => Effect.logWarning("refreshing the requester's devices failed", c))
      )
      const known = yield* Effect.tryPromise(() => crypto.getUserDeviceInfo([raw.sender], false)).pipe(
        Effect.map((m) => m.get(raw.sender)?.has(deviceId) ?? false),
        Effect.orElseSucceed(() => false)
      )
      if (!known) {
        return yield* log("Warning", "Matrix verification request from a device the homeserver does not list for its user; it cannot be answered. Ask the person to check that the device is signed in, then retry")
      }
      // through the gate like any sync (cryptoGate.ts); the MSC4186 variant leaves the one-time key counts alone
      yield* Effect.tryPromise(() => feed.call(crypto, { toDeviceEvents: [raw], useMsc4186: true })).pipe(
        Effect.timeout(SDK_TIMEOUT),
        Effect.catchAllCause((c) => Effect.logWarning("processing the verification request again failed", c))
      )
      if (!announced.has(key)) yield* log("Warning", "Matrix verification request dropped again by the encryption library; ask the person to retry")
    })

  return {
    attach,
    list: Effect.gen(function*() {
      yield* sweep
      return listed()
    }),
    accept,
    confirm,
    cancel,
    start,
    devices
  } satisfies VerificationShape
})

/** Needs EventBus, ChannelStatus and StateDir (the daemon provides them once, shared with the gateway). */
export const VerificationLive = Layer.scoped(Verification, makeVerification)
