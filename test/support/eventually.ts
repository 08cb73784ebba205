// One poller for the tests: ask until the answer is there, or fail saying what was awaited (and, when given,
// what the process under test printed last). Replaces the per-file until/poll/waitFor copies.

/** What a probe answers while the awaited thing is not there yet. */
export type NotYet = undefined | null | false

export interface EventuallyOptions {
  /** Give up after this long (default 30 s). */
  readonly timeoutMs?: number
  /** Pause between two probes (default 200 ms). */
  readonly intervalMs?: number
  /** Appended to the timeout error, e.g. `() => bot.output().slice(-4000)`. */
  readonly context?: () => string
}

/**
 * Runs `probe` until it answers something other than undefined, null or false, and returns that answer; a
 * boolean probe so returns `true`. Fails with `timed out after N ms waiting for <what>` when the time is up.
 */
export const eventually = async <A>(
  what: string,
  probe: () => Promise<A | NotYet> | A | NotYet,
  options: EventuallyOptions = {}
): Promise<A> => {
  const timeoutMs = options.timeoutMs ?? 30_000
  const startedAt = Date.now()
  const deadline = startedAt + timeoutMs
  for (;;) {
    const answer = await probe()
    if (answer !== undefined && answer !== null && answer !== false) {
      traceWait(what, startedAt)
      return answer as A
    }
    if (Date.now() > deadline) {
      const context = options.context?.()
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${context ? `:\n${context}` : ""}`)
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 200))
  }
}

/**
 * `CARA_TEST_TRACE=1`: every wait of a test prints how long it took (on stderr), to find where a slow test
 * spends its time.
 */
export const traceWait = (what: string, startedAt: number): void => {
  if (process.env["CARA_TEST_TRACE"] !== "1") return
  process.stderr.write(`[wait] ${Date.now() - startedAt} ms: ${what}\n`)
}
