// The refill rule every token bucket in cara shares (control-API rate limits, verification broadcasts, the
// inbound budget): tokens grow continuously at `perMs` up to `burst`; a clock that went backwards adds none.

export const refilledTokens = (tokens: number, at: number, now: number, burst: number, perMs: number): number =>
  Math.min(burst, tokens + Math.max(0, now - at) * perMs)

/** Milliseconds until a bucket holding `tokens` has a whole token again (at least 1). */
export const msUntilToken = (tokens: number, perMs: number): number => Math.max(1, Math.ceil((1 - tokens) / perMs))
