// `cara status`, `cara matrix dlq list`, `cara matrix verifications` and `cara matrix devices` without Effect
// (issue 19 §5): the target read as client.ts reads it (liteTarget.ts), one plain node:http request per call,
// the answer checked against its shape (liteShapes.ts), and the text printed by the functions the typed client's
// commands print with (render.ts). Whatever this start is not sure of (the config, an answer's shape, a failure
// it does not render the same way, a timeout, CARA_LITE=off) it leaves to the commands of direct.ts, having
// printed nothing: `runLite` then answers `false`. The bundle keeps this module in chunks that do not reach Effect
// (test/unit/cli-lite.test.ts); test/integration/cli-direct.test.ts compares its output with the full path's.
import * as http from "node:http"
import type { ChannelInfo } from "../domain/channel.js"
import type { DlqSummary } from "../domain/dlq.js"
import type { OwnDevice, VerificationFlow } from "../domain/verification.js"
import type { DirectCommand, PlainFlags } from "./directArgs.js"
import {
  ChannelsShape,
  conforms,
  ControlStatusShape,
  DeviceListShape,
  DlqListShape,
  ErrorBodyShape,
  HealthShape,
  type Shape,
  VerificationListShape
} from "./liteShapes.js"
import { type LiteTarget, liteTarget } from "./liteTarget.js"
import {
  answeredLine,
  type Described,
  devicesText,
  dlqListText,
  failureText,
  flowsText,
  renderStatusView,
  renderStatusViewJson,
  type StatusView,
  TOKEN_MISSING_PROBLEM,
  unreachableText,
  withRemediation
} from "./render.js"

export type Answer =
  | { readonly t: "json"; readonly status: number; readonly body: unknown }
  | { readonly t: "refused" }
  | { readonly t: "doubt"; readonly code?: string }

const DOUBT: Answer = { t: "doubt" }
const MAX_BODY = 16 * 1024 * 1024

/** One GET with the bearer; `refused` only for ECONNREFUSED, `doubt` for anything else that is not a JSON answer. */
const get = (target: LiteTarget, path: string, timeoutMs: number): Promise<Answer> =>
  request(target, "GET", path, undefined, timeoutMs)

/**
 * One request with the bearer (and a JSON body); `refused` only for ECONNREFUSED (nothing reached the daemon),
 * `doubt` for anything else that is not a JSON answer (with the socket's error code when there is one).
 */
export const request = (
  target: LiteTarget,
  method: "GET" | "POST",
  path: string,
  body: unknown,
  timeoutMs: number | undefined
): Promise<Answer> =>
  new Promise((resolve) => {
    let done = false
    const finish = (a: Answer) => {
      if (done) return
      done = true
      clearTimeout(timer)
      req.destroy()
      resolve(a)
    }
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), "utf8")
    const headers: Record<string, string> = {
      ...(target.token !== undefined ? { authorization: `Bearer ${target.token}` } : {}),
      // a POST without a body says so (chunked encoding would read as a body without a JSON type: 415)
      ...(payload !== undefined
        ? { "content-type": "application/json", "content-length": String(payload.length) }
        : method === "POST"
        ? { "content-length": "0" }
        : {})
    }
    const req = http.request(
      { host: target.address, port: target.port, path, method, agent: false, headers },
      (res) => {
        const chunks: Array<Buffer> = []
        let size = 0
        res.on("data", (c: Buffer) => {
          size += c.length
          if (size > MAX_BODY) finish(DOUBT)
          else chunks.push(c)
        })
        res.on("error", () => finish(DOUBT))
        res.on("end", () => {
          if (!/^application\/json(;|$)/i.test(res.headers["content-type"] ?? "")) return finish(DOUBT)
          try {
            finish({ t: "json", status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) })
          } catch {
            finish(DOUBT)
          }
        })
      }
    )
    req.on("error", (e: NodeJS.ErrnoException) =>
      finish(
        e.code === "ECONNREFUSED" ? { t: "refused" } : typeof e.code === "string" ? { t: "doubt", code: e.code } : DOUBT
      ))
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => finish(DOUBT), timeoutMs)
    req.end(payload)
  })

/** The API's error classes lite.ts renders, by status: their tag and kinds (src/domain/api.ts, held equal by a test). */
export const LITE_ERRORS = {
  401: { tag: "Unauthorized", kinds: ["unauthorized", "token-in-query"] },
  503: {
    tag: "ServiceUnavailable",
    kinds: [
      "matrix-runtime-unavailable",
      "not-connected",
      "dlq-crypto",
      "dlq-io",
      "dlq-serialization",
      "dlq-dispatch-failure",
      "dlq-cap-saturation"
    ]
  }
} as const

type Outcome<A> = { readonly ok: A } | { readonly failed: Described } | undefined

/** An answer as the typed client would read it: the value, a failure it describes, or `undefined` (unsure). */
const outcome = <A>(a: Answer, shape: Shape, errors: ReadonlyArray<401 | 503>): Outcome<A> => {
  if (a.t === "refused") return { failed: { kind: "gateway-unreachable", message: "ECONNREFUSED" } }
  if (a.t === "doubt") return undefined
  if (a.status === 200) return conforms(shape, a.body) ? { ok: a.body as A } : undefined
  const known = (errors as ReadonlyArray<number>).includes(a.status) ? LITE_ERRORS[a.status as 401 | 503] : undefined
  if (known === undefined || !conforms(ErrorBodyShape, a.body)) return undefined
  const { kind, message } = (a.body as { error: { kind: string; message: string } }).error
  const k = (known.kinds as ReadonlyArray<string>).includes(kind) ? kind : known.kinds[0]
  return { failed: { kind: k as Described["kind"] & string, message: answeredLine(a.status, known.tag, message) } }
}

