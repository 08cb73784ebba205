// Finding a user's homeserver from the user id (the Matrix client-server spec's server discovery):
// `https://<server name>/.well-known/matrix/client` names the base URL; without one (404) the server name
// itself is tried; either way the result must answer `/_matrix/client/versions`. Plain http is allowed
// only for loopback names (test servers), never for a real host.
import { Effect, Schema } from "effect"

export class HomeserverDiscoveryError
  extends Schema.TaggedError<HomeserverDiscoveryError>()("HomeserverDiscoveryError", {
    kind: Schema.Literal("homeserver-discovery-failed", "matrix-user-id-invalid", "homeserver-no-password-login"),
    message: Schema.String
  })
{}

const discoveryError = (kind: HomeserverDiscoveryError["kind"], message: string) =>
  new HomeserverDiscoveryError({ kind, message })

/** The server name of `@local:server[:port]`, or undefined when it is not a user id. */
export const serverNameOf = (userId: string): string | undefined => {
  const m = /^@[^:\s]+:([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$/.exec(userId.trim())
  return m === null ? undefined : `${m[1]}${m[2] ?? ""}`
}

const hostOf = (serverName: string) => serverName.replace(/:\d+$/, "").replace(/^\[|\]$/g, "")

/** Loopback names, where a test server may speak plain http. */
export const isLoopbackName = (serverName: string): boolean => {
  const host = hostOf(serverName).toLowerCase()
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host)
}

/** Where discovery looks first: https, or http for a loopback name. */
export const wellKnownUrl = (serverName: string): string =>
  `${isLoopbackName(serverName) ? "http" : "https"}://${serverName}/.well-known/matrix/client`

/** The base URL a `.well-known/matrix/client` document names, without a trailing slash; a reason otherwise. */
export const parseWellKnown = (
  body: unknown,
  serverName: string
): { readonly baseUrl: string } | { readonly problem: string } => {
  const hs = (body as { "m.homeserver"?: { base_url?: unknown } } | null)?.["m.homeserver"]
  const raw = hs?.base_url
  if (typeof raw !== "string" || raw.trim() === "") return { problem: "it has no m.homeserver.base_url" }
  let u: URL
  try {
    u = new URL(raw.trim())
  } catch {
    return { problem: `its m.homeserver.base_url "${raw}" is not a URL` }
  }
  if (u.protocol !== "https:" && !(u.protocol === "http:" && isLoopbackName(u.host) && isLoopbackName(serverName))) {
    return { problem: `its m.homeserver.base_url "${raw}" is not https` }
  }
  return { baseUrl: `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, "")}` }
}

const TIMEOUT_MS = 10_000

const getJson = (url: string) =>
  Effect.tryPromise({
    try: async (signal) => {
      const res = await fetch(url, {
        signal: AbortSignal.any([signal, AbortSignal.timeout(TIMEOUT_MS)]),
        redirect: "follow"
      })
      const text = await res.text()
      let body: unknown = undefined
      try {
        body = JSON.parse(text)
      } catch {
        // not JSON: the caller decides from the status
      }
      return { status: res.status, body }
    },
    catch: (e) => (e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e))
  })

/** `baseUrl` answers the client-server API (`/_matrix/client/versions` lists versions). */
const answersClientApi = (baseUrl: string) =>
  getJson(`${baseUrl}/_matrix/client/versions`).pipe(
    Effect.map((r) => r.status === 200 && Array.isArray((r.body as { versions?: unknown } | undefined)?.versions)),
    Effect.orElseSucceed(() => false)
  )

/**
 * The homeserver base URL for `userId`, found through `.well-known/matrix/client` (or, when the server
 * publishes none, the server name itself) and confirmed by `/_matrix/client/versions`. For `cara setup`,
 * and for the daemon when `matrix.homeserverUrl` is omitted.
 */
export const resolveHomeserverUrl = Effect.fn("Matrix.resolveHomeserverUrl")(function*(
  userId: string,
  /** how the operator gives the URL instead: a flag for `cara setup`, a config key for the daemon */
  explicitly = "--homeserver https://matrix.example.org"
) {
  const server = serverNameOf(userId)
  if (server === undefined) {
    return yield* discoveryError(
      "matrix-user-id-invalid",
      `"${userId}" is not a Matrix user id; write it as @name:example.org`
    )
  }
  const url = wellKnownUrl(server)
  const fallback = `${isLoopbackName(server) ? "http" : "https"}://${server}`
  const found = yield* getJson(url).pipe(Effect.either)
  let candidate = fallback
  let via = `${url} names none, and the server name itself (${fallback})`
  if (found._tag === "Right" && found.right.status === 200) {
    const parsed = parseWellKnown(found.right.body, server)
    if ("problem" in parsed) {
      return yield* discoveryError(
        "homeserver-discovery-failed",
        `${url} is not usable: ${parsed.problem}. Fix it, or give the homeserver URL explicitly (${explicitly}).`
      )
    }
    candidate = parsed.baseUrl
    via = `${url} names ${candidate}, but it`
  }
  if (!(yield* answersClientApi(candidate))) {
    return yield* discoveryError(
      "homeserver-discovery-failed",
      `could not find the homeserver of ${userId}: ${via} does not answer the Matrix client API. Give the homeserver URL explicitly (${explicitly}).`
    )
  }
  return candidate
})

/** The login types the homeserver offers (`GET /_matrix/client/v3/login`). */
export const loginFlows = Effect.fn("Matrix.loginFlows")(function*(baseUrl: string) {
  const r = yield* getJson(`${baseUrl}/_matrix/client/v3/login`).pipe(
    Effect.mapError((reason) =>
      discoveryError(
        "homeserver-discovery-failed",
        `${baseUrl} cannot be reached (${reason}); check the URL and your network`
      )
    )
  )
  const flows = (r.body as { flows?: Array<{ type?: unknown }> } | undefined)?.flows
  if (r.status !== 200 || !Array.isArray(flows)) {
    return yield* discoveryError(
      "homeserver-discovery-failed",
      `${baseUrl} does not answer /_matrix/client/v3/login like a Matrix homeserver (HTTP ${r.status})`
    )
  }
  return flows.flatMap((f) => (typeof f.type === "string" ? [f.type] : []))
})

/** Fails unless the homeserver offers `m.login.password`, which cara's first login and bootstrap need. */
export const requirePasswordLogin = (baseUrl: string) =>
  Effect.flatMap(loginFlows(baseUrl), (flows) =>
    flows.includes("m.login.password")
      ? Effect.void
      : Effect.fail(
        discoveryError(
          "homeserver-no-password-login",
          `${baseUrl} does not offer password login (it offers: ${
            flows.join(", ") || "nothing"
          }). cara logs in with the bot account's password the first time; use a homeserver (or an account) that allows it.`
        )
      ))

/**
 * The homeserver of a Matrix config: `homeserverUrl` when set (without trailing slashes), otherwise discovered
 * from `userId` (resolveHomeserverUrl). The daemon, `cara doctor` and `recovery-key rotate` all go through this.
 */
export const homeserverUrlOf = (
  m: { readonly homeserverUrl?: string | null | undefined; readonly userId?: string | null | undefined },
  explicitly: string
): Effect.Effect<{ readonly url: string; readonly discovered: boolean }, HomeserverDiscoveryError> => {
  const configured = (m.homeserverUrl ?? "").trim().replace(/\/+$/, "")
  if (configured !== "") return Effect.succeed({ url: configured, discovered: false })
  return Effect.map(resolveHomeserverUrl((m.userId ?? "").trim(), explicitly), (url) => ({ url, discovered: true }))
}
