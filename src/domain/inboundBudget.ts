/**
 * The inbound budget (issue 16 §6): token buckets that cap how many messages per room and per sender reach
 * the model, so two bots that allow each other, or a flooding sender, cannot run up unbounded model calls.
 * Pure: time is a parameter (milliseconds), so tests drive it without a wall clock.
 */
import { refilledTokens } from "./tokenBucket.js"

export interface BucketSpec {
  /** Tokens a full bucket holds: messages answered back to back. */
  readonly burst: number
  /** Tokens added per minute, continuously, up to `burst`. */
  readonly perMinute: number
}

export interface InboundBudgetSpec {
  readonly room: BucketSpec
  readonly sender: BucketSpec
}

/** `matrix.inboundBudget.*` defaults: a person typing fast is never refused; a loop is stopped within seconds. */
export const DEFAULT_INBOUND_BUDGET: InboundBudgetSpec = {
  room: { burst: 20, perMinute: 20 },
  sender: { burst: 10, perMinute: 10 }
}

export interface Bucket {
  readonly tokens: number
  readonly at: number
  /**
   * Whether a refusal was already announced since the last message this bucket admitted: the first refusal
   * of such a window gets one notice, later ones none (the window ends with the next admitted message).
   */
  readonly refusalNoticed: boolean
}

export const fullBucket = (spec: BucketSpec, now: number): Bucket => ({
  tokens: spec.burst,
  at: now,
  refusalNoticed: false
})

/** The bucket at `now` (refilled since its last update; a clock that went backwards refills nothing). */
export const refill = (spec: BucketSpec, b: Bucket, now: number): Bucket => ({
  ...b,
  tokens: refilledTokens(b.tokens, b.at, now, spec.burst, spec.perMinute / 60_000),
  at: Math.max(b.at, now)
})

export type Scope = "room" | "sender"

const EPSILON = 1e-9

export type BudgetVerdict =
  | { readonly _tag: "Admit" }
  /** `notice`: this is the first refusal of its window; tell the room once. */
  | { readonly _tag: "Refuse"; readonly scope: Scope; readonly notice: boolean }

/**
 * One message against both buckets: admitted only when both hold a whole token (then both pay one); a
 * refusal costs nothing, so a flood cannot push the refill further away. The room bucket is judged first.
 */
export const judge = (
  spec: InboundBudgetSpec,
  room: Bucket,
  sender: Bucket,
  now: number
): { readonly verdict: BudgetVerdict; readonly room: Bucket; readonly sender: Bucket } => {
  const r = refill(spec.room, room, now)
  const s = refill(spec.sender, sender, now)
  const refuse = (scope: Scope) => {
    const b = scope === "room" ? r : s
    const marked = { ...b, refusalNoticed: true }
    return {
      verdict: { _tag: "Refuse" as const, scope, notice: !b.refusalNoticed },
      room: scope === "room" ? marked : r,
      sender: scope === "sender" ? marked : s
    }
  }
  // the refill is a sum of float fractions: a token that is whole up to rounding counts as whole
  if (r.tokens < 1 - EPSILON) return refuse("room")
  if (s.tokens < 1 - EPSILON) return refuse("sender")
  return {
    verdict: { _tag: "Admit" },
    room: { ...r, tokens: Math.max(0, r.tokens - 1), refusalNoticed: false },
    sender: { ...s, tokens: Math.max(0, s.tokens - 1), refusalNoticed: false }
  }
}

/** Buckets kept per scope at most; full buckets (indistinguishable from new ones) are dropped first. */
export const MAX_BUCKETS = 10_000

/**
 * The keyed buckets of a running daemon. Memory is bounded: past `MAX_BUCKETS` keys the full buckets go,
 * then the least recently used, so a stream of new senders or rooms cannot grow it without limit (an evicted
 * bucket comes back full, which only matters for more than `MAX_BUCKETS` active keys).
 */
export const makeBudget = (spec: InboundBudgetSpec) => {
  const rooms = new Map<string, Bucket>()
  const senders = new Map<string, Bucket>()
  const put = (m: Map<string, Bucket>, bucketSpec: BucketSpec, key: string, b: Bucket, now: number) => {
    m.delete(key)
    m.set(key, b)
    if (m.size <= MAX_BUCKETS) return
    for (const [k, v] of m) if (refill(bucketSpec, v, now).tokens >= bucketSpec.burst) m.delete(k)
    for (const k of m.keys()) {
      if (m.size <= MAX_BUCKETS) break
      m.delete(k)
    }
  }
  return {
    /** Judges one message of `sender` in `roomId` at `now` and records the outcome. */
    take: (roomId: string, sender: string, now: number): BudgetVerdict => {
      // a sender's bucket spans every room: opening more rooms does not buy more model calls
      const out = judge(
        spec,
        rooms.get(roomId) ?? fullBucket(spec.room, now),
        senders.get(sender) ?? fullBucket(spec.sender, now),
        now
      )
      put(rooms, spec.room, roomId, out.room, now)
      put(senders, spec.sender, sender, out.sender, now)
      return out.verdict
    },
    size: () => ({ rooms: rooms.size, senders: senders.size })
  }
}

export type Budget = ReturnType<typeof makeBudget>

/** The one short notice of a refusal window (an `m.notice`: no bot answers it). */
export const refusalNoticeText = (scope: Scope, spec: InboundBudgetSpec): string =>
  scope === "room"
    ? `Too many messages in this room: I am pausing my answers here for a moment (at most ${spec.room.perMinute} per minute). Messages sent meanwhile are not answered.`
    : `You are sending messages faster than I answer them (at most ${spec.sender.perMinute} per minute): I am pausing my answers to you for a moment. Messages sent meanwhile are not answered.`
