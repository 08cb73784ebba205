import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as HttpApiClient from "@effect/platform/HttpApiClient"
import type * as HttpApiError from "@effect/platform/HttpApiError"
import * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { type Cause, Context, Effect, Layer, Option, type ParseResult, Redacted, Schema } from "effect"
import * as dns from "node:dns/promises"
import * as http from "node:http"
import * as https from "node:https"
import { type ApiError, CaraApi } from "../domain/api.js"
import type { CaraConfig } from "../domain/config.js"
import { DEFAULT_GATEWAY_PORT } from "../domain/gateway.js"
import { REMEDIATION, type RemediationKind } from "../domain/remediation.js"
import type {
  InvalidVerificationUser,
  VerificationFailed,
  VerificationFlowNotFound,
  VerificationFlowNotReady,
  VerificationFlowTerminal,
  VerificationTargetNotFound,
  VerificationTimeout
} from "../domain/verification.js"
import { type ConfigEnv, loadConfigSnapshot } from "../layers/ConfigSecretsLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { isLoopbackLiteral } from "./loopback.js"
import { answeredLine, type Described, terminalSafe, withRemediation } from "./render.js"

/** The CLI cannot talk to the gateway as asked; the message says what to change. */
export class GatewayClientError extends Schema.TaggedError<GatewayClientError>()("GatewayClientError", {
  kind: Schema.Literal("gateway-plaintext-remote"),
  message: Schema.String
}) {}

export interface GatewayTarget {
  readonly host: string
  readonly port: number
  /** `CARAPACE_GATEWAY_TOKEN`, else the config's gateway.auth.token (or password). Never printed. */
  readonly token: Option.Option<Redacted.Redacted<string>>
  /** The config as the CLI sees it (`None` when it could not be read). */
  readonly config: Option.Option<CaraConfig>
}

export { isLoopbackLiteral } from "./loopback.js"

/**
 * Whether the bearer may go to `host`: a literal loopback address, or exactly `localhost` when every address
 * it resolves to is loopback (a hosts file can point it elsewhere). `127.attacker.example` is a name, not an
 * address, and is refused however it resolves.
 */
export const isLoopbackTarget = (
  host: string,
  resolve: (name: string) => Promise<ReadonlyArray<string>> = async (name) =>
    (await dns.lookup(name, { all: true, verbatim: true })).map((a) => a.address)
) =>
  isLoopbackLiteral(host)
    ? Effect.succeed(true)
    : host.toLowerCase() !== "localhost"
    ? Effect.succeed(false)
    : Effect.tryPromise(() => resolve(host)).pipe(
      Effect.map((addresses) => addresses.length > 0 && addresses.every(isLoopbackLiteral)),
      Effect.orElseSucceed(() => false)
    )

/**
 * Where the daemon is and how to authenticate: flags, then the config (`gateway.port`), then defaults.
 * The config is read with the caller's environment, so sealed values open when CARAPACE_CONFIG_PASSWORD is set.
 */
/** The config paths the CLI may authenticate to the daemon with, in order of preference. */
const GATEWAY_CREDENTIALS: ReadonlyArray<string> = ["gateway.auth.token", "gateway.auth.password"]

export const resolveTarget = (
  flags: { readonly host: Option.Option<string>; readonly port: Option.Option<number> },
  env: ConfigEnv = process.env
) =>
  Effect.gen(function*() {
    const envToken = (env["CARAPACE_GATEWAY_TOKEN"] ?? "").trim()
    // only the gateway credential is opened (one Argon2id derivation each), and none when the env gives it
    const snapshot = yield* loadConfigSnapshot(
      env,
      undefined,
      (path) => envToken === "" && GATEWAY_CREDENTIALS.includes(path)
    ).pipe(Effect.provide(StateDirLive), Effect.option)
    const config = Option.map(snapshot, (s) => s.config)
    const fromConfig = (path: string) =>
      Option.flatMap(snapshot, (s) => {
        const slot = s.secrets.get(path)
        return slot?.state === "open" ? Option.some(slot.value) : Option.none()
      })
    const token = envToken !== ""
      ? Option.some(Redacted.make(envToken))
      : Option.orElse(fromConfig(GATEWAY_CREDENTIALS[0]!), () => fromConfig(GATEWAY_CREDENTIALS[1]!))
    const host = Option.getOrElse(flags.host, () => "127.0.0.1")
    const port = Option.getOrElse(flags.port, () =>
      Option.match(config, { onNone: () => DEFAULT_GATEWAY_PORT, onSome: (c) => c.gateway.port }))
    return { host, port, token, config } satisfies GatewayTarget
  })

export const baseUrl = (t: GatewayTarget) =>
  `http://${t.host.includes(":") && !t.host.startsWith("[") ? `[${t.host}]` : t.host}:${t.port}`

