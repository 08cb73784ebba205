import { Console, Effect, Either, Fiber, Option, Schema } from "effect"
import { type Channels, type ControlStatus, type Health } from "../domain/api.js"
import { ChannelInfo } from "../domain/channel.js"
import { REMEDIATION } from "../domain/remediation.js"
import { describeClientError, gatewayClient, type GatewayTarget, resolveTarget, terminalSafe } from "./client.js"

export const formatUptime = (seconds: number): string => {
  const d = Math.floor(seconds / 86400)
  const h = Math.floor((seconds % 86400) / 3600)
  const m = Math.floor((seconds % 3600) / 60)
  const s = seconds % 60
  return [d > 0 ? `${d}d` : "", h > 0 ? `${h}h` : "", m > 0 ? `${m}m` : "", `${s}s`].filter((x) => x !== "").join(" ")
}

const sanitizeDeep = (v: unknown): unknown =>
  typeof v === "string"
    ? terminalSafe(v)
    : Array.isArray(v)
    ? v.map(sanitizeDeep)
    : typeof v === "object" && v !== null
    ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, sanitizeDeep(x)]))
    : v

export interface StatusReport {
  readonly address: string
  readonly health: Health
  readonly controlStatus: Option.Option<ControlStatus>
  readonly channels: Option.Option<Channels>
  /** Why the authenticated part is missing (no token, refused, ...). */
  readonly controlProblem: Option.Option<{ readonly kind?: string; readonly message: string }>
  /** The config says `gateway.auth.mode: "none"`: the control API answers any local process. */
  readonly authOff?: boolean
}

export const AUTH_OFF_WARNING =
  "gateway auth is OFF (gateway.auth.mode \"none\"): any local process or page that reaches the port can drive cara; " +
  "set gateway.auth.mode \"token\" with token \"${CARAPACE_GATEWAY_TOKEN}\""

/** `2026-… (42s ago)`: how old a moment is, by this machine's clock (the CLI runs beside the daemon). */
const whenAgo = (n: number | null | undefined, now: number) =>
  n === null || n === undefined
    ? "never"
    : `${new Date(n).toISOString()} (${formatUptime(Math.max(0, Math.floor((now - n) / 1000)))} ago)`

/** The human rendering: the gateway block, then one block per channel with Matrix metadata (§11 names). */
export const renderStatus = (r: StatusReport, now: number = Date.now()): string => {
  const lines = [
    "cara gateway status",
    "===================",
    `  Version:  ${terminalSafe(r.health.version)}`,
    `  Uptime:   ${formatUptime(r.health.uptimeSeconds)}`,
    `  Address:  ${r.address}`,
    `  Status:   ${r.health.status}`
  ]
  if (r.authOff === true) lines.push(`  WARNING:  ${AUTH_OFF_WARNING}`)
  if (Option.isSome(r.controlStatus)) {
    const c = r.controlStatus.value
    lines.push(
      `  Channels: ${c.connectedChannels}/${c.totalChannels} connected`,
      `  Platform: ${terminalSafe(c.runtime.platform)} (${terminalSafe(c.runtime.arch)})`
    )
  }
  if (Option.isSome(r.controlProblem)) {
    const p = r.controlProblem.value
    lines.push(`  Control:  ${p.message}${p.kind !== undefined ? ` [${p.kind}]` : ""}`)
  }
  if (Option.isSome(r.channels)) {
    if (r.channels.value.channels.length === 0) lines.push("", "No channels registered (is matrix.enabled set?)")
    for (const c of r.channels.value.channels) {
      lines.push("", `${terminalSafe(c.name)} (${terminalSafe(c.id)})`, `  Status:     ${c.status}`)
      if (c.lastError !== null) {
        const kind = c.extra?.lastErrorKind
        lines.push(`  Last error: ${terminalSafe(c.lastError)}${kind !== undefined ? ` [${terminalSafe(kind)}]` : ""}`)
      }
      if (c.lastConnectedAt !== null) lines.push(`  Connected:  ${c.lastConnectedAt}`)
      const x = c.extra
      if (x === undefined) continue
      if (x.userId !== undefined || x.deviceId !== undefined) {
        lines.push(`  Account:    ${terminalSafe(x.userId ?? "?")} device ${terminalSafe(x.deviceId ?? "?")}`)
      }
      if (x.crossSigning !== undefined) lines.push(`  Cross-signing: ${x.crossSigning}`)
      lines.push(
        `  Rooms:      ${x.joinedRoomCount} joined (${x.encryptedRoomCount} encrypted, ${x.unencryptedRoomCount} unencrypted, ${x.unsupportedRoomCount} unsupported)`,
        `  Pending verifications: ${x.pendingVerificationCount}`,
        `  Last successful sync:  ${whenAgo(x.lastSuccessfulSyncAt, now)}`,
        `  Pending replies:       ${x.outboundPendingCount ?? 0}${
          x.outboundPendingOldestAt === undefined
            ? ""
            : ` (oldest first failed ${whenAgo(x.outboundPendingOldestAt, now)})`
        }`,
        `  Undecryptable events:  ${x.undecryptableEventCount}`,
        `  DLQ:        ${
          x.inboundDlqRecordCount ?? "?"
        } records, ${x.inboundDispatchFailureTotal} dispatch failures, ` +
          `${x.inboundDlqAppendFailureTotal} append failures, ${x.inboundDlqUndecodableLostCount} undecodable lost`
      )
      lines.push(
        `  Inbound refused: ${x.inboundBudgetRefusedRoomTotal} over the room budget, ${x.inboundBudgetRefusedSenderTotal} over the sender budget ` +
          `(${x.inboundBudgetNoticeTotal} notices), ${x.peerDropUnencryptedInEncryptedRoomTotal} unencrypted in an encrypted room, ` +
          `${x.peerDropNotCrossSignedTotal} from devices not cross-signed`
      )
      if (x.inboundDlqDurabilityError !== undefined) {
        lines.push(`  DLQ error:  ${terminalSafe(x.inboundDlqDurabilityError)}`)
      }
    }
  }
  return lines.join("\n")
}

