// The commands that take an argument or act — `cara matrix dlq show|replay|purge`, `cara matrix accept|cancel`,
// `cara matrix verify <user> [device]` — without Effect (issue 19 §5), by the rules of lite.ts: the arguments
// read as @effect/cli reads them (directArgs.ts `readActionArgs`), the target as client.ts resolves it
// (liteTarget.ts), the answer checked against its shape, the text printed by render.ts. Before a request is sent,
// anything this start is not sure of goes to the full command tree (`runLiteAction` answers `false`, having
// printed nothing): a purge without `--yes` (its typed confirmation), an id and `--all` together or neither, an id
// that a URL could spell differently. A GET (`dlq show`) may still fall back on an answer it does not know. A POST
// never does: once sent, whatever comes back is reported here (as the full path would report it when this start
// knows the answer; otherwise with a line that says the request was not sent again), so no action runs twice.
// Left to the full tree: `cara matrix confirm` (its SAS prompt on a terminal, its audited skip) and `cara verify`.
import type { DlqDetail, DlqReplayReport } from "../domain/dlq.js"
import type { VerificationFlow } from "../domain/verification.js"
import type { ActionArgs } from "./directArgs.js"
import { type Answer, printFailure, printText, request } from "./lite.js"
import {
  conforms,
  DlqPurgeShape,
  DlqReplayShape,
  DlqShowShape,
  ErrorBodyShape,
  type Shape,
  VerificationResultShape
} from "./liteShapes.js"
import { type LiteTarget, liteTarget } from "./liteTarget.js"
import {
  answeredLine,
  type Described,
  dlqPurgeText,
  dlqReplayText,
  dlqShowText,
  failureText,
  flowActionText,
  REVEAL_NOT_TERMINAL,
  withRemediation
} from "./render.js"

/** An error class of the API as the typed client decodes it: `strict` ones refuse a kind outside theirs. */
export interface LiteErrorClass {
  readonly tag: string
  readonly kinds: ReadonlyArray<string>
  readonly strict: boolean
}

const lenient = (tag: string, ...kinds: Array<string>): LiteErrorClass => ({ tag, kinds, strict: false })
const strict = (tag: string, ...kinds: Array<string>): LiteErrorClass => ({ tag, kinds, strict: true })

/** The classes of src/domain/api.ts and verification.ts (test/unit/cli-lite-actions.test.ts holds them equal). */
export const LITE_API_ERRORS = {
  BadRequest: lenient(
    "BadRequest",
    "invalid-request",
    "invalid-json",
    "invalid-room-id",
    "invalid-string",
    "invalid-length",
    "body-too-large",
    "websocket-handshake-invalid",
    "websocket-upgrade-required"
  ),
  Unauthorized: lenient("Unauthorized", "unauthorized", "token-in-query"),
  Forbidden: lenient("Forbidden", "non-local-client", "csrf-origin-mismatch", "host-not-allowed", "non-canonical-path"),
  NotFound: lenient("NotFound", "not-found", "dlq-record-not-found"),
  UnsupportedMediaType: lenient("UnsupportedMediaType", "unsupported-media-type"),
  TooManyRequests: lenient("TooManyRequests", "rate-limited"),
  BadGateway: lenient(
    "BadGateway",
    "send-failed",
    "send-terminal",
    "room-not-found",
    "unsupported-room",
    "command-queue-full",
    "sync-failed",
    "auth-probe",
    "dlq-dispatch-failure"
  ),
  ServiceUnavailable: lenient(
    "ServiceUnavailable",
    "matrix-runtime-unavailable",
    "not-connected",
    "dlq-crypto",
    "dlq-io",
    "dlq-serialization",
    "dlq-dispatch-failure",
    "dlq-cap-saturation"
  ),
  VerificationFlowNotFound: strict("VerificationFlowNotFound", "verification-flow-not-found"),
  VerificationTargetNotFound: strict("VerificationTargetNotFound", "device-not-found", "user-identity-not-found"),
  VerificationFlowNotReady: strict("VerificationFlowNotReady", "verification-flow-not-ready"),
  VerificationFlowTerminal: strict("VerificationFlowTerminal", "verification-cancelled"),
  InvalidVerificationUser: strict("InvalidVerificationUser", "invalid-user-id"),
  VerificationFailed: strict("VerificationFailed", "verification"),
  VerificationTimeout: strict("VerificationTimeout", "verification-timeout")
} as const

type ErrorTable = Readonly<Record<number, LiteErrorClass>>
const E = LITE_API_ERRORS
/** The API's own (400) and the authorization middleware's errors, on every control endpoint. */
const COMMON: ErrorTable = {
  400: E.BadRequest,
  401: E.Unauthorized,
  403: E.Forbidden,
  415: E.UnsupportedMediaType,
  429: E.TooManyRequests
}

