// `cara config rekey`: re-seals every enc:v2 value of the config file from the current password to a new one.
import { Effect, Either, Option, Schema } from "effect"
import JSON5 from "json5"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { applyEdits, type Edit, parseWithPositions, stringNodes } from "../domain/json5edit.js"
import { ARGON2_PARAMS, type Argon2Params, envelopeVersion, makeSealer, open } from "../domain/secrets.js"
import { type ConfigEnv, discoverConfigPath, readConfigText } from "../layers/ConfigSecretsLive.js"
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

export const refuse = (kind: ConfigRekeyError["kind"], message: string) => new ConfigRekeyError({ kind, message })

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
        `${file}:${tree.left.line ?? 0}:${
          tree.left.column ?? 0
        }: cannot parse the config (${tree.left.reason}); fix it first`
      )
    }
    const sealed = stringNodes(tree.right).filter((n) => Option.isSome(envelopeVersion(n.node.value as string)))
    const unsupported = sealed.filter((n) => Option.getOrThrow(envelopeVersion(n.node.value as string)) !== 2)
    if (unsupported.length > 0) {
      return yield* refuse(
        "config-rekey-unsupported-envelope",
        `unsupported envelopes at ${
          unsupported.map((n) => n.path.join(".")).join(", ")
        }; only enc:v2 can be re-sealed. Re-enter those secrets first`
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
        `CARAPACE_CONFIG_PASSWORD does not open the sealed values at ${
          failed.join(", ")
        }; set the current password and retry. Nothing was changed`
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
      return yield* refuse(
        "config-rekey-new-password",
        "the new password is the same as CARAPACE_CONFIG_PASSWORD; nothing to do"
      )
    }

    // One salt and one key derivation for the whole write, as every sealing write does.
    const sealer = yield* makeSealer(newPassword, params)
    const edits: Array<Edit> = sealed.map((n, i) => ({ op: "set", path: n.path, value: sealer.seal(plain[i]!) }))
    const edited = applyEdits(text, edits)
    if (Either.isLeft(edited)) return yield* refuse("config-rekey-write", `cannot edit ${file}: ${edited.left.reason}`)
    for (const [i, e] of edits.entries()) {
      const check = yield* Effect.either(open(newPassword, (e as { value: string }).value, params))
      if (Either.isLeft(check) || check.right !== plain[i]) {
        return yield* refuse(
          "config-rekey-write",
          "a re-sealed value did not open with the new password; nothing was changed"
        )
      }
    }
    if ((yield* read()) !== text) {
      return yield* refuse(
        "config-rekey-write",
        `${file} changed while re-sealing; nothing was written. Rerun the command`
      )
    }
    yield* Effect.mapError(stateDir.writeAtomic(file, edited.right.text, { mode: 0o600 }), (e) =>
      refuse("config-rekey-write", e.message))
    return {
      file,
      resealed: sealed.map((n) =>
        n.path.join(".")
      )
    } satisfies RekeyResult
  })
