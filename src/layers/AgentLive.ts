import { Duration, Effect, Either, Layer, Option, Redacted, Stream } from "effect"
import {
  AgentConfigError,
  AgentError,
  type AgentProfile,
  type AgentSettings,
  BASE_URL_ENV,
  type ChatMessage,
  DEFAULT_HISTORY_BUDGET,
  DEFAULT_MAX_CONCURRENT,
  DEFAULT_MAX_TOKENS,
  defaultRetrySettings,
  formatModel,
  messageCost,
  noApiKey,
  noModelConfigured,
  parseModel,
  type ProviderSettings,
  providerUsable,
  resolveAgent,
  resolveBaseUrl,
  trimHistory,
  type Usage,
  userReply
} from "../domain/agent.js"
import { helpReply, modelReply, newReply, parseCommand, withoutMention } from "../domain/commands.js"
import type { AgentSpec, CaraConfig, SecretRef } from "../domain/config.js"
import { redactSecrets, registerSecret } from "../domain/redact.js"
import { fallbackLabel, GROUP_PROMPT_NOTE, speakerLine } from "../domain/speakers.js"
import {
  Agent,
  type AgentRoute,
  AgentSettingsTag,
  type AgentShape,
  type TurnEvent,
  type TurnInput,
  type TurnOutcome
} from "../services/Agent.js"
import { type ConfigSecretError, ConfigSecrets } from "../services/ConfigSecrets.js"
import { LanguageModel, type LanguageModelShape } from "../services/LanguageModel.js"
import { Sessions, type SessionsShape, type SessionStoreError, type StoredMessage } from "../services/Sessions.js"
import type { StateDir } from "../services/StateDir.js"
// Layer imports by design: the agent runtime is built on the sessions store and the language models.
import { LanguageModelLive } from "./LanguageModelLive.js"
import { SessionsLive } from "./SessionsLive.js"

// ---------------------------------------------------------------------------------------------------------
// Settings from the decoded config

const DEFAULT_NAMES = new Set(["default", "defaults"])

const profileFrom = (
  name: string,
  spec: AgentSpec,
  path: string
): Either.Either<Option.Option<AgentProfile>, AgentConfigError> => {
  if (spec.model === undefined) return Either.right(Option.none())
  return Either.match(parseModel(spec.model), {
    onLeft: (problem) =>
      Either.left(
        new AgentConfigError({
          kind: "agent-config-invalid",
          path: `${path}.model`,
          message: `${path}.model: ${problem}.`
        })
      ),
    onRight: (model) =>
      Either.right(Option.some({
        name,
        model,
        systemPrompt: spec.systemPrompt,
        historyBudget: spec.historyBudget ?? DEFAULT_HISTORY_BUDGET,
        maxTokens: DEFAULT_MAX_TOKENS
      }))
  })
}

const envKey = (env: Record<string, string | undefined>, name: string): Option.Option<Redacted.Redacted<string>> => {
  const v = env[name]?.trim()
  return v === undefined || v === "" ? Option.none() : Option.some(Redacted.make(v))
}

/**
 * Derives the runtime's settings from the decoded config. API keys: the config value (sealed or `${VAR}`,
 * opened by `secret`), else the provider's env variable; base URLs likewise (`ANTHROPIC_BASE_URL`,
 * `OPENAI_BASE_URL`). Named agents inherit unset fields from the
 * default agent. A malformed model string or a room naming an undefined agent is a config error; a
 * missing model or key is not (the daemon starts and the agent answers with how to configure one).
 */
