import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Either, Option, Schema } from "effect"
import JSON5 from "json5"
import { ConfigFinding, hasErrors } from "../domain/config.js"
import { applyEdits, type Edit, parseWithPositions, stringNodes } from "../domain/json5edit.js"
import { redactSecrets } from "../domain/redact.js"
import { type Argon2Params, ARGON2_PARAMS, envelopeVersion, makeSealer, open } from "../domain/secrets.js"
import {
  type ConfigEnv,
  discoverConfigPath,
  loadConfigSnapshot,
  readConfigText
} from "../layers/ConfigSecretsLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { StateDir } from "../services/StateDir.js"

/** `cara config rekey` could not re-seal; the file is unchanged. */
export class ConfigRekeyError extends Schema.TaggedError<ConfigRekeyError>()("ConfigRekeyError", {
  kind: Schema.Literal(
    "config-rekey-no-file",
    "config-rekey-password-missing",
    "config-rekey-wrong-password",
    "config-rekey-unsupported-envelope",
    "config-rekey-new-password",
    "config-rekey-store-key-derived",
    "config-rekey-write"
  ),
  message: Schema.String
}) {}

// ---------------------------------------------------------------------------------------------------------
// cara config check

export interface CheckReport {
  readonly path: Option.Option<string>
  readonly findings: ReadonlyArray<ConfigFinding>
  readonly ok: boolean
}

export const checkConfig = (env: ConfigEnv) =>
  Effect.map(loadConfigSnapshot(env), (s): CheckReport => ({ path: s.path, findings: s.findings, ok: !hasErrors(s.findings) }))

export const renderCheck = (r: CheckReport, json: boolean): string => {
  if (json) {
    return JSON.stringify({
      path: Option.getOrNull(r.path),
      ok: r.ok,
      errors: r.findings.filter((f) => f.severity === "error").length,
      warnings: r.findings.filter((f) => f.severity === "warning").length,
      findings: r.findings.map((f) => Schema.encodeSync(ConfigFinding)(f))
    }, null, 2)
  }
  const lines = [Option.match(r.path, { onNone: () => "No config file found; defaults apply.", onSome: (p) => `Config file: ${p}` })]
  for (const f of r.findings) lines.push(`${f.severity === "error" ? "error  " : "warning"} ${f.path}: ${f.message}`)
  const errors = r.findings.filter((f) => f.severity === "error").length
  const warnings = r.findings.length - errors
  lines.push(errors === 0 ? `OK (${warnings} warning(s))` : `${errors} error(s), ${warnings} warning(s): the daemon will not start`)
  return lines.join("\n")
}

const check = Command.make(
  "check",
  { json: Options.boolean("json").pipe(Options.withDescription("print the findings as JSON")) },
  ({ json }) =>
    Effect.gen(function*() {
      const report = yield* checkConfig({ ...process.env })
      yield* Console.log(redactSecrets(renderCheck(report, json)))
      // Exit 1 without a second error dump: the findings above are the message.
      if (!report.ok) process.exitCode = 1
    }).pipe(Effect.provide(StateDirLive))
).pipe(Command.withDescription("Load and validate the config; print every finding with its path; exit 1 on errors."))

// ---------------------------------------------------------------------------------------------------------
// cara config rekey

export interface RekeyInput {
  readonly env: ConfigEnv
  /** Supplies the new password (from `--new-password-env`, or a no-echo prompt). */
  readonly newPassword: Effect.Effect<string, ConfigRekeyError>
  readonly argon2?: Argon2Params
}

export interface RekeyResult {
  readonly file: string
  readonly resealed: ReadonlyArray<string>
}

const refuse = (kind: ConfigRekeyError["kind"], message: string) => new ConfigRekeyError({ kind, message })

/**
 * When the Matrix store key is derived from CARAPACE_CONFIG_PASSWORD (no explicit store passphrase and no
 * pinned `store_passphrase` file), changing the password would make the existing encrypted store
 * unreadable: refuse, and name the command that decouples it first.
 */
