// `cara setup`: from a bot account to a checked carapace.json5. Every answer comes from a flag, else (on a
// terminal, without --yes) from a question, else from its default; a required answer with no default and
// no terminal is refused with the flag to pass.
import { Console, Effect, Either, Option, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseModel } from "../domain/agent.js"
import { redactSecrets } from "../domain/redact.js"
import {
  DEFAULT_MODELS,
  exportLines,
  neededVariables,
  renderSetupConfig,
  type SetupAnswers,
  type SetupProvider,
  splitList
} from "../domain/setup.js"
import { requirePasswordLogin, resolveHomeserverUrl, serverNameOf } from "../domain/wellKnown.js"
import { type ConfigEnv, discoverConfigPath, homeserverUrlProblem } from "../layers/ConfigSecretsLive.js"
import { StateDir } from "../services/StateDir.js"
import { checkConfig, renderCheck } from "./configCheck.js"

export class SetupError extends Schema.TaggedError<SetupError>()("SetupError", {
  kind: Schema.Literal("setup-config-exists", "setup-input", "setup-write"),
  message: Schema.String
}) {}

const inputError = (message: string) => new SetupError({ kind: "setup-input", message })

export interface SetupFlags {
  readonly homeserver: Option.Option<string>
  readonly user: Option.Option<string>
  readonly allowUsers: ReadonlyArray<string>
  readonly allowServers: ReadonlyArray<string>
  readonly provider: Option.Option<string>
  readonly model: Option.Option<string>
  readonly yes: boolean
  readonly force: boolean
}

/** Asks one question on the terminal; the answer is trimmed, and empty means the default. */
export interface Prompter {
  readonly ask: (question: string, fallback?: string) => Effect.Effect<string>
}

export interface SetupIo {
  readonly env: ConfigEnv
  /** None when answers must come from flags and defaults only (no terminal, or --yes). */
  readonly prompter: Option.Option<Prompter>
  readonly now: () => Date
}

/** The flag's value, else the terminal's answer, else the default; `undefined` when there is none. */
const answer = (io: SetupIo, flag: Option.Option<string>, question: string, fallback?: string) =>
  Option.match(flag, {
    onSome: (v) => Effect.succeed<string | undefined>(v.trim()),
    onNone: () =>
      Option.match(io.prompter, {
        onNone: () => Effect.succeed(fallback),
        onSome: (p) => Effect.map(p.ask(question, fallback), (a) => (a === "" ? fallback : a))
      })
  })

const PROVIDERS: ReadonlyArray<SetupProvider> = ["anthropic", "openai", "local"]

const askUser = (flags: SetupFlags, io: SetupIo) =>
  Effect.gen(function*() {
    const userId = yield* answer(io, flags.user, "The bot's Matrix user id (e.g. @cara:example.org)")
    if (userId === undefined || userId === "") {
      return yield* inputError("the bot's Matrix user id is required: pass --user @cara:example.org")
    }
    if (serverNameOf(userId) === undefined) {
      return yield* inputError(`"${userId}" is not a Matrix user id; write it as @name:example.org`)
    }
    return userId
  })

const askHomeserver = (flags: SetupFlags, io: SetupIo, userId: string) =>
  Effect.gen(function*() {
    if (Option.isSome(flags.homeserver)) {
      const url = flags.homeserver.value.trim().replace(/\/+$/, "")
      const problem = homeserverUrlProblem(url)
      if (problem !== undefined) return yield* inputError(`--homeserver: ${problem}`)
      return { url, source: "given" as const }
    }
    yield* Console.log(`Looking up the homeserver of ${userId} (.well-known/matrix/client) …`)
    const found = yield* resolveHomeserverUrl(userId).pipe(Effect.either)
    const fallback = Either.getOrUndefined(found)
    const url = yield* answer(io, Option.none(), "Homeserver URL", fallback)
    if (url === undefined || url === "") {
      return yield* (Either.isLeft(found)
        ? found.left
        : inputError("the homeserver URL is required: pass --homeserver https://matrix.example.org"))
    }
    const problem = homeserverUrlProblem(url)
    if (problem !== undefined) return yield* inputError(problem)
    return { url: url.replace(/\/+$/, ""), source: url === fallback ? ("discovered" as const) : ("given" as const) }
  })

const askAllowlist = (flags: SetupFlags, io: SetupIo, userId: string) =>
  Effect.gen(function*() {
    const given = flags.allowUsers.length > 0 || flags.allowServers.length > 0
    const users = given ? flags.allowUsers.flatMap(splitList) : splitList(
      (yield* answer(
        io,
        Option.none(),
        "Matrix users cara may accept invites from and answer (comma-separated, e.g. @you:example.org)",
        ""
      )) ?? ""
    )
    const servers = given ? flags.allowServers.flatMap(splitList) : splitList(
      (yield* answer(
        io,
        Option.none(),
        "Homeservers whose users may all invite cara (comma-separated, empty for none)",
        ""
      )) ?? ""
    )
    for (const u of users) {
      if (serverNameOf(u) === undefined) {
        return yield* inputError(`allowed user "${u}" is not a Matrix user id (@name:example.org)`)
      }
      if (u === userId) return yield* inputError(`the bot itself (${u}) cannot be on its allowlist`)
    }
    return { users, servers }
  })

