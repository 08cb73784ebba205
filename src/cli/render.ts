// The text the read-only gateway commands print (`cara status`, `cara matrix dlq list`, `cara matrix
// verifications`, `cara matrix devices`) and the lines their failures print, without Effect: the commands
// built on the typed client (status.ts, dlq.ts, verification.ts, failure.ts) and the start that skips Effect
// (lite.ts) both print through these functions, so the two cannot drift apart. Only type imports here: the
// test in test/unit/cli-lite.test.ts fails when this module's chunk of the bundle reaches Effect.
import type { ChannelInfo, MatrixChannelExtra } from "../domain/channel.js"
import type { DlqDetail, DlqReplayReport, DlqSummary } from "../domain/dlq.js"
import { REMEDIATION, remediationFor, type RemediationKind } from "../domain/remediation.js"
import type { OwnDevice, VerificationFlow } from "../domain/verification.js"

/** Removes characters a terminal would interpret (escape sequences, bidi overrides) from daemon-supplied text. */
export const terminalSafe = (s: string) =>
  s.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, "")

/** Pretty JSON with every string made terminal-safe. */
export const safeJson = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === "string" ? terminalSafe(x) : x), 2)

const when = (ms: number) => new Date(ms).toISOString()

// ---------------------------------------------------------------------------------------------------------
// Failures

/** One failure as the CLI describes it: its line and its kind (the remediation table's key, when known). */
export interface Described {
  readonly kind?: RemediationKind
  readonly message: string
}

/** An answer of the daemon's API reads as the seed writes it: `409 VerificationFlowNotReady: …`. */
export const answeredLine = (status: number, tag: string, message: string): string =>
  `${status} ${tag}: ${terminalSafe(message)}`

/** The line with the remediation of its kind appended, unless the line already says it. */
export const withRemediation = (
  d: Described,
  fallbackKind: string
): { readonly kind: string; readonly message: string } => {
  const advice = remediationFor(d.kind, d.message)
  return { kind: d.kind ?? fallbackKind, message: advice === undefined ? d.message : `${d.message}\n  → ${advice}` }
}

/** What the CLI prints on stderr for a known failure (before the secret redactor). */
export const failureText = (message: string, kind: string | undefined, details?: ReadonlyArray<string>): string =>
  `cara: ${message}${kind !== undefined ? ` [${kind}]` : ""}\n${details?.length ? details.join("\n") + "\n" : ""}`

/** `cara status` when the health check fails: stderr, exit code 1. */
export const unreachableText = (address: string, message: string): string =>
  `Could not connect to cara at ${address}\n  Error: ${message}\n\n${REMEDIATION["gateway-unreachable"]}\n`

// ---------------------------------------------------------------------------------------------------------
// cara status

export const formatUptime = (seconds: number): string => {
  const d = Math.floor(seconds / 86400)
  const h = Math.floor((seconds % 86400) / 3600)
  const m = Math.floor((seconds % 3600) / 60)
  const s = seconds % 60
  return [d > 0 ? `${d}d` : "", h > 0 ? `${h}h` : "", m > 0 ? `${m}m` : "", `${s}s`].filter((x) => x !== "").join(" ")
}

export const AUTH_OFF_WARNING =
  "gateway auth is OFF (gateway.auth.mode \"none\"): any local process or page that reaches the port can drive cara; " +
  "set gateway.auth.mode \"token\" with token \"${CARAPACE_GATEWAY_TOKEN}\""

/** The fields of the daemon's answers `cara status` prints (src/domain/api.ts Health, ControlStatus, Channels). */
export interface StatusView {
  readonly address: string
  readonly health: { readonly status: string; readonly version: string; readonly uptimeSeconds: number }
  readonly controlStatus?: {
    readonly connectedChannels: number
    readonly totalChannels: number
    readonly runtime: { readonly platform: string; readonly arch: string }
  }
  readonly channels?: { readonly channels: ReadonlyArray<ChannelInfo> }
  /** Why the authenticated part is missing (no token, refused, ...). */
  readonly controlProblem?: { readonly kind?: string; readonly message: string }
  /** The config says `gateway.auth.mode: "none"`: the control API answers any local process. */
  readonly authOff?: boolean
}

/** `2026-… (42s ago)`: how old a moment is, by this machine's clock (the CLI runs beside the daemon). */
const whenAgo = (n: number | null | undefined, now: number) =>
  n === null || n === undefined
    ? "never"
    : `${new Date(n).toISOString()} (${formatUptime(Math.max(0, Math.floor((now - n) / 1000)))} ago)`

/** The Matrix metadata lines of one channel (§11 names). */
const extraLines = (x: MatrixChannelExtra, now: number): Array<string> => {
  const lines: Array<string> = []
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
    `  DLQ:        ${x.inboundDlqRecordCount ?? "?"} records, ${x.inboundDispatchFailureTotal} dispatch failures, ` +
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
  return lines
}

