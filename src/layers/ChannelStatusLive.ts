import { Effect, Layer, Stream, SubscriptionRef } from "effect"
import { type ChannelInfo, emptyMatrixExtra } from "../domain/channel.js"
import { ChannelStatus, type ChannelStatusShape } from "../services/ChannelStatus.js"

/** In-memory registry; status is derived from the running channel, never persisted. */
export const ChannelStatusLive = Layer.effect(
  ChannelStatus,
  Effect.gen(function*() {
    const now = () => new Date().toISOString()
    const ref = yield* SubscriptionRef.make<ReadonlyArray<ChannelInfo>>([])
    // A channel is listed once its runtime gave it a state; counters that other parts (DLQ, verification)
    // update while the channel is off do not make a disabled channel appear.
    const registered = new Set<string>()
    const visible = (all: ReadonlyArray<ChannelInfo>) => all.filter((c) => registered.has(c.id))

    const upsert = (id: string, f: (current: ChannelInfo) => ChannelInfo) =>
      SubscriptionRef.update(ref, (all) => {
        const existing = all.find((c) => c.id === id) ??
          {
            id,
            name: id === "matrix" ? "Matrix" : id,
            status: "disconnected" as const,
            lastConnectedAt: null,
            lastError: null,
            statusChangedAt: now(),
            ...(id === "matrix" ? { extra: emptyMatrixExtra } : {})
          }
        const next = f(existing)
        return all.some((c) => c.id === id) ? all.map((c) => (c.id === id ? next : c)) : [...all, next]
      })

    const setState: ChannelStatusShape["setState"] = (id, state, error) =>
      Effect.sync(() => registered.add(id)).pipe(Effect.zipRight(upsert(id, (c) => {
        const lastError = state === "error" ? (error?.message ?? c.lastError) : null
        // The same error twice does not bump the status-changed time (reference §11).
        const changed = c.status !== state || c.lastError !== lastError
        const extra = c.extra === undefined ? undefined : (() => {
          const { lastErrorKind: _, ...rest } = c.extra
          return state === "error" && error?.kind !== undefined ? { ...rest, lastErrorKind: error.kind } : rest
        })()
        return {
          ...c,
          status: state,
          lastError,
          lastConnectedAt: state === "connected" && c.status !== "connected" ? now() : c.lastConnectedAt,
          statusChangedAt: changed ? now() : c.statusChangedAt,
          ...(extra !== undefined ? { extra } : {})
        }
      })))

    return {
      get: Effect.map(SubscriptionRef.get(ref), visible),
      changes: Stream.map(ref.changes, visible),
      setState,
      updateMatrix: (f) => upsert("matrix", (c) => ({ ...c, extra: f(c.extra ?? emptyMatrixExtra) }))
    } satisfies ChannelStatusShape
  })
)

/** The registry with the Matrix channel already listed (as `connecting`): for tools and tests that feed it. */
export const ChannelStatusWithMatrix = Layer.effectDiscard(
  Effect.flatMap(ChannelStatus, (s) => s.setState("matrix", "connecting"))
).pipe(Layer.provideMerge(ChannelStatusLive))
