import { Schema } from "effect"
import { RECOVERY_RUNTIME_KINDS, type RecoveryKeyError } from "./recoveryKey.js"

/**
 * Matrix domain: branded ids, the inbound event record handed from the sync loop to the inbound
 * pipeline, and the runtime error kinds of reference §12 that the Matrix runtime raises.
 */

export const UserId = Schema.String.pipe(Schema.pattern(/^@[^:]+:.+$/), Schema.brand("UserId"))
export type UserId = typeof UserId.Type
export const RoomId = Schema.String.pipe(Schema.pattern(/^![^:]+(:.+)?$/), Schema.brand("RoomId"))
export type RoomId = typeof RoomId.Type
export const EventId = Schema.String.pipe(Schema.pattern(/^\$.+$/), Schema.brand("EventId"))
export type EventId = typeof EventId.Type
export const DeviceId = Schema.NonEmptyString.pipe(Schema.brand("DeviceId"))
export type DeviceId = typeof DeviceId.Type

/**
 * The ids of an event from the SDK or a stored record, branded once where they enter (a checked decode:
 * `None` when one of them is not a Matrix id).
 */
export const decodeEventIds = Schema.decodeUnknownOption(
  Schema.Struct({ eventId: EventId, roomId: RoomId, sender: UserId, threadId: Schema.optional(EventId) })
)

/** An event's id and room, branded (a ledger row, an undecryptable SDK event): `None` when one does not decode. */
export const decodeRoomEvent = Schema.decodeUnknownOption(Schema.Struct({ eventId: EventId, roomId: RoomId }))

/** A decrypted (or plain) `m.room.message` as the inbound pipeline sees it. */
export const InboundEvent = Schema.Struct({
  eventId: EventId,
  roomId: RoomId,
  sender: UserId,
  /** How a group prompt names the sender (display name, MXID where needed: src/layers/matrix/members.ts). */
  senderLabel: Schema.optional(Schema.String),
  /** `origin_server_ts` (server clock, used for the history cut-offs). */
  ts: Schema.Number,
  msgtype: Schema.optional(Schema.String),
  body: Schema.String,
  /** `m.relates_to.rel_type` (`m.replace`, `m.thread`, ...). */
  relType: Schema.optional(Schema.String),
  /** The thread root when the message is in a thread. */
  threadId: Schema.optional(EventId),
  /** A valid edit (`m.replace`, checked against its original): the question it replaces; body/msgtype are the new ones. */
  replaces: Schema.optional(EventId),
  /** `m.mentions.user_ids`, when the sender's client set it (as sent: not checked to be user ids). */
  mentionedUserIds: Schema.optional(Schema.Array(Schema.String)),
  encrypted: Schema.Boolean,
  /** The event arrived redacted (`unsigned.redacted_because`): its content is gone. */
  redacted: Schema.optional(Schema.Boolean),
  /**
   * Whether the sending device is cross-signed by its owner; set only where `matrix.requireCrossSignedSenders`
   * asks for it (absent = not checked, and then fails closed when the check is required).
   */
  senderDeviceCrossSigned: Schema.optional(Schema.Boolean),
  /**
   * The content of an `m.image` / `m.file` / `m.audio` message (with its `file`: the attachment's key), read
   * by src/layers/attachments.ts. In memory and in the encrypted DLQ only.
   */
  attachment: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
})
export type InboundEvent = typeof InboundEvent.Type

/** The §12 runtime kinds the Matrix runtime stamps on the channel (`lastErrorKind`). */
export const MatrixErrorKind = Schema.Literal(
  "startup-failed",
  "client-build",
  "missing-store-secret",
  "encrypted-store-passphrase-mismatch",
  "encrypted-state-io",
  "interrupted-rekey",
  "store-key-derivation",
  "installation-id",
  // a state file exists but is damaged, or is missing while other state needs it (src/domain/stateFiles.ts)
  "installation-id-missing",
  "crypto-store-corrupt",
  "state-store-corrupt",
  "inbound-ledger-corrupt",
  "invalid-user-id",
  "missing-credentials",
  "missing-device-id-for-token-restore",
  "auth",
  "auth-probe",
  "auth-token-revoked",
  "auth-session-user-mismatch",
  "auth-session-device-mismatch",
  "auth-session-missing-device-id",
  /** a token is configured, but its device's crypto store is gone and no password allows a new device */
  "crypto-store-missing",
  "token-persistence",
  "sync-failed",
  "sync-loop-give-up",
  "not-connected",
  "room-not-found",
  "unsupported-room",
  "send-failed",
  "send-terminal",
  // the recovery-key subsystem (src/domain/recoveryKey.ts)
  ...RECOVERY_RUNTIME_KINDS
)
export type MatrixErrorKind = typeof MatrixErrorKind.Type

/**
 * A Matrix runtime failure an operator sees (channel `error`, `cara status`, control API). The message
 * says what to do next and never holds a token, password or key.
 */
export class MatrixError extends Schema.TaggedError<MatrixError>()("MatrixError", {
  kind: MatrixErrorKind,
  message: Schema.String,
  /** For retryable sends: the homeserver's hint. */
  retryAfterMs: Schema.optional(Schema.Number)
}) {}

/** The remediation text of `auth-token-revoked` (reference §12.2). */
export const TOKEN_REVOKED_HINT =
  "token revoked, account deactivated/locked, or suspended. accessToken-configured: mint a new token, edit " +
  "matrix.accessToken and matrix.deviceId in the config file or set MATRIX_ACCESS_TOKEN and MATRIX_DEVICE_ID in " +
  "the daemon environment, then restart. password-configured: verify the password is correct and restart"

/** errcodes that mean the access token is no longer usable (at sync / whoami level, also M_FORBIDDEN). */
export const TOKEN_REVOCATION_CODES: ReadonlySet<string> = new Set([
  "M_UNKNOWN_TOKEN",
  "M_USER_DEACTIVATED",
  "M_USER_LOCKED",
  "M_USER_SUSPENDED"
])

/** The channel id of the Matrix runtime in the channel status. */
export const MATRIX_CHANNEL_ID = "matrix"

/** The bot is not in the room (also: the room id is not one). */
export const roomNotFound = (roomId: string) =>
  new MatrixError({
    kind: "room-not-found",
    message: `The bot has not joined ${roomId}. Invite it (from an allowed user) and retry.`
  })

/** The error of a token the homeserver rejected for good (`auth-token-revoked`). */
export const tokenRevoked = (code: string) =>
  new MatrixError({
    kind: "auth-token-revoked",
    message: `Matrix access token rejected by homeserver: ${code} (${TOKEN_REVOKED_HINT})`
  })

/** A recovery-key failure as the Matrix runtime reports it (channel `error`, `lastErrorKind`). */
export const recoveryFailure = (e: RecoveryKeyError): MatrixError =>
  new MatrixError({
    kind: e.kind === "recovery-key-invalid" || e.kind === "recovery-key-refused" ? "recovery-state-io" : e.kind,
    message: e.message
  })
