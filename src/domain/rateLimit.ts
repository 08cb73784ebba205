// Token buckets per key with bounded memory (reference §6.5: the verification WebSocket broadcasts; the
// control API's per-address limits). Pure: the caller passes the clock.
import { msUntilToken, refilledTokens } from "./tokenBucket.js"

export interface KeyedBucketsOptions {
  /** Tokens a fresh bucket holds, and the most it ever holds. */
  readonly burst: number
  /** Tokens added per `refillMs` (continuously). */
  readonly refill: number
  readonly refillMs: number
  /** Buckets kept at most; the least recently used goes first. */
  readonly maxKeys: number
  /** Buckets one peer may hold; its own least recently used goes first, so one peer cannot evict the others. */
  readonly maxKeysPerPeer: number
}

/** The reference's verification-broadcast limit: burst 16, 16 per 60 s, 512 keys, 64 per peer. */
export const VERIFICATION_BROADCAST_LIMIT: KeyedBucketsOptions = {
  burst: 16,
  refill: 16,
  refillMs: 60_000,
  maxKeys: 512,
  maxKeysPerPeer: 64
}

interface Bucket {
  readonly peer: string
  tokens: number
  at: number
}

export const makeKeyedBuckets = (o: KeyedBucketsOptions) => {
  // Map order is recency order: a used key is re-inserted at the end
  const buckets = new Map<string, Bucket>()
  const evictFirst = (match: (b: Bucket) => boolean) => {
    for (const [k, b] of buckets) {
      if (match(b)) {
        buckets.delete(k)
        return
      }
    }
  }
  /**
   * Takes one token from `key` (belonging to `peer`): 0 when taken, otherwise the milliseconds until the
   * bucket holds a whole token again.
   */
  const takeOrWait = (peer: string, key: string, now: number): number => {
    let b = buckets.get(key)
    if (b === undefined) {
      if ([...buckets.values()].filter((x) => x.peer === peer).length >= o.maxKeysPerPeer) {
        evictFirst((x) => x.peer === peer)
      }
      if (buckets.size >= o.maxKeys) evictFirst(() => true)
      b = { peer, tokens: o.burst, at: now }
    } else {
      buckets.delete(key)
      b.tokens = refilledTokens(b.tokens, b.at, now, o.burst, o.refill / o.refillMs)
      b.at = now
    }
    buckets.set(key, b)
    if (b.tokens < 1) return msUntilToken(b.tokens, o.refill / o.refillMs)
    b.tokens -= 1
    return 0
  }
  /** Takes one token from `key` (belonging to `peer`); false when the bucket is empty. */
  const take = (peer: string, key: string, now: number): boolean => takeOrWait(peer, key, now) === 0
  return { take, takeOrWait, size: () => buckets.size }
}
