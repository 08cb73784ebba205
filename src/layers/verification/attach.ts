import { Duration, Effect, Option, Ref, Schedule, type Scope } from "effect"
import { ClientEvent, KnownMembership, type MatrixClient, type MatrixEvent, SyncState } from "matrix-js-sdk"
import { CryptoEvent, type VerificationRequest } from "matrix-js-sdk/lib/crypto-api/index.js"
import { isTerminal, sanitizeDisplay, sanitizeUserId } from "../../domain/verification.js"
import { isFinishedPhase } from "../../domain/verificationState.js"
import type { VerificationAttachment } from "../../services/Verification.js"
import { describe, SDK_TIMEOUT } from "./calls.js"
import { installCryptoGate } from "./cryptoGate.js"
import { insert, refreshLater } from "./flow.js"
import { remember } from "./handled.js"
import { detachedGate, type Registry } from "./registry.js"
import {
  missingInternals,
  phaseOf,
  probeInternals,
  type RawToDeviceEvent,
  refreshUsers,
  toDeviceFeed,
  trackUsers
} from "./sdkPort.js"

/** How often the allowlisted users' device lists are re-downloaded (see sdkPort.ts, refreshUsers). */
export const DEVICE_REFRESH_EVERY = Duration.seconds(30)

/*
 * The registry's life with one Matrix client: the SDK's verification requests (peers' ones, filtered by the
 * allowlist and the handled ids), its syncs, the to-device requests the Rust machine dropped, the crypto gate
 * and the periodic refresh of the allowlisted users' devices; all released with the scope.
 */

/** A peer's request (to-device or in-room). Runs on the work queue; never fails. */
const onRequest = (reg: Registry, req: VerificationRequest, a: VerificationAttachment) =>
  Effect.gen(function*() {
    if (req.initiatedByMe || reg.byRequest.has(req)) return
    const user = req.otherUserId
    if (user !== a.botUserId && !a.isAllowed(user)) {
      yield* reg.status.updateMatrix((x) => ({
        ...x,
        peerDropAllowlistRejectionTotal: x.peerDropAllowlistRejectionTotal + 1
      }))
      yield* Effect.logInfo("Matrix verification request ignored: sender not in matrix.autoJoin allowlist").pipe(
        Effect.annotateLogs({ sender: sanitizeUserId(user) })
      )
      return
    }
    const id = req.transactionId
    if (id === undefined) return
    if (reg.handled.has(id)) {
      // Rust keeps verification state in memory only: after a restart, in-room requests from the cached
      // timeline come back as new ones. The peer's flow is long gone; listing it would mislead.
      yield* Effect.logDebug("ignoring a verification request already handled before").pipe(
        Effect.annotateLogs({ protocolFlowId: sanitizeDisplay(id) })
      )
      return
    }
    if (isFinishedPhase(phaseOf(req))) return
    yield* reg.handled.add(id)
    const e = yield* insert(reg, req, id, false)
    if (Option.isSome(e)) {
      yield* Effect.logInfo("Matrix verification requested; run `cara matrix verifications` to review it").pipe(
        Effect.annotateLogs({
          flowId: e.value.record.flowId,
          peer: e.value.record.userId,
          inRoom: req.roomId !== undefined
        })
      )
    }
  }).pipe(Effect.catchAllCause((c) => Effect.logError("handling a verification request failed", c)))

/** The device ids the crypto knows for `users` (no download). */
const knownDevices = (a: VerificationAttachment, users: ReadonlyArray<string>) =>
  Effect.tryPromise(() => a.client.getCrypto()?.getUserDeviceInfo([...users], false) ?? Promise.resolve(new Map()))
    .pipe(
      Effect.map((m) => new Set([...m].flatMap(([u, ds]) => [...ds.keys()].map((d) => `${u}\0${d}`)))),
      Effect.orElseSucceed(() => new Set<string>())
    )

/**
 * The users whose new devices no sync would announce: those joined to no room the bot is joined to (Synapse
 * sends `device_lists.changed` only about users who share a room). A member the client has not loaded counts
 * as not sharing one, so that user is refreshed.
 */
export const unannouncedUsers = (
  client: Pick<MatrixClient, "getRooms">,
  users: ReadonlyArray<string>
): ReadonlyArray<string> => {
  const joined = client.getRooms().filter((r) => r.getMyMembership() === KnownMembership.Join)
  return users.filter((u) => !joined.some((r) => r.getMember(u)?.membership === KnownMembership.Join))
}

/**
 * The periodic refresh, for the users a sync would not tell about (an idle bot whose people all share a room
 * with it sends nothing); a device it finds is logged (the person can verify it from now on).
 */