const storeKeyDerivedFromPassword = (raw: unknown, env: ConfigEnv, stateRoot: string) =>
  Effect.promise(async () => {
    const matrix = (raw as { matrix?: Record<string, unknown> }).matrix
    if (matrix === undefined || matrix === null || typeof matrix !== "object") return false
    if (matrix["enabled"] === false || matrix["encrypted"] === false) return false
    if (typeof matrix["storePassphrase"] === "string" && matrix["storePassphrase"].trim() !== "") return false
    if ((env["MATRIX_STORE_PASSPHRASE"] ?? "").trim() !== "") return false
    const mdir = path.join(stateRoot, "matrix")
    const pinned = await fs.stat(path.join(mdir, "store_passphrase")).then(() => true, () => false)
    if (pinned) return false
    const entries = await fs.readdir(mdir).catch(() => [] as Array<string>)
    return entries.length > 0
  })

/** Re-seals every `enc:v2` value of the config file from the current password to a new one, in place. */
export const rekeyConfig = (input: RekeyInput) =>
  Effect.gen(function*() {
    const stateDir = yield* StateDir
    const params = input.argon2 ?? ARGON2_PARAMS
    const discovered = yield* discoverConfigPath(input.env, stateDir.root)
    const file = yield* Effect.promise(() => fs.realpath(discovered).catch(() => discovered))
    const read = () =>
      Effect.flatMap(
        Effect.mapError(readConfigText(file), (f) => refuse("config-rekey-write", f.message)),
        Option.match({
          onNone: () => Effect.fail(refuse("config-rekey-no-file", `no config file at ${file}; nothing to re-seal`)),
          onSome: Effect.succeed
        })
      )
    const text = yield* read()
    const tree = parseWithPositions(text)
    if (Either.isLeft(tree)) {
      return yield* refuse(
        "config-rekey-write",
        `${file}:${tree.left.line ?? 0}:${tree.left.column ?? 0}: cannot parse the config (${tree.left.reason}); fix it first`
      )
    }
    const sealed = stringNodes(tree.right).filter((n) => Option.isSome(envelopeVersion(n.node.value as string)))
    const unsupported = sealed.filter((n) => Option.getOrThrow(envelopeVersion(n.node.value as string)) !== 2)
    if (unsupported.length > 0) {
      return yield* refuse(
        "config-rekey-unsupported-envelope",
        `unsupported envelopes at ${unsupported.map((n) => n.path.join(".")).join(", ")}; only enc:v2 can be re-sealed. Re-enter those secrets first`
      )
    }
    if (sealed.length === 0) return { file, resealed: [] } satisfies RekeyResult

    const oldPassword = input.env["CARAPACE_CONFIG_PASSWORD"] ?? ""
    if (oldPassword === "") {
      return yield* refuse(
        "config-rekey-password-missing",
        "CARAPACE_CONFIG_PASSWORD must be set to the current password to re-seal the config; nothing was changed"
      )
    }
    const plain: Array<string> = []
    const failed: Array<string> = []
    for (const n of sealed) {
      const opened = yield* Effect.either(open(oldPassword, n.node.value as string, params))
      if (Either.isRight(opened)) plain.push(opened.right)
      else failed.push(n.path.join("."))
    }
    if (failed.length > 0) {
      return yield* refuse(
        "config-rekey-wrong-password",
        `CARAPACE_CONFIG_PASSWORD does not open the sealed values at ${failed.join(", ")}; set the current password and retry. Nothing was changed`
      )
    }
    if (yield* storeKeyDerivedFromPassword(JSON5.parse(text), input.env, stateDir.root)) {
      return yield* refuse(
        "config-rekey-store-key-derived",
        "the Matrix store key is derived from CARAPACE_CONFIG_PASSWORD, so changing it would lock the encrypted store. Stop the daemon, run `cara matrix rekey-store --new` with the current password first (it pins the store key), then rerun `cara config rekey`"
      )
    }

    const newPassword = yield* input.newPassword
    if (newPassword === "") return yield* refuse("config-rekey-new-password", "the new password is empty")
    if (newPassword === oldPassword) {
      return yield* refuse("config-rekey-new-password", "the new password is the same as CARAPACE_CONFIG_PASSWORD; nothing to do")
    }

    // One salt and one key derivation for the whole write, as every sealing write does.
    const sealer = yield* makeSealer(newPassword, params)
    const edits: Array<Edit> = sealed.map((n, i) => ({ op: "set", path: n.path, value: sealer.seal(plain[i]!) }))
    const edited = applyEdits(text, edits)
    if (Either.isLeft(edited)) return yield* refuse("config-rekey-write", `cannot edit ${file}: ${edited.left.reason}`)
    for (const [i, e] of edits.entries()) {
      const check = yield* Effect.either(open(newPassword, (e as { value: string }).value, params))
      if (Either.isLeft(check) || check.right !== plain[i]) {
        return yield* refuse("config-rekey-write", "a re-sealed value did not open with the new password; nothing was changed")
      }
    }
    if ((yield* read()) !== text) {
      return yield* refuse("config-rekey-write", `${file} changed while re-sealing; nothing was written. Rerun the command`)
    }
    yield* Effect.mapError(stateDir.writeAtomic(file, edited.right.text, { mode: 0o600 }), (e) => refuse("config-rekey-write", e.message))
    return { file, resealed: sealed.map((n) => n.path.join(".")) } satisfies RekeyResult
  })