/** Each endpoint's errors by status, as src/domain/api.ts declares them. */
export const LITE_ENDPOINT_ERRORS = {
  dlqShow: { ...COMMON, 404: E.NotFound, 503: E.ServiceUnavailable },
  dlqReplay: { ...COMMON, 404: E.NotFound, 502: E.BadGateway, 503: E.ServiceUnavailable },
  dlqPurge: { ...COMMON, 404: E.NotFound, 503: E.ServiceUnavailable },
  flowAction: {
    ...COMMON,
    404: E.VerificationFlowNotFound,
    409: E.VerificationFlowNotReady,
    410: E.VerificationFlowTerminal,
    502: E.VerificationFailed,
    503: E.ServiceUnavailable,
    504: E.VerificationTimeout
  },
  verify: {
    ...COMMON,
    404: E.VerificationTargetNotFound,
    422: E.InvalidVerificationUser,
    502: E.VerificationFailed,
    503: E.ServiceUnavailable,
    504: E.VerificationTimeout
  }
} as const satisfies Record<string, ErrorTable>

type Read<A> = { readonly ok: A } | { readonly failed: Described } | undefined

/** An answer as the typed client reads it for an endpoint: its value, the failure it reports, or `undefined`. */
export const readAnswer = <A>(a: Answer, success: number, shape: Shape, errors: ErrorTable): Read<A> => {
  if (a.t === "refused") return { failed: { kind: "gateway-unreachable", message: "ECONNREFUSED" } }
  if (a.t === "doubt") return undefined
  if (a.status === success) return conforms(shape, a.body) ? { ok: a.body as A } : undefined
  const cls = Object.hasOwn(errors, a.status) ? errors[a.status] : undefined
  if (cls === undefined || !conforms(ErrorBodyShape, a.body)) return undefined
  const { kind, message } = (a.body as { error: { kind: string; message: string } }).error
  if (cls.strict && !cls.kinds.includes(kind)) return undefined
  const k = cls.kinds.includes(kind) ? kind : cls.kinds[0]!
  return { failed: { kind: k as Described["kind"] & string, message: answeredLine(a.status, cls.tag, message) } }
}

/** A failure's text as the full path prints it (exit code 1); `false` when its redactor could change it. */
const printDescribed = (target: LiteTarget, d: Described): boolean => {
  const { kind, message } = withRemediation(d, "gateway-call-failed")
  return printFailure(target, failureText(message, kind))
}

/** Once a request is sent: a line saying what is known, that it was not sent again, and where to look. */
const sentButUnread = (what: string, check: string): true => {
  process.stderr.write(
    failureText(
      `${what}; the request was not sent again: see ${check} for its outcome`,
      "gateway-bad-response"
    )
  )
  process.exitCode = 1
  return true
}

interface Post<A> {
  readonly path: string
  readonly body: unknown
  readonly success: number
  readonly shape: Shape
  readonly errors: ErrorTable
  readonly print: (a: A) => string
  readonly failed?: (a: A) => boolean
  /** The command that shows the outcome. */
  readonly check: string
}

/** Sends one POST and reports whatever comes back; never `false` (the caller must not send it again). */
const post = async <A>(target: LiteTarget, p: Post<A>, sent: () => void): Promise<true> => {
  sent()
  const a = await request(target, "POST", p.path, p.body, undefined)
  if (a.t === "doubt" && a.code !== undefined) {
    // a socket error: the typed client reports its code the same way
    return printDescribed(target, { kind: "gateway-unreachable", message: a.code }) ||
      sentButUnread(`the connection to the gateway failed (${a.code})`, p.check)
  }
  const r = readAnswer<A>(a, p.success, p.shape, p.errors)
  const status = a.t === "json" ? `HTTP ${a.status}` : "no readable answer"
  if (r === undefined) return sentButUnread(`the gateway's answer (${status}) is not one this cara reads`, p.check)
  if ("failed" in r) {
    return printDescribed(target, r.failed) ||
      sentButUnread(`the gateway refused the request (${status}, ${r.failed.kind ?? "?"})`, p.check)
  }
  if (!printText(() => p.print(r.ok))) {
    return sentButUnread(`the gateway's answer (${status}) cannot be printed`, p.check)
  }
  if (p.failed?.(r.ok) === true) process.exitCode = 1
  return true
}

/** Path segments every URL encoder spells the same way (anything else is the full path's). */
const PATH_SAFE = /^[A-Za-z0-9_][A-Za-z0-9_.~-]*$/