/**
 * node:http under the client (fetch would load Node's bundled undici, ~1 MB of JavaScript, for each command).
 * Agents without keep-alive, alive as long as the client that holds them: no socket outlives its request.
 */
const NodeHttpLive = NodeHttpClient.layerWithoutAgent.pipe(
  Layer.provide(Layer.sync(NodeHttpClient.HttpAgent, (): NodeHttpClient.HttpAgent => ({
    [NodeHttpClient.HttpAgentTypeId]: NodeHttpClient.HttpAgentTypeId,
    http: new http.Agent(),
    https: new https.Agent()
  })))
)

/**
 * The typed client derived from the one HttpApi definition. The bearer is attached only for loopback
 * hosts: over plain HTTP to another host it would travel in clear text.
 */
export const gatewayClient = (t: GatewayTarget) =>
  Effect.gen(function*() {
    if (Option.isSome(t.token) && !(yield* isLoopbackTarget(t.host))) {
      return yield* new GatewayClientError({
        kind: "gateway-plaintext-remote",
        message: `refusing to send the gateway credential over plaintext HTTP to non-loopback host '${t.host}'. ` +
          "For remote control, tunnel to localhost (ssh -L 18789:127.0.0.1:18789 host) and use --host 127.0.0.1."
      })
    }
    return yield* HttpApiClient.make(CaraApi, {
      baseUrl: baseUrl(t),
      transformClient: Option.match(t.token, {
        onNone: () => (c: HttpClient.HttpClient) => c,
        onSome: (token) => HttpClient.mapRequest(HttpClientRequest.bearerToken(Redacted.value(token)))
      })
    })
  }).pipe(Effect.provide(NodeHttpLive))

export { terminalSafe } from "./render.js"

// ---------------------------------------------------------------------------------------------------------
// Errors: every failure of a call, by its decoded class (Effect.catchTags), as one line with its kind and the
// remediation of src/domain/remediation.ts (stated there once).

type VerificationError =
  | VerificationFlowNotFound
  | VerificationFlowNotReady
  | VerificationFlowTerminal
  | VerificationTargetNotFound
  | InvalidVerificationUser
  | VerificationFailed
  | VerificationTimeout

/** What a call through the typed client can fail with. */
export type ClientError =
  | ApiError
  | VerificationError
  | HttpClientError.HttpClientError
  | ParseResult.ParseError
  | HttpApiError.HttpApiDecodeError
  | Cause.TimeoutException
  | GatewayClientError

/** The HTTP status of each error class of the API contract (src/domain/api.ts), by its tag. */
const API_ERROR_STATUS: { readonly [K in (ApiError | VerificationError)["_tag"]]: number } = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  UnsupportedMediaType: 415,
  TooManyRequests: 429,
  BadGateway: 502,
  ServiceUnavailable: 503,
  VerificationFlowNotFound: 404,
  VerificationTargetNotFound: 404,
  VerificationFlowNotReady: 409,
  VerificationFlowTerminal: 410,
  InvalidVerificationUser: 422,
  VerificationFailed: 502,
  VerificationTimeout: 504
}

// An answer of the daemon's API reads as the seed writes it: `409 VerificationFlowNotReady: …`.
const answered = (e: ApiError | VerificationError): Described => ({
  kind: e.kind,
  message: answeredLine(API_ERROR_STATUS[e._tag], e._tag, e.message)
})

// fetch wraps the socket error (ECONNREFUSED, ...) a level or two down the cause chain.
const socketError = (cause: unknown): string => {
  let c: unknown = cause
  let code: string | undefined
  let innermost: string | undefined
  for (let i = 0; i < 5 && c !== undefined && c !== null && code === undefined; i++) {
    const x = c as { code?: unknown; errors?: ReadonlyArray<{ code?: unknown }>; cause?: unknown }
    code = typeof x.code === "string"
      ? x.code
      : typeof x.errors?.[0]?.code === "string"
      ? String(x.errors[0].code)
      : undefined
    if (c instanceof Error) innermost = c.message
    c = x.cause
  }
  return terminalSafe(code ?? innermost ?? "connection failed")
}

/** One case per class a call can fail with; the same table serves `describeClientError` and `gatewayCall`. */
const CASES = {
  BadRequest: answered,
  Unauthorized: answered,
  Forbidden: answered,
  NotFound: answered,
  UnsupportedMediaType: answered,
  TooManyRequests: answered,
  BadGateway: answered,
  ServiceUnavailable: answered,
  VerificationFlowNotFound: answered,
  VerificationTargetNotFound: answered,
  VerificationFlowNotReady: answered,
  VerificationFlowTerminal: answered,
  InvalidVerificationUser: answered,
  VerificationFailed: answered,
  VerificationTimeout: answered,
  RequestError: (e: HttpClientError.RequestError): Described => ({
    kind: "gateway-unreachable",
    message: socketError(e.cause)
  }),
  ResponseError: (e: HttpClientError.ResponseError): Described => ({
    kind: "gateway-bad-response",
    message: terminalSafe(`unexpected response (${String(e.reason)})`)
  }),
  TimeoutException: (): Described => ({ kind: "gateway-timeout", message: "the gateway did not answer in time" }),
  ParseError: (): Described => ({
    kind: "gateway-bad-response",
    message: "the gateway's answer does not match this cara version's API"
  }),
  HttpApiDecodeError: (): Described => ({
    kind: "gateway-bad-response",
    message: "the gateway's answer does not match this cara version's API"
  }),
  GatewayClientError: (e: GatewayClientError): Described => ({ kind: e.kind, message: e.message })
} satisfies { readonly [K in ClientError["_tag"]]: (e: Extract<ClientError, { _tag: K }>) => Described }