export const agentSettingsFromConfig = <E>(
  config: CaraConfig,
  secret: (ref: SecretRef) => Effect.Effect<Redacted.Redacted<string>, E>,
  env: Record<string, string | undefined> = process.env
): Effect.Effect<AgentSettings, AgentConfigError | E> =>
  Effect.gen(function*() {
    const provider = (section: CaraConfig["anthropic"], envName: string, baseUrlEnv: string) =>
      Effect.gen(function*() {
        const fromConfig = section?.apiKey === undefined ? Option.none() : Option.some(yield* secret(section.apiKey))
        const apiKey = Option.orElse(fromConfig, () => envKey(env, envName))
        // Every configured key is redacted from every error, not only from its own provider's.
        Option.map(apiKey, registerSecret)
        return {
          apiKey,
          baseUrl: resolveBaseUrl(section?.baseUrl, env[baseUrlEnv])
        } satisfies ProviderSettings
      })
    const anthropic = yield* provider(config.anthropic, "ANTHROPIC_API_KEY", BASE_URL_ENV.anthropic)
    const openai = yield* provider(config.openai, "OPENAI_API_KEY", BASE_URL_ENV.openai)

    const defaultKey = config.agents["defaults"] !== undefined ? "defaults" : "default"
    const defaultSpec: AgentSpec = config.agents[defaultKey] ?? {}
    const defaultAgent = yield* profileFrom("default", defaultSpec, `agents.${defaultKey}`)

    const agents = new Map<string, AgentProfile>()
    for (const [name, spec] of Object.entries(config.agents)) {
      if (DEFAULT_NAMES.has(name)) continue
      const merged: AgentSpec = { ...defaultSpec, ...spec }
      const profile = yield* profileFrom(name, merged, `agents.${name}`)
      if (Option.isNone(profile)) {
        return yield* new AgentConfigError({
          kind: "agent-config-invalid",
          path: `agents.${name}.model`,
          message:
            `agents.${name} has no model and there is no default model to inherit: set agents.${name}.model or agents.defaults.model (for example "anthropic:claude-sonnet-4-6").`
        })
      }
      agents.set(name, profile.value)
    }

    const roomAgents = new Map<string, string>()
    for (const [roomId, room] of Object.entries(config.matrix?.rooms ?? {})) {
      const name = room.agent
      if (name === undefined || DEFAULT_NAMES.has(name)) continue
      if (!agents.has(name)) {
        return yield* new AgentConfigError({
          kind: "agent-config-invalid",
          path: `matrix.rooms.${roomId}.agent`,
          message:
            `matrix.rooms.${roomId}.agent names the agent "${name}", which is not defined: add agents.${name} with a model, or remove the room's agent setting.`
        })
      }
      roomAgents.set(roomId, name)
    }

    const maxConcurrent = defaultSpec.maxConcurrent ?? DEFAULT_MAX_CONCURRENT
    const transcription = config.matrix?.transcription
    return {
      ...(transcription === undefined ? {} : {
        transcription: {
          model: transcription.model,
          baseUrl: resolveBaseUrl(transcription.baseUrl, undefined)
        }
      }),
      anthropic,
      openai,
      defaultAgent,
      agents,
      roomAgents,
      retry: defaultRetrySettings,
      requestTimeout: Duration.minutes(5),
      maxConcurrent
    } satisfies AgentSettings
  })

/** Problems that make some or all rooms unable to get an answer; warned about once at start. */
export const configurationProblems = (settings: AgentSettings): ReadonlyArray<AgentError> => {
  const problems: Array<AgentError> = []
  if (Option.isNone(settings.defaultAgent)) problems.push(noModelConfigured())
  const profiles = [...Option.toArray(settings.defaultAgent), ...settings.agents.values()]
  const seen = new Set<string>()
  for (const p of profiles) {
    if (seen.has(p.model.provider) || providerUsable(settings, p.model.provider)) continue
    seen.add(p.model.provider)
    problems.push(noApiKey(p.model))
  }
  return problems
}

// ---------------------------------------------------------------------------------------------------------
// The runtime

export const NEW_CONVERSATION_REPLY = newReply(false)
const EMPTY_ANSWER_REPLY = "(The model returned an empty answer. Try rephrasing, or send /new to start over.)"

/** The answer to `/help` or `/model`, which never reach the model or the room's history. */
const commandReply = (settings: AgentSettings, roomId: string, help: boolean): string => {
  if (help) return helpReply()
  const profile = resolveAgent(settings, roomId)
  return Option.isSome(profile)
    ? modelReply(formatModel(profile.value.model), profile.value.name)
    : modelReply(undefined, undefined)
}

