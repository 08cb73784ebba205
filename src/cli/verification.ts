import * as readline from "node:readline"
import { Console, Effect, Option, Schema } from "effect"
import type { OwnDevice, VerificationFlow } from "../domain/verification.js"
import { appendAuditLine } from "../layers/DlqLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { StateDir } from "../services/StateDir.js"
import { describeClientError, gatewayClient, resolveTarget, terminalSafe } from "./client.js"

/** A refused or failed `cara matrix` verification command, with the daemon's kind (or ours) and a hint. */
export class VerificationCliError extends Schema.TaggedError<VerificationCliError>()("VerificationCliError", {
  kind: Schema.String,
  message: Schema.String
}) {}

interface Target {
  readonly host: Option.Option<string>
  readonly port: Option.Option<number>
  readonly json: boolean
}

const target = (host: Option.Option<string>, port: Option.Option<number>) => resolveTarget({ host, port })

// What to do next, by the kind the daemon answered with (reference §6.6 hints).
const HINTS: Record<string, string> = {
  "verification-flow-not-found": "the flow id may be a typo or already pruned; run `cara matrix verifications` and copy the flow id exactly.",
  "verification-flow-not-ready":
    "the flow hasn't advanced far enough yet: wait for the peer to respond (and for the `sas` field to appear in `cara matrix verifications`), then retry.",
  "verification-cancelled":
    "the flow is in a terminal state (cancelled / done / mismatched); start a new flow with `cara matrix verify <user>` or from the other client.",
  "verification-timeout": "the SDK request timed out; the action may have landed anyway. Run `cara matrix verifications` to see the current state."
}

export const callFailed = (e: unknown) => {
  const d = describeClientError(e)
  const kind = d.kind ?? "verification-call-failed"
  const hint = HINTS[kind]
  return new VerificationCliError({ kind, message: hint === undefined ? d.message : `${d.message}\n  → ${hint}` })
}

const requireFlowId = (flowId: string) => {
  const id = flowId.trim()
  return id === ""
    ? Effect.fail(new VerificationCliError({ kind: "invalid-arguments", message: "the flow id is empty; copy it from `cara matrix verifications`" }))
    : Effect.succeed(id)
}

const when = (ms: number) => new Date(ms).toISOString()

const sasLines = (f: VerificationFlow): Array<string> => {
  const lines: Array<string> = []
  if (f.sas?.emoji !== undefined) {
    lines.push("  Emoji:")
    for (const e of f.sas.emoji) lines.push(`    ${terminalSafe(e.symbol)}  ${terminalSafe(e.description)}`)
  }
  if (f.sas?.decimals !== undefined) lines.push(`  Decimals: ${f.sas.decimals.join(" ")}`)
  return lines
}

export const renderFlows = (flows: ReadonlyArray<VerificationFlow>): string => {
  if (flows.length === 0) return "No Matrix verification flows. Start one from another client (verify the bot's device) or with `cara matrix verify <user> [device]`."
  const out: Array<string> = []
  for (const f of flows) {
    out.push(
      `${f.flowId}  ${f.state}`,
      `  Peer:     ${terminalSafe(f.userId)}${f.deviceId !== undefined ? ` (device ${terminalSafe(f.deviceId)})` : ""}${f.roomId !== undefined ? ` in ${terminalSafe(f.roomId)}` : ""}`,
      `  Updated:  ${when(f.updatedAt)}`,
      ...sasLines(f),
      ""
    )
  }
  return out.join("\n").trimEnd()
}

/** Pretty JSON with every string made terminal-safe. */
const safeJson = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === "string" ? terminalSafe(x) : x), 2)

export const renderConfirmPrompt = (f: VerificationFlow, match: boolean): string =>
  [
    "=== Matrix SAS verification confirmation ===",
    `  Flow:    ${f.flowId}`,
    `  Peer:    ${terminalSafe(f.userId)}${f.deviceId !== undefined ? ` (device ${terminalSafe(f.deviceId)})` : ""}`,
    `  State:   ${f.state}`,
    ...sasLines(f),
    "Compare the values above with the OTHER device's display.",
    `You are about to ${match ? "CONFIRM A MATCH" : "REJECT (no match)"} for flow ${f.flowId}.`,
    "A 'no match' confirms the values DO NOT match (potential MITM).",
    "Type `yes` to proceed, anything else to abort: "
  ].join("\n")

const ask = (question: string) =>
  Effect.async<string>((resume) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: true })
    rl.question(question, (answer) => {
      rl.close()
      resume(Effect.succeed(answer))
    })
    return Effect.sync(() => rl.close())
  })

// ---------------------------------------------------------------------------------------------------------

/** `cara matrix verifications`. */
export const list = ({ host, json, port }: Target) =>
  Effect.gen(function*() {
    const api = yield* Effect.flatMap(target(host, port), gatewayClient)
    const r = yield* api.verification.list().pipe(Effect.mapError(callFailed))
    yield* Console.log(json ? safeJson({ ok: true, verifications: r.verifications }) : renderFlows(r.verifications))
  })

const printFlow = (json: boolean, f: VerificationFlow) => Console.log(json ? safeJson({ ok: true, verification: f }) : renderFlows([f]))

