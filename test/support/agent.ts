// A fresh Agent over its real layers (sessions in `{dir}/carapace.sqlite`, the language models pointed wherever
// `settings` says), for the agent tests.
import { Chunk, Effect, Layer, Stream } from "effect"
import type { AgentSettings } from "../../src/domain/agent.js"
import { AgentLive } from "../../src/layers/AgentLive.js"
import { LanguageModelLive } from "../../src/layers/LanguageModelLive.js"
import { SessionsLive } from "../../src/layers/SessionsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { Agent, AgentSettingsTag, type TurnInput } from "../../src/services/Agent.js"
import type { Sessions } from "../../src/services/Sessions.js"

/** Runs `body` against a fresh Agent. */
export const withAgent = <A, E>(dir: string, settings: AgentSettings, body: Effect.Effect<A, E, Agent | Sessions>) => {
  const sessions = SessionsLive.pipe(Layer.provide(StateDirAt(dir)))
  const deps = Layer.mergeAll(sessions, LanguageModelLive).pipe(
    Layer.provideMerge(Layer.succeed(AgentSettingsTag, settings))
  )
  return Effect.scoped(Effect.provide(body, AgentLive.pipe(Layer.provideMerge(deps))))
}

/** Every event of one turn, in order. */
export const events = (input: TurnInput) =>
  Effect.flatMap(Agent, (agent) => Stream.runCollect(agent.turn(input)).pipe(Effect.map(Chunk.toArray)))

/** The turn's final reply. */
export const reply = (input: TurnInput) => Effect.flatMap(Agent, (agent) => agent.reply(input))
