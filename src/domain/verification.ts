import { Either, Schema } from "effect"
import { createHash } from "node:crypto"
import { DeviceId, UserId } from "./matrix.js"

/**
 * SAS verification domain (reference §6): the record an operator sees (`MatrixVerificationInfo`, camelCase),
 * its wire states, the daemon-owned flow id, display sanitisation and the typed errors that cross the
 * control API and the CLI.
 */

// ---------------------------------------------------------------------------------------------------------
// States (§6.2). Request view: created, requested, ready, transitioned, done, cancelled. SAS view: started,
// accepted, keys_exchanged, confirmed. Local only: mismatched (the operator said `--no-match`).

export const VerificationState = Schema.Literal(
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
)
export type VerificationState = typeof VerificationState.Type

export const TERMINAL_STATES: ReadonlySet<VerificationState> = new Set(["done", "cancelled", "mismatched"])
export const isTerminal = (s: VerificationState): boolean => TERMINAL_STATES.has(s)

export const SasEmoji = Schema.Struct({ symbol: Schema.String, description: Schema.String })
export type SasEmoji = typeof SasEmoji.Type

/** Each part is omitted when the peer's method does not give it; the whole object is omitted until captured. */
export const SasValues = Schema.Struct({
  emoji: Schema.optional(Schema.Array(SasEmoji)),
  decimals: Schema.optional(Schema.Tuple(Schema.Int, Schema.Int, Schema.Int))
})
export type SasValues = typeof SasValues.Type

/**
 * The daemon-owned opaque id of a flow (`mvr_…`, see `flowIdOf`). No pattern: an id an operator typed is
 * looked up as it is, so an unknown one is a 404 from the registry rather than a 400 from the schema.
 */
export const FlowId = Schema.String.pipe(Schema.brand("FlowId"))
export type FlowId = typeof FlowId.Type

/** One flow as listed by `GET /control/matrix/verifications` and carried by the WS events. */
export class VerificationFlow extends Schema.Class<VerificationFlow>("VerificationFlow")({
  /** Daemon-owned opaque id used in CLI and HTTP paths (see `flowIdOf`). */
  flowId: FlowId,
  /** The to-device transaction id, or the event id of an in-room request (sanitised for display). */
  protocolFlowId: Schema.String,
  /** The peer, sanitised for display (always a valid user id, see `sanitizeUserId`). */
  userId: UserId,
  deviceId: Schema.optional(Schema.String),
  /** Set for in-room (user) verification. */
  roomId: Schema.optional(Schema.String),
  state: VerificationState,
  sas: Schema.optional(SasValues),
  createdAt: Schema.Number,
  updatedAt: Schema.Number
}) {}

/** `{userId, deviceId, displayName?, verified, rawDeviceIdHex?}` of one of the bot's own devices (§6.7). */
export const OwnDevice = Schema.Struct({
  userId: Schema.String,
  deviceId: Schema.String,
  displayName: Schema.optional(Schema.String),
  verified: Schema.Boolean,
  rawDeviceIdHex: Schema.optional(Schema.String)
})
export type OwnDevice = typeof OwnDevice.Type

// ---------------------------------------------------------------------------------------------------------
// Flow ids and sanitisation

const FLOW_ID_DOMAIN = "carapace-matrix-verification-control-id-v2\0"

const lengthPrefixed = (s: string): Buffer => {
  const bytes = Buffer.from(s, "utf8")
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(bytes.length))
  return Buffer.concat([len, bytes])
}

/**
 * `"mvr_" + base64url_nopad(SHA-256(domain ‖ u64le(len userId) ‖ userId ‖ u64le(len protocolId) ‖ protocolId))`
 * over the raw ids: stable across restarts and listings, and the same flow id the reference derives.
 */
export const flowIdOf = (rawUserId: string, rawProtocolFlowId: string): FlowId =>
  FlowId.make(
    "mvr_" +
      createHash("sha256")
        .update(Buffer.from(FLOW_ID_DOMAIN, "utf8"))
        .update(lengthPrefixed(rawUserId))
        .update(lengthPrefixed(rawProtocolFlowId))
        .digest("base64url")
  )

// Control chars, bidi and zero-width marks, combining marks, the TAG block and other invisible format chars:
// a peer-chosen id must not be able to disguise itself on the operator's terminal.
const INVISIBLE =
  /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufe00-\ufe0f\u{e0000}-\u{e007f}\u{e0100}-\u{e01ef}]|\p{Mn}|\p{Me}/gu

const MAX_DISPLAY_BYTES = 255

/** Strips invisible and terminal-active characters and caps at 255 UTF-8 bytes (whole code points). */
export const sanitizeDisplay = (s: string): string => {
  let out = ""
  let bytes = 0
  for (const ch of s.replace(INVISIBLE, "")) {
    const n = Buffer.byteLength(ch, "utf8")
    if (bytes + n > MAX_DISPLAY_BYTES) break
    out += ch
    bytes += n
  }
  return out
}

export const USER_ID = /^@[^:\s]+:\S+$/

/** A sanitised user id, or `@invalid-<16 hex>:carapace.invalid` when sanitising leaves no valid id. */
export const sanitizeUserId = (raw: string): UserId => {
  const s = sanitizeDisplay(raw)
  if (USER_ID.test(s)) return UserId.make(s)
  return UserId.make(`@invalid-${createHash("sha256").update(raw, "utf8").digest("hex").slice(0, 16)}:carapace.invalid`)
}

