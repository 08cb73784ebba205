import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Clock, Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import {
  type ApiError,
  BadGateway,
  BadGatewayWire,
  BadRequest,
  BadRequestWire,
  Forbidden,
  ForbiddenWire,
  GatewayAuthorization,
  NotFound,
  NotFoundWire,
  ServiceUnavailableWire,
  TooManyRequests,
  TooManyRequestsWire,
  Unauthorized,
  UnauthorizedWire,
  UnsupportedMediaType,
  UnsupportedMediaTypeWire
} from "../domain/api.js"
import { bindToHost } from "../domain/gateway.js"
import { makeKeyedBuckets } from "../domain/rateLimit.js"
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
  /** `gateway.allowedHosts`: extra `Host` names accepted besides loopback (see `hostAllowed`). */
  readonly allowedHosts?: ReadonlyArray<string>
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
  const host = bindToHost(bind) ?? bind
  // Fail closed: auth is off only when the config says so in as many words. A missing `gateway.auth`, or a
  // token that resolved to nothing (an unset variable), must not quietly open the control plane.
  if (auth === undefined || auth === null) {
    return yield* new GatewayAuthConfigError({
      kind: "gateway-auth-config",
      message: "gateway.auth is not configured, so the control API would be open. Set gateway.auth to " +
        `{ mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" } and export CARAPACE_GATEWAY_TOKEN ` +
        `(e.g. export CARAPACE_GATEWAY_TOKEN=$(openssl rand -hex 32)); only for a loopback-only test setup, ` +
        `gateway.auth.mode "none" turns auth off explicitly.`
    })
  }
  const mode = auth.mode ?? (auth.password !== undefined && auth.token === undefined ? "password" : "token")
  const secret = mode === "token" ? token : mode === "password" ? password : Option.none()
  if (mode !== "none" && Option.isNone(secret)) {
    const variable = mode === "token" ? "CARAPACE_GATEWAY_TOKEN" : "CARAPACE_GATEWAY_PASSWORD"
    return yield* new GatewayAuthConfigError({
      kind: "gateway-auth-config",
      message: `gateway.auth.mode is "${mode}" but gateway.auth.${mode} is empty or not set. Set it, e.g. ` +
        `"${mode}": "\${${variable}}", and export ${variable} (e.g. export ${variable}=$(openssl rand -hex 32)).`
    })
  }
  if (mode === "none" && !isLoopbackHost(host)) {
    return yield* new GatewayAuthConfigError({
      kind: "gateway-auth-config",
      message:
        `refusing to listen on non-loopback gateway.bind "${bind}" without gateway auth. Set gateway.auth.mode ` +
        `to "token" with gateway.auth.token (e.g. "\${CARAPACE_GATEWAY_TOKEN}"), or use gateway.bind "loopback".`
    })
  }
  if (mode === "none") {
    yield* Effect.logWarning(
      "gateway.auth.mode is \"none\": the control API on loopback accepts every local process without a token. " +
        "Set gateway.auth.mode \"token\" with CARAPACE_GATEWAY_TOKEN unless this is a throwaway test setup."
    )
  }
  return { mode, secret, allowedHosts: config.gateway.allowedHosts ?? [] } satisfies GatewayAuthSettings
})

// ---------------------------------------------------------------------------------------------------------
// Request-shape rules applied before routing, whatever the auth mode (a browser page must not be able to
// drive the daemon even when auth is off).

const UNRESERVED = /^[A-Za-z0-9._~-]$/

/**
 * The path as the router and every guard must see it, or `undefined` when it has a spelling the router
 * might fold onto a route while a prefix check misses it: `//`, `.`/`..` segments, an encoded unreserved
 * character or slash (`%63ontrol`, `%2F`), or upper case in the fixed segments (`/CONTROL/`). Such paths
 * answer 404 instead of being normalised, so there is exactly one spelling per route.
 */
