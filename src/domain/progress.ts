// Progress of a long operation on stderr, only when stderr is a terminal: one line per step, and a counter
// that rewrites its own line (`\r`). Off a terminal (a pipe, a log file, `--json`) nothing extra is printed.
import * as Effect from "effect/Effect"

/** What a program reports; both optional so a program runs the same without a listener. */
export interface ProgressHooks {
  /** One finished step, as a sentence. */
  readonly progress?: (line: string) => Effect.Effect<void>
  /** `done` of `total` items of `label` handled so far. */
  readonly count?: (label: string, done: number, total: number) => Effect.Effect<void>
}

export interface ProgressSink {
  readonly isTTY?: boolean
  readonly write: (text: string) => unknown
}

/** `label 37/120 (30%)`: the counter's text. */
export const renderCount = (label: string, done: number, total: number): string =>
  `${label} ${done}/${total}${total > 0 ? ` (${Math.floor((done / total) * 100)}%)` : ""}`

/**
 * Progress for `name` on `sink` (stderr by default): `hooks` for the program, `done` to end a counter's line.
 * Disabled (`enabled: false`, or a sink that is not a terminal) it returns no hooks at all.
 */
export const progressLine = (
  name: string,
  options: { readonly enabled?: boolean; readonly sink?: ProgressSink } = {}
): { readonly hooks: ProgressHooks; readonly done: Effect.Effect<void> } => {
  const sink = options.sink ?? process.stderr
  if (options.enabled === false || sink.isTTY !== true) return { hooks: {}, done: Effect.void }
  let open = false
  const endCounter = () => {
    if (open) sink.write("\n")
    open = false
  }
  return {
    hooks: {
      progress: (line) =>
        Effect.sync(() => {
          endCounter()
          sink.write(`${name}: ${line}\n`)
        }),
      count: (label, done, total) =>
        Effect.sync(() => {
          sink.write(`\r\u001b[2K${name}: ${renderCount(label, done, total)}`)
          open = true
        })
    },
    done: Effect.sync(endCounter)
  }
}