/** Hex of the UTF-8 bytes, shown when sanitising changed a device id (so the raw one can still be named). */
export const rawHex = (s: string): string => Buffer.from(s, "utf8").toString("hex")

// ---------------------------------------------------------------------------------------------------------
// Errors. Each has one stable kind; the control API maps them to statuses (404, 409, 410, 422, 502, 504).

/** 404: no flow with this id (a typo, or pruned). */
export class VerificationFlowNotFound
  extends Schema.TaggedError<VerificationFlowNotFound>()("VerificationFlowNotFound", {
    kind: Schema.Literal("verification-flow-not-found"),
    message: Schema.String
  })
{
  static of(flowId: string) {
    return new VerificationFlowNotFound({
      kind: "verification-flow-not-found",
      message: `Matrix verification flow not found: ${
        sanitizeDisplay(flowId)
      }. The flow id may be a typo or already pruned; run \`cara matrix verifications\` and copy the flow id exactly.`
    })
  }
}

/** 409: the flow has not advanced far enough for the action (e.g. confirm before the SAS is captured). */
export class VerificationFlowNotReady
  extends Schema.TaggedError<VerificationFlowNotReady>()("VerificationFlowNotReady", {
    kind: Schema.Literal("verification-flow-not-ready"),
    message: Schema.String
  })
{
  static of(flowId: string, action: "accept" | "confirm" | "cancel", detail = "") {
    return new VerificationFlowNotReady({
      kind: "verification-flow-not-ready",
      message: `Matrix verification flow is not ready for ${action}: ${flowId}${
        detail === "" ? "" : ` (${detail})`
      }. Wait for the peer to respond (poll \`cara matrix verifications\`), then retry.`
    })
  }
}

/** 410: the flow is terminal (done, cancelled or mismatched). */
export class VerificationFlowTerminal
  extends Schema.TaggedError<VerificationFlowTerminal>()("VerificationFlowTerminal", {
    kind: Schema.Literal("verification-cancelled"),
    message: Schema.String
  })
{
  static of(flowId: string, state: VerificationState) {
    return new VerificationFlowTerminal({
      kind: "verification-cancelled",
      message:
        `Matrix verification flow ${flowId} is ${state}; nothing more can be done with it. Start a new flow with \`cara matrix verify <user> [device]\` or from the other client.`
    })
  }
}

/** 404: the device (or the user's identity) to verify is unknown to the bot. */
export class VerificationTargetNotFound
  extends Schema.TaggedError<VerificationTargetNotFound>()("VerificationTargetNotFound", {
    kind: Schema.Literal("device-not-found", "user-identity-not-found"),
    message: Schema.String
  })
{}

/** 422: the user id is not a Matrix user id. */
export class InvalidVerificationUser extends Schema.TaggedError<InvalidVerificationUser>()("InvalidVerificationUser", {
  kind: Schema.Literal("invalid-user-id"),
  message: Schema.String
}) {
  static of() {
    return new InvalidVerificationUser({
      kind: "invalid-user-id",
      message: "userId must be a Matrix user id like @alice:example.com"
    })
  }
}

/** 502: the SDK or the homeserver refused the action. */
export class VerificationFailed extends Schema.TaggedError<VerificationFailed>()("VerificationFailed", {
  kind: Schema.Literal("verification"),
  message: Schema.String
}) {}

/** 504: the SDK did not finish the action in time; it may still land (list again). */
export class VerificationTimeout extends Schema.TaggedError<VerificationTimeout>()("VerificationTimeout", {
  kind: Schema.Literal("verification-timeout"),
  message: Schema.String
}) {}

/** 503: no Matrix client to act on (Matrix off, not started yet, or stopped). */
export class VerificationUnavailable extends Schema.TaggedError<VerificationUnavailable>()("VerificationUnavailable", {
  kind: Schema.Literal("not-connected", "matrix-runtime-unavailable"),
  message: Schema.String,
  retryAfterMs: Schema.optional(Schema.Int)
}) {}

export type VerificationActionError =
  | VerificationFlowNotFound
  | VerificationFlowNotReady
  | VerificationFlowTerminal
  | VerificationFailed
  | VerificationTimeout
  | VerificationUnavailable

export type VerificationStartError =
  | InvalidVerificationUser
  | VerificationTargetNotFound
  | VerificationFailed
  | VerificationTimeout
  | VerificationUnavailable

/** Whom a bot-initiated flow is for, as the service takes it. */
export interface VerificationTarget {
  readonly userId: UserId
  readonly deviceId?: DeviceId
}

/** The operator's text as a target: both trimmed, an empty device meaning "the user"; 422 when the user id is not one. */
export const verificationTarget = (
  userId: string,
  deviceId?: string
): Either.Either<VerificationTarget, InvalidVerificationUser> => {
  const user = userId.trim()
  const device = deviceId?.trim() ?? ""
  if (!USER_ID.test(user)) {
    return Either.left(InvalidVerificationUser.of())
  }
  return Either.right(
    device === "" ? { userId: UserId.make(user) } : { userId: UserId.make(user), deviceId: DeviceId.make(device) }
  )
}
