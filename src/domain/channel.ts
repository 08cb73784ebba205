import { Schema } from "effect"

/** Wire states of a channel (reference §11). */
export const ChannelState = Schema.Literal("connecting", "connected", "error", "disconnected", "paused", "logged_out")
export type ChannelState = typeof ChannelState.Type

/**
 * Matrix channel metadata (`/control/channels` → `channels[id="matrix"].extra`), reference §11 names.
 * Optional fields are omitted when empty, as the reference does.
 */
export const MatrixChannelExtra = Schema.Struct({
  joinedRoomCount: Schema.Int,
  encryptedRoomCount: Schema.Int,
  unencryptedRoomCount: Schema.Int,
  unsupportedRoomCount: Schema.Int,
  unsupportedRooms: Schema.Array(Schema.String),
  pendingVerificationCount: Schema.Int,
  lastSuccessfulSyncAt: Schema.NullOr(Schema.Number),
  undecryptableEventCount: Schema.Int,
  unsupportedInboundCount: Schema.Int,
  inboundDispatchFailureTotal: Schema.Int,
  inboundDlqAppendFailureTotal: Schema.Int,
  inboundDlqUndecodableLostCount: Schema.Int,
  inboundDlqRecordCount: Schema.optional(Schema.Int),
  inboundDlqReplayedTotal: Schema.optional(Schema.Int),
  inboundDlqDurabilityError: Schema.optional(Schema.String),
  inboundDlqDurabilityErrorAt: Schema.optional(Schema.Number),
  inboundDlqLostEventIds: Schema.optional(Schema.Array(Schema.String)),
  inboundDlqLostEventIdsAt: Schema.optional(Schema.Number),
  lastInboundFailureAt: Schema.optional(Schema.Number),
  /** Answers whose send failed and that are not sent yet (held for retry; ours). Omitted when none. */
  outboundPendingCount: Schema.optional(Schema.Int),
  /** When the oldest of them first failed (ms since the epoch). */
  outboundPendingOldestAt: Schema.optional(Schema.Number),
  lastInboundDlqAppendFailureAt: Schema.optional(Schema.Number),
  peerDropUnsupportedMsgtypeTotal: Schema.Int,
  peerDropAllowlistRejectionTotal: Schema.Int,
  peerDropBodyTooLargeTotal: Schema.Int,
  peerDropVerificationCapFullTotal: Schema.Int,
  peerDropEncryptedRoomTotal: Schema.Int,
  inboundDedupeCorruptLineTotal: Schema.Int,
  /** Issue 16 §6: messages refused by the per-room / per-sender budget, and the notices that said so. */
  inboundBudgetRefusedRoomTotal: Schema.optionalWith(Schema.Int, { default: () => 0 }),
  inboundBudgetRefusedSenderTotal: Schema.optionalWith(Schema.Int, { default: () => 0 }),
  inboundBudgetNoticeTotal: Schema.optionalWith(Schema.Int, { default: () => 0 }),
  /** Issue 16 §10: plaintext m.room.message in an encrypted room; messages from devices not cross-signed. */
  peerDropUnencryptedInEncryptedRoomTotal: Schema.optionalWith(Schema.Int, { default: () => 0 }),
  peerDropNotCrossSignedTotal: Schema.optionalWith(Schema.Int, { default: () => 0 }),
  /** Issue 20 §3: questions not answered because they were redacted (before or while being answered). */
  inboundRedactedTotal: Schema.optionalWith(Schema.Int, { default: () => 0 }),
  deviceId: Schema.optional(Schema.String),
  userId: Schema.optional(Schema.String),
  /** `pending` from the start of the runtime until its start-up sequence (cross-signing, password removal) ends. */
  crossSigning: Schema.optional(Schema.Literal("pending", "unknown", "not-bootstrapped", "bootstrapped", "verified")),
  firstRecoveryKeyMintedAt: Schema.optional(Schema.Number),
  lastErrorKind: Schema.optional(Schema.String)
})
export type MatrixChannelExtra = typeof MatrixChannelExtra.Type

export const ChannelInfo = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  status: ChannelState,
  lastConnectedAt: Schema.NullOr(Schema.String),
  lastError: Schema.NullOr(Schema.String),
  statusChangedAt: Schema.String,
  extra: Schema.optional(MatrixChannelExtra)
})
export type ChannelInfo = typeof ChannelInfo.Type

export const emptyMatrixExtra: MatrixChannelExtra = {
  joinedRoomCount: 0,
  encryptedRoomCount: 0,
  unencryptedRoomCount: 0,
  unsupportedRoomCount: 0,
  unsupportedRooms: [],
  pendingVerificationCount: 0,
  lastSuccessfulSyncAt: null,
  undecryptableEventCount: 0,
  unsupportedInboundCount: 0,
  inboundDispatchFailureTotal: 0,
  inboundDlqAppendFailureTotal: 0,
  inboundDlqUndecodableLostCount: 0,
  peerDropUnsupportedMsgtypeTotal: 0,
  peerDropAllowlistRejectionTotal: 0,
  peerDropBodyTooLargeTotal: 0,
  peerDropVerificationCapFullTotal: 0,
  peerDropEncryptedRoomTotal: 0,
  inboundDedupeCorruptLineTotal: 0,
  inboundBudgetRefusedRoomTotal: 0,
  inboundBudgetRefusedSenderTotal: 0,
  inboundBudgetNoticeTotal: 0,
  peerDropUnencryptedInEncryptedRoomTotal: 0,
  peerDropNotCrossSignedTotal: 0,
  inboundRedactedTotal: 0
}
