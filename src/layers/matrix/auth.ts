// Authentication (reference §5.2): token restore checked with /whoami, first-start password login, and the
// lost-store case (a new device instead of reusing an id with a fresh store).
import { Context, Duration, Effect, Option, Redacted, Schedule } from "effect"
import * as sdk from "matrix-js-sdk"
import type { Matrix } from "../../domain/config.js"
import {
  type DeviceId,
  MatrixError,
  type MatrixErrorKind,
  TOKEN_REVOCATION_CODES,
  tokenRevoked,
  type UserId
} from "../../domain/matrix.js"
import { describeSdkError as describe, errcodeOf, isTokenRejection } from "../../domain/sendError.js"
import { homeserverUrlOf } from "../../domain/wellKnown.js"
import type { ConfigSecretsShape } from "../../services/ConfigSecrets.js"
import { quietLogger } from "./logging.js"

/** The device display name of a password login (reference §5.2). */
export const DEVICE_DISPLAY_NAME = "Carapace Matrix"
export const HTTP_TIMEOUT_MS = 30_000

export interface Credentials {
  readonly baseUrl: string
  readonly userId: UserId
  readonly deviceId: DeviceId
  readonly accessToken: Redacted.Redacted<string>
  readonly mode: "token" | "password"
}

/** The credentials the runtime's client is built with (provided once authentication is done). */
export class MatrixCredentials extends Context.Tag("cara/matrix/Credentials")<MatrixCredentials, Credentials>() {}

const fail = (kind: MatrixErrorKind, message: string) => Effect.fail(new MatrixError({ kind, message }))

const probeClient = (baseUrl: string, token?: Redacted.Redacted<string>) =>
  sdk.createClient({
    baseUrl,
    ...(token === undefined ? {} : { accessToken: Redacted.value(token) }),
    localTimeoutMs: HTTP_TIMEOUT_MS,
    logger: quietLogger
  })

/** A whoami failure worth another attempt (network, 5xx, rate limit). */
class ProbeTransient {
  constructor(readonly cause: unknown) {}
}

const retryAfterOf = (e: unknown): number => (e as { getRetryAfterMs?: () => number | null }).getRetryAfterMs?.() ?? 0

/** Reference §5.2: 4 attempts, 1/2/4 s apart, a longer Retry-After honoured (capped at an hour). */
const whoamiRetry = Schedule.exponential(Duration.seconds(1)).pipe(
  Schedule.intersect(Schedule.recurs(3)),
  Schedule.intersect(Schedule.identity<MatrixError | ProbeTransient>()),
  Schedule.modifyDelay(([, e], d) =>
    Duration.millis(
      Math.min(Math.max(Duration.toMillis(d), e instanceof ProbeTransient ? retryAfterOf(e.cause) : 0), 3_600_000)
    )
  )
)

const whoamiAttempt = (client: sdk.MatrixClient) =>
  Effect.tryPromise({ try: () => client.whoami(), catch: (e) => e }).pipe(
    Effect.mapError((e): MatrixError | ProbeTransient => {
      const code = errcodeOf(e)
      if (isTokenRejection(code)) return tokenRevoked(code!)
      const status = (e as { httpStatus?: number }).httpStatus
      if (code !== undefined && code !== "M_LIMIT_EXCEEDED" && status !== undefined && status < 500) {
        return new MatrixError({
          kind: "auth",
          message: `failed to authenticate Matrix client: ${describe(e)}. Check matrix.userId and the access token.`
        })
      }
      return new ProbeTransient(e)
    })
  )

/** `/whoami` with the bounded retry; the token must belong to the configured user and device. */
const whoami = (baseUrl: string, userId: string, deviceId: string, token: Redacted.Redacted<string>) =>
  Effect.gen(function*() {
    const who = yield* whoamiAttempt(probeClient(baseUrl, token)).pipe(
      Effect.retry({ schedule: whoamiRetry, while: (e) => e instanceof ProbeTransient }),
      Effect.catchIf(
        (e): e is ProbeTransient => e instanceof ProbeTransient,
        (e) =>
          fail(
            "auth-probe",
            `transient Matrix auth probe failed: restored Matrix token could not be validated after 4 whoami() attempts: ${
              describe(e.cause)
            }. Check that the homeserver is reachable; the daemon retries at its next start.`
          )
      )
    )
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
  })

const loginFailure = (e: unknown) => {
  const code = errcodeOf(e)
  if (code !== undefined && TOKEN_REVOCATION_CODES.has(code)) return tokenRevoked(code)
  if (code === undefined || code === "M_LIMIT_EXCEEDED") {
    return new MatrixError({
      kind: "auth-probe",
      message: `transient Matrix auth probe failed: ${
        describe(e)
      }. Check that the homeserver is reachable, then restart.`
    })
  }
  return new MatrixError({
    kind: "auth",
    message: `failed to authenticate Matrix client: ${describe(e)}. Check matrix.userId and matrix.password.`
  })
}

