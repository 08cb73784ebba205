import { type Allowlist, allowsUser } from "./allowlist.js"
import type { MatrixChannelExtra } from "./channel.js"
import type { InboundEvent } from "./matrix.js"

/** What the sync loop knows about the room an event arrived in, at the time it arrived. */
export interface RoomFacts {
  /** Joined (and invited) members, the bot included. */
  readonly memberCount: number
  /** `m.room.encryption` state is present. */
  readonly encrypted: boolean
  /** `origin_server_ts` of the bot's own join; older events are history and never answered. */
  readonly botJoinedAt: number | undefined
  /** The bot's display name in the room (a mention by name counts in group rooms). */
  readonly botDisplayName: string | undefined
}

// Gates (reference §7.3, plus the group-mention rule), pure

/** Attachments answered besides `m.text` (issue 20.2: src/layers/attachments.ts); `m.video` is still dropped. */
export const ATTACHMENT_MSGTYPES: ReadonlySet<unknown> = new Set(["m.image", "m.file", "m.audio"])

/** Bodies above this many UTF-8 bytes are not answered. */
export const MAX_BODY_BYTES = 64 * 1024

export type GroupMessages = "mention" | "all"

export interface GateContext {
  readonly botUserId: string
  readonly allowlist: Allowlist
  /** `matrix.encrypted` */
  readonly encryptedMode: boolean
  /** `matrix.groupMessages`: in rooms with more than two members, answer only mentions (default) or all. */
  readonly groupMessages: GroupMessages
  /** `matrix.requireCrossSignedSenders`: only devices their owner cross-signed are answered. */
  readonly requireCrossSignedSenders?: boolean
}

export type InboundCounter = keyof Pick<
  MatrixChannelExtra,
  | "unsupportedInboundCount"
  | "peerDropUnsupportedMsgtypeTotal"
  | "peerDropAllowlistRejectionTotal"
  | "peerDropBodyTooLargeTotal"
  | "peerDropEncryptedRoomTotal"
  | "peerDropUnencryptedInEncryptedRoomTotal"
  | "peerDropNotCrossSignedTotal"
  | "inboundBudgetRefusedRoomTotal"
  | "inboundBudgetRefusedSenderTotal"
  | "inboundBudgetNoticeTotal"
  | "inboundRedactedTotal"
>

export type GateVerdict =
  | { readonly _tag: "Dispatch"; readonly isGroup: boolean }
  /**
   * Not for the agent and not worth a counter (own echo, verification, edit, history, no mention, and
   * `m.notice`: by the spec's convention automated output, never answered, which is what keeps two bots
   * that allow each other from answering each other).
   */
  | {
    readonly _tag: "Ignore"
    readonly reason: "own" | "verification" | "notice" | "edit" | "history" | "not-mentioned"
  }
  /** Refused and counted in the channel status. */
  | {
    readonly _tag: "Drop"
    readonly reason:
      | "encrypted-room"
      | "unencrypted-in-encrypted-room"
      | "msgtype"
      | "allowlist"
      | "not-cross-signed"
      | "invisible"
      | "too-large"
      | "redacted"
    readonly counters: ReadonlyArray<InboundCounter>
  }

/** Only whitespace, control, format (zero-width, bidi) or filler characters. */
const INVISIBLE_ONLY = /^[\p{White_Space}\p{Cc}\p{Cf}\p{Zs}\p{Zl}\p{Zp}\u115F\u1160\u3164\uFFA0\u2800\u180E]*$/u

export const isInvisibleOnly = (body: string): boolean => INVISIBLE_ONLY.test(body)

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** `m.mentions` names the bot, or the body holds its MXID or (as a whole word) its display name. */
export const mentionsBot = (ev: InboundEvent, botUserId: string, displayName: string | undefined): boolean => {
  if (ev.mentionedUserIds?.includes(botUserId) === true) return true
  if (ev.body.includes(botUserId)) return true
  const name = displayName?.trim()
  if (name === undefined || name === "") return false
  return new RegExp(`(^|[^\\p{L}\\p{N}_])${escapeRegExp(name)}($|[^\\p{L}\\p{N}_])`, "iu").test(ev.body)
}

export const gateInbound = (ctx: GateContext, ev: InboundEvent, room: RoomFacts): GateVerdict => {
  if (!ctx.encryptedMode && (room.encrypted || ev.encrypted)) {
    return {
      _tag: "Drop",
      reason: "encrypted-room",
      counters: ["peerDropEncryptedRoomTotal", "unsupportedInboundCount"]
    }
  }
  // the account, not the device: messages from the bot's other sessions are never answered either
  if (ev.sender === ctx.botUserId) return { _tag: "Ignore", reason: "own" }
  // its content is gone (redacted before cara saw it): never answered; offer commits it (never resumed).
  // Before the msgtype check (a redacted event has none); a stranger's counts as any stranger's message.
  if (ev.redacted === true) {
    return allowsUser(ctx.allowlist, ev.sender)
      ? { _tag: "Drop", reason: "redacted", counters: ["inboundRedactedTotal"] }
      : { _tag: "Drop", reason: "allowlist", counters: ["peerDropAllowlistRejectionTotal"] }
  }
  // A room with m.room.encryption only ever carries encrypted messages from real clients: a plaintext one
  // was injected (a homeserver admin, a spoofing server) and its sender is not authenticated by any key.
  if (ctx.encryptedMode && room.encrypted && !ev.encrypted) {
    return {
      _tag: "Drop",
      reason: "unencrypted-in-encrypted-room",
      counters: ["peerDropUnencryptedInEncryptedRoomTotal", "unsupportedInboundCount"]
    }
  }
  if (ev.msgtype?.startsWith("m.key.verification.") === true) return { _tag: "Ignore", reason: "verification" }
  if (ev.msgtype === "m.notice") return { _tag: "Ignore", reason: "notice" }
  if (ev.msgtype !== "m.text" && !ATTACHMENT_MSGTYPES.has(ev.msgtype)) {
    return { _tag: "Drop", reason: "msgtype", counters: ["peerDropUnsupportedMsgtypeTotal", "unsupportedInboundCount"] }
  }
  if (!allowsUser(ctx.allowlist, ev.sender)) {
    return { _tag: "Drop", reason: "allowlist", counters: ["peerDropAllowlistRejectionTotal"] }
  }
  // an edit is answered only when it was checked against its original (events.ts sets `replaces`)
  if (ev.relType === "m.replace" && ev.replaces === undefined) return { _tag: "Ignore", reason: "edit" }
  if (room.botJoinedAt !== undefined && ev.ts < room.botJoinedAt) return { _tag: "Ignore", reason: "history" }
  // after the allowlist: only an allowed sender is told (once) why it is not answered
  if (ctx.requireCrossSignedSenders === true && ev.senderDeviceCrossSigned !== true) {
    return { _tag: "Drop", reason: "not-cross-signed", counters: ["peerDropNotCrossSignedTotal"] }
  }
  if (Buffer.byteLength(ev.body, "utf8") > MAX_BODY_BYTES) {
    return { _tag: "Drop", reason: "too-large", counters: ["peerDropBodyTooLargeTotal", "unsupportedInboundCount"] }
  }
  if (isInvisibleOnly(ev.body)) return { _tag: "Drop", reason: "invisible", counters: ["unsupportedInboundCount"] }
  const isGroup = room.memberCount > 2
  if (isGroup && ctx.groupMessages === "mention" && !mentionsBot(ev, ctx.botUserId, room.botDisplayName)) {
    return { _tag: "Ignore", reason: "not-mentioned" }
  }
  return { _tag: "Dispatch", isGroup }
}
