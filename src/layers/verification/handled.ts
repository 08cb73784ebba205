import { Clock, Effect, Option } from "effect"
import { StateDir } from "../../services/StateDir.js"

/** Handled request ids (against phantom in-room requests re-emitted after a restart). */
export const HANDLED_FILE = "matrix/verification_handled.json"
const HANDLED_TTL_MS = 60 * 60 * 1000
export const HANDLED_MAX = 2048

/** Adds to a bounded insertion-ordered set (the oldest entry goes first). */
export const remember = (set: Set<string>, key: string) => {
  set.add(key)
  while (set.size > HANDLED_MAX) set.delete(set.values().next().value as string)
}

/**
 * The protocol ids of the requests the registry already handled, kept in HANDLED_FILE for an hour: Rust keeps
 * verification state in memory only, so after a restart in-room requests from the cached timeline come back
 * as new ones.
 */
export const makeHandledIds = Effect.gen(function*() {
  const stateDir = yield* StateDir
  const handled = new Map<string, number>()
  const loaded = yield* stateDir.readText(HANDLED_FILE).pipe(Effect.orElseSucceed(() => Option.none<string>()))
  if (Option.isSome(loaded)) {
    try {
      const parsed = JSON.parse(loaded.value) as { ids?: Record<string, number> }
      for (const [id, at] of Object.entries(parsed.ids ?? {})) if (typeof at === "number") handled.set(id, at)
    } catch {
      yield* Effect.logWarning(
        `${HANDLED_FILE} is unreadable; starting with an empty list of handled verification requests`
      )
    }
  }
  const writeLock = yield* Effect.makeSemaphore(1)
  const add = (id: string) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      handled.set(id, now)
      for (const [k, at] of handled) if (now - at > HANDLED_TTL_MS) handled.delete(k)
      while (handled.size > HANDLED_MAX) handled.delete(handled.keys().next().value as string)
      const ids = Object.fromEntries(handled)
      yield* stateDir.ensureDir("matrix").pipe(
        Effect.zipRight(stateDir.writeAtomic(HANDLED_FILE, JSON.stringify({ version: 1, ids }))),
        Effect.catchAll((e) => Effect.logWarning(`recording a handled verification request failed: ${e.message}`))
      )
    }).pipe(writeLock.withPermits(1))
  return { has: (id: string) => handled.has(id), add }
})

export type HandledIds = Effect.Effect.Success<typeof makeHandledIds>
