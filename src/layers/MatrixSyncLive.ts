import * as fs from "node:fs"
import {
  Cause,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  Redacted,
  Ref,
  Runtime,
  Schedule,
  type Scope
} from "effect"
import * as sdk from "matrix-js-sdk"
import { EventShieldReason } from "matrix-js-sdk/lib/crypto-api/index.js"
import type { Logger as SdkLogger } from "matrix-js-sdk/lib/logger.js"
import type { Matrix } from "../domain/config.js"
import {
  type InboundEvent,
  MatrixError,
  type MatrixErrorKind,
  TOKEN_REVOCATION_CODES,
  TOKEN_REVOKED_HINT
} from "../domain/matrix.js"
import { StateFileError } from "../domain/stateFiles.js"
import { Agent, type AgentShape } from "../services/Agent.js"
import { ChannelStatus, type ChannelStatusShape } from "../services/ChannelStatus.js"
import { ConfigSecrets, type ConfigSecretsShape } from "../services/ConfigSecrets.js"
import type { CryptoStoreShape } from "../services/CryptoStore.js"
import type { InboundShape, RoomFacts } from "../services/Inbound.js"
import { Dlq, type DlqShape } from "../services/Dlq.js"
import { MatrixControl, MatrixControlError } from "../services/MatrixControl.js"
import { type MatrixSession, MatrixSync, type MatrixSyncShape } from "../services/MatrixSync.js"
import type { OutboundShape } from "../services/Outbound.js"
import { RecoveryKey } from "../services/RecoveryKey.js"
import { Metrics } from "../services/Metrics.js"
import { Verification } from "../services/Verification.js"
import { StateDir, type StateDirShape } from "../services/StateDir.js"
import { StorePassphrase, type StorePassphraseShape } from "../services/StorePassphrase.js"
import { normalizeAllowlist, allowsUser } from "../domain/allowlist.js"
import { CRYPTO_FILE, makeCryptoStore } from "./CryptoStoreLive.js"
import { budgetSpec, type GroupMessages, LEDGER_FILE, makeInbound, openLedger } from "./InboundLive.js"
import { classifySendError, makeOutbound, type MatrixTransport } from "./OutboundLive.js"
import { recoveryFailure } from "./RecoveryKeyLive.js"

export const CHANNEL_ID = "matrix"
/** The device display name of a password login (reference §5.2). */
export const DEVICE_DISPLAY_NAME = "Carapace Matrix"

const SYNC_WATCHDOG = Duration.seconds(120)
/** How often the watchdog looks at the sync. */
const SYNC_CHECK_SECONDS = 5
/** A sync this recent means the homeserver is reachable (the long poll returns at least every 30 s). */
const REACHABLE_WITHIN_MS = 90_000
/** No successful sync for this long (since the last one, or the runtime's start): `sync-loop-give-up`. */
export const SYNC_GIVE_UP_MS = 24 * 3_600_000

/**
 * TEST ONLY. `CARA_TEST_SYNC_GIVE_UP_MS` shortens the 24 h give-up threshold so that a real-Synapse test can
 * watch the stamp come and go during a short outage. Read here and nowhere else; never set it in production.
 */
const syncGiveUpMs = (env: NodeJS.ProcessEnv): number => {
  const v = Number(env["CARA_TEST_SYNC_GIVE_UP_MS"])
  return Number.isInteger(v) && v > 0 ? v : SYNC_GIVE_UP_MS
}

/** Reference §7.1: no successful sync for more than the threshold, counted from the last success (or start). */
export const shouldGiveUp = (now: number, baseline: number, giveUpMs: number): boolean => now - baseline > giveUpMs

const describeSpan = (ms: number) => (ms >= 3_600_000 ? `${Math.round(ms / 3_600_000)} h` : `${Math.round(ms / 1000)} s`)

/**
 * The reference's text says the daemon slows to one retry per hour and must be restarted; cara does neither
 * (see docs/channels.md, "Sync health"): it keeps its cheap reachability probe and clears the stamp by itself.
 */
export const giveUpMessage = (giveUpMs: number) =>
  `Matrix sync has been unable to complete a successful sync for over ${describeSpan(giveUpMs)}; cara keeps retrying and clears this on the next successful sync. Investigate homeserver reachability (DNS, network, account state).`
const STICKY_FAILURES = 3
const HTTP_TIMEOUT_MS = 30_000
/** Back-fill of a limited timeline: events per /messages page, and pages at most (per gap). */
const BACKFILL_PAGE = 100
const BACKFILL_MAX_PAGES = 50

const fail = (kind: MatrixErrorKind, message: string) => Effect.fail(new MatrixError({ kind, message }))

const describe = (e: unknown): string => {
  const err = e as { errcode?: unknown; httpStatus?: unknown; name?: unknown; message?: unknown }
  if (typeof err?.errcode === "string") return `${err.errcode}${typeof err.httpStatus === "number" ? ` (HTTP ${err.httpStatus})` : ""}`
  // a transport error's text can hold the request URL: keep only the class of failure
  if (typeof err?.name === "string" && err.name !== "Error") return err.name
  return typeof err?.message === "string" ? err.message.replace(/https?:\/\/\S+/g, "[URL]").slice(0, 200) : String(e).slice(0, 200)
}

const errcodeOf = (e: unknown): string | undefined => {
  const c = (e as { errcode?: unknown } | undefined)?.errcode
  return typeof c === "string" ? c : undefined
}

// ---------------------------------------------------------------------------------------------------------
// SDK logging: the per-client logger and the module-level console output both go to the Effect logger at
// debug level; errors stay errors.

const SDK_FRAME = /[\\/]node_modules[\\/](?:matrix-js-sdk|@matrix-org[\\/]matrix-sdk-crypto-wasm|loglevel)[\\/]/

const fmt = (args: ReadonlyArray<unknown>): string =>
  args
    .map((a) => (a instanceof Error ? a.message : typeof a === "string" ? a : (() => {
      try {
        return JSON.stringify(a)
      } catch {
        return String(a)
      }
    })()))
    .join(" ")
    .slice(0, 2000)

const makeSdkLogger = (runtime: Runtime.Runtime<never>, prefix = ""): SdkLogger => {
  const debug = (...args: Array<unknown>) => Runtime.runFork(runtime)(Effect.logDebug(`matrix-sdk ${prefix}${fmt(args)}`))
  return {
    trace: debug,
    debug,
    info: debug,
    warn: debug,
    error: (...args: Array<unknown>) => Runtime.runFork(runtime)(Effect.logError(`matrix-sdk ${prefix}${fmt(args)}`)),
    getChild: (namespace: string) => makeSdkLogger(runtime, `${prefix}${namespace} `)
  }
}

/**
 * Redirects matrix-js-sdk's module-level console output (it ignores the per-client logger) into the Effect
 * logger at debug level while the scope is open. Only calls whose immediate caller is SDK code are taken;
 * `console.error` is left alone so no error is hidden.
 */
const redirectSdkConsole = (runtime: Runtime.Runtime<never>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const originals = new Map<string, (...args: Array<unknown>) => void>()
      for (const level of ["log", "debug", "info", "warn", "trace"] as const) {
        const original = console[level]
        originals.set(level, original)
        console[level] = (...args: Array<unknown>) => {
          const caller = (new Error().stack ?? "").split("\n")[2] ?? ""
          if (SDK_FRAME.test(caller)) Runtime.runFork(runtime)(Effect.logDebug(`matrix-sdk ${fmt(args)}`))
          else original.apply(console, args)
        }
      }
      return originals
    }),
    (originals) =>
      Effect.sync(() => {
        for (const [level, fn] of originals) (console as unknown as Record<string, unknown>)[level] = fn
      })
  )

