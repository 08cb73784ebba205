import { Console, Effect, Option, Schema } from "effect"
import * as readline from "node:readline"
import { REMEDIATION } from "../domain/remediation.js"
import { FlowId, type OwnDevice, type VerificationFlow } from "../domain/verification.js"
import { makeAudit } from "../layers/AuditLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { StateDir } from "../services/StateDir.js"
import { callError, gatewayCall, GatewayClient } from "./client.js"
import { devicesText, flowActionText, flowsText, flowText, sasLines, terminalSafe } from "./render.js"

/** A `cara matrix` verification command refused before (or instead of) its call. */
export class VerificationCliError extends Schema.TaggedError<VerificationCliError>()("VerificationCliError", {
  kind: Schema.Literal(
    "invalid-arguments",
    "audit-write-failed",
    "not-a-terminal",
    "aborted",
    "verification-flow-not-found",
    "verification-flow-not-ready"
  ),
  message: Schema.String
}) {}

interface Target {
  readonly host: Option.Option<string>
  readonly port: Option.Option<number>
  readonly json: boolean
}

/** A failed call as the CLI reports it: the daemon's kind, its line, and the remediation (once). */
export const callFailed = (e: unknown) => callError(e, "verification-call-failed")

const requireFlowId = (flowId: string) => {
  const id = flowId.trim()
  return id === ""
    ? Effect.fail(
      new VerificationCliError({
        kind: "invalid-arguments",
        message: "the flow id is empty; copy it from `cara matrix verifications`"
      })
    )
    : Effect.succeed(FlowId.make(id))
}

export { renderFlows } from "./render.js"

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
    const { api } = yield* GatewayClient
    const r = yield* api.verification.list().pipe(gatewayCall)
    yield* Console.log(flowsText(r.verifications, json))
  }).pipe(Effect.provide(GatewayClient.at({ host, port })))

const printFlow = (json: boolean, f: VerificationFlow) => Console.log(flowText(f, json))

/** `cara matrix accept <flow-id>`. */
export const accept = ({ flowId, host, json, port }: Target & { readonly flowId: string }) =>
  Effect.gen(function*() {
    const id = yield* requireFlowId(flowId)
    const { api } = yield* GatewayClient
    const r = yield* api.verification.accept({ path: { flowId: id } }).pipe(gatewayCall)
    yield* Console.log(flowActionText("accept", r.verification, json))
  }).pipe(Effect.provide(GatewayClient.at({ host, port })))

/** `cara matrix cancel <flow-id>`. */
export const cancel = ({ flowId, host, json, port }: Target & { readonly flowId: string }) =>
  Effect.gen(function*() {
    const id = yield* requireFlowId(flowId)
    const { api } = yield* GatewayClient
    const r = yield* api.verification.cancel({ path: { flowId: id } }).pipe(gatewayCall)
    yield* Console.log(flowActionText("cancel", r.verification, json))
  }).pipe(Effect.provide(GatewayClient.at({ host, port })))

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
      return yield* new VerificationCliError({
        kind: "invalid-arguments",
        message: "give exactly one of --match or --no-match"
      })
    }
    const id = yield* requireFlowId(flowId)
    const { api, target: t } = yield* GatewayClient
    if (skip) {
      const stateDir = yield* StateDir
      yield* makeAudit(stateDir).append("matrix_sas_unsafe_skip", {
        flow_id: id,
        host: t.host,
        port: t.port,
        pid: process.pid,
        matches: match
      }).pipe(
        Effect.mapError((e) =>
          new VerificationCliError({
            kind: "audit-write-failed",
            message: `cannot write the audit log, refusing to skip the SAS prompt: ${e.message}`
          })
        )
      )
      yield* Effect.sync(() =>
        process.stderr.write(
          `WARNING: --unsafe-skip-sas-prompt: ${
            match ? "confirming" : "rejecting"
          } flow ${id} without showing the SAS values (audited)\n`
        )
      )
    } else {
      if (process.stdin.isTTY !== true) {
        return yield* new VerificationCliError({
          kind: "not-a-terminal",
          message:
            "stdin is not a terminal: the SAS values must be compared and confirmed by a person. Run this in a terminal (or pass --unsafe-skip-sas-prompt, which is audited)."
        })
      }
      if (process.stdout.isTTY !== true) {
        return yield* new VerificationCliError({
          kind: "not-a-terminal",
          message:
            "piped stdout would hide the SAS values before the prompt; refusing to confirm blind. Run this in a terminal."
        })
      }
      const list = yield* api.verification.list().pipe(gatewayCall)
      const flow = list.verifications.find((f) => f.flowId === id)
      if (flow === undefined) {
        return yield* new VerificationCliError({
          kind: "verification-flow-not-found",
          message: `verification flow "${terminalSafe(id)}" not found\n  → ${
            REMEDIATION["verification-flow-not-found"]
          }`
        })
      }
      if (flow.sas === undefined) {
        return yield* new VerificationCliError({
          kind: "verification-flow-not-ready",
          message:
            `verification flow "${id}" has no SAS data yet (state="${flow.state}"); poll \`cara matrix verifications\` until the \`sas\` field appears, then retry`
        })
      }
      const answer = yield* ask(renderConfirmPrompt(flow, match))
      if (answer.trim() !== "yes") {
        return yield* new VerificationCliError({ kind: "aborted", message: "aborted: nothing was sent" })
      }
    }
    const r = yield* api.verification.confirm({ path: { flowId: id }, payload: { match } }).pipe(gatewayCall)
    yield* printFlow(json, r.verification)
  }).pipe(Effect.provide(StateDirLive)).pipe(Effect.provide(GatewayClient.at({ host, port })))

/** `cara matrix verify <user> [device]`. */
export const verify = (
  { device, host, json, port, user }: Target & { readonly user: string; readonly device: Option.Option<string> }
) =>
  Effect.gen(function*() {
    if (user.trim() === "") {
      return yield* new VerificationCliError({ kind: "invalid-arguments", message: "the user id is empty" })
    }
    const { api } = yield* GatewayClient
    const r = yield* api.verification.verify({
      payload: { userId: user.trim(), ...(Option.isSome(device) ? { deviceId: device.value.trim() } : {}) }
    }).pipe(gatewayCall)
    yield* Console.log(flowActionText("verify", r.verification, json))
  }).pipe(Effect.provide(GatewayClient.at({ host, port })))

export { renderDevices } from "./render.js"

/** `cara matrix devices`. */
export const devices = ({ host, json, port }: Target) =>
  Effect.gen(function*() {
    const { api } = yield* GatewayClient
    const r = yield* api.verification.devices().pipe(gatewayCall)
    yield* Console.log(devicesText(r.devices, json))
  }).pipe(Effect.provide(GatewayClient.at({ host, port })))