export const canonicalPath = (rawUrl: string): string | undefined => {
  const q = rawUrl.search(/[?#]/)
  const raw = q === -1 ? rawUrl : rawUrl.slice(0, q)
  if (!raw.startsWith("/") || raw.startsWith("//") || raw.includes("\\")) return undefined
  const segments = raw.slice(1).split("/")
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!
    if (seg === "" && i !== segments.length - 1) return undefined
    if (seg === "." || seg === "..") return undefined
    for (const m of seg.matchAll(/%([0-9A-Fa-f]{2})?/g)) {
      if (m[1] === undefined) return undefined
      const ch = String.fromCharCode(parseInt(m[1], 16))
      if (UNRESERVED.test(ch) || ch === "/" || ch === "\\" || ch === ".") return undefined
    }
    // Ids (flow ids, DLQ ids) sit after the fixed words; the fixed words are lower case.
    const isId = segments[0] === "control" && segments[1] === "matrix" && i === 3
    if (!isId && seg !== seg.toLowerCase()) return undefined
  }
  return raw
}

export const NON_CANONICAL_MESSAGE =
  "no such endpoint: paths are matched exactly (lower case, no `//`, no `.` segments, no percent-encoded letters)"

const LOOPBACK_NAMES = new Set(["localhost", "127.0.0.1", "[::1]", "::1"])

/**
 * DNS rebinding: a page on evil.example that re-points its name to 127.0.0.1 sends `Host: evil.example`.
 * Only loopback names and addresses (or a configured `gateway.allowedHosts` entry) are served, and, when
 * the listening port is known, only with that port.
 */
export const hostAllowed = (
  hostHeader: string | undefined,
  allowed: ReadonlyArray<string>,
  boundPort: number | undefined
): boolean => {
  if (hostHeader === undefined) return false
  const h = hostHeader.trim().toLowerCase()
  const m = /^(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$/.exec(h)
  if (m === null) return false
  const name = m[1]!
  const port = m[2] === undefined ? undefined : Number(m[2])
  if (boundPort !== undefined && (port ?? 80) !== boundPort) return false
  if (LOOPBACK_NAMES.has(name) || /^127(\.\d{1,3}){3}$/.test(name)) return true
  return allowed.some((a) => a.trim().toLowerCase() === name || a.trim().toLowerCase() === h)
}

const STATE_CHANGING = (method: string) => method !== "GET" && method !== "HEAD" && method !== "OPTIONS"

/** `application/json` (with optional parameters): the only body type a browser cannot send without a preflight. */
export const isJsonContentType = (value: string | undefined): boolean =>
  value !== undefined && /^application\/json\s*(;|$)/i.test(value.trim())

/** Renders an API error with its status (and `Retry-After` when it has `retryAfterMs`). */
export const errorResponse = (e: ApiError): HttpServerResponse.HttpServerResponse => {
  const [body, status] = e instanceof BadRequest
    ? [Schema.encodeSync(BadRequestWire)(e), 400]
    : e instanceof Unauthorized
    ? [Schema.encodeSync(UnauthorizedWire)(e), 401]
    : e instanceof Forbidden
    ? [Schema.encodeSync(ForbiddenWire)(e), 403]
    : e instanceof NotFound
    ? [Schema.encodeSync(NotFoundWire)(e), 404]
    : e instanceof UnsupportedMediaType
    ? [Schema.encodeSync(UnsupportedMediaTypeWire)(e), 415]
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
const CREDENTIAL_PARAMS = new Set([
  "token",
  "access_token",
  "auth",
  "auth_token",
  "authorization",
  "bearer",
  "password",
  "key",
  "api_key"
])

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
  ) => Effect.Effect<void, Unauthorized | Forbidden | UnsupportedMediaType | TooManyRequests>
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

type Refusal = Unauthorized | Forbidden | UnsupportedMediaType

/**
 * What a browser page could make the operator's browser send: a rebound or foreign Host, a cross-site
 * state change, a WebSocket upgrade, a form-encoded body. Returns the refusal (with its metric reason), if any.
 */
const browserRefusal = (
  request: HttpServerRequest.HttpServerRequest,
  path: string,
  allowedHosts: ReadonlyArray<string>
): readonly [reason: string, Refusal] | undefined => {
  const localPort = (request.source as { socket?: { localPort?: number } } | undefined)?.socket?.localPort
  if (!hostAllowed(request.headers["host"], allowedHosts, localPort)) {
    return [
      "host",
      new Forbidden({
        kind: "host-not-allowed",
        message:
          "the Host header is not a loopback name with the gateway port; add the name to gateway.allowedHosts if it is yours"
      })
    ]
  }
  const origin = request.headers["origin"] ?? request.headers["referer"]
  // A browser sends Origin; the CLI never does. Same-origin means an allowed Host, so a rebound name fails.
  const crossSite = origin !== undefined && (hostOf(origin) !== request.headers["host"]?.toLowerCase())
  if (path === "/ws" && origin !== undefined) {
    return [
      "ws-origin",
      new Forbidden({
        kind: "csrf-origin-mismatch",
        message:
          "WebSocket upgrades from a browser page are refused; connect with a non-browser client and the bearer token"
      })
    ]
  }
  if (!STATE_CHANGING(request.method)) return undefined
  if (crossSite) {
    return [
      "csrf",
      new Forbidden({
        kind: "csrf-origin-mismatch",
        message: "Origin mismatch: state-changing control requests are refused from another origin"
      })
    ]
  }
  const hasBody = Number(request.headers["content-length"] ?? "0") > 0 ||
    request.headers["transfer-encoding"] !== undefined
  const type = request.headers["content-type"]
  if ((hasBody || type !== undefined) && !isJsonContentType(type)) {
    return [
      "content-type",
      new UnsupportedMediaType({
        kind: "unsupported-media-type",
        message: "state-changing requests take a JSON body only: send `Content-Type: application/json`"
      })
    ]
  }
  return undefined
}

/** A credential-looking query parameter: refused, since URLs end up in logs. */
const credentialInQuery = (url: URL): Unauthorized | undefined => {
  for (const name of url.searchParams.keys()) {
    if (CREDENTIAL_PARAMS.has(name.toLowerCase())) {
      return new Unauthorized({
        kind: "token-in-query",
        message: `credentials in the query string (\`${name}\`) are refused: they end up in logs. ` +
          "Send `Authorization: Bearer <token>` instead, and rotate the token if it was exposed."
      })
    }
  }
  return undefined
}

/** Per-address buckets, one set per rule (reference §9.3); milliseconds to wait, or 0 when admitted. */
const makeRateLimiter = () => {
  const rules = RATE_RULES.map(([prefix, perSecond, burst]) => ({
    prefix,
    buckets: makeKeyedBuckets({ burst, refill: perSecond, refillMs: 1000, maxKeys: MAX_BUCKETS, maxKeysPerPeer: 1 })
  }))
  return (address: string, path: string, now: number): number =>
    rules.find((r) => path.startsWith(r.prefix))!.buckets.takeOrWait(address, address, now)
}

export const makeGatewayGuard = (settings: GatewayAuthSettings) =>
  Effect.gen(function*() {
    const metrics = yield* Metrics
    const rateLimited = makeRateLimiter()
    const allowedHosts = settings.allowedHosts ?? []
    const refuse = (reason: string, e: Refusal) =>
      Effect.zipRight(metrics.increment("carapace_gateway_auth_failures_total", { reason }), Effect.fail(e))

    const checkRate = (request: HttpServerRequest.HttpServerRequest, path: string) =>
      Effect.gen(function*() {
        const key = Option.getOrElse(request.remoteAddress, () => "unknown")
        const retryAfterMs = rateLimited(key, path, yield* Clock.currentTimeMillis)
        if (retryAfterMs === 0) return
        yield* metrics.increment("carapace_gateway_rate_limited_total")
        return yield* new TooManyRequests({
          kind: "rate-limited",
          message: "too many requests from this address; wait and retry",
          retryAfterMs
        })
      })

    const checkCredential = (request: HttpServerRequest.HttpServerRequest, local: boolean) => {
      if (settings.mode === "none") {
        return local ? Effect.void : refuse(
          "non-local",
          new Forbidden({
            kind: "non-local-client",
            message:
              "gateway auth is off, so only local clients are served; set gateway.auth.mode \"token\" for remote control"
          })
        )
      }
      const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(request.headers["authorization"] ?? "")
      return match !== null && secretMatches(match[1]!, Option.getOrThrow(settings.secret))
        ? Effect.void
        : refuse(match === null ? "missing" : "wrong", unauthorized())
    }

    const authorize: GatewayGuardShape["authorize"] = (request) =>
      Effect.gen(function*() {
        const path = canonicalPath(request.url)
        if (path === undefined) {
          // ErrorShapingLive answers these 404 before routing; this is the guard's own line for any other caller.
          return yield* refuse(
            "non-canonical-path",
            new Forbidden({ kind: "non-canonical-path", message: NON_CANONICAL_MESSAGE })
          )
        }
        const browser = browserRefusal(request, path, allowedHosts)
        if (browser !== undefined) return yield* refuse(...browser)
        const query = request.url.includes("?") ? request.url.slice(request.url.indexOf("?")) : ""
        const inQuery = credentialInQuery(new URL(path + query, "http://gateway.invalid"))
        if (inQuery !== undefined) return yield* refuse("token-in-query", inQuery)
        const local = isLoopbackPeer(request.remoteAddress) && !hasForwardingHeaders(request.headers)
        if (!local) yield* checkRate(request, path)
        yield* checkCredential(request, local)
      })

    return { authorize } satisfies GatewayGuardShape
  })

export const GatewayGuardWith = (settings: GatewayAuthSettings) =>
  Layer.effect(GatewayGuard, makeGatewayGuard(settings))

/** The guard from the loaded config (fails startup on a refused auth configuration). */
export const GatewayGuardLive = Layer.effect(GatewayGuard, Effect.flatMap(resolveGatewayAuth, makeGatewayGuard))

/** The HttpApi middleware for the `control` and `matrix` groups. */
export const GatewayAuthorizationLive = Layer.effect(
  GatewayAuthorization,
  Effect.map(GatewayGuard, (guard) => Effect.flatMap(HttpServerRequest.HttpServerRequest, guard.authorize))
)