// The last stop before the room, the DLQ and the status API: whatever a provider or library put into
// the error, no configured secret leaves in it.
const failed = (error: AgentError): TurnEvent => {
  const clean = new AgentError({ ...error, message: redactSecrets(error.message) })
  return { _tag: "Failed", text: redactSecrets(userReply(clean)), error: clean }
}

const logFailure = (error: AgentError, input: TurnInput) =>
  Effect.logWarning(error.message).pipe(
    Effect.annotateLogs({ service: "Agent", kind: error.kind, roomId: input.roomId, eventId: input.eventId })
  )

/** In a group, each user message is a speaker line with the label stored with it (older rows: name and MXID). */
const toModelMessages = (
  stored: ReadonlyArray<Pick<StoredMessage, "role" | "content" | "senderId" | "senderName" | "senderLabel">>,
  isGroup: boolean
): ReadonlyArray<ChatMessage> =>
  stored.map((m) => ({
    role: m.role,
    content: isGroup && m.role === "user" && m.senderId !== undefined
      ? speakerLine(m.senderLabel ?? fallbackLabel(m.senderId, m.senderName), m.content)
      : m.content
  }))

/**
 * The new message's parts (an attachment's image or framed file) in place of its stored reference line; in
 * a group its first text part is labelled with the sender like any other message.
 */
const withTurnParts = (
  messages: ReadonlyArray<ChatMessage>,
  stored: ReadonlyArray<{ readonly eventId: string | undefined }>,
  input: TurnInput
): ReadonlyArray<ChatMessage> => {
  const parts = input.parts
  if (parts === undefined) return messages
  // trimHistory keeps a suffix, so the stored row's offset from the end is the message's
  const fromEnd = stored.length - stored.findLastIndex((m) => m.eventId === input.eventId)
  const at = messages.length - fromEnd
  const target = messages[at]
  if (fromEnd > stored.length || target === undefined || target.role !== "user") return messages
  let labelled = !input.isGroup
  const withLabel = parts.map((p) => {
    if (labelled || p._tag !== "Text") return p
    labelled = true
    return { ...p, text: speakerLine(input.senderLabel ?? fallbackLabel(input.senderId, input.senderName), p.text) }
  })
  return messages.map((m, i) => (i === at ? { ...m, parts: withLabel } : m))
}

const completed = (profile: AgentProfile, text: string, usage: Usage): TurnEvent => ({
  _tag: "Completed",
  text,
  agent: profile.name,
  model: formatModel(profile.model),
  usage,
  replayed: false
})

/** What a turn needs: the settings, the history, the model and the global limit on concurrent model calls. */
interface TurnDeps {
  readonly settings: AgentSettings
  readonly sessions: SessionsShape
  readonly model: LanguageModelShape
  readonly modelCalls: Effect.Semaphore
}

/** The model's request for one turn: the trimmed history (senders labelled in groups) and the system prompt. */
const modelRequest = (deps: TurnDeps, input: TurnInput, profile: AgentProfile) =>
  Effect.gen(function*() {
    // Every message costs at least messageCost("") characters, so this many rows always cover the budget.
    const rowLimit = Math.min(5000, Math.ceil(profile.historyBudget / messageCost({ role: "user", content: "" })) + 2)
    const stored = yield* deps.sessions.history(input.roomId, rowLimit, input.threadId)
    const messages = withTurnParts(
      trimHistory(toModelMessages(stored, input.isGroup), profile.historyBudget),
      stored,
      input
    )
    const system = [profile.systemPrompt, input.isGroup ? GROUP_PROMPT_NOTE : undefined]
      .filter((s): s is string => s !== undefined && s !== "")
      .join("\n\n")
    return {
      model: profile.model,
      system: system === "" ? undefined : system,
      messages,
      maxTokens: profile.maxTokens
    }
  })