const refreshAllowed = (a: VerificationAttachment, allowed: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const users = unannouncedUsers(a.client, allowed)
    if (users.length === 0) return
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
const refeedDropped = (
  reg: Registry,
  a: VerificationAttachment,
  raw: RawToDeviceEvent,
  deviceId: string,
  txn: string
) =>
  Effect.gen(function*() {
    const key = `${raw.sender}\0${txn}`
    if (reg.announced.has(key) || reg.refed.has(key)) return
    remember(reg.refed, key)
    const feed = toDeviceFeed(a.client)
    const crypto = a.client.getCrypto()
    if (crypto === undefined || feed === undefined) return
    const log = (level: "Info" | "Warning", text: string) =>
      (level === "Info" ? Effect.logInfo(text) : Effect.logWarning(text)).pipe(
        Effect.annotateLogs({ peer: sanitizeUserId(raw.sender), device: sanitizeDisplay(deviceId) })
      )
    yield* log(
      "Info",
      "Matrix verification request from a device the bot did not know yet; refreshing that user's devices and processing the request again"
    )
    yield* Effect.tryPromise(() => refreshUsers(a.client, [raw.sender])).pipe(
      Effect.timeout(SDK_TIMEOUT),
      Effect.catchAllCause((c) => Effect.logWarning("refreshing the requester's devices failed", c))
    )
    const known = yield* Effect.tryPromise(() => crypto.getUserDeviceInfo([raw.sender], false)).pipe(
      Effect.map((m) => m.get(raw.sender)?.has(deviceId) ?? false),
      Effect.orElseSucceed(() => false)
    )
    if (!known) {
      return yield* log(
        "Warning",
        "Matrix verification request from a device the homeserver does not list for its user; it cannot be answered. Ask the person to check that the device is signed in, then retry"
      )
    }
    // through the gate like any sync (cryptoGate.ts)
    yield* Effect.tryPromise(() => feed([raw])).pipe(
      Effect.timeout(SDK_TIMEOUT),
      Effect.catchAllCause((c) => Effect.logWarning("processing the verification request again failed", c))
    )
    if (!reg.announced.has(key)) {
      yield* log(
        "Warning",
        "Matrix verification request dropped again by the encryption library; ask the person to retry"
      )
    }
  })

/** The SDK listeners; each only records or enqueues and never throws into the SDK's sync processing. */
const listeners = (reg: Registry, a: VerificationAttachment) => ({
  onReq: (req: VerificationRequest) => {
    try {
      // synchronously, before the sync's ToDeviceEvent for the same request (see onToDevice)
      const id = req.roomId === undefined ? req.transactionId : undefined
      if (id !== undefined) remember(reg.announced, `${req.otherUserId}\0${id}`)
      reg.enqueue(onRequest(reg, req, a))
    } catch {
      // see above
    }
  },
  onSync: (state: SyncState) => {
    try {
      if (state === SyncState.Syncing || state === SyncState.Prepared) reg.sync.count++
      for (const e of reg.entries.values()) if (!isTerminal(e.record.state)) refreshLater(reg, e)
    } catch {
      // see above
    }
  },
  // The SDK emits a sync's to-device events after the crypto processed them, and announces a request
  // (VerificationRequestReceived) during that processing: a request seen here but never announced was
  // dropped by the Rust machine, which it does for a device it does not know yet (issue 17.4).
  onToDevice: (ev: MatrixEvent) => {
    try {
      if (ev.getType() !== "m.key.verification.request") return
      const sender = ev.getSender()
      if (sender === undefined || !a.isAllowed(sender)) return
      const content = ev.getContent() as { from_device?: unknown; transaction_id?: unknown }
      const from = content.from_device
      const txn = content.transaction_id
      if (typeof from !== "string" || typeof txn !== "string") return
      if (reg.announced.has(`${sender}\0${txn}`)) return
      reg.enqueue(
        Effect.asVoid(
          Effect.forkDaemon(refeedDropped(reg, a, { sender, type: ev.getType(), content: ev.getContent() }, from, txn))
        )
      )
    } catch {
      // see above
    }
  }
})

const install = (reg: Registry, a: VerificationAttachment) =>
  Effect.gen(function*() {
    const l = listeners(reg, a)
    const missing = missingInternals(probeInternals(a.client.getCrypto()))
    if (missing.length > 0) {
      yield* Effect.logDebug(
        `the crypto backend lacks ${missing.join(", ")}; verification degrades as documented in sdkPort.ts`
      )
    }
    reg.gate.current = installCryptoGate(a.client)
    if (!reg.gate.current.wrapsSdk) {
      yield* Effect.logDebug(
        "the crypto backend has no sync entry points to serialise; SAS start is serialised only with itself"
      )
    }
    a.client.on(CryptoEvent.VerificationRequestReceived, l.onReq)
    a.client.on(ClientEvent.Sync, l.onSync)
    a.client.on(ClientEvent.ToDeviceEvent, l.onToDevice)
    if (a.trackUsers !== undefined && a.trackUsers.length > 0) {
      const users = a.trackUsers
      yield* Effect.tryPromise(() => trackUsers(a.client, users)).pipe(
        Effect.tap((ok) =>
          ok
            ? Effect.void
            : Effect.logWarning(
              "cannot track the allowlisted users' devices: verification before a shared room will not work"
            )
        ),
        Effect.catchAll((e) => Effect.logWarning(`tracking the allowlisted users' devices failed: ${describe(e)}`))
      )
    }
    yield* Ref.set(reg.attached, Option.some(a))
    return l
  })

const uninstall = (reg: Registry, a: VerificationAttachment, l: ReturnType<typeof listeners>) =>
  Effect.gen(function*() {
    a.client.off(CryptoEvent.VerificationRequestReceived, l.onReq)
    a.client.off(ClientEvent.Sync, l.onSync)
    a.client.off(ClientEvent.ToDeviceEvent, l.onToDevice)
    reg.gate.current.uninstall()
    reg.gate.current = detachedGate()
    yield* Ref.set(reg.attached, Option.none())
  })

export const attach = (reg: Registry, a: VerificationAttachment): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(install(reg, a), (l) => uninstall(reg, a, l)).pipe(
    // the allowlisted users' new devices, for people who share no room with the bot (see refreshUsers)
    Effect.zipRight(
      a.trackUsers !== undefined && a.trackUsers.length > 0
        ? Effect.forkScoped(
          Effect.repeat(refreshAllowed(a, a.trackUsers).pipe(Effect.delay(DEVICE_REFRESH_EVERY)), Schedule.forever)
        )
        : Effect.void
    ),
    Effect.asVoid
  )
