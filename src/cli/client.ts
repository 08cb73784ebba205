import * as dns from "node:dns/promises"
import * as net from "node:net"
import * as Options from "@effect/cli/Options"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as HttpApiClient from "@effect/platform/HttpApiClient"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { Effect, Option, Redacted, Schema } from "effect"
import { CaraApi } from "../domain/api.js"
import type { CaraConfig } from "../domain/config.js"
import { DEFAULT_GATEWAY_PORT } from "../domain/gateway.js"
import { type ConfigEnv, loadConfigSnapshot } from "../layers/ConfigSecretsLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"

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

/** A literal loopback address: 127.0.0.0/8 or ::1 (bracketed or not). Names other than `localhost` never are. */
export const isLoopbackLiteral = (host: string): boolean => {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host
  if (net.isIPv4(bare)) return bare.split(".")[0] === "127"
  return net.isIPv6(bare) && (bare === "::1" || /^(0{1,4}:){7}0{0,3}1$/.test(bare) || bare === "0:0:0:0:0:0:0:1")
}

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
export const resolveTarget = (
  flags: { readonly host: Option.Option<string>; readonly port: Option.Option<number> },
  env: ConfigEnv = process.env
) =>
  Effect.gen(function*() {
    const snapshot = yield* loadConfigSnapshot(env).pipe(Effect.provide(StateDirLive), Effect.option)
    const config = Option.map(snapshot, (s) => s.config)
    const fromConfig = (path: string) =>
      Option.flatMap(snapshot, (s) => {
        const slot = s.secrets.get(path)
        return slot?.state === "open" ? Option.some(slot.value) : Option.none()
      })
    const envToken = (env["CARAPACE_GATEWAY_TOKEN"] ?? "").trim()
    const token = envToken !== ""
      ? Option.some(Redacted.make(envToken))
      : Option.orElse(fromConfig("gateway.auth.token"), () => fromConfig("gateway.auth.password"))
    const host = Option.getOrElse(flags.host, () => "127.0.0.1")
    const port = Option.getOrElse(flags.port, () => Option.match(config, { onNone: () => DEFAULT_GATEWAY_PORT, onSome: (c) => c.gateway.port }))
    return { host, port, token, config } satisfies GatewayTarget
  })

export const baseUrl = (t: GatewayTarget) => `http://${t.host.includes(":") && !t.host.startsWith("[") ? `[${t.host}]` : t.host}:${t.port}`

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
  }).pipe(Effect.provide(FetchHttpClient.layer))

/** Removes characters a terminal would interpret (escape sequences, bidi overrides) from daemon-supplied text. */
export const terminalSafe = (s: string) => s.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, "")

/** The HTTP status of each error class of the API contract (src/domain/api.ts), by its tag. */
const API_ERROR_STATUS: Readonly<Record<string, number>> = {
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

/** A transport or API failure as one line, without the URL (it may carry a path the operator typed). */
export const describeClientError = (e: unknown): { readonly kind?: string; readonly message: string } => {
  if (typeof e === "object" && e !== null) {
    const tagged = e as { _tag?: string; kind?: unknown; message?: unknown; reason?: unknown; cause?: unknown }
    if (typeof tagged.kind === "string" && typeof tagged.message === "string") {
      // An answer of the daemon's API reads as the seed writes it: `409 VerificationFlowNotReady: …`.
      const status = typeof tagged._tag === "string" ? API_ERROR_STATUS[tagged._tag] : undefined
      const text = terminalSafe(tagged.message)
      return { kind: tagged.kind, message: status === undefined ? text : `${status} ${tagged._tag}: ${text}` }
    }
    if (tagged._tag === "RequestError") {
      // fetch wraps the socket error (ECONNREFUSED, ...) a level or two down the cause chain.
      let c: unknown = tagged.cause
      let code: string | undefined
      let innermost: string | undefined
      for (let i = 0; i < 5 && c !== undefined && c !== null && code === undefined; i++) {
        const x = c as { code?: unknown; errors?: ReadonlyArray<{ code?: unknown }>; cause?: unknown }
        code = typeof x.code === "string" ? x.code : typeof x.errors?.[0]?.code === "string" ? String(x.errors[0].code) : undefined
        if (c instanceof Error) innermost = c.message
        c = x.cause
      }
      return { kind: "gateway-unreachable", message: terminalSafe(code ?? innermost ?? "connection failed") }
    }
    if (tagged._tag === "ResponseError") {
      return { kind: "gateway-bad-response", message: terminalSafe(`unexpected response (${String(tagged.reason)})`) }
    }
    if (tagged._tag === "TimeoutException") return { kind: "gateway-timeout", message: "the gateway did not answer in time" }
    if (tagged._tag === "ParseError") return { kind: "gateway-bad-response", message: "the gateway's answer does not match this cara version's API" }
  }
  return { message: "unexpected failure" }
}

/** `--host` / `--port` of every command that talks to the daemon (defaults resolved by `resolveTarget`). */
export const hostOption = Options.text("host").pipe(Options.withDescription("gateway host (default 127.0.0.1)"), Options.optional)
export const portOption = Options.integer("port").pipe(
  Options.withAlias("p"),
  Options.withDescription(`gateway port (default: gateway.port from the config, else ${DEFAULT_GATEWAY_PORT})`),
  Options.optional
)