const runModel = (
  deps: TurnDeps,
  input: TurnInput,
  profile: AgentProfile
): Stream.Stream<TurnEvent, SessionStoreError> =>
  Stream.unwrapScoped(
    Effect.gen(function*() {
      // The permit is held until the stream ends, including its consumption by the caller.
      yield* Effect.acquireRelease(deps.modelCalls.take(1), () => deps.modelCalls.release(1))
      const request = yield* modelRequest(deps, input, profile)
      let answer = ""
      let usage: Usage = { inputTokens: undefined, outputTokens: undefined }
      const deltas = deps.model.stream(request).pipe(
        Stream.mapConcat((part): ReadonlyArray<TurnEvent> => {
          if (part._tag === "TextDelta") {
            answer += part.text
            return [{ _tag: "Delta", text: part.text }]
          }
          usage = part.usage
          return []
        }),
        Stream.catchAll((error) => Stream.fromEffect(Effect.as(logFailure(error, input), failed(error))))
      )
      const finish = Stream.fromEffect(
        Effect.suspend(() => {
          if (answer.trim() === "") return Effect.succeed(completed(profile, EMPTY_ANSWER_REPLY, usage))
          return deps.sessions.append(input.roomId, {
            role: "assistant",
            content: answer,
            replyTo: input.eventId,
            ...(input.threadId === undefined ? {} : { threadId: input.threadId }),
            agent: profile.name,
            model: formatModel(profile.model)
          }).pipe(Effect.as(completed(profile, answer, usage)))
        })
      )
      let sawFailure = false
      return deltas.pipe(
        Stream.tap((e) => Effect.sync(() => (sawFailure ||= e._tag === "Failed"))),
        Stream.concat(Stream.suspend(() => (sawFailure ? Stream.empty : finish))),
        Stream.withSpan("Agent.model", { attributes: { agent: profile.name, model: formatModel(profile.model) } })
      )
    })
  )

const startTurn = (deps: TurnDeps, input: TurnInput, text: string) =>
  Effect.gen(function*() {
    // The message joins the history before anything can fail, so nothing the user said is lost.
    yield* deps.sessions.append(input.roomId, {
      role: "user",
      content: text,
      eventId: input.eventId,
      senderId: input.senderId,
      ...(input.senderName === undefined ? {} : { senderName: input.senderName }),
      ...(input.senderLabel === undefined ? {} : { senderLabel: input.senderLabel }),
      ...(input.threadId === undefined ? {} : { threadId: input.threadId })
    })
    const profile = resolveAgent(deps.settings, input.roomId)
    if (Option.isNone(profile)) return Stream.make(failed(noModelConfigured()))
    if (!providerUsable(deps.settings, profile.value.model.provider)) {
      return Stream.make(failed(noApiKey(profile.value.model)))
    }
    return runModel(deps, input, profile.value)
  })

/** One turn per room at a time keeps each room's history consistent. */
const makeRoomLocks = () => {
  const roomLocks = new Map<string, Effect.Semaphore>()
  return (roomId: string) =>
    Effect.sync(() => {
      let lock = roomLocks.get(roomId)
      if (lock === undefined) {
        lock = Effect.unsafeMakeSemaphore(1)
        roomLocks.set(roomId, lock)
      }
      return lock
    })
}

