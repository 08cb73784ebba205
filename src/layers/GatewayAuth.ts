import { createHash, timingSafeEqual } from "node:crypto"
import { HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Clock, Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import {
  type ApiError,
  BadGateway,
  BadGatewayWire,
  BadRequest,
  BadRequestWire,
  Forbidden,
  ForbiddenWire,
  GatewayAuthorization,
  ServiceUnavailableWire,
  TooManyRequests,
  TooManyRequestsWire,
  Unauthorized,
  UnauthorizedWire
} from "../domain/api.js"
import { bindToHost } from "../domain/gateway.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"
import { Metrics } from "../services/Metrics.js"

/** The gateway cannot start with this auth configuration; says which setting to change. */
export class GatewayAuthConfigError extends Schema.TaggedError<GatewayAuthConfigError>()("GatewayAuthConfigError", {
  kind: Schema.Literal("gateway-auth-config"),
  message: Schema.String
}) {}

export interface GatewayAuthSettings {
  /** `token`/`password`: `Authorization: Bearer <secret>` on every protected request, loopback included. */
  readonly mode: "token" | "password" | "none"
  readonly secret: Option.Option<Redacted.Redacted<string>>
}

const isLoopbackHost = (host: string) => host === "127.0.0.1" || host === "::1" || host.startsWith("127.")

/**
 * Reads `gateway.auth` and refuses what must not run: token/password mode without its secret, and a
 * non-loopback bind without credentials (anyone on the network could drive the bot).
 */
export const resolveGatewayAuth = Effect.gen(function*() {
  const { config, secretOption } = yield* ConfigSecrets
  const auth = config.gateway.auth
  const bind = config.gateway.bind
  const read = (path: "gateway.auth.token" | "gateway.auth.password") =>
    secretOption(path).pipe(
      Effect.mapError((e) => new GatewayAuthConfigError({ kind: "gateway-auth-config", message: e.message })),
      // An empty secret would accept `Authorization: Bearer ` from anyone.
      Effect.map(Option.filter((r) => Redacted.value(r).trim() !== ""))
    )
  const token = auth?.token !== undefined ? yield* read("gateway.auth.token") : Option.none()
  const password = auth?.password !== undefined ? yield* read("gateway.auth.password") : Option.none()
  const mode = auth?.mode ?? (Option.isSome(token) ? "token" : Option.isSome(password) ? "password" : "none")
  const secret = mode === "token" ? token : mode === "password" ? password : Option.none()
  if (mode !== "none" && Option.isNone(secret)) {
    return yield* new GatewayAuthConfigError({
      kind: "gateway-auth-config",
      message: `gateway.auth.mode is "${mode}" but gateway.auth.${mode} is empty or not set. Set it, e.g. ` +
        `"${mode}": "\${CARAPACE_GATEWAY_TOKEN}" with CARAPACE_GATEWAY_TOKEN exported (openssl rand -hex 32).`
    })
  }
  const host = bindToHost(bind) ?? bind
  if (mode === "none" && !isLoopbackHost(host)) {
    return yield* new GatewayAuthConfigError({
      kind: "gateway-auth-config",
      message: `refusing to listen on non-loopback gateway.bind "${bind}" without gateway auth. Set gateway.auth.mode ` +
        `to "token" with gateway.auth.token (e.g. "\${CARAPACE_GATEWAY_TOKEN}"), or use gateway.bind "loopback".`
    })
  }
  return { mode, secret } satisfies GatewayAuthSettings
})

/** Renders an API error with its status (and `Retry-After` when it has `retryAfterMs`). */
export const errorResponse = (e: ApiError): HttpServerResponse.HttpServerResponse => {
  const [body, status] = e instanceof BadRequest
    ? [Schema.encodeSync(BadRequestWire)(e), 400]
    : e instanceof Unauthorized
    ? [Schema.encodeSync(UnauthorizedWire)(e), 401]
    : e instanceof Forbidden
    ? [Schema.encodeSync(ForbiddenWire)(e), 403]
    : e instanceof TooManyRequests
    ? [Schema.encodeSync(TooManyRequestsWire)(e), 429]
    : e instanceof BadGateway
    ? [Schema.encodeSync(BadGatewayWire)(e), 502]
    : [Schema.encodeSync(ServiceUnavailableWire)(e), 503]
  const headers: Record<string, string> = e.retryAfterMs !== undefined
    ? { "retry-after": String(Math.max(1, Math.ceil(e.retryAfterMs / 1000))) }
    : {}
  return HttpServerResponse.unsafeJson(body, { status, headers })
}

// ---------------------------------------------------------------------------------------------------------
// The guard: shared by the HttpApi middleware and the WebSocket upgrade.

// Query parameter names that look like a credential: a token in a URL lands in proxy and shell logs.
const CREDENTIAL_PARAMS = new Set(["token", "access_token", "auth", "auth_token", "authorization", "bearer", "password", "key", "api_key"])

interface Bucket {
  tokens: number
  at: number
}

/** Reference §9.3: first matching prefix wins. */
const RATE_RULES: ReadonlyArray<readonly [prefix: string, perSecond: number, burst: number]> = [
  ["/control/matrix/verifications/", 5, 10],
  ["/control/matrix/verifications", 60, 120],
  ["/control/matrix/send-test", 5, 10],
  ["", 100, 200]
]
const MAX_BUCKETS = 4096

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest()

/** Constant-time: both sides hashed to 32 bytes first, so neither length nor content leaks through timing. */
export const secretMatches = (given: string, expected: Redacted.Redacted<string>): boolean =>
  timingSafeEqual(digest(given), digest(Redacted.value(expected)))

export interface GatewayGuardShape {
  /** Checks one request: credential placement, rate limit, CSRF origin, then the bearer secret. */
  readonly authorize: (
    request: HttpServerRequest.HttpServerRequest
  ) => Effect.Effect<void, Unauthorized | Forbidden | TooManyRequests>
}

export class GatewayGuard extends Context.Tag("cara/GatewayGuard")<GatewayGuard, GatewayGuardShape>() {}

const unauthorized = () =>
  new Unauthorized({
    kind: "unauthorized",
    message: "missing or wrong gateway credential: send `Authorization: Bearer <gateway.auth.token>` " +
      "(the CLI reads CARAPACE_GATEWAY_TOKEN or the config)"
  })

const isLoopbackPeer = (address: Option.Option<string>) =>
  Option.match(address, {
    onNone: () => false,
    onSome: (a) => isLoopbackHost(a.startsWith("::ffff:") ? a.slice(7) : a)
  })

const hasForwardingHeaders = (headers: Readonly<Record<string, string | undefined>>) =>
  headers["x-forwarded-for"] !== undefined || headers["x-real-ip"] !== undefined ||
  headers["forwarded"] !== undefined || headers["x-forwarded-host"] !== undefined

const hostOf = (url: string): string | undefined => {
  try {
    return new URL(url).host.toLowerCase()
  } catch {
    return undefined
  }
}

export const makeGatewayGuard = (settings: GatewayAuthSettings) =>
  Effect.gen(function*() {
    const metrics = yield* Metrics
    const buckets = new Map<string, Bucket>()

    const rateLimited = (key: string, path: string, now: number): number | undefined => {
      const [prefix, rate, burst] = RATE_RULES.find(([p]) => path.startsWith(p))!
      const id = `${key} ${prefix}`
      let b = buckets.get(id)
      if (b === undefined) {
        // Oldest-inserted first: a flood of new addresses cannot grow the map without bound.
        if (buckets.size >= MAX_BUCKETS) buckets.delete(buckets.keys().next().value!)
        buckets.set(id, b = { tokens: burst, at: now })
      }
      b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate)
      b.at = now
      if (b.tokens >= 1) {
        b.tokens -= 1
        return undefined
      }
      return Math.max(1, Math.ceil(((1 - b.tokens) / rate) * 1000))
    }

    const authorize: GatewayGuardShape["authorize"] = (request) =>
      Effect.gen(function*() {
        const url = new URL(request.url, "http://gateway.invalid")
        const path = url.pathname
        for (const name of url.searchParams.keys()) {
          if (CREDENTIAL_PARAMS.has(name.toLowerCase())) {
            yield* metrics.increment("carapace_gateway_auth_failures_total", { reason: "token-in-query" })
            return yield* new Unauthorized({
              kind: "token-in-query",
              message: `credentials in the query string (\`${name}\`) are refused: they end up in logs. ` +
                "Send `Authorization: Bearer <token>` instead, and rotate the token if it was exposed."
            })
          }
        }
        const local = isLoopbackPeer(request.remoteAddress) && !hasForwardingHeaders(request.headers)
        if (!local) {
          const key = Option.getOrElse(request.remoteAddress, () => "unknown")
          const retryAfterMs = rateLimited(key, path, yield* Clock.currentTimeMillis)
          if (retryAfterMs !== undefined) {
            yield* metrics.increment("carapace_gateway_rate_limited_total")
            return yield* new TooManyRequests({
              kind: "rate-limited",
              message: "too many requests from this address; wait and retry",
              retryAfterMs
            })
          }
        }
        // CSRF (reference §9.2): a browser page on another origin must not drive state changes. There are no
        // cookie sessions, so only the origin rule applies; the CLI sends no Origin and passes.
        if (request.method !== "GET" && request.method !== "HEAD" && path.startsWith("/control/")) {
          const origin = request.headers["origin"] ?? request.headers["referer"]
          const host = request.headers["host"]?.toLowerCase()
          if (origin !== undefined && (host === undefined || hostOf(origin) !== host)) {
            yield* metrics.increment("carapace_gateway_auth_failures_total", { reason: "csrf" })
            return yield* new Forbidden({
              kind: "csrf-origin-mismatch",
              message: "Origin mismatch: state-changing control requests are refused from another origin"
            })
          }
        }
        if (settings.mode === "none") {
          if (local) return
          yield* metrics.increment("carapace_gateway_auth_failures_total", { reason: "non-local" })
          return yield* new Forbidden({
            kind: "non-local-client",
            message: "gateway auth is off, so only local clients are served; set gateway.auth.mode \"token\" for remote control"
          })
        }
        const header = request.headers["authorization"] ?? ""
        const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)
        const secret = Option.getOrThrow(settings.secret)
        if (match === null || !secretMatches(match[1]!, secret)) {
          yield* metrics.increment("carapace_gateway_auth_failures_total", { reason: match === null ? "missing" : "wrong" })
          return yield* unauthorized()
        }
      })

    return { authorize } satisfies GatewayGuardShape
  })

export const GatewayGuardWith = (settings: GatewayAuthSettings) => Layer.effect(GatewayGuard, makeGatewayGuard(settings))

/** The guard from the loaded config (fails startup on a refused auth configuration). */
export const GatewayGuardLive = Layer.effect(GatewayGuard, Effect.flatMap(resolveGatewayAuth, makeGatewayGuard))

/** The HttpApi middleware for the `control` and `matrix` groups. */
export const GatewayAuthorizationLive = Layer.effect(
  GatewayAuthorization,
  Effect.map(GatewayGuard, (guard) => Effect.flatMap(HttpServerRequest.HttpServerRequest, guard.authorize))
)