/** Whether the full path's secret redactor could change `text`: a candidate value (or a form of it) or a key shape. */
export const mayRedact = (text: string, candidates: ReadonlyArray<string>): boolean => {
  if (/(?:[1-9A-HJ-NP-Za-km-z]{4}\s+){11}[1-9A-HJ-NP-Za-km-z]{3}/.test(text)) return true
  for (const c of candidates) {
    const v = c.trim()
    if (v.length < 6) continue
    const forms = [v, encodeURIComponent(v), JSON.stringify(v).slice(1, -1)]
    try {
      forms.push(new URLSearchParams({ v }).toString().slice(2))
    } catch {
      // as src/domain/redact.ts: a lone surrogate has no form encoding
    }
    if (forms.some((f) => f.length >= 6 && text.includes(f))) return true
  }
  return false
}

/** Prints a command's text; a rendering that throws (a timestamp out of range) is the full path's to report. */
export const printText = (render: () => string): boolean => {
  let text: string
  try {
    text = render()
  } catch {
    return false
  }
  process.stdout.write(text + "\n")
  return true
}

/** Writes a failure's stderr text (exit code 1) unless the redactor could change it. */
export const printFailure = (target: LiteTarget, text: string): boolean => {
  if (mayRedact(text, target.secretCandidates)) return false
  process.stderr.write(text)
  process.exitCode = 1
  return true
}

/** `cara matrix dlq list`, `cara matrix verifications`, `cara matrix devices`: one call, its text or its failure. */
const single = async <A>(
  target: LiteTarget,
  path: string,
  shape: Shape,
  print: (a: A) => string
): Promise<boolean> => {
  const o = outcome<A>(await get(target, path, 10_000), shape, [401, 503])
  if (o === undefined) return false
  if ("ok" in o) return printText(() => print(o.ok))
  const { kind, message } = withRemediation(o.failed, "gateway-call-failed")
  return printFailure(target, failureText(message, kind))
}

/** The control part of `cara status`: both answers, or the one failure; `undefined` when unsure. */
const controlPart = async (
  calls: Promise<[Answer, Answer]> | undefined
): Promise<Pick<StatusView, "controlStatus" | "channels" | "controlProblem"> | undefined> => {
  if (calls === undefined) return { controlProblem: TOKEN_MISSING_PROBLEM }
  const [s, c] = await calls
  const status = outcome<NonNullable<StatusView["controlStatus"]>>(s, ControlStatusShape, [401])
  const channels = outcome<{ channels: ReadonlyArray<ChannelInfo> }>(c, ChannelsShape, [401])
  if (status === undefined || channels === undefined) return undefined
  if ("ok" in status && "ok" in channels) return { controlStatus: status.ok, channels: channels.ok }
  const failures = [status, channels].flatMap((o) => ("failed" in o ? [o.failed] : []))
  // the typed client reports whichever failed first: sure only when both would read the same
  const [first, second] = failures
  if (second !== undefined && (second.kind !== first!.kind || second.message !== first!.message)) return undefined
  return { controlProblem: { ...(first!.kind !== undefined ? { kind: first!.kind } : {}), message: first!.message } }
}

/** `cara status [--json]` as status.ts `fetchStatus` and `status` do it. */
const status = async (target: LiteTarget, json: boolean): Promise<boolean> => {
  const address = `${target.host}:${target.port}`
  const control = target.token !== undefined
    ? Promise.all([get(target, "/control/status", 30_000), get(target, "/control/channels", 30_000)])
    : undefined
  const health = outcome<StatusView["health"]>(await get(target, "/health", 5_000), HealthShape, [])
  if (health === undefined) return false
  if ("failed" in health) return printFailure(target, unreachableText(address, health.failed.message))
  const part = await controlPart(control)
  if (part === undefined) return false
  const view: StatusView = { address, health: health.ok, ...part, authOff: false }
  return printText(() => json ? renderStatusViewJson(view) : renderStatusView(view))
}

/**
 * Runs the command if this start can be sure to print what the full path would; `false` (nothing printed)
 * otherwise, and the caller runs direct.ts.
 */
export const runLite = async (
  command: DirectCommand,
  flags: PlainFlags,
  env: NodeJS.ProcessEnv = process.env
): Promise<boolean> => {
  if (env["CARA_LITE"] === "off") return false
  // everything prints last, once sure: an unforeseen error before that is the full path's to report
  return answer(command, flags, env).catch(() => false)
}

const answer = async (command: DirectCommand, flags: PlainFlags, env: NodeJS.ProcessEnv): Promise<boolean> => {
  const target = await liteTarget(flags, env, command === "status")
  if (target === undefined) return false
  switch (command) {
    case "status":
      return status(target, flags.json)
    case "matrix dlq list":
      return single<{ records: ReadonlyArray<DlqSummary>; undecodable: number }>(
        target,
        "/control/matrix/dlq",
        DlqListShape,
        (r) => dlqListText(r, flags.json)
      )
    case "matrix verifications":
      return single<{ verifications: ReadonlyArray<VerificationFlow> }>(
        target,
        "/control/matrix/verifications",
        VerificationListShape,
        (r) => flowsText(r.verifications, flags.json)
      )
    case "matrix devices":
      return single<{ devices: ReadonlyArray<OwnDevice> }>(
        target,
        "/control/matrix/devices",
        DeviceListShape,
        (r) => devicesText(r.devices, flags.json)
      )
  }
}