const makeTurn = (deps: TurnDeps) => {
  const roomLock = makeRoomLocks()
  return (input: TurnInput) =>
    Stream.unwrapScoped(
      Effect.gen(function*() {
        const lock = yield* roomLock(input.roomId)
        yield* Effect.acquireRelease(lock.take(1), () => lock.release(1))

        // A redelivered event gets the answer it already has (checked before /new, which would drop it).
        const prior = yield* deps.sessions.replyTo(input.roomId, input.eventId)
        if (Option.isSome(prior)) {
          return Stream.make<Array<TurnEvent>>({
            _tag: "Completed",
            text: prior.value.content,
            agent: prior.value.agent ?? "default",
            model: prior.value.model ?? "",
            usage: { inputTokens: undefined, outputTokens: undefined },
            replayed: true
          })
        }

        const text = input.text.trim()
        const command = parseCommand(text, { userId: input.botUserId })
        if (command !== undefined && command._tag !== "New") {
          const reply = commandReply(deps.settings, input.roomId, command._tag === "Help")
          return Stream.make<Array<TurnEvent>>({ _tag: "Command", text: reply })
        }
        if (command?._tag === "New") {
          // where it is sent: the room's main timeline, or only the thread
          yield* deps.sessions.reset(input.roomId, input.threadId)
          yield* Effect.logInfo("conversation reset").pipe(
            Effect.annotateLogs({
              service: "Agent",
              roomId: input.roomId,
              ...(input.threadId === undefined ? {} : { threadId: input.threadId })
            })
          )
          const rest = withoutMention(text, { userId: input.botUserId }).slice(4).trim()
          const reset = newReply(input.threadId !== undefined)
          if (rest === "") return Stream.make<Array<TurnEvent>>({ _tag: "Reset", text: reset })
          return yield* startTurn(deps, input, rest)
        }
        return yield* startTurn(deps, input, text)
      })
    )
}

export const makeAgent = Effect.gen(function*() {
  const settings = yield* AgentSettingsTag
  const sessions = yield* Sessions
  const model = yield* LanguageModel

  const problems = configurationProblems(settings)
  for (const problem of problems) {
    yield* Effect.logWarning(problem.message).pipe(Effect.annotateLogs({ service: "Agent", kind: problem.kind }))
  }
  // the global limit bounds provider load
  const modelCalls = yield* Effect.makeSemaphore(Math.max(1, settings.maxConcurrent))
  const turn = makeTurn({ settings, sessions, model, modelCalls })

  const reply = (input: TurnInput) =>
    turn(input).pipe(
      Stream.filter((e): e is TurnOutcome => e._tag !== "Delta"),
      Stream.runLast,
      Effect.map(Option.getOrElse((): TurnOutcome => ({
        _tag: "Failed",
        text: userReply(new AgentError({ kind: "agent-unavailable", message: "The turn ended without an answer." })),
        error: new AgentError({
          kind: "agent-unavailable",
          message: "The turn ended without an answer; this is a bug."
        })
      })))
    )

  const route = (roomId: string): Option.Option<AgentRoute> =>
    Option.map(resolveAgent(settings, roomId), (p) => ({ agent: p.name, model: formatModel(p.model) }))

  return {
    turn,
    reply,
    route,
    problems,
    ...(model.transcribe === undefined ? {} : { transcribe: model.transcribe })
  } satisfies AgentShape
})

/** The Agent over its settings, the history store and the language model. */
export const AgentLive: Layer.Layer<Agent, never, AgentSettingsTag | Sessions | LanguageModel> = Layer.effect(
  Agent,
  makeAgent
)

/**
 * The agent settings from the loaded config (keys opened through ConfigSecrets); `env` supplies the
 * `ANTHROPIC_API_KEY` / `OPENAI_API_KEY` fallbacks.
 */
export const agentSettingsLayer = (
  env: Record<string, string | undefined> = process.env
): Layer.Layer<AgentSettingsTag, AgentConfigError | ConfigSecretError, ConfigSecrets> =>
  Layer.effect(
    AgentSettingsTag,
    Effect.flatMap(ConfigSecrets, (cs) => agentSettingsFromConfig(cs.config, (ref) => cs.secret(ref), env))
  )

/**
 * The whole agent runtime for the daemon: settings from the config, history in
 * `{state_dir}/carapace.sqlite`, both providers. Also exposes Sessions (for status / maintenance).
 */
export const agentRuntime = (
  env: Record<string, string | undefined> = process.env
): Layer.Layer<Agent | Sessions, AgentConfigError | ConfigSecretError | SessionStoreError, ConfigSecrets | StateDir> =>
  AgentLive.pipe(
    Layer.provideMerge(Layer.merge(SessionsLive, LanguageModelLive)),
    Layer.provide(agentSettingsLayer(env))
  )

export const AgentRuntimeLive = agentRuntime()