export const renderStatusJson = (r: StatusReport): string =>
  JSON.stringify(
    sanitizeDeep({
      health: r.health,
      ...(Option.isSome(r.controlStatus) ? { controlStatus: r.controlStatus.value } : {}),
      ...(Option.isSome(r.channels)
        ? {
          channels: {
            ...r.channels.value,
            channels: r.channels.value.channels.map((c) => Schema.encodeSync(ChannelInfo)(c))
          }
        }
        : {}),
      ...(Option.isSome(r.controlProblem) ? { controlError: r.controlProblem.value } : {}),
      ...(r.authOff === true ? { warnings: [AUTH_OFF_WARNING] } : {})
    }),
    null,
    2
  )

/**
 * Fetches the report; `Left` carries the stderr text when the gateway is not reachable. With a credential (or
 * auth off) the control calls go out together with the health check: one round trip instead of two; their
 * answers are used only when the health check succeeded, as before.
 */
export const fetchStatus = (target: GatewayTarget) =>
  Effect.gen(function*() {
    const address = `${target.host}:${target.port}`
    const client = yield* gatewayClient(target)
    const authOff = Option.exists(target.config, (c) => c.gateway.auth?.mode === "none")
    const askControl = Option.isSome(target.token) || authOff
    const control = yield* Effect.forkScoped(
      askControl
        ? Effect.all([client.control.status(), client.control.channels()], { concurrency: 2 }).pipe(
          Effect.timeout("30 seconds"),
          Effect.either,
          Effect.map(Option.some)
        )
        : Effect.succeed(Option.none())
    )
    const health = yield* client.health.health().pipe(Effect.timeout("5 seconds"), Effect.either)
    if (Either.isLeft(health)) {
      // the control calls are interrupted with the scope: an unreachable gateway is reported at once
      const d = describeClientError(health.left)
      return Either.left(
        `Could not connect to cara at ${address}\n  Error: ${d.message}\n\n${REMEDIATION["gateway-unreachable"]}\n`
      )
    }
    const both = yield* Fiber.join(control)
    if (Option.isNone(both)) {
      return Either.right(
        {
          address,
          health: health.right,
          controlStatus: Option.none(),
          channels: Option.none(),
          controlProblem: Option.some({
            kind: "gateway-token-missing",
            message: `no gateway token: ${REMEDIATION["gateway-token-missing"]}`
          }),
          authOff
        } satisfies StatusReport
      )
    }
    const answers = both.value
    return Either.right(
      {
        address,
        health: health.right,
        controlStatus: Either.isRight(answers) ? Option.some(answers.right[0]) : Option.none(),
        channels: Either.isRight(answers) ? Option.some(answers.right[1]) : Option.none(),
        controlProblem: Either.isLeft(answers) ? Option.some(describeClientError(answers.left)) : Option.none(),
        authOff
      } satisfies StatusReport
    )
  }).pipe(Effect.scoped)

/** `cara status [--json]`. */
export const status = (
  { host, json, port }: {
    readonly host: Option.Option<string>
    readonly port: Option.Option<number>
    readonly json: boolean
  }
) =>
  Effect.gen(function*() {
    const target = yield* resolveTarget({ host, port })
    const report = yield* fetchStatus(target)
    if (Either.isLeft(report)) {
      process.stderr.write(report.left)
      process.exitCode = 1
      return
    }
    yield* Console.log(json ? renderStatusJson(report.right) : renderStatus(report.right))
  })