// ---------------------------------------------------------------------------------------------------------
// Authentication

interface Credentials {
  readonly baseUrl: string
  readonly userId: string
  readonly deviceId: string
  readonly accessToken: Redacted.Redacted<string>
  readonly mode: "token" | "password"
}

/** `/whoami` with the bounded retry of reference §5.2 (4 attempts, 1/2/4 s, Retry-After honoured). */
const whoami = (baseUrl: string, userId: string, deviceId: string, token: Redacted.Redacted<string>) =>
  Effect.gen(function*() {
    const client = sdk.createClient({ baseUrl, accessToken: Redacted.value(token), localTimeoutMs: HTTP_TIMEOUT_MS, logger: quietLogger })
    const delays = [1_000, 2_000, 4_000]
    let last = ""
    for (let attempt = 0; attempt <= delays.length; attempt++) {
      const r = yield* Effect.tryPromise({ try: () => client.whoami(), catch: (e) => e }).pipe(Effect.either)
      if (r._tag === "Right") {
        const who = r.right
        if (who.user_id !== userId) {
          return yield* fail(
            "auth-session-user-mismatch",
            `restored Matrix token belongs to ${who.user_id}, expected ${userId} (check matrix.userId or rotate the token)`
          )
        }
        if (who.device_id === undefined || who.device_id === "") {
          return yield* fail(
            "auth-session-missing-device-id",
            "restored Matrix token did not report a device id (homeserver bug — upgrade the homeserver or log in with matrix.password once)"
          )
        }
        if (who.device_id !== deviceId) {
          return yield* fail(
            "auth-session-device-mismatch",
            `restored Matrix token belongs to device ${who.device_id}, expected ${deviceId} (check matrix.deviceId)`
          )
        }
        return
      }
      const code = errcodeOf(r.left)
      if (code !== undefined && (TOKEN_REVOCATION_CODES.has(code) || code === "M_FORBIDDEN")) {
        return yield* fail("auth-token-revoked", `Matrix access token rejected by homeserver: ${code} (${TOKEN_REVOKED_HINT})`)
      }
      last = describe(r.left)
      const status = (r.left as { httpStatus?: number }).httpStatus
      if (code !== undefined && code !== "M_LIMIT_EXCEEDED" && status !== undefined && status < 500) {
        return yield* fail("auth", `failed to authenticate Matrix client: ${last}. Check matrix.userId and the access token.`)
      }
      const delay = delays[attempt]
      if (delay === undefined) break
      const hint = (r.left as { getRetryAfterMs?: () => number | null }).getRetryAfterMs?.() ?? 0
      yield* Effect.sleep(Duration.millis(Math.min(Math.max(delay, hint), 3_600_000)))
    }
    return yield* fail(
      "auth-probe",
      `transient Matrix auth probe failed: restored Matrix token could not be validated after ${delays.length + 1} whoami() attempts: ${last}. Check that the homeserver is reachable; the daemon retries at its next start.`
    )
  })

const quietLogger: SdkLogger = {
  trace: () => {},
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  getChild: () => quietLogger
}

/** First start with `matrix.password`: log in as a new device and write the token back (sealed). */
const passwordLogin = (m: Matrix, baseUrl: string, userId: string, secrets: ConfigSecretsShape, env: NodeJS.ProcessEnv) =>
  Effect.gen(function*() {
    // Checked before the homeserver is contacted: a token we cannot seal must never be minted.
    if ((env["CARAPACE_CONFIG_PASSWORD"] ?? "").trim() === "") {
      return yield* fail(
        "token-persistence",
        "CARAPACE_CONFIG_PASSWORD is required before Matrix password login so the resulting access token can be persisted as an encrypted config secret. Set it and start again."
      )
    }
    const password = yield* secrets.secret("matrix.password").pipe(
      Effect.mapError((e) => new MatrixError({ kind: "auth", message: `matrix.password cannot be read: ${e.message}` }))
    )
    const client = sdk.createClient({ baseUrl, localTimeoutMs: HTTP_TIMEOUT_MS, logger: quietLogger })
    const login = yield* Effect.tryPromise({
      try: () =>
        client.loginRequest({
          type: "m.login.password",
          identifier: { type: "m.id.user", user: userId },
          password: Redacted.value(password),
          initial_device_display_name: DEVICE_DISPLAY_NAME,
          ...(m.deviceId === undefined || m.deviceId === null ? {} : { device_id: m.deviceId })
        }),
      catch: (e) => {
        const code = errcodeOf(e)
        if (code !== undefined && TOKEN_REVOCATION_CODES.has(code)) {
          return new MatrixError({ kind: "auth-token-revoked", message: `Matrix access token rejected by homeserver: ${code} (${TOKEN_REVOKED_HINT})` })
        }
        if (code === undefined || code === "M_LIMIT_EXCEEDED") {
          return new MatrixError({ kind: "auth-probe", message: `transient Matrix auth probe failed: ${describe(e)}. Check that the homeserver is reachable, then restart.` })
        }
        return new MatrixError({ kind: "auth", message: `failed to authenticate Matrix client: ${describe(e)}. Check matrix.userId and matrix.password.` })
      }
    })
    const token = Redacted.make(login.access_token)
    yield* secrets.setMatrixAccessToken(token, login.device_id).pipe(
      Effect.catchAll((e) =>
        // the new device is useless without its token on disk: log it out (best effort) and stop
        Effect.tryPromise(() =>
          sdk.createClient({ baseUrl, accessToken: login.access_token, localTimeoutMs: HTTP_TIMEOUT_MS, logger: quietLogger }).logout(true)
        ).pipe(
          Effect.ignore,
          Effect.zipRight(fail("token-persistence", `failed to persist Matrix access token: ${e.message}`))
        )
      )
    )
    yield* Effect.logInfo("Matrix password login done; access token and device id written to the config file").pipe(
      Effect.annotateLogs({ deviceId: login.device_id })
    )
    return { userId: login.user_id, deviceId: login.device_id, accessToken: token }
  })

/**
 * `storeLost`: the configured token's device has no crypto store here any more (disaster, or a deleted state
 * dir). Reusing that device id with a fresh store would upload a second identity key for it (peers keep
 * encrypting to the old one), so the daemon logs in as a NEW device with the password and logs the old
 * device out, or refuses when no password is available (reference recipes §5).
 */
/** Whether the homeserver holds identity keys of `deviceId` (a rejected token: no, so whoami reports it). */
const deviceHadKeys = (baseUrl: string, userId: string, deviceId: string, token: Redacted.Redacted<string>) =>
  Effect.tryPromise({
    try: async () => {
      const client = sdk.createClient({ baseUrl, accessToken: Redacted.value(token), localTimeoutMs: HTTP_TIMEOUT_MS, logger: quietLogger })
      try {
        const r = await client.downloadKeysForUsers([userId])
        return r.device_keys?.[userId]?.[deviceId] !== undefined
      } catch (e) {
        if ((e as { httpStatus?: unknown }).httpStatus === 401) return false
        throw e
      }
    },
    catch: (e) =>
      new MatrixError({
        kind: "auth-probe",
        message: `checking the configured device's keys on the homeserver failed: ${describe(e)}. Check that the homeserver is reachable, then restart.`
      })
  })

