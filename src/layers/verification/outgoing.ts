import { Duration, Effect, Option, Ref } from "effect"
import { KnownMembership, type MatrixClient } from "matrix-js-sdk"
import type { VerificationRequest } from "matrix-js-sdk/lib/crypto-api/index.js"
import { randomUUID } from "node:crypto"
import type { DeviceId, UserId } from "../../domain/matrix.js"
import {
  InvalidVerificationUser,
  type OwnDevice,
  rawHex,
  sanitizeDisplay,
  sanitizeUserId,
  USER_ID,
  VerificationTargetNotFound
} from "../../domain/verification.js"
import type { VerificationAttachment } from "../../services/Verification.js"
import { describe, notConnected, sdkCall, verificationFailed } from "./calls.js"
import { insert } from "./flow.js"
import type { Registry } from "./registry.js"
import { refreshUsers, trackUsers } from "./sdkPort.js"

/** To-device event type the bot sends to its own device to end the current /sync long-poll early. */
const SYNC_NUDGE_TYPE = "org.cara.sync_nudge"

type Crypto = NonNullable<ReturnType<MatrixClient["getCrypto"]>>

/*
 * Bot-initiated flows (`cara matrix verify`) and the listing of the bot's own devices.
 */

const client = (reg: Registry) =>
  Effect.flatMap(
    Ref.get(reg.attached),
    Option.match({ onNone: () => Effect.fail(notConnected()), onSome: Effect.succeed })
  )

const cryptoOf = (a: VerificationAttachment) =>
  Effect.suspend(() => {
    const c = a.client.getCrypto()
    return c === undefined
      ? Effect.fail(verificationFailed("Matrix encryption is off (matrix.encrypted=false); verification needs it."))
      : Effect.succeed(c)
  })

/** Ends the bot's current /sync long-poll early: a to-device message to its own device. */
const nudgeSync = (a: VerificationAttachment) =>
  Effect.tryPromise(() => {
    const device = a.client.getDeviceId()
    if (device === null) return Promise.resolve()
    return a.client.sendToDevice(SYNC_NUDGE_TYPE, new Map([[a.botUserId, new Map([[device, {}]])]])).then(() =>
      undefined
    )
  }).pipe(Effect.catchAll((e) => Effect.logDebug(`sync nudge failed: ${describe(e)}`)))

/**
 * The Rust machine cancels a new request (with m.user, on the peer too) while it still holds an earlier flow
 * with the same user that is not cancelled, a finished one included, until the clean-up at the start of the
 * next sync. So a bot-initiated request right after a flow with that user ended first waits for that
 * clean-up (two syncs after the end was seen), nudging the long-poll so each takes one round trip.
 */
const settleFinished = (reg: Registry, a: VerificationAttachment, rawUserId: string) =>
  Effect.gen(function*() {
    // before the first sync (or with a client that never syncs) there is no clean-up to wait for
    if (reg.sync.count === 0) return
    let need = 0
    for (const e of reg.entries.values()) {
      if (e.rawUserId === rawUserId && e.terminalAtSync !== undefined) need = Math.max(need, e.terminalAtSync + 2)
    }
    for (let round = 0; reg.sync.count < need && round < 4; round++) {
      const before = reg.sync.count
      yield* nudgeSync(a)
      for (let waited = 0; reg.sync.count === before && waited < 100; waited++) {
        yield* Effect.sleep(Duration.millis(100))
      }
    }
    if (reg.sync.count < need) {
      yield* Effect.logWarning(
        "the previous verification with this user is not cleaned up yet; the new request may be cancelled by the SDK"
      )
    }
  })

/** The raw id of `deviceId` (exact, else the one that sanitizes to it) among the devices the machine knows. */
const lookupDevice = (crypto: Crypto, userId: string, deviceId: string) =>
  Effect.gen(function*() {
    const map = yield* sdkCall("device lookup", () => crypto.getUserDeviceInfo([userId], true))
    const devices = map.get(userId) ?? new Map()
    if (devices.has(deviceId)) return deviceId as string | undefined
    const matches = [...devices.keys()].filter((d) => sanitizeDisplay(d) === deviceId)
    if (matches.length > 1) {
      return yield* verificationFailed(
        `device ${
          sanitizeDisplay(deviceId)
        } matches multiple raw device ids under sanitization; refusing to pick. Run \`cara matrix devices\` and pass an exact id.`
      )
    }
    return matches[0]
  })

