// How far a catch-up is: after a downtime the first sync hands the inbound pipeline many messages at once, and
// an operator watching the daemon on a terminal sees "answered 12/40" instead of silence. A run starts when more
// than `threshold` answers are in flight together and ends when none is left; single messages show nothing.

export interface BacklogCount {
  readonly done: number
  readonly total: number
  /** the last answer of the run: the counter's line can be closed */
  readonly end: boolean
}

export interface BacklogCounter {
  /** An answer was started; the count to show, if a run is on. */
  readonly started: () => BacklogCount | undefined
  /** An answer finished (sent, dead-lettered or failed); the count to show, if a run is on. */
  readonly finished: () => BacklogCount | undefined
}

export const BACKLOG_PROGRESS_THRESHOLD = 5

export const makeBacklogCounter = (threshold: number = BACKLOG_PROGRESS_THRESHOLD): BacklogCounter => {
  let total = 0
  let done = 0
  let running = false
  return {
    started: () => {
      total++
      if (!running && total - done > threshold) running = true
      return running ? { done, total, end: false } : undefined
    },
    finished: () => {
      done = Math.min(done + 1, total)
      const end = done === total
      const shown = running ? { done, total, end } : undefined
      if (end) {
        total = 0
        done = 0
        running = false
      }
      return shown
    }
  }
}