const authenticate = (m: Matrix, secrets: ConfigSecretsShape, env: NodeJS.ProcessEnv, storeLost = false) =>
  Effect.gen(function*() {
    const baseUrl = (m.homeserverUrl ?? "").trim().replace(/\/+$/, "")
    const userId = (m.userId ?? "").trim()
    if (baseUrl === "") return yield* fail("startup-failed", "matrix.homeserverUrl is required; set it (or MATRIX_HOMESERVER_URL) and restart.")
    if (!/^@[^:]+:.+$/.test(userId)) {
      return yield* fail("invalid-user-id", `matrix.userId must be a Matrix user id like @bot:example.com; set it and restart.`)
    }
    const token = yield* secrets.secretOption("matrix.accessToken").pipe(
      Effect.mapError((e) => new MatrixError({ kind: "auth", message: `matrix.accessToken cannot be read: ${e.message}` }))
    )
    if (Option.isSome(token)) {
      const deviceId = (m.deviceId ?? "").trim()
      if (deviceId === "") {
        return yield* fail(
          "missing-device-id-for-token-restore",
          "matrix.deviceId is required when matrix.accessToken is configured; either set matrix.deviceId to the SDK-issued device ID for that token, or remove matrix.accessToken to fall back to password login"
        )
      }
      // a token minted elsewhere (Element) for a device that never uploaded keys may start with a fresh store
      if (storeLost && (yield* deviceHadKeys(baseUrl, userId, deviceId, token.value))) {
        if (m.password === undefined || m.password === null) {
          return yield* fail(
            "crypto-store-missing",
            `the Matrix crypto store of device ${deviceId} is missing, and a device id must never be reused with a fresh store. Provide matrix.password (or MATRIX_PASSWORD) once and restart: the daemon logs in as a new device (restore the recovery key first with \`cara matrix recovery-key restore\` to keep the bot's cross-signed identity and backed-up room keys).`
          )
        }
        yield* Effect.logWarning("Matrix crypto store missing for the configured device; logging in as a new device").pipe(
          Effect.annotateLogs({ oldDeviceId: deviceId })
        )
        const { deviceId: _lost, ...fresh } = m
        const s = yield* passwordLogin(fresh, baseUrl, userId, secrets, env)
        // the old device's keys died with its store: remove it so senders stop encrypting to it (best effort)
        yield* Effect.tryPromise(() =>
          sdk.createClient({ baseUrl, accessToken: Redacted.value(token.value), localTimeoutMs: HTTP_TIMEOUT_MS, logger: quietLogger }).logout(true)
        ).pipe(
          Effect.tap(() => Effect.logInfo("Matrix: the lost device was logged out").pipe(Effect.annotateLogs({ oldDeviceId: deviceId }))),
          Effect.catchAll(() => Effect.logWarning("Matrix: logging out the lost device failed; remove it in Element").pipe(Effect.annotateLogs({ oldDeviceId: deviceId })))
        )
        return { baseUrl, ...s, mode: "password" } satisfies Credentials
      }
      yield* whoami(baseUrl, userId, deviceId, token.value)
      return { baseUrl, userId, deviceId, accessToken: token.value, mode: "token" } satisfies Credentials
    }
    if (m.password === undefined || m.password === null) {
      return yield* fail("missing-credentials", "matrix accessToken or password is required; set matrix.password (first login) and restart.")
    }
    const s = yield* passwordLogin(m, baseUrl, userId, secrets, env)
    return { baseUrl, ...s, mode: "password" } satisfies Credentials
  })

// ---------------------------------------------------------------------------------------------------------
// The client

const storeOpenFailure = (e: { kind: string; message: string }) => {
  const kind: MatrixErrorKind = e.kind === "encrypted-store-passphrase-mismatch" ||
      e.kind === "missing-store-secret" ||
      e.kind === "encrypted-state-io" ||
      e.kind === "interrupted-rekey" ||
      e.kind === "store-key-derivation" ||
      e.kind === "installation-id" ||
      e.kind === "installation-id-missing" ||
      e.kind === "crypto-store-corrupt" ||
      e.kind === "state-store-corrupt"
    ? e.kind
    : "client-build"
  return new MatrixError({ kind, message: e.message })
}

/** How long a stop waits for the SDK's in-flight crypto work before it frees the OlmMachine anyway. */
const SETTLE_MS = 10_000

/**
 * Waits (bounded) for the SDK's key-backup check: `initRustCrypto` starts one in the background, and an
 * identity change starts another; each ends by calling into the OlmMachine, which `stopClient` frees. The
 * forced check is only reachable through the backup manager's field (read defensively: an SDK upgrade that
 * renames it only loses the wait, and the daemon logs the rejection instead of crashing).
 */
const settleSdkWork = async (client: sdk.MatrixClient): Promise<void> => {
  const crypto = client.getCrypto()
  if (crypto === undefined) return
  const internal = crypto as unknown as { backupManager?: { keyBackupCheckInProgress?: Promise<unknown> | null } }
  const deadline = Date.now() + SETTLE_MS
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<void>((r) => (timer = setTimeout(r, SETTLE_MS)))
  try {
    // getKeyBackupInfo awaits the first check (whether or not it is still running)
    await Promise.race([crypto.getKeyBackupInfo().catch(() => undefined), timeout])
    for (let p = internal.backupManager?.keyBackupCheckInProgress; p && Date.now() < deadline; p = internal.backupManager?.keyBackupCheckInProgress) {
      await Promise.race([p.catch(() => undefined), timeout])
    }
  } finally {
    clearTimeout(timer)
  }
}

/** The transport Outbound sends through: resends a failed local echo under its own transaction id. */
const sdkTransport = (client: sdk.MatrixClient): MatrixTransport => ({
  send: async (roomId, threadId, content, txnId) => {
    const room = client.getRoom(roomId)
    const pending = room?.getEventForTxnId(txnId)
    // matrix-js-sdk refuses a second send with a txnId it still tracks; a failed one is re-sent as is
    if (room && pending && pending.status === sdk.EventStatus.NOT_SENT) {
      const r = await client.resendEvent(pending, room)
      return r.event_id
    }
    if (pending && pending.status === null && pending.getId()?.startsWith("$") === true) return pending.getId()!
    const r = await client.sendEvent(roomId, threadId, sdk.EventType.RoomMessage, content as never, txnId)
    return r.event_id
  },
  typing: async (roomId, on, timeoutMs) => {
    await client.sendTyping(roomId, on, timeoutMs)
  },
  receipt: async (roomId, eventId) => {
    const ev = client.getRoom(roomId)?.findEventById(eventId)
    if (ev) await client.sendReadReceipt(ev)
  },
  room: (roomId) => {
    const room = client.getRoom(roomId)
    if (!room || room.getMyMembership() !== sdk.KnownMembership.Join) return undefined
    return { encrypted: room.hasEncryptionStateEvent() }
  }
})

const roomFacts = (room: sdk.Room, me: string): RoomFacts => {
  const member = room.currentState.getMember(me)
  const joinTs = member?.membership === sdk.KnownMembership.Join ? member.events.member?.getTs() : undefined
  return {
    memberCount: room.getInvitedAndJoinedMemberCount(),
    encrypted: room.hasEncryptionStateEvent(),
    botJoinedAt: joinTs,
    botDisplayName: member?.name
  }
}

