// The daemon's answers lite.ts prints, as plain shapes: an answer is used only when it has exactly these fields
// in this order (optional ones may be missing), with these types; anything else (an older or newer daemon, a
// field with a default the daemon did not send) goes to the typed client, which decodes it with the schemas of
// src/domain/api.ts. Such an answer is what the schema's encoding gives, so decoding it changes nothing the
// commands print: test/unit/cli-lite.test.ts checks these shapes against the schemas with generated answers.

export type Shape =
  | { readonly t: "string" | "number" | "int" | "nonNegativeInt" | "boolean" }
  | { readonly t: "literal"; readonly values: ReadonlyArray<string | boolean> }
  | { readonly t: "nullOr"; readonly of: Shape }
  | { readonly t: "array"; readonly of: Shape }
  | { readonly t: "tuple"; readonly of: ReadonlyArray<Shape> }
  | { readonly t: "struct"; readonly fields: ReadonlyArray<readonly [string, Shape, boolean]> }

const S: Shape = { t: "string" }
const N: Shape = { t: "number" }
const I: Shape = { t: "int" }
const NNI: Shape = { t: "nonNegativeInt" }
const B: Shape = { t: "boolean" }
const lit = (...values: ReadonlyArray<string | boolean>): Shape => ({ t: "literal", values })
const nullOr = (of: Shape): Shape => ({ t: "nullOr", of })
const array = (of: Shape): Shape => ({ t: "array", of })
const OPTIONAL = Symbol("optional")
const opt = (s: Shape) => ({ [OPTIONAL]: s })
type FieldSpec = Shape | ReturnType<typeof opt>
const struct = (fields: Record<string, FieldSpec>): Shape => ({
  t: "struct",
  fields: Object.entries(fields).map(([k, f]) => (OPTIONAL in f ? [k, f[OPTIONAL], true] : [k, f as Shape, false]))
})

/** Whether `v` (parsed JSON) has exactly the shape. */
export const conforms = (shape: Shape, v: unknown): boolean => {
  switch (shape.t) {
    case "string":
      return typeof v === "string"
    case "number":
      return typeof v === "number" && Number.isFinite(v)
    case "int":
      return Number.isSafeInteger(v)
    case "nonNegativeInt":
      return Number.isSafeInteger(v) && (v as number) >= 0
    case "boolean":
      return typeof v === "boolean"
    case "literal":
      return shape.values.includes(v as string)
    case "nullOr":
      return v === null || conforms(shape.of, v)
    case "array":
      return Array.isArray(v) && v.every((x) => conforms(shape.of, x))
    case "tuple":
      return Array.isArray(v) && v.length === shape.of.length && shape.of.every((s, i) => conforms(s, v[i]))
    case "struct":
      return conformsStruct(shape.fields, v)
  }
}

const conformsStruct = (fields: ReadonlyArray<readonly [string, Shape, boolean]>, v: unknown): boolean => {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false
  let i = 0
  for (const [key, value] of Object.entries(v)) {
    while (i < fields.length && fields[i]![0] !== key) {
      if (!fields[i]![2]) return false
      i++
    }
    if (i === fields.length || !conforms(fields[i]![1], value)) return false
    i++
  }
  return fields.slice(i).every((f) => f[2])
}

// ---------------------------------------------------------------------------------------------------------
// src/domain/api.ts, channel.ts, dlq.ts, verification.ts

export const HealthShape = struct({ status: lit("ok"), version: S, uptimeSeconds: NNI })

export const ControlStatusShape = struct({
  ok: lit(true),
  version: S,
  startedAt: S,
  uptimeSeconds: NNI,
  connectedChannels: I,
  totalChannels: I,
  runtime: struct({ name: S, version: S, platform: S, arch: S })
})