/** First start with `matrix.password`: log in as a new device and write the token back (sealed). */
const passwordLogin = (
  m: Matrix,
  baseUrl: string,
  userId: string,
  secrets: ConfigSecretsShape,
  env: NodeJS.ProcessEnv
) =>
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
    const login = yield* Effect.tryPromise({
      try: () =>
        probeClient(baseUrl).loginRequest({
          type: "m.login.password",
          identifier: { type: "m.id.user", user: userId },
          password: Redacted.value(password),
          initial_device_display_name: DEVICE_DISPLAY_NAME,
          ...(m.deviceId === undefined || m.deviceId === null ? {} : { device_id: m.deviceId })
        }),
      catch: loginFailure
    })
    const token = Redacted.make(login.access_token)
    yield* secrets.setMatrixAccessToken(token, login.device_id).pipe(
      Effect.catchAll((e) =>
        // the new device is useless without its token on disk: log it out (best effort) and stop
        Effect.tryPromise(() => probeClient(baseUrl, token).logout(true)).pipe(
          Effect.ignore,
          Effect.zipRight(fail("token-persistence", `failed to persist Matrix access token: ${e.message}`))
        )
      )
    )
    yield* Effect.logInfo("Matrix password login done; access token and device id written to the config file").pipe(
      Effect.annotateLogs({ deviceId: login.device_id })
    )
    // the homeserver's answer to our own login: its ids are the session's (not re-validated here)
    return { userId: login.user_id as UserId, deviceId: login.device_id as DeviceId, accessToken: token }
  })

/** Whether the homeserver holds identity keys of `deviceId` (a rejected token: no, so whoami reports it). */
const deviceHadKeys = (baseUrl: string, userId: string, deviceId: string, token: Redacted.Redacted<string>) =>
  Effect.tryPromise({
    try: async () => {
      try {
        const r = await probeClient(baseUrl, token).downloadKeysForUsers([userId])
        return r.device_keys?.[userId]?.[deviceId] !== undefined
      } catch (e) {
        if ((e as { httpStatus?: unknown }).httpStatus === 401) return false
        throw e
      }
    },
    catch: (e) =>
      new MatrixError({
        kind: "auth-probe",
        message: `checking the configured device's keys on the homeserver failed: ${
          describe(e)
        }. Check that the homeserver is reachable, then restart.`
      })
  })

/**
 * The configured token's device has no crypto store here any more (disaster, or a deleted state dir).
 * Reusing that device id with a fresh store would upload a second identity key for it (peers keep
 * encrypting to the old one), so the daemon logs in as a NEW device with the password and logs the old
 * device out, or refuses when no password is available (reference recipes §5).
 */
const replaceLostDevice = (
  m: Matrix,
  baseUrl: string,
  userId: string,
  deviceId: string,
  token: Redacted.Redacted<string>,
  secrets: ConfigSecretsShape,
  env: NodeJS.ProcessEnv
) =>
  Effect.gen(function*() {
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
    yield* Effect.tryPromise(() => probeClient(baseUrl, token).logout(true)).pipe(
      Effect.tap(() =>
        Effect.logInfo("Matrix: the lost device was logged out").pipe(Effect.annotateLogs({ oldDeviceId: deviceId }))
      ),
      Effect.catchAll(() =>
        Effect.logWarning("Matrix: logging out the lost device failed; remove it in Element").pipe(
          Effect.annotateLogs({ oldDeviceId: deviceId })
        )
      )
    )
    return { baseUrl, ...s, mode: "password" } satisfies Credentials
  })

/** Retries of the `.well-known` discovery at start (a homeserver that is restarting answers again soon). */
const DISCOVERY_RETRY = Schedule.exponential(Duration.seconds(2)).pipe(Schedule.intersect(Schedule.recurs(5)))

/**
 * The homeserver's base URL: `matrix.homeserverUrl` when set, otherwise discovered from the user id through
 * `.well-known/matrix/client` (the server name itself when none is published), as `cara setup` does.
 */
const homeserverOf = (m: Matrix, userId: string) =>
  homeserverUrlOf(m, "set matrix.homeserverUrl or MATRIX_HOMESERVER_URL and restart").pipe(
    Effect.retry({ schedule: DISCOVERY_RETRY, while: (e) => e.kind === "homeserver-discovery-failed" }),
    Effect.tap(({ discovered, url }) =>
      discovered ? Effect.logInfo(`matrix.homeserverUrl is not set; discovered ${url} for ${userId}`) : Effect.void
    ),
    Effect.map(({ url }) => url),
    Effect.mapError((e) =>
      new MatrixError({
        kind: "startup-failed",
        message: `matrix.homeserverUrl is not set and discovery failed: ${e.message}`
      })
    )
  )

/** `storeLost`: the crypto store of the configured device is gone (see replaceLostDevice). */
export const authenticate = (m: Matrix, secrets: ConfigSecretsShape, env: NodeJS.ProcessEnv, storeLost = false) =>
  Effect.gen(function*() {
    const userId = (m.userId ?? "").trim()
    if (!/^@[^:]+:.+$/.test(userId)) {
      return yield* fail(
        "invalid-user-id",
        `matrix.userId must be a Matrix user id like @bot:example.com; set it and restart.`
      )
    }
    const baseUrl = yield* homeserverOf(m, userId)
    const token = yield* secrets.secretOption("matrix.accessToken").pipe(
      Effect.mapError((e) =>
        new MatrixError({ kind: "auth", message: `matrix.accessToken cannot be read: ${e.message}` })
      )
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
        return yield* replaceLostDevice(m, baseUrl, userId, deviceId, token.value, secrets, env)
      }
      yield* whoami(baseUrl, userId, deviceId, token.value)
      // both checked above: the user id's shape, and whoami confirmed the pair
      return {
        baseUrl,
        userId: userId as UserId,
        deviceId: deviceId as DeviceId,
        accessToken: token.value,
        mode: "token"
      } satisfies Credentials
    }
    if (m.password === undefined || m.password === null) {
      return yield* fail(
        "missing-credentials",
        "matrix accessToken or password is required; set matrix.password (first login) and restart."
      )
    }
    const s = yield* passwordLogin(m, baseUrl, userId, secrets, env)
    return { baseUrl, ...s, mode: "password" } satisfies Credentials
  })