const askModel = (flags: SetupFlags, io: SetupIo) =>
  Effect.gen(function*() {
    const guess: SetupProvider = (io.env["ANTHROPIC_API_KEY"] ?? "") !== ""
      ? "anthropic"
      : (io.env["OPENAI_API_KEY"] ?? "") !== ""
      ? "openai"
      : "local"
    const p = (yield* answer(
      io,
      flags.provider,
      "Model provider: anthropic, openai or local (the built-in test model)",
      guess
    )) ?? guess
    const provider = p.toLowerCase() as SetupProvider
    if (!PROVIDERS.includes(provider)) {
      return yield* inputError(`unknown provider "${p}": use anthropic, openai or local`)
    }
    const model = (yield* answer(io, flags.model, "Model", DEFAULT_MODELS[provider])) ?? DEFAULT_MODELS[provider]
    const parsed = parseModel(`${provider}:${model}`)
    if (Either.isLeft(parsed)) return yield* inputError(parsed.left)
    return { provider, model: parsed.right.model }
  })

/** The answers, in the order the questions are asked. */
export const gatherAnswers = (flags: SetupFlags, io: SetupIo) =>
  Effect.gen(function*() {
    const userId = yield* askUser(flags, io)
    const hs = yield* askHomeserver(flags, io, userId)
    yield* requirePasswordLogin(hs.url)
    yield* Console.log(`Homeserver ${hs.url} offers password login.`)
    const allow = yield* askAllowlist(flags, io, userId)
    const model = yield* askModel(flags, io)
    return {
      homeserverUrl: hs.url,
      homeserverSource: hs.source,
      userId,
      allowUsers: allow.users,
      allowServers: allow.servers,
      provider: model.provider,
      model: model.model
    } satisfies SetupAnswers
  })

/**
 * Writes `text` to `file` (0600) through a temporary file and a rename, so a crash leaves the old file or
 * the new one. An existing file is kept as `{file}.bak-<timestamp>` first (only with --force).
 */
export const writeConfigFile = (file: string, text: string, backupSuffix: string) =>
  Effect.try({
    try: () => {
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
      let backup: string | undefined
      if (fs.existsSync(file)) {
        backup = `${file}.bak-${backupSuffix}`
        fs.copyFileSync(file, backup, fs.constants.COPYFILE_EXCL)
        fs.chmodSync(backup, 0o600)
      }
      const temp = `${file}.setup-${process.pid}`
      const fd = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600)
      try {
        fs.writeSync(fd, text)
        fs.fsyncSync(fd)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(temp, file)
      return backup
    },
    catch: (e) =>
      new SetupError({
        kind: "setup-write",
        message: `cannot write ${file} (${(e as NodeJS.ErrnoException).code ?? String(e)})`
      })
  })

/** The whole command: answers, the refusal to overwrite, the file, the exports still needed, the check. */
export const setup = Effect.fn("Setup.run")(function*(flags: SetupFlags, io: SetupIo) {
  const stateDir = yield* StateDir
  const file = yield* discoverConfigPath(io.env, stateDir.root)
  if (fs.existsSync(file) && !flags.force) {
    return yield* new SetupError({
      kind: "setup-config-exists",
      message:
        `${file} already exists; cara setup never overwrites it. Pass --force to replace it (the old file is kept as a .bak-<time> copy), or edit it by hand.`
    })
  }
  const answers = yield* gatherAnswers(flags, io)
  const now = io.now()
  const backup = yield* writeConfigFile(
    file,
    renderSetupConfig(answers, now.toISOString()),
    now.toISOString().replace(/[:.]/g, "-")
  )
  yield* Console.log(
    `\nWrote ${file} (mode 0600).${backup !== undefined ? ` The previous file is kept as ${backup}.` : ""}`
  )
  if (answers.allowUsers.length === 0 && answers.allowServers.length === 0) {
    yield* Console.log("Nobody is on the allowlist yet: cara accepts no invites until matrix.autoJoin lists someone.")
  }
  const exports = exportLines(answers, io.env)
  if (exports.length > 0) {
    yield* Console.log("\nStill needed in the environment of the daemon and of every `cara` command:\n")
    for (const line of exports) yield* Console.log(`  ${line}`)
  }
  // The variables just listed are the operator's next step, not a finding: the check stands in for them
  // (only for the check; nothing is written) and says so.
  const missing = neededVariables(answers).filter((v) => (io.env[v.name] ?? "").trim() === "").map((v) => v.name)
  const stand: ConfigEnv = {
    ...io.env,
    ...Object.fromEntries(missing.map((n) => [n, `setup-placeholder-${"x".repeat(32)}`]))
  }
  yield* Console.log(`\ncara config check${missing.length > 0 ? ` (as if ${missing.join(", ")} were set)` : ""}:`)
  const report = yield* checkConfig(stand)
  yield* Console.log(redactSecrets(renderCheck(report, false)))
  yield* Console.log(report.ok ? "\nNext: start the daemon with `cara`, then `cara verify --outcome matrix`." : "")
  return report.ok
})