/** Reads a line from the terminal without echoing it. */
const promptHidden = (question: string) =>
  Effect.async<string, ConfigRekeyError>((resume) => {
    const stdin = process.stdin
    let buf = ""
    const finish = () => {
      stdin.off("data", onData)
      if (stdin.isTTY) stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write("\n")
    }
    const onData = (chunk: Buffer | string) => {
      for (const ch of chunk.toString()) {
        if (ch === "\r" || ch === "\n") {
          finish()
          return resume(Effect.succeed(buf))
        }
        if (ch === "\u0003" || ch === "\u0004") {
          finish()
          return resume(Effect.fail(refuse("config-rekey-new-password", "cancelled; nothing was changed")))
        }
        if (ch === "\u007f" || ch === "\b") buf = buf.slice(0, -1)
        else buf += ch
      }
    }
    process.stderr.write(question)
    stdin.setRawMode(true)
    stdin.resume()
    stdin.on("data", onData)
    return Effect.sync(finish)
  })

/** The new password: from `--new-password-env NAME`, else a no-echo prompt (twice), else a refusal. */
export const newPasswordSource = (
  env: ConfigEnv,
  fromEnv: Option.Option<string>,
  isTTY: boolean
): Effect.Effect<string, ConfigRekeyError> =>
  Option.match(fromEnv, {
    onSome: (name) => {
      const v = env[name] ?? ""
      return v === ""
        ? Effect.fail(refuse("config-rekey-new-password", `${name} is not set or empty; export the new password in it and retry`))
        : Effect.succeed(v)
    },
    onNone: () =>
      isTTY
        ? Effect.gen(function*() {
          const a = yield* promptHidden("New config password: ")
          const b = yield* promptHidden("Repeat the new config password: ")
          if (a !== b) return yield* refuse("config-rekey-new-password", "the two passwords differ; nothing was changed")
          return a
        })
        : Effect.fail(
          refuse(
            "config-rekey-new-password",
            "no terminal to read the new password from; pass --new-password-env NAME with the new password in that environment variable"
          )
        )
  })

const rekey = Command.make(
  "rekey",
  {
    newPasswordEnv: Options.text("new-password-env").pipe(
      Options.withDescription("read the new password from this environment variable instead of a prompt"),
      Options.optional
    )
  },
  ({ newPasswordEnv }) =>
    Effect.gen(function*() {
      const env = { ...process.env }
      const result = yield* rekeyConfig({ env, newPassword: newPasswordSource(env, newPasswordEnv, process.stdin.isTTY === true) })
      if (result.resealed.length === 0) {
        yield* Console.log(`No enc:v2 values in ${result.file}; nothing to re-seal.`)
        return
      }
      yield* Console.log(
        `Re-sealed ${result.resealed.length} value(s) in ${result.file}: ${result.resealed.join(", ")}.\n` +
          "Set CARAPACE_CONFIG_PASSWORD to the new password everywhere cara runs (the daemon's service environment and your shells) before the next start."
      )
    }).pipe(Effect.provide(StateDirLive))
).pipe(
  Command.withDescription(
    "Re-seal every enc:v2 value of the config from CARAPACE_CONFIG_PASSWORD to a new password, in place (comments kept). Stop the daemon first."
  )
)

/** `cara config check|rekey`. */
export const configCommand = Command.make("config").pipe(
  Command.withDescription("Inspect and maintain the config file."),
  Command.withSubcommands([check, rekey])
)