const toInbound = (ev: sdk.MatrixEvent): InboundEvent | undefined => {
  const eventId = ev.getId()
  const roomId = ev.getRoomId()
  const sender = ev.getSender()
  if (eventId === undefined || roomId === undefined || sender === undefined) return undefined
  const encryptedUnreadable = ev.getType() === sdk.EventType.RoomMessageEncrypted
  if (ev.getType() !== sdk.EventType.RoomMessage && !encryptedUnreadable) return undefined
  const content = ev.getContent() as Record<string, unknown>
  const relation = ev.getRelation() ?? (ev.getWireContent()["m.relates_to"] as { rel_type?: string; event_id?: string } | undefined)
  const mentions = content["m.mentions"] as { user_ids?: unknown } | undefined
  const threadId = relation?.rel_type === "m.thread" ? relation.event_id : undefined
  return {
    eventId,
    roomId,
    sender,
    ts: ev.getTs(),
    ...(typeof content["msgtype"] === "string" ? { msgtype: content["msgtype"] } : {}),
    body: typeof content["body"] === "string" ? content["body"] : "",
    ...(relation?.rel_type === undefined ? {} : { relType: relation.rel_type }),
    ...(threadId === undefined ? {} : { threadId }),
    ...(Array.isArray(mentions?.user_ids) ? { mentionedUserIds: mentions.user_ids.filter((u): u is string => typeof u === "string") } : {}),
    encrypted: ev.isEncrypted()
  }
}

/** Shields that mean the sending device is not (known to be) cross-signed by its owner. */
const UNSIGNED_SHIELDS: ReadonlySet<EventShieldReason> = new Set([
  EventShieldReason.UNSIGNED_DEVICE,
  EventShieldReason.UNKNOWN_DEVICE,
  EventShieldReason.AUTHENTICITY_NOT_GUARANTEED,
  EventShieldReason.MISMATCHED_SENDER_KEY
])

/**
 * Whether the device that sent this decrypted event is cross-signed by its owner, from the crypto library's
 * verdict on the event (its Megolm session ties it to one device). A device the library does not know yet is
 * looked up once (the sender's device list may lag behind a brand-new session) before it counts as unsigned;
 * anything that cannot be established is `false` (the check fails closed).
 */
const senderCrossSigned = (client: sdk.MatrixClient, ev: sdk.MatrixEvent): Effect.Effect<boolean> =>
  Effect.promise(async () => {
    const crypto = client.getCrypto()
    if (crypto === undefined || !ev.isEncrypted() || ev.isDecryptionFailure()) return false
    const judge = async () => {
      const info = await crypto.getEncryptionInfoForEvent(ev)
      return info === null ? undefined : info.shieldReason === null || !UNSIGNED_SHIELDS.has(info.shieldReason)
    }
    try {
      if ((await judge()) === true) return true
      const sender = ev.getSender()
      if (sender !== undefined) await crypto.getUserDeviceInfo([sender], true)
      return (await judge()) === true
    } catch {
      return false
    }
  })

interface RuntimeDeps {
  readonly m: Matrix
  readonly secrets: ConfigSecretsShape
  readonly stateDir: StateDirShape
  readonly status: ChannelStatusShape
  readonly agent: AgentShape
  readonly passphrase: StorePassphraseShape
  readonly outboundRef: Ref.Ref<Option.Option<OutboundShape>>
  readonly sessionRef: Ref.Ref<Option.Option<MatrixSession>>
  readonly env: NodeJS.ProcessEnv
  /** The inbound DLQ, when the daemon provides one. */
  readonly dlq: Option.Option<DlqShape>
}

/** The whole runtime in one scope; fails with a MatrixError (terminal) or runs until interrupted. */
/** Join attempts for one invite (rate limits and server errors), about ten minutes in all with the backoff. */
const JOIN_ATTEMPTS = 25