/** `<id>` xor `--all` (the full path reports anything else). */
const selection = (a: ActionArgs): { id: string } | { all: true } | undefined => {
  const id = a.args["id"]
  const all = a.switches.has("all")
  return id !== undefined && !all ? { id } : id === undefined && all ? { all: true } : undefined
}

const DLQ_CHECK = "`cara matrix dlq list`"
const FLOWS_CHECK = "`cara matrix verifications`"

/** `cara matrix dlq show <id> [--reveal]`: a GET, so an answer it does not know still goes to the full path. */
const show = async (target: LiteTarget, a: ActionArgs): Promise<boolean> => {
  const id = a.args["id"]!
  if (!PATH_SAFE.test(id)) return false
  const reveal = a.switches.has("reveal")
  // a message body goes to a person at a terminal, never into a pipe (as dlq.ts `show`)
  if (reveal && process.stdout.isTTY !== true) {
    return printFailure(target, failureText(REVEAL_NOT_TERMINAL.message, REVEAL_NOT_TERMINAL.kind))
  }
  const answer = await request(target, "GET", `/control/matrix/dlq/${id}?reveal=${reveal}`, undefined, 10_000)
  const r = readAnswer<{ record: DlqDetail }>(answer, 200, DlqShowShape, LITE_ENDPOINT_ERRORS.dlqShow)
  if (r === undefined) return false
  if ("ok" in r) return printText(() => dlqShowText(r.ok.record, a.flags.json))
  return printDescribed(target, r.failed)
}

/** The POST of each acting command, or `undefined` when the full path must read its arguments. */
const postOf = (a: ActionArgs): Post<never> | undefined => {
  const json = a.flags.json
  switch (a.command) {
    case "matrix dlq replay":
    case "matrix dlq purge": {
      const body = selection(a)
      if (body === undefined || (a.command === "matrix dlq purge" && !a.switches.has("yes"))) return undefined
      return a.command === "matrix dlq replay"
        ? typed<{ report: DlqReplayReport }>({
          path: "/control/matrix/dlq/replay",
          body,
          success: 200,
          shape: DlqReplayShape,
          errors: LITE_ENDPOINT_ERRORS.dlqReplay,
          print: (r) => dlqReplayText(r.report, json),
          failed: (r) => r.report.failed > 0,
          check: DLQ_CHECK
        })
        : typed<{ purged: number }>({
          path: "/control/matrix/dlq/purge",
          body,
          success: 200,
          shape: DlqPurgeShape,
          errors: LITE_ENDPOINT_ERRORS.dlqPurge,
          print: (r) => dlqPurgeText(r.purged, json),
          check: DLQ_CHECK
        })
    }
    case "matrix accept":
    case "matrix cancel": {
      const flowId = a.args["flowId"]!
      if (!PATH_SAFE.test(flowId)) return undefined
      const action = a.command === "matrix accept" ? "accept" : "cancel"
      return typed<{ verification: VerificationFlow }>({
        path: `/control/matrix/verifications/${flowId}/${action}`,
        body: undefined,
        success: 200,
        shape: VerificationResultShape,
        errors: LITE_ENDPOINT_ERRORS.flowAction,
        print: (r) => flowActionText(action, r.verification, json),
        check: FLOWS_CHECK
      })
    }
    case "matrix verify": {
      const device = a.args["device"]
      return typed<{ verification: VerificationFlow }>({
        path: "/control/matrix/verify",
        body: { userId: a.args["user"]!, ...(device !== undefined ? { deviceId: device } : {}) },
        success: 201,
        shape: VerificationResultShape,
        errors: LITE_ENDPOINT_ERRORS.verify,
        print: (r) => flowActionText("verify", r.verification, json),
        check: FLOWS_CHECK
      })
    }
    case "matrix dlq show":
      return undefined
  }
}

const typed = <A>(p: Post<A>): Post<never> => p as unknown as Post<never>

/**
 * Runs the command when this start can be sure to do what the full path would; `false` (nothing printed,
 * nothing sent) otherwise, and the caller runs the full command tree.
 */
export const runLiteAction = async (a: ActionArgs, env: NodeJS.ProcessEnv = process.env): Promise<boolean> => {
  if (env["CARA_LITE"] === "off") return false
  let sent = false
  try {
    const target = await liteTarget(a.flags, env, false)
    if (target === undefined) return false
    if (a.command === "matrix dlq show") return await show(target, a)
    const p = postOf(a)
    return p === undefined ? false : await post(target, p, () => void (sent = true))
  } catch {
    // an unforeseen error: the full path's to report, unless a request may have reached the daemon
    return sent ? sentButUnread("this cara failed while reading the gateway's answer", "the daemon's state") : false
  }
}