/** A transport or API failure as one line, without the URL (it may carry a path the operator typed). */
export const describeClientError = (e: unknown): Described => {
  const tag = typeof e === "object" && e !== null ? (e as { _tag?: unknown })._tag : undefined
  const known = typeof tag === "string" && Object.hasOwn(CASES, tag)
    ? (CASES as Record<string, (e: unknown) => Described>)[tag]
    : undefined
  return known !== undefined ? known(e) : { message: "unexpected failure" }
}

/** A call of the gateway failed: the kind, the line, and what to do (once). */
export class GatewayCallError extends Schema.TaggedError<GatewayCallError>()("GatewayCallError", {
  kind: Schema.Literal(
    ...(Object.keys(REMEDIATION) as [RemediationKind]),
    "gateway-call-failed",
    "verification-call-failed"
  ),
  message: Schema.String
}) {}

type FallbackKind = "gateway-call-failed" | "verification-call-failed"

const withAdvice = (d: Described, fallbackKind: FallbackKind): GatewayCallError =>
  new GatewayCallError(withRemediation(d, fallbackKind) as { kind: GatewayCallError["kind"]; message: string })

/** `describeClientError` with the remediation appended: for callers holding an error value. */
export const callError = (e: unknown, fallbackKind: FallbackKind = "gateway-call-failed"): GatewayCallError =>
  withAdvice(describeClientError(e), fallbackKind)

const fail = <E extends ClientError>(f: (e: E) => Described) => (e: E) =>
  Effect.fail(withAdvice(f(e), "gateway-call-failed"))

/** Renders every failure of a gateway call by its decoded class (one case each) as a `GatewayCallError`. */
export const gatewayCall = <A, R>(self: Effect.Effect<A, ClientError, R>): Effect.Effect<A, GatewayCallError, R> =>
  Effect.catchTags(self, {
    BadRequest: fail(CASES.BadRequest),
    Unauthorized: fail(CASES.Unauthorized),
    Forbidden: fail(CASES.Forbidden),
    NotFound: fail(CASES.NotFound),
    UnsupportedMediaType: fail(CASES.UnsupportedMediaType),
    TooManyRequests: fail(CASES.TooManyRequests),
    BadGateway: fail(CASES.BadGateway),
    ServiceUnavailable: fail(CASES.ServiceUnavailable),
    VerificationFlowNotFound: fail(CASES.VerificationFlowNotFound),
    VerificationTargetNotFound: fail(CASES.VerificationTargetNotFound),
    VerificationFlowNotReady: fail(CASES.VerificationFlowNotReady),
    VerificationFlowTerminal: fail(CASES.VerificationFlowTerminal),
    InvalidVerificationUser: fail(CASES.InvalidVerificationUser),
    VerificationFailed: fail(CASES.VerificationFailed),
    VerificationTimeout: fail(CASES.VerificationTimeout),
    RequestError: fail(CASES.RequestError),
    ResponseError: fail(CASES.ResponseError),
    TimeoutException: fail(CASES.TimeoutException),
    ParseError: fail(CASES.ParseError),
    HttpApiDecodeError: fail(CASES.HttpApiDecodeError),
    GatewayClientError: fail(CASES.GatewayClientError)
  })

// ---------------------------------------------------------------------------------------------------------
// The client as a service of the commands that talk to the daemon

/** `--host` / `--port` as given on the command line. */
export class GatewayFlags extends Context.Tag("cara/cli/GatewayFlags")<GatewayFlags, {
  readonly host: Option.Option<string>
  readonly port: Option.Option<number>
}>() {}

/** The typed client of the running daemon, where the flags and the config say it is. */
export class GatewayClient extends Effect.Service<GatewayClient>()("cara/cli/GatewayClient", {
  effect: Effect.gen(function*() {
    const target = yield* resolveTarget(yield* GatewayFlags)
    const api = yield* gatewayClient(target).pipe(gatewayCall)
    return { target, api }
  })
}) {
  /** The client for these flags. */
  static readonly at = (flags: Context.Tag.Service<GatewayFlags>) =>
    GatewayClient.Default.pipe(Layer.provide(Layer.succeed(GatewayFlags, flags)))
}