const channelLines = (c: ChannelInfo, now: number): Array<string> => {
  const lines = ["", `${terminalSafe(c.name)} (${terminalSafe(c.id)})`, `  Status:     ${c.status}`]
  if (c.lastError !== null) {
    const kind = c.extra?.lastErrorKind
    lines.push(`  Last error: ${terminalSafe(c.lastError)}${kind !== undefined ? ` [${terminalSafe(kind)}]` : ""}`)
  }
  if (c.lastConnectedAt !== null) lines.push(`  Connected:  ${c.lastConnectedAt}`)
  return c.extra === undefined ? lines : [...lines, ...extraLines(c.extra, now)]
}

/** The human rendering: the gateway block, then one block per channel with Matrix metadata (§11 names). */
export const renderStatusView = (r: StatusView, now: number = Date.now()): string => {
  const lines = [
    "cara gateway status",
    "===================",
    `  Version:  ${terminalSafe(r.health.version)}`,
    `  Uptime:   ${formatUptime(r.health.uptimeSeconds)}`,
    `  Address:  ${r.address}`,
    `  Status:   ${r.health.status}`
  ]
  if (r.authOff === true) lines.push(`  WARNING:  ${AUTH_OFF_WARNING}`)
  if (r.controlStatus !== undefined) {
    const c = r.controlStatus
    lines.push(
      `  Channels: ${c.connectedChannels}/${c.totalChannels} connected`,
      `  Platform: ${terminalSafe(c.runtime.platform)} (${terminalSafe(c.runtime.arch)})`
    )
  }
  if (r.controlProblem !== undefined) {
    const p = r.controlProblem
    lines.push(`  Control:  ${p.message}${p.kind !== undefined ? ` [${p.kind}]` : ""}`)
  }
  if (r.channels !== undefined) {
    if (r.channels.channels.length === 0) lines.push("", "No channels registered (is matrix.enabled set?)")
    for (const c of r.channels.channels) lines.push(...channelLines(c, now))
  }
  return lines.join("\n")
}

const sanitizeDeep = (v: unknown): unknown =>
  typeof v === "string"
    ? terminalSafe(v)
    : Array.isArray(v)
    ? v.map(sanitizeDeep)
    : typeof v === "object" && v !== null
    ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, sanitizeDeep(x)]))
    : v

/** `cara status --json`: the answers as the daemon encodes them (`channels` in their wire form), terminal-safe. */
export const renderStatusViewJson = (r: StatusView): string =>
  JSON.stringify(
    sanitizeDeep({
      health: r.health,
      ...(r.controlStatus !== undefined ? { controlStatus: r.controlStatus } : {}),
      ...(r.channels !== undefined ? { channels: r.channels } : {}),
      ...(r.controlProblem !== undefined ? { controlError: r.controlProblem } : {}),
      ...(r.authOff === true ? { warnings: [AUTH_OFF_WARNING] } : {})
    }),
    null,
    2
  )

/** `no gateway token: …`: the status's control line when the CLI has no credential to ask with. */
export const TOKEN_MISSING_PROBLEM = {
  kind: "gateway-token-missing",
  message: `no gateway token: ${REMEDIATION["gateway-token-missing"]}`
} as const

// ---------------------------------------------------------------------------------------------------------
// cara matrix dlq list

export const renderList = (records: ReadonlyArray<DlqSummary>, undecodable: number): string => {
  if (records.length === 0 && undecodable === 0) return "The inbound DLQ is empty."
  const lines = [
    `${records.length} record(s) in the inbound DLQ${undecodable > 0 ? `, ${undecodable} undecodable line(s)` : ""}`,
    ""
  ]
  for (const r of records) {
    lines.push(
      `${r.id}  ${r.direction === "outbound" ? "reply  " : "message"}  ${when(r.receivedAt)}  ${
        terminalSafe(r.senderId)
      } in ${terminalSafe(r.roomId)}  ${r.textBytes} bytes` +
        (r.attempts > 0
          ? `  attempts ${r.attempts}${r.lastError !== undefined ? ` (${terminalSafe(r.lastError)})` : ""}`
          : "")
    )
  }
  if (undecodable > 0) {
    lines.push(
      "",
      "Undecodable lines are moved to matrix/inbound_dlq.corrupt.jsonl at the next replay (or kept until the store key is available)."
    )
  }
  return lines.join("\n")
}

/** What `cara matrix dlq list [--json]` prints for the daemon's answer. */
export const dlqListText = (
  r: { readonly records: ReadonlyArray<DlqSummary>; readonly undecodable: number },
  json: boolean
): string =>
  json
    ? JSON.stringify({ records: r.records, undecodable: r.undecodable }, null, 2)
    : renderList(r.records, r.undecodable)

// cara matrix dlq show, replay, purge