/** `cara matrix accept <flow-id>`. */
export const accept = ({ flowId, host, json, port }: Target & { readonly flowId: string }) =>
  Effect.gen(function*() {
    const id = yield* requireFlowId(flowId)
    const api = yield* Effect.flatMap(target(host, port), gatewayClient)
    const r = yield* api.verification.accept({ path: { flowId: id } }).pipe(Effect.mapError(callFailed))
    yield* printFlow(json, r.verification)
    if (!json && r.verification.sas === undefined) {
      yield* Console.log("Accepted. Run `cara matrix verifications` until the `sas` values appear, then compare them with the other device.")
    }
  })

/** `cara matrix cancel <flow-id>`. */
export const cancel = ({ flowId, host, json, port }: Target & { readonly flowId: string }) =>
  Effect.gen(function*() {
    const id = yield* requireFlowId(flowId)
    const api = yield* Effect.flatMap(target(host, port), gatewayClient)
    const r = yield* api.verification.cancel({ path: { flowId: id } }).pipe(Effect.mapError(callFailed))
    yield* printFlow(json, r.verification)
  })

/** `cara matrix confirm <flow-id> --match | --no-match`. */
export const confirm = (
  { flowId, host, json, match, noMatch, port, skip }: Target & {
    readonly flowId: string
    readonly match: boolean
    readonly noMatch: boolean
    readonly skip: boolean
  }
) =>
    Effect.gen(function*() {
      if (match === noMatch) {
        return yield* new VerificationCliError({ kind: "invalid-arguments", message: "give exactly one of --match or --no-match" })
      }
      const id = yield* requireFlowId(flowId)
      const t = yield* target(host, port)
      const api = yield* gatewayClient(t)
      if (skip) {
        const stateDir = yield* StateDir
        yield* appendAuditLine(stateDir, "matrix_sas_unsafe_skip", { flow_id: id, host: t.host, port: t.port, pid: process.pid, matches: match }).pipe(
          Effect.mapError((e) => new VerificationCliError({ kind: "audit-write-failed", message: `cannot write the audit log, refusing to skip the SAS prompt: ${e.message}` }))
        )
        yield* Effect.sync(() =>
          process.stderr.write(`WARNING: --unsafe-skip-sas-prompt: ${match ? "confirming" : "rejecting"} flow ${id} without showing the SAS values (audited)\n`)
        )
      } else {
        if (process.stdin.isTTY !== true) {
          return yield* new VerificationCliError({
            kind: "not-a-terminal",
            message: "stdin is not a terminal: the SAS values must be compared and confirmed by a person. Run this in a terminal (or pass --unsafe-skip-sas-prompt, which is audited)."
          })
        }
        if (process.stdout.isTTY !== true) {
          return yield* new VerificationCliError({
            kind: "not-a-terminal",
            message: "piped stdout would hide the SAS values before the prompt; refusing to confirm blind. Run this in a terminal."
          })
        }
        const list = yield* api.verification.list().pipe(Effect.mapError(callFailed))
        const flow = list.verifications.find((f) => f.flowId === id)
        if (flow === undefined) {
          return yield* new VerificationCliError({ kind: "verification-flow-not-found", message: `verification flow "${terminalSafe(id)}" not found\n  → ${HINTS["verification-flow-not-found"]}` })
        }
        if (flow.sas === undefined) {
          return yield* new VerificationCliError({
            kind: "verification-flow-not-ready",
            message: `verification flow "${id}" has no SAS data yet (state="${flow.state}"); poll \`cara matrix verifications\` until the \`sas\` field appears, then retry`
          })
        }
        const answer = yield* ask(renderConfirmPrompt(flow, match))
        if (answer.trim() !== "yes") {
          return yield* new VerificationCliError({ kind: "aborted", message: "aborted: nothing was sent" })
        }
      }
      const r = yield* api.verification.confirm({ path: { flowId: id }, payload: { match } }).pipe(Effect.mapError(callFailed))
      yield* printFlow(json, r.verification)
    }).pipe(Effect.provide(StateDirLive))

/** `cara matrix verify <user> [device]`. */
export const verify = ({ device, host, json, port, user }: Target & { readonly user: string; readonly device: Option.Option<string> }) =>
    Effect.gen(function*() {
      if (user.trim() === "") return yield* new VerificationCliError({ kind: "invalid-arguments", message: "the user id is empty" })
      const api = yield* Effect.flatMap(target(host, port), gatewayClient)
      const r = yield* api.verification.verify({
        payload: { userId: user.trim(), ...(Option.isSome(device) ? { deviceId: device.value.trim() } : {}) }
      }).pipe(Effect.mapError(callFailed))
      yield* printFlow(json, r.verification)
      if (!json) yield* Console.log("Requested. Accept it on the other device; the bot starts SAS once it is ready. Then compare and `cara matrix confirm`.")
    })

export const renderDevices = (devices: ReadonlyArray<OwnDevice>): string =>
  devices.length === 0
    ? "No devices known for the bot's account."
    : devices
      .map((d) =>
        `${terminalSafe(d.deviceId)}  ${d.verified ? "verified" : "not verified"}${d.displayName !== undefined ? `  ${terminalSafe(d.displayName)}` : ""}${d.rawDeviceIdHex !== undefined ? `  (raw hex ${d.rawDeviceIdHex})` : ""}`
      )
      .join("\n")

/** `cara matrix devices`. */
export const devices = ({ host, json, port }: Target) =>
  Effect.gen(function*() {
    const api = yield* Effect.flatMap(target(host, port), gatewayClient)
    const r = yield* api.verification.devices().pipe(Effect.mapError(callFailed))
    yield* Console.log(json ? safeJson({ ok: true, devices: r.devices }) : renderDevices(r.devices))
  })