const MatrixChannelExtraShape = struct({
  joinedRoomCount: I,
  encryptedRoomCount: I,
  unencryptedRoomCount: I,
  unsupportedRoomCount: I,
  unsupportedRooms: array(S),
  pendingVerificationCount: I,
  lastSuccessfulSyncAt: nullOr(N),
  undecryptableEventCount: I,
  unsupportedInboundCount: I,
  inboundDispatchFailureTotal: I,
  inboundDlqAppendFailureTotal: I,
  inboundDlqUndecodableLostCount: I,
  inboundDlqRecordCount: opt(I),
  inboundDlqReplayedTotal: opt(I),
  inboundDlqDurabilityError: opt(S),
  inboundDlqDurabilityErrorAt: opt(N),
  inboundDlqLostEventIds: opt(array(S)),
  inboundDlqLostEventIdsAt: opt(N),
  lastInboundFailureAt: opt(N),
  outboundPendingCount: opt(I),
  outboundPendingOldestAt: opt(N),
  lastInboundDlqAppendFailureAt: opt(N),
  peerDropUnsupportedMsgtypeTotal: I,
  peerDropAllowlistRejectionTotal: I,
  peerDropBodyTooLargeTotal: I,
  peerDropVerificationCapFullTotal: I,
  peerDropEncryptedRoomTotal: I,
  inboundDedupeCorruptLineTotal: I,
  // with a default in the schema: the daemon always sends them
  inboundBudgetRefusedRoomTotal: I,
  inboundBudgetRefusedSenderTotal: I,
  inboundBudgetNoticeTotal: I,
  peerDropUnencryptedInEncryptedRoomTotal: I,
  peerDropNotCrossSignedTotal: I,
  inboundRedactedTotal: I,
  deviceId: opt(S),
  userId: opt(S),
  crossSigning: opt(lit("pending", "unknown", "not-bootstrapped", "bootstrapped", "verified")),
  firstRecoveryKeyMintedAt: opt(N),
  lastErrorKind: opt(S)
})

const ChannelInfoShape = struct({
  id: S,
  name: S,
  status: lit("connecting", "connected", "error", "disconnected", "paused", "logged_out"),
  lastConnectedAt: nullOr(S),
  lastError: nullOr(S),
  statusChangedAt: S,
  extra: opt(MatrixChannelExtraShape)
})

export const ChannelsShape = struct({ total: I, connected: I, channels: array(ChannelInfoShape) })

const DlqSummaryFields = {
  id: S,
  direction: lit("inbound", "outbound"),
  eventId: S,
  roomId: S,
  senderId: S,
  receivedAt: N,
  encrypted: B,
  attempts: I,
  nextAttemptAt: opt(N),
  lastError: opt(S),
  textBytes: I
}
const DlqSummaryShape = struct(DlqSummaryFields)

export const DlqListShape = struct({ ok: lit(true), records: array(DlqSummaryShape), undecodable: I })

export const DlqShowShape = struct({ ok: lit(true), record: struct({ ...DlqSummaryFields, text: opt(S) }) })

export const DlqReplayShape = struct({
  ok: lit(true),
  report: struct({ replayed: I, failed: I, dropped: I, quarantined: I, deferred: I, remaining: I })
})

export const DlqPurgeShape = struct({ ok: lit(true), purged: I })

const VerificationFlowShape = struct({
  flowId: S,
  protocolFlowId: S,
  userId: S,
  deviceId: opt(S),
  roomId: opt(S),
  state: lit(
    "created",
    "requested",
    "ready",
    "transitioned",
    "started",
    "accepted",
    "keys_exchanged",
    "confirmed",
    "done",
    "cancelled",
    "mismatched"
  ),
  sas: opt(struct({
    emoji: opt(array(struct({ symbol: S, description: S }))),
    decimals: opt({ t: "tuple", of: [I, I, I] })
  })),
  createdAt: N,
  updatedAt: N
})

export const VerificationListShape = struct({ ok: lit(true), verifications: array(VerificationFlowShape) })

export const VerificationResultShape = struct({ ok: lit(true), verification: VerificationFlowShape })

const OwnDeviceShape = struct({
  userId: S,
  deviceId: S,
  displayName: opt(S),
  verified: B,
  rawDeviceIdHex: opt(S)
})

export const DeviceListShape = struct({ ok: lit(true), devices: array(OwnDeviceShape) })

/** `{ ok: false, error: { kind, message, retryAfterMs?, reason? } }`: every error body of the API. */
export const ErrorBodyShape = struct({
  ok: lit(false),
  error: struct({ kind: S, message: S, retryAfterMs: opt(I), reason: opt(S) })
})