const runMatrix = (deps: RuntimeDeps): Effect.Effect<never, MatrixError, Scope.Scope> =>
  Effect.gen(function*() {
    const { agent, env, m, passphrase, secrets, stateDir, status } = deps
    const runtime = yield* Effect.runtime<never>()
    const run = Runtime.runPromise(runtime)
    const fork = Runtime.runFork(runtime)
    yield* redirectSdkConsole(runtime)
    const encryptedMode = m.encrypted
    const allowlist = normalizeAllowlist(m.autoJoin)
    const groupMessages: GroupMessages = m.groupMessages

    // recovery-key artifacts are repaired (or refused) before anything is opened (reference §5.2 step 2)
    const recovery = yield* Effect.serviceOption(RecoveryKey)
    const metrics = yield* Effect.serviceOption(Metrics)
    if (encryptedMode && Option.isSome(recovery)) yield* recovery.value.repair.pipe(Effect.mapError(recoveryFailure))

    // 1. the store (before any network I/O: a wrong passphrase must not mint a device)
    const storeLost = encryptedMode && !fs.existsSync(stateDir.resolve(CRYPTO_FILE))
    const secret = encryptedMode
      ? { encrypted: true as const, passphrase: yield* passphrase.resolve.pipe(Effect.mapError(storeOpenFailure)) }
      : { encrypted: false as const }
    // a token whose device lost its store: settle the new-device login (or refuse) before the store files
    // exist, so a failed attempt cannot leave an empty store that the old device id would be reused with
    const tokenConfigured = m.accessToken !== undefined && m.accessToken !== null
    const early = storeLost && tokenConfigured ? Option.some(yield* authenticate(m, secrets, env, true)) : Option.none<Credentials>()
    const store: CryptoStoreShape = yield* makeCryptoStore({ secret }).pipe(
      Effect.provideService(StateDir, stateDir),
      Effect.mapError(storeOpenFailure)
    )

    // 2. authentication
    const creds = Option.isSome(early) ? early.value : yield* authenticate(m, secrets, env)
    yield* Ref.set(deps.sessionRef, Option.some({ userId: creds.userId, deviceId: creds.deviceId }))
    yield* status.updateMatrix((x) => ({ ...x, userId: creds.userId, deviceId: creds.deviceId }))
    const me = creds.userId

    // 3. the ledger
    yield* stateDir.ensureDir("matrix").pipe(Effect.mapError((e) => new MatrixError({ kind: "encrypted-state-io", message: e.message })))
    const ledger = yield* Effect.acquireRelease(
      Effect.try({
        try: () => openLedger(stateDir.resolve(LEDGER_FILE)),
        catch: (e) =>
          e instanceof StateFileError && e.kind === "inbound-ledger-corrupt"
            ? new MatrixError({ kind: e.kind, message: e.message })
            : new MatrixError({ kind: "encrypted-state-io", message: `Opening the inbound ledger failed (${describe(e)}); check the state directory.` })
      }),
      (l) => Effect.sync(() => l.close())
    )

    // 4. the client. Handlers that run inside the SDK's sync processing must never throw; the promises of
    // in-flight handlers (decrypt + gate + durable claim) are awaited before the sync store may be saved.
    const inflight = new Set<Promise<unknown>>()
    let stopping = false
    const track = (p: Promise<unknown>) => {
      const q = p.catch(() => undefined).finally(() => inflight.delete(q))
      inflight.add(q)
    }
    const syncStore = new sdk.IndexedDBStore({ indexedDB: store.indexedDB as never, dbName: store.syncStoreName })
    yield* Effect.tryPromise({
      try: () => syncStore.startup(),
      catch: (e) => new MatrixError({ kind: "client-build", message: `failed to build Matrix client: sync store: ${describe(e)}` })
    })
    const freshStore = ((yield* Effect.promise(() => syncStore.getSavedSyncToken())) ?? null) === null
    const originalSave = syncStore.save.bind(syncStore)
    syncStore.save = async (force?: boolean) => {
      while (inflight.size > 0) await Promise.all([...inflight])
      return originalSave(force)
    }

    const client = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          sdk.createClient({
            baseUrl: creds.baseUrl,
            userId: creds.userId,
            deviceId: creds.deviceId,
            accessToken: Redacted.value(creds.accessToken),
            store: syncStore,
            localTimeoutMs: HTTP_TIMEOUT_MS,
            verificationMethods: ["m.sas.v1"],
            ...(Option.isSome(recovery) ? { cryptoCallbacks: recovery.value.cryptoCallbacks } : {}),
            logger: makeSdkLogger(runtime)
          }),
        catch: (e) => new MatrixError({ kind: "client-build", message: `failed to build Matrix client: ${describe(e)}` })
      }),
      (c) =>
        Effect.promise(async () => {
          stopping = true
          // stopClient frees the OlmMachine at once: the SDK's own key-backup check (started by initRustCrypto,
          // and again when our identity changes) must finish first, or it calls into freed memory
          await settleSdkWork(c)
          c.stopClient()
          while (inflight.size > 0) await Promise.all([...inflight])
          // save(true) during an in-flight persist only awaits that older persist: save twice
          await originalSave(true).catch(() => undefined)
          await originalSave(true).catch(() => undefined)
          c.removeAllListeners()
        })
    )
    if (encryptedMode) {
      yield* Effect.tryPromise({
        try: () =>
          client.initRustCrypto({
            cryptoDatabasePrefix: store.cryptoDatabasePrefix,
            ...Option.match(store.storageKey, { onNone: () => ({}), onSome: (k) => ({ storageKey: Redacted.value(k) }) })
          }),
        catch: (e) =>
          new MatrixError({
            kind: "client-build",
            message: `failed to build Matrix client: crypto store: ${describe(e)}. The store in ${stateDir.resolve("matrix")} belongs to another user or device, or is damaged; never reuse a device id with a fresh store.`
          })
      })
    }

    // Sync health, shared by the sync-state handler, the watchdog and the pending replies: when the homeserver
    // last answered a /sync (not the cached one replayed at start), and whether the latest attempt worked.
    const runtimeStartedAt = Date.now()
    const health = { lastServerSync: undefined as number | undefined, healthy: false, givenUp: false }
    const reachable = Effect.sync(() =>
      health.healthy && health.lastServerSync !== undefined && Date.now() - health.lastServerSync < REACHABLE_WITHIN_MS
    )

    // 5. outbound and inbound
    const outbound = yield* makeOutbound(sdkTransport(client), { encrypted: encryptedMode, maxAttempts: m.outbound.sendAttempts })
    const inbound: InboundShape = yield* makeInbound({
      gate: { botUserId: me, allowlist, encryptedMode, groupMessages, requireCrossSignedSenders: m.requireCrossSignedSenders },
      budget: budgetSpec(m.inboundBudget),
      ledger,
      agent,
      outbound,
      status,
      ...Option.match(deps.dlq, { onNone: () => ({}), onSome: (dlq) => ({ dlq }) }),
      replies: {
        reachable,
        resume: (eventId, roomId) => Effect.suspend(() => resumeEvent(eventId, roomId)),
        options: { deadLetterAfterRounds: m.outbound.deadLetterAfterRounds }
      }
    })
    // DLQ replay hands records back to this pipeline for as long as the runtime runs; it is started after
    // every successful sync (below), one replay at a time.
    const dlqScope = yield* Effect.scope
    let dlqReplaying = false
    const replayDlq = () => {
      if (Option.isNone(deps.dlq) || dlqReplaying) return
      dlqReplaying = true
      fork(Effect.forkIn(
        deps.dlq.value.replayDue.pipe(
          Effect.catchAll((e) => Effect.logWarning(`Matrix inbound DLQ replay failed: ${e.message}`).pipe(Effect.annotateLogs({ kind: e.kind }))),
          Effect.ensuring(Effect.sync(() => void (dlqReplaying = false)))
        ),
        dlqScope
      ))
    }
    if (Option.isSome(deps.dlq)) yield* deps.dlq.value.register({ allowed: (s) => allowsUser(allowlist, s), dispatch: inbound.redeliver, resend: inbound.resend })
    yield* Ref.set(deps.outboundRef, Option.some(outbound))
    yield* Effect.addFinalizer(() => Ref.set(deps.outboundRef, Option.none()))

    const terminal = yield* Deferred.make<never, MatrixError>()
    const pendingUtd = new Set<string>()
    let prepared = false

    const updateUtdCount = () => status.updateMatrix((x) => ({ ...x, undecryptableEventCount: pendingUtd.size }))

    const offerEvent = (ev: sdk.MatrixEvent, room: sdk.Room) =>
      Effect.gen(function*() {
        const inboundEvent = toInbound(ev)
        if (inboundEvent === undefined) return
        const checked = m.requireCrossSignedSenders && inboundEvent.encrypted && inboundEvent.sender !== me
          ? { ...inboundEvent, senderDeviceCrossSigned: yield* senderCrossSigned(client, ev) }
          : inboundEvent
        yield* inbound.offer(checked, roomFacts(room, me))
      })

    const handleEvent = async (ev: sdk.MatrixEvent, room: sdk.Room) => {
      if (encryptedMode && (ev.isBeingDecrypted() || ev.shouldAttemptDecryption())) await client.decryptEventIfNeeded(ev)
      const id = ev.getId()
      if (encryptedMode && ev.isDecryptionFailure() && id !== undefined) {
        // held until its key arrives (MatrixEventEvent.Decrypted below), also across restarts
        pendingUtd.add(id)
        await run(inbound.utd.add(id, room.roomId).pipe(Effect.zipRight(updateUtdCount())))
        await run(Effect.logInfo("Matrix event not decryptable yet; held until its key arrives").pipe(
          Effect.annotateLogs({ eventId: id, roomId: room.roomId, reason: String(ev.decryptionFailureReason) })
        ))
        return
      }
      await run(offerEvent(ev, room))
    }

    // A limited timeline (more events than the sync filter's limit arrived while the bot was away) resets
    // the room's live timeline: the events between the last sync and the new timeline's start are fetched
    // with /messages and offered oldest first, before the live events of that sync (which wait for it);
    // all of it is tracked, so the sync token is not saved before they are durably claimed.
    let sinceToken: string | null = yield* Effect.promise(() => syncStore.getSavedSyncToken())
    const backfills = new Map<string, Promise<void>>()
    client.on(sdk.RoomEvent.TimelineReset, (room, timelineSet) => {
      try {
        if (room === undefined || timelineSet !== room.getUnfilteredTimelineSet()) return
        if (freshStore && !prepared) return
        if (room.getMyMembership() !== sdk.KnownMembership.Join) return
        const from = room.getLiveTimeline().getPaginationToken(sdk.Direction.Backward)
        if (from === null) return
        const before = backfills.get(room.roomId) ?? Promise.resolve()
        const p: Promise<void> = before.then(() => backfillRoom(room, from, sinceToken)).finally(() => {
          if (backfills.get(room.roomId) === p) backfills.delete(room.roomId)
        })
        backfills.set(room.roomId, p)
        track(p)
      } catch (e) {
        fork(Effect.logError(`Matrix timeline-reset handler failed: ${describe(e)}`))
      }
    })
    client.on(sdk.ClientEvent.Sync, (_state, _prev, data) => {
      if (data?.nextSyncToken !== undefined) sinceToken = data.nextSyncToken
    })

    const backfillRoom = async (room: sdk.Room, from: string, to: string | null): Promise<void> => {
      const delays = [1_000, 2_000, 4_000, 8_000, 15_000, 30_000]
      for (let attempt = 0; ; attempt++) {
        if (stopping) return
        try {
          const events = await collectGap(room, from, to)
          if (events.length > 0) {
            await run(Effect.logInfo("Matrix back-fill: offering events missed by a limited sync").pipe(
              Effect.annotateLogs({ roomId: room.roomId, events: events.length })
            ))
          }
          for (const ev of events) {
            if (stopping) return
            await handleEvent(ev, room)
          }
          return
        } catch (e) {
          const delay = delays[attempt]
          if (delay === undefined || stopping) {
            await run(Effect.logError(`Matrix back-fill of ${room.roomId} failed; events sent while the bot was away may be unanswered: ${describe(e)}`))
            return
          }
          await run(Effect.logWarning(`Matrix back-fill of ${room.roomId} failed (${describe(e)}); retrying`))
          await new Promise((r) => setTimeout(r, delay))
        }
      }
    }

    /**
     * Pages /messages backwards from the gap's start until the point of the previous sync (`to`), an event
     * the ledger already knows, or the bot's own join; returns the events oldest first.
     */
    const collectGap = async (room: sdk.Room, from: string, to: string | null): Promise<Array<sdk.MatrixEvent>> => {
      const raws: Array<sdk.IEvent> = []
      const mapper = client.getEventMapper()
      let token: string | undefined = from
      pages: for (let page = 0; page < BACKFILL_MAX_PAGES && token !== undefined; page++) {
        const res: { chunk?: Array<sdk.IEvent>; end?: string } = await client.http.authedRequest(
          sdk.Method.Get,
          `/rooms/${encodeURIComponent(room.roomId)}/messages`,
          { from: token, dir: "b", limit: String(BACKFILL_PAGE), ...(to === null ? {} : { to }) }
        )
        const chunk = res.chunk ?? []
        for (const raw of chunk) {
          if (raw.type === sdk.EventType.RoomMember && raw.state_key === me && (raw.content as { membership?: unknown })?.membership === "join") break pages
          if (raw.event_id !== undefined && ledger.state(raw.event_id) !== undefined) break pages
          raws.push(raw)
        }
        if (chunk.length === 0 || res.end === undefined || res.end === token) break
        token = res.end
      }
      return raws.reverse().filter((raw) => raw.sender !== me).map((raw) => mapper(raw))
    }
    client.on(sdk.RoomEvent.Timeline, (ev, room, toStartOfTimeline, removed, data) => {
      try {
        if (toStartOfTimeline === true || removed || room === undefined) return
        // replays from the cached sync data are not new; interrupted answers are resumed from the ledger
        if (data?.liveEvent !== true) return
        // the first sync of a fresh store delivers history only
        if (freshStore && !prepared) return
        if (ev.getSender() === me) return
        const gap = backfills.get(room.roomId)
        track(gap === undefined ? handleEvent(ev, room) : gap.then(() => handleEvent(ev, room)))
      } catch (e) {
        fork(Effect.logError(`Matrix timeline handler failed: ${describe(e)}`))
      }
    })

    client.on(sdk.MatrixEventEvent.Decrypted, (ev) => {
      try {
        const id = ev.getId()
        if (id === undefined || !pendingUtd.has(id) || ev.isDecryptionFailure()) return
        pendingUtd.delete(id)
        const room = client.getRoom(ev.getRoomId())
        track(run(
          inbound.utd.remove(id).pipe(
            Effect.zipRight(updateUtdCount()),
            Effect.zipRight(Effect.logInfo("Matrix event decrypted after its key arrived").pipe(Effect.annotateLogs({ eventId: id }))),
            Effect.zipRight(room ? offerEvent(ev, room) : Effect.void)
          )
        ))
      } catch (e) {
        fork(Effect.logError(`Matrix decryption handler failed: ${describe(e)}`))
      }
    })

    // Invites: fail closed; a declined invite is left once (it then disappears from sync); kicks and bans
    // are never undone because the bot only ever joins on an invite.
    const declined = new Set<string>()
    const handleInvite = (room: sdk.Room) =>
      Effect.gen(function*() {
        if (declined.has(room.roomId)) return
        const inviter = room.currentState.getMember(me)?.events.member?.getSender()
        const decline = (why: string, counter: "peerDropAllowlistRejectionTotal" | "peerDropEncryptedRoomTotal") =>
          Effect.gen(function*() {
            declined.add(room.roomId)
            yield* status.updateMatrix((x) => ({ ...x, [counter]: x[counter] + 1 }))
            yield* Effect.logInfo(`Matrix invite rejected: ${why}`).pipe(Effect.annotateLogs({ roomId: room.roomId, inviter: inviter ?? "unknown" }))
            yield* Effect.tryPromise(() => client.leave(room.roomId)).pipe(
              Effect.catchAll((e) => Effect.logWarning(`declining the invite failed: ${describe(e)}`))
            )
          })
        if (inviter === undefined) return yield* decline("homeserver did not provide an inviter identity", "peerDropAllowlistRejectionTotal")
        if (!allowsUser(allowlist, inviter)) return yield* decline("inviter not in matrix.autoJoin allowlist", "peerDropAllowlistRejectionTotal")
        if (!encryptedMode && room.hasEncryptionStateEvent()) {
          return yield* decline("room is encrypted and matrix.encrypted=false", "peerDropEncryptedRoomTotal")
        }
        // A rate-limited or unreachable homeserver delays the join; it does not lose the invite.
        for (let attempt = 1;; attempt++) {
          const joined = yield* Effect.tryPromise({ try: () => client.joinRoom(room.roomId), catch: (e) => e }).pipe(Effect.either)
          if (joined._tag === "Right") {
            return yield* Effect.logInfo("auto-joined Matrix room invite").pipe(Effect.annotateLogs({ roomId: room.roomId, inviter }))
          }
          const failure = classifySendError(joined.left)
          if (failure._tag === "Terminal" || attempt >= JOIN_ATTEMPTS) {
            return yield* Effect.logWarning(
              `joining ${room.roomId} failed (${failure.detail}${failure._tag === "Terminal" ? "" : `, after ${attempt} attempts`}); the invite stays pending and is retried at the next start`
            )
          }
          const delay = failure.retryAfterMs ?? Math.min(30_000, 1_000 * 2 ** (attempt - 1))
          yield* Effect.logInfo(`joining ${room.roomId} failed (${failure.detail}); retrying in ${delay} ms`)
          yield* Effect.sleep(Duration.millis(delay))
        }
      })

    client.on(sdk.RoomEvent.MyMembership, (room, membership) => {
      try {
        if (membership === sdk.KnownMembership.Invite) track(run(handleInvite(room)))
      } catch (e) {
        fork(Effect.logError(`Matrix membership handler failed: ${describe(e)}`))
      }
    })

    client.on(sdk.RoomStateEvent.Events, (ev) => {
      if (encryptedMode || ev.getType() !== sdk.EventType.RoomEncryption) return
      // only rooms the bot is in: an invite's stripped state is judged (and counted) by handleInvite
      if (client.getRoom(ev.getRoomId())?.getMyMembership() !== sdk.KnownMembership.Join) return
      fork(
        status.updateMatrix((x) => ({
          ...x,
          peerDropEncryptedRoomTotal: x.peerDropEncryptedRoomTotal + 1,
          unsupportedInboundCount: x.unsupportedInboundCount + 1
        })).pipe(Effect.zipRight(Effect.logWarning("Matrix room became encrypted while matrix.encrypted=false; it is unsupported")))
      )
    })

    // Sync state: progress, sticky transient failures, terminal auth errors, the give-up stamp.
    let lastProgress = Date.now()
    let errorStreak = 0
    let lastCycleEnd: number | undefined
    const survey = () =>
      status.updateMatrix((x) => {
        const joined = client.getRooms().filter((r) => r.getMyMembership() === sdk.KnownMembership.Join)
        const encrypted = joined.filter((r) => r.hasEncryptionStateEvent())
        const unsupported = encryptedMode ? [] : encrypted.map((r) => r.roomId)
        return {
          ...x,
          joinedRoomCount: joined.length,
          encryptedRoomCount: encrypted.length,
          unencryptedRoomCount: joined.length - encrypted.length,
          unsupportedRoomCount: unsupported.length,
          unsupportedRooms: unsupported.slice(0, 100),
          undecryptableEventCount: pendingUtd.size,
          lastSuccessfulSyncAt: health.lastServerSync ?? null
        }
      })

    client.on(sdk.ClientEvent.Sync, (state, prev, data) => {
      try {
        if (state === sdk.SyncState.Prepared || state === sdk.SyncState.Syncing) {
          const now = Date.now()
          lastProgress = now
          // one /sync round trip, long-poll included; the first after an error would include the backoff
          if (state === sdk.SyncState.Syncing && prev === sdk.SyncState.Syncing && lastCycleEnd !== undefined && Option.isSome(metrics)) {
            fork(metrics.value.observe("carapace_matrix_sync_cycle_seconds", (now - lastCycleEnd) / 1000))
          }
          const fromServer = data?.fromCache !== true
          if (fromServer) {
            lastCycleEnd = now
            health.lastServerSync = now
            health.healthy = true
          }
          const wasSticky = errorStreak >= STICKY_FAILURES || (fromServer && health.givenUp)
          errorStreak = 0
          if (fromServer && health.givenUp) {
            health.givenUp = false
            fork(Effect.logInfo("Matrix sync succeeded again; sync-loop-give-up cleared"))
          }
          fork(survey().pipe(Effect.zipRight(wasSticky ? status.setState(CHANNEL_ID, "connected") : Effect.void)))
          if (prepared) replayDlq()
          if (fromServer) fork(inbound.replies.kick)
          return
        }
        if (state === sdk.SyncState.Error || state === sdk.SyncState.Reconnecting) {
          health.healthy = false
          lastCycleEnd = undefined
          const err = data?.error
          const code = errcodeOf(err)
          if (code !== undefined && (TOKEN_REVOCATION_CODES.has(code) || code === "M_FORBIDDEN")) {
            fork(Deferred.fail(terminal, new MatrixError({
              kind: "auth-token-revoked",
              message: `Matrix access token rejected by homeserver: ${code} (${TOKEN_REVOKED_HINT})`
            })))
            return
          }
          if (state === sdk.SyncState.Error) {
            if (Option.isSome(metrics)) fork(metrics.value.increment("carapace_matrix_sync_failures_total", { class: "transient" }))
            errorStreak++
            if (errorStreak === STICKY_FAILURES && !health.givenUp) {
              fork(status.setState(CHANNEL_ID, "error", { kind: "sync-failed", message: `Matrix sync failed: ${describe(err)}` }))
            }
          }
        }
      } catch (e) {
        fork(Effect.logError(`Matrix sync-state handler failed: ${describe(e)}`))
      }
    })
    client.on(sdk.HttpApiEvent.SessionLoggedOut, (err) => {
      fork(Deferred.fail(terminal, new MatrixError({
        kind: "auth-token-revoked",
        message: `Matrix access token rejected by homeserver: ${errcodeOf(err) ?? "M_UNKNOWN_TOKEN"} (${TOKEN_REVOKED_HINT})`
      })))
    })

    // 6. start syncing and wait for the first sync
    const firstSync = yield* Deferred.make<void>()
    const serverSync = yield* Deferred.make<void>()
    const onFirst = (state: sdk.SyncState) => {
      if (state === sdk.SyncState.Prepared || state === sdk.SyncState.Syncing) {
        prepared = true
        fork(Deferred.succeed(firstSync, undefined))
      }
    }
    client.on(sdk.ClientEvent.Sync, onFirst)
    // SYNCING is emitted only after a /sync response from the homeserver was processed (never from cache)
    const onServerSync = (state: sdk.SyncState) => {
      if (state === sdk.SyncState.Syncing) {
        client.off(sdk.ClientEvent.Sync, onServerSync)
        fork(Deferred.succeed(serverSync, undefined))
      }
    }
    client.on(sdk.ClientEvent.Sync, onServerSync)
    // SAS verification flows (issue 10): the registry listens to this client for the life of the runtime
    const verification = yield* Effect.serviceOption(Verification)
    if (encryptedMode && Option.isSome(verification)) {
      yield* verification.value.attach({ client, botUserId: me, isAllowed: (u) => allowsUser(allowlist, u), trackUsers: allowlist.allowUsers })
    }
    yield* status.setState(CHANNEL_ID, "connected")
    yield* Effect.tryPromise({
      try: () => client.startClient({ initialSyncLimit: 20 }),
      catch: (e) => new MatrixError({ kind: "startup-failed", message: `Matrix runtime startup failed: ${describe(e)}` })
    })
    yield* Effect.raceFirst(Deferred.await(firstSync), Deferred.await(terminal))
    client.off(sdk.ClientEvent.Sync, onFirst)
    yield* Effect.logInfo("Matrix client synced").pipe(Effect.annotateLogs({ userId: me, deviceId: creds.deviceId, freshStore }))

    // The watchdog, from the first sync on (a homeserver that is down at start must be reported too): a sync
    // that makes no progress for 120 s is nudged and reported; one that has failed for `giveUpMs` since the
    // last success (or the start) is stamped `sync-loop-give-up` (cleared by the next success).
    const giveUpMs = syncGiveUpMs(env)
    yield* Effect.forkScoped(
      Effect.gen(function*() {
        const now = Date.now()
        if (now - lastProgress > Duration.toMillis(SYNC_WATCHDOG)) {
          yield* Effect.logWarning("Matrix sync made no progress for 120 s; retrying now")
          if (!health.givenUp) {
            yield* status.setState(CHANNEL_ID, "error", { kind: "sync-failed", message: "Matrix sync failed: no progress for 120 s" })
          }
          if (Option.isSome(metrics)) yield* metrics.value.observe("carapace_matrix_sync_cycle_seconds", Duration.toSeconds(SYNC_WATCHDOG))
          errorStreak = Math.max(errorStreak, STICKY_FAILURES)
          health.healthy = false
          client.retryImmediately()
        }
        // a long poll in flight is not a failure: only a failing sync gives up
        if (!health.givenUp && !health.healthy && shouldGiveUp(now, health.lastServerSync ?? runtimeStartedAt, giveUpMs)) {
          health.givenUp = true
          const message = giveUpMessage(giveUpMs)
          yield* Effect.logError(message).pipe(Effect.annotateLogs({ kind: "sync-loop-give-up" }))
          yield* status.setState(CHANNEL_ID, "error", { kind: "sync-loop-give-up", message })
        }
      }).pipe(Effect.repeat(Schedule.spaced(Duration.seconds(SYNC_CHECK_SECONDS))))
    )

    // 7. after the first sync: the password is no longer needed; pending invites; interrupted answers;
    // held undecryptable events. (The allowlisted users' devices are tracked by the Verification registry.)
    // cross-signing needs our own identity known, so after the first sync; before the password is dropped
    // After a restart the first sync is served from the saved sync data, before the homeserver answered
    // anything: the recovery-key start-up waits for a sync from the server (account data current; a
    // homeserver that is down delays it instead of failing it). Messages are answered meanwhile.
    let crossSigning: "unknown" | "bootstrapped" | "verified" = "unknown"
    if (encryptedMode && Option.isSome(recovery)) {
      yield* Effect.raceFirst(Deferred.await(serverSync), Deferred.await(terminal))
      crossSigning = yield* recovery.value.afterFirstSync(client).pipe(Effect.mapError(recoveryFailure))
    }
    if (creds.mode === "password") {
      yield* secrets.removeMatrixPassword().pipe(
        Effect.mapError((e) => new MatrixError({ kind: "token-persistence", message: `failed to remove matrix.password after login: ${e.message}` }))
      )
    }
    // the start-up sequence is over (`cara verify` waits for this, issue 17.6)
    if (encryptedMode) yield* status.updateMatrix((x) => ({ ...x, crossSigning }))
    for (const room of client.getRooms()) {
      if (room.getMyMembership() === sdk.KnownMembership.Invite) yield* handleInvite(room)
    }
    const refetch = (roomId: string, eventId: string) =>
      Effect.tryPromise(async () => {
        const raw = await client.fetchRoomEvent(roomId, eventId)
        const ev = client.getEventMapper()(raw)
        return ev
      })
    for (const { eventId, roomId } of yield* inbound.utd.list) {
      pendingUtd.add(eventId)
      yield* refetch(roomId, eventId).pipe(
        Effect.flatMap((ev) => Effect.promise(() => client.decryptEventIfNeeded(ev)).pipe(Effect.as(ev))),
        Effect.flatMap((ev) => {
          const room = client.getRoom(roomId)
          if (ev.isDecryptionFailure() || room === null) return Effect.void
          pendingUtd.delete(eventId)
          return inbound.utd.remove(eventId).pipe(Effect.zipRight(offerEvent(ev, room)))
        }),
        Effect.catchAll((e) => Effect.logWarning(`re-fetching held event ${eventId} failed: ${describe(e)}`))
      )
    }
    yield* updateUtdCount()
    const resumeEvent = (eventId: string, roomId: string) =>
      refetch(roomId, eventId).pipe(
        Effect.flatMap((ev) => Effect.promise(() => client.decryptEventIfNeeded(ev)).pipe(Effect.as(ev))),
        Effect.flatMap((ev) => {
          const room = client.getRoom(roomId)
          return room === null ? Effect.void : offerEvent(ev, room)
        }),
        Effect.tap(() => Effect.logInfo("resuming an answer interrupted by a stop or crash").pipe(Effect.annotateLogs({ eventId }))),
        Effect.catchAll((e) => Effect.logWarning(`resuming ${eventId} failed: ${describe(e)}`))
      )
    for (const { eventId, roomId } of yield* inbound.unfinished) yield* resumeEvent(eventId, roomId)
    // answers whose send keeps failing are retried from now on (also those the resume above could not fetch)
    yield* inbound.replies.start
    yield* survey()

    yield* Effect.logInfo("Matrix start-up finished (pending replies retried, sync watched)")

    return yield* Deferred.await(terminal)
  })