export const renderDetail = (r: DlqDetail): string =>
  [
    `Id:          ${r.id}`,
    `Direction:   ${
      r.direction === "outbound"
        ? "outbound (an answer that could not be sent; replay sends it as the reply to the event)"
        : "inbound (a message whose handling failed; replay answers it)"
    }`,
    `Event:       ${terminalSafe(r.eventId)}`,
    `Room:        ${terminalSafe(r.roomId)}`,
    `Sender:      ${terminalSafe(r.senderId)}`,
    `Received:    ${when(r.receivedAt)}`,
    `Encrypted:   ${r.encrypted ? "yes" : "no"}`,
    `Attempts:    ${r.attempts}${
      r.nextAttemptAt !== undefined ? ` (next automatic try ${when(r.nextAttemptAt)})` : ""
    }`,
    ...(r.lastError !== undefined ? [`Last error:  ${terminalSafe(r.lastError)}`] : []),
    `Body:        ${
      r.text !== undefined ? "" : `${r.textBytes} bytes (hidden; add --reveal on a terminal to print it)`
    }`,
    ...(r.text !== undefined ? [terminalSafe(r.text)] : [])
  ].join("\n")

/** What `cara matrix dlq show <id> [--json]` prints for the daemon's record. */
export const dlqShowText = (r: DlqDetail, json: boolean): string => json ? JSON.stringify(r, null, 2) : renderDetail(r)

/** What `cara matrix dlq replay` prints for the daemon's report (the exit code is 1 when `failed > 0`). */
export const dlqReplayText = (p: DlqReplayReport, json: boolean): string =>
  json
    ? JSON.stringify(p)
    : `Replayed ${p.replayed}, failed ${p.failed}, dropped ${p.dropped} (sender no longer allowed), quarantined ${p.quarantined}; ${p.remaining} record(s) remain.`

/** What `cara matrix dlq purge` prints for the daemon's count. */
export const dlqPurgeText = (purged: number, json: boolean): string =>
  json ? JSON.stringify({ purged }) : `Purged ${purged} record(s) from the inbound DLQ.`

/** The refusal of `cara matrix dlq show --reveal` when stdout is not a terminal (before any call). */
export const REVEAL_NOT_TERMINAL = {
  kind: "dlq-reveal-not-terminal",
  message:
    "refusing to print a message body when stdout is not a terminal; run `cara matrix dlq show <id> --reveal` in a terminal"
} as const

// ---------------------------------------------------------------------------------------------------------
// cara matrix verifications, cara matrix devices, accept, cancel, verify

export const sasLines = (f: VerificationFlow): Array<string> => {
  const lines: Array<string> = []
  if (f.sas?.emoji !== undefined) {
    lines.push("  Emoji:")
    for (const e of f.sas.emoji) lines.push(`    ${terminalSafe(e.symbol)}  ${terminalSafe(e.description)}`)
  }
  if (f.sas?.decimals !== undefined) lines.push(`  Decimals: ${f.sas.decimals.join(" ")}`)
  return lines
}

export const renderFlows = (flows: ReadonlyArray<VerificationFlow>): string => {
  if (flows.length === 0) {
    return "No Matrix verification flows. Start one from another client (verify the bot's device) or with `cara matrix verify <user> [device]`."
  }
  const out: Array<string> = []
  for (const f of flows) {
    out.push(
      `${f.flowId}  ${f.state}`,
      `  Peer:     ${terminalSafe(f.userId)}${f.deviceId !== undefined ? ` (device ${terminalSafe(f.deviceId)})` : ""}${
        f.roomId !== undefined ? ` in ${terminalSafe(f.roomId)}` : ""
      }`,
      `  Updated:  ${when(f.updatedAt)}`,
      ...sasLines(f),
      ""
    )
  }
  return out.join("\n").trimEnd()
}

/** What `cara matrix verifications [--json]` prints for the daemon's answer. */
export const flowsText = (verifications: ReadonlyArray<VerificationFlow>, json: boolean): string =>
  json ? safeJson({ ok: true, verifications }) : renderFlows(verifications)

export const renderDevices = (devices: ReadonlyArray<OwnDevice>): string =>
  devices.length === 0
    ? "No devices known for the bot's account."
    : devices
      .map((d) =>
        `${terminalSafe(d.deviceId)}  ${d.verified ? "verified" : "not verified"}${
          d.displayName !== undefined ? `  ${terminalSafe(d.displayName)}` : ""
        }${d.rawDeviceIdHex !== undefined ? `  (raw hex ${d.rawDeviceIdHex})` : ""}`
      )
      .join("\n")

/** What `cara matrix devices [--json]` prints for the daemon's answer. */
export const devicesText = (devices: ReadonlyArray<OwnDevice>, json: boolean): string =>
  json ? safeJson({ ok: true, devices }) : renderDevices(devices)

/** One flow as `cara matrix accept|cancel|confirm|verify` print it. */
export const flowText = (f: VerificationFlow, json: boolean): string =>
  json ? safeJson({ ok: true, verification: f }) : renderFlows([f])

/** What `cara matrix accept|cancel|verify` print for the daemon's flow: the flow, then what to do next. */
export const flowActionText = (action: "accept" | "cancel" | "verify", f: VerificationFlow, json: boolean): string => {
  const next = json
    ? undefined
    : action === "accept" && f.sas === undefined
    ? "Accepted. Run `cara matrix verifications` until the `sas` values appear, then compare them with the other device."
    : action === "verify"
    ? "Requested. Accept it on the other device; the bot starts SAS once it is ready. Then compare and `cara matrix confirm`."
    : undefined
  return next === undefined ? flowText(f, json) : `${flowText(f, json)}\n${next}`
}