/** A request to one device: the Rust machine must know the device itself, not just the HTTP download of it. */
const requestDevice = (reg: Registry, a: VerificationAttachment, crypto: Crypto, userId: UserId, deviceId: DeviceId) =>
  Effect.gen(function*() {
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
        message: `device ${sanitizeDisplay(deviceId)} of ${
          sanitizeUserId(userId)
        } is not known to the bot. Check the id in the other client's session list; the user must be on the allowlist or share a room with the bot.`
      })
    }
    const target = raw
    yield* settleFinished(reg, a, userId)
    const req = yield* sdkCall("request", () => crypto.requestDeviceVerification(userId, target))
    return { req, targetDevice: target as string | undefined }
  })

/** A request to the user, in the DM room the bot shares with them (or to the bot's own other devices). */
const requestUser = (reg: Registry, a: VerificationAttachment, crypto: Crypto, userId: UserId) =>
  Effect.gen(function*() {
    if (userId === a.botUserId) {
      yield* settleFinished(reg, a, userId)
      return yield* sdkCall("request", () => crypto.requestOwnUserVerification())
    }
    const dm = a.client.getRooms().find((r) =>
      r.getMyMembership() === KnownMembership.Join &&
      r.getJoinedMemberCount() === 2 &&
      r.getMember(userId)?.membership === KnownMembership.Join
    )
    if (dm === undefined) {
      return yield* new VerificationTargetNotFound({
        kind: "user-identity-not-found",
        message: `the bot shares no DM room with ${
          sanitizeUserId(userId)
        }: pass a device id (\`cara matrix verify <user> <device>\`) or invite the bot to a DM first.`
      })
    }
    yield* settleFinished(reg, a, userId)
    return yield* sdkCall("request", () => crypto.requestVerificationDM(userId, dm.roomId))
  })

export const start = (reg: Registry, userId: UserId, deviceId?: DeviceId) =>
  Effect.gen(function*() {
    // the brand's pattern is looser than a Matrix user id (whitespace): checked here too
    if (!USER_ID.test(userId)) return yield* InvalidVerificationUser.of()
    const a = yield* client(reg)
    const crypto = yield* cryptoOf(a)
    const { req, targetDevice }: { req: VerificationRequest; targetDevice: string | undefined } =
      deviceId !== undefined && deviceId !== ""
        ? yield* requestDevice(reg, a, crypto, userId, deviceId)
        : { req: yield* requestUser(reg, a, crypto, userId), targetDevice: undefined }
    const existing = reg.byRequest.get(req)
    const known = existing === undefined ? undefined : reg.entries.get(existing)
    if (known !== undefined) {
      known.engaged = true
      return known.record
    }
    const id = req.transactionId ?? `local-${randomUUID()}`
    yield* reg.handled.add(id)
    const inserted = yield* insert(reg, req, id, true, targetDevice)
    if (Option.isNone(inserted)) {
      return yield* verificationFailed("the verification registry is full; cancel or finish some flows and retry")
    }
    return inserted.value.record
  })

/** The bot's own account's devices, with trust, flagging ids changed by sanitisation. */
export const devices = (reg: Registry) =>
  Effect.gen(function*() {
    const a = yield* client(reg)
    const crypto = yield* cryptoOf(a)
    const map = yield* sdkCall("device list", () => crypto.getUserDeviceInfo([a.botUserId], true))
    const own = [...(map.get(a.botUserId)?.values() ?? [])].slice(0, 256)
    const sanitized = own.map((d) => sanitizeDisplay(d.deviceId))
    const out: Array<OwnDevice> = []
    for (const [i, d] of own.entries()) {
      const shown = sanitized[i] ?? ""
      const st = yield* Effect.promise(() =>
        crypto.getDeviceVerificationStatus(a.botUserId, d.deviceId).catch(() => null)
      )
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