// ---------------------------------------------------------------------------------------------------------
// The layer

const notConnected = () =>
  new MatrixError({ kind: "not-connected", message: "The Matrix runtime is not connected yet (or has stopped); check `cara status` and retry." })

export const makeMatrixSync = (env: NodeJS.ProcessEnv = process.env) =>
  Effect.gen(function*() {
    const secrets = yield* ConfigSecrets
    const stateDir = yield* StateDir
    const status = yield* ChannelStatus
    const agent = yield* Agent
    const passphrase = yield* StorePassphrase
    const dlq = yield* Effect.serviceOption(Dlq)
    const outboundRef = yield* Ref.make(Option.none<OutboundShape>())
    const sessionRef = yield* Ref.make(Option.none<MatrixSession>())
    const m = secrets.config.matrix

    if (m !== undefined && m !== null && m.enabled) {
      yield* status.setState(CHANNEL_ID, "connecting")
      if (m.encrypted) yield* status.updateMatrix((x) => ({ ...x, crossSigning: "pending" }))
      yield* Effect.forkScoped(
        Effect.scoped(runMatrix({ m, secrets, stateDir, status, agent, passphrase, outboundRef, sessionRef, env, dlq })).pipe(
          Effect.onExit((exit) =>
            Exit.match(exit, {
              onSuccess: () => Effect.void,
              onFailure: (cause) => {
                if (Cause.isInterruptedOnly(cause)) return status.setState(CHANNEL_ID, "disconnected")
                const failure = Cause.failureOption(cause)
                const err = Option.isSome(failure)
                  ? failure.value
                  : new MatrixError({ kind: "startup-failed", message: `Matrix runtime startup failed: ${Cause.pretty(cause).split("\n")[0] ?? "defect"}` })
                return Effect.logError(`Matrix runtime stopped: ${err.message}`).pipe(
                  Effect.annotateLogs({ kind: err.kind }),
                  Effect.zipRight(status.setState(CHANNEL_ID, "error", { kind: err.kind, message: err.message }))
                )
              }
            })
          ),
          Effect.annotateLogs({ service: "matrix" })
        )
      )
    }

    const sendTest = (roomId: string, text: string) =>
      Effect.flatMap(Ref.get(outboundRef), Option.match({ onNone: () => Effect.fail(notConnected()), onSome: (o) => o.sendTest(roomId, text) }))

    return { session: Ref.get(sessionRef), sendTest } satisfies MatrixSyncShape
  })

/** The control API's view of the runtime (`send-test`), with the kinds of §9.4. */
const MatrixControlFromSync = Layer.effect(
  MatrixControl,
  Effect.map(MatrixSync, (s) => ({
    sendTest: (roomId: string, text: string) =>
      s.sendTest(roomId, text).pipe(
        Effect.mapError((e) =>
          new MatrixControlError({
            kind: e.kind,
            message: e.message,
            ...(e.retryAfterMs === undefined ? {} : { retryAfterMs: Math.round(e.retryAfterMs) })
          })
        )
      )
  }))
)

/** MatrixSync and MatrixControl, the runtime running for the life of the layer. */
export const MatrixSyncLive = (env: NodeJS.ProcessEnv = process.env) =>
  MatrixControlFromSync.pipe(Layer.provideMerge(Layer.scoped(MatrixSync, makeMatrixSync(env))))
