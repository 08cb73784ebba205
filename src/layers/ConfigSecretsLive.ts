import { Data, Effect, Either, Layer, Option, Redacted, Ref } from "effect"
import JSON5 from "json5"
import { constants as fsConstants } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { CaraConfig, ConfigFinding, hasErrors, isSecretPath, type SecretRef } from "../domain/config.js"
import { analyzeConfig, defaultsOnly } from "../domain/configAnalysis.js"
import {
  type ConfigEnv,
  configPassword,
  err,
  getIn,
  isObject,
  type Json,
  type JsonObject,
  type SecretSlot,
  type StorePassphraseFile,
  utf8Bytes,
  warn
} from "../domain/configValidation.js"
import { applyEdits, type Edit } from "../domain/json5edit.js"
import { registerSecret } from "../domain/redact.js"
import {
  ARGON2_PARAMS,
  type Argon2Params,
  deriveKey,
  downgradeViolations,
  isExactPlaceholder,
  isMalformedPlaceholder,
  makeSealer,
  openWithKey,
  parseEnvelope
} from "../domain/secrets.js"
import {
  ConfigLoadError,
  ConfigSecretError,
  ConfigSecrets,
  type ConfigSecretsShape,
  ConfigWriteError
} from "../services/ConfigSecrets.js"
import { StateDir, type StateDirShape } from "../services/StateDir.js"

export { type Analysis, analyzeConfig, type AnalyzeInput } from "../domain/configAnalysis.js"
export {
  type ConfigEnv,
  homeserverUrlProblem,
  type SecretSlot,
  type StorePassphraseFile,
  userIdProblem,
  validateConfig,
  type ValidationContext
} from "../domain/configValidation.js"

export const MAX_CONFIG_BYTES = 4 * 1024 * 1024

/** One load of the config file: what was read, what it decodes to, what is wrong with it. */
export interface ConfigSnapshot {
  /** The file read, `None` when there was no file. */
  readonly path: Option.Option<string>
  /** Where write-backs go (the discovered path, also when the file does not exist yet). */
  readonly targetPath: string
  readonly config: CaraConfig
  readonly findings: ReadonlyArray<ConfigFinding>
  /** Secret values by dot path, opened at load when the password allows. */
  readonly secrets: ReadonlyMap<string, SecretSlot>
  /** Set when the file itself was refused (world-writable, foreign owner, not a regular file). */
  readonly refused?: "config-file-unsafe"
}

// ---------------------------------------------------------------------------------------------------------
// File access

const errnoOf = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code

/** The config file could not be read, or was refused as unsafe (`config-file-unsafe`). */
export class ConfigReadError extends Data.TaggedError("ConfigReadError")<{
  readonly kind: "config-file-unsafe" | "config-invalid"
  readonly finding: ConfigFinding
}> {
  override get message() {
    return this.finding.message
  }
}

export interface FileFacts {
  readonly isFile: boolean
  readonly isFifo: boolean
  readonly isDevice: boolean
  readonly mode: number
  readonly uid: number
}

/**
 * Why a config file must not be read, or `undefined`: the config holds secrets and decides where the
 * daemon sends them, so a file that another local user can write (world-writable, or owned by someone
 * else) is refused, as is anything but a regular file (a FIFO would block the read, a device never ends).
 * Root-owned files are accepted: root can change anything the daemon reads anyway, and /etc deployments
 * keep the config root-owned.
 */
export const configFileProblem = (file: string, st: FileFacts, currentUid: number | undefined): string | undefined => {
  if (!st.isFile) {
    const what = st.isFifo ? "a FIFO" : st.isDevice ? "a device" : "not a regular file"
    return `${file} is ${what}; the config must be a regular file. Point CARAPACE_CONFIG_PATH at the config file itself`
  }
  if ((st.mode & 0o002) !== 0) {
    return `${file} is world-writable (mode ${
      (st.mode & 0o777).toString(8).padStart(4, "0")
    }), so any local user could change where cara sends its secrets; run \`chmod 600 ${file}\` and start again`
  }
  if (currentUid !== undefined && st.uid !== currentUid && st.uid !== 0) {
    return `${file} is owned by uid ${st.uid}, not by the user cara runs as (uid ${currentUid}); run \`chown ${currentUid} ${file}\` (or start cara as its owner) and start again`
  }
  return undefined
}

const currentUid = () => (typeof process.getuid === "function" ? process.getuid() : undefined)

/**
 * Reads the config, refusing more than 4 MiB and unsafe files (see `configFileProblem`); `None` when the
 * file does not exist. The checks run on the opened descriptor (no swap between check and read), and the
 * open is non-blocking so that a FIFO at the path is refused instead of hanging the daemon.
 */
export const readConfigText = (file: string): Effect.Effect<Option.Option<string>, ConfigReadError> =>
  Effect.tryPromise({
    try: async () => {
      const handle = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK).catch((e: unknown) =>
        errnoOf(e) === "ENOENT" ? undefined : Promise.reject(e)
      )
      if (handle === undefined) return Option.none<string>()
      try {
        const st = await handle.stat()
        const problem = configFileProblem(file, {
          isFile: st.isFile(),
          isFifo: st.isFIFO(),
          isDevice: st.isCharacterDevice() || st.isBlockDevice(),
          mode: st.mode,
          uid: st.uid
        }, currentUid())
        if (problem !== undefined) throw new ConfigReadError({ kind: "config-file-unsafe", finding: err(".", problem) })
        const buf = Buffer.alloc(MAX_CONFIG_BYTES + 1)
        let total = 0
        for (;;) {
          const { bytesRead } = await handle.read(buf, total, buf.length - total, total)
          if (bytesRead === 0) break
          total += bytesRead
          if (total > MAX_CONFIG_BYTES) throw Object.assign(new Error("too large"), { code: "E2BIG" })
        }
        return Option.some(buf.subarray(0, total).toString("utf8"))
      } finally {
        await handle.close()
      }
    },
    catch: (e) =>
      e instanceof ConfigReadError
        ? e
        : new ConfigReadError({
          kind: "config-invalid",
          finding: errnoOf(e) === "E2BIG"
            ? err(".", `${file} is larger than 4 MiB; a config file must be at most ${MAX_CONFIG_BYTES} bytes`)
            : err(".", `cannot read ${file} (${errnoOf(e) ?? String(e)}); check the path and its permissions`)
        })
  })

/** `CARAPACE_CONFIG_PATH`, else `{state_dir}/carapace.json5`, else `{state_dir}/carapace.json`. */
export const discoverConfigPath = (env: ConfigEnv, stateRoot: string): Effect.Effect<string> =>
  Effect.promise(async () => {
    const explicit = env["CARAPACE_CONFIG_PATH"]
    if (explicit !== undefined && explicit.trim() !== "") return path.resolve(explicit)
    const json5 = path.join(stateRoot, "carapace.json5")
    const json = path.join(stateRoot, "carapace.json")
    const exists = (p: string) => fs.stat(p).then(() => true, () => false)
    if (await exists(json5)) return json5
    if (await exists(json)) return json
    return json5
  })

const probeStorePassphraseFile = (stateRoot: string): Effect.Effect<StorePassphraseFile> =>
  Effect.promise(async (): Promise<StorePassphraseFile> => {
    const file = path.join(stateRoot, "matrix", "store_passphrase")
    try {
      const st = await fs.stat(file)
      if (!st.isFile()) return { state: "bad", problem: `${file} is not a regular file` }
      if (st.size > 65536) return { state: "bad", problem: `${file} is larger than 65536 bytes` }
      const text = await fs.readFile(file, "utf8")
      return text.trim() === "" ? { state: "bad", problem: `${file} is empty after trimming` } : { state: "present" }
    } catch (e) {
      return errnoOf(e) === "ENOENT"
        ? { state: "absent" }
        : { state: "bad", problem: `${file} could not be read (${errnoOf(e)})` }
    }
  })

/** Discovers, reads and analyses the config (never fails: every problem is a finding). */
export const loadConfigSnapshot = (
  env: ConfigEnv,
  argon2?: Argon2Params,
  unseal?: (path: string) => boolean
): Effect.Effect<ConfigSnapshot, never, StateDir> =>
  Effect.gen(function*() {
    const stateDir = yield* StateDir
    const target = yield* discoverConfigPath(env, stateDir.root)
    const read = yield* Effect.either(readConfigText(target))
    const storePassphraseFile = yield* probeStorePassphraseFile(stateDir.root)
    if (Either.isLeft(read)) {
      return {
        path: Option.some(target),
        targetPath: target,
        config: defaultsOnly(),
        findings: [read.left.finding],
        secrets: new Map(),
        ...(read.left.kind === "config-file-unsafe" ? { refused: read.left.kind } : {})
      } satisfies ConfigSnapshot
    }
    const analysis = yield* analyzeConfig({
      text: read.right,
      file: target,
      env,
      storePassphraseFile,
      ...(argon2 !== undefined ? { argon2 } : {}),
      ...(unseal !== undefined ? { unseal } : {})
    })
    const findings = [...analysis.findings]
    if (Option.isNone(read.right) && (env["CARAPACE_CONFIG_PATH"] ?? "").trim() !== "") {
      findings.unshift(
        warn(".", `CARAPACE_CONFIG_PATH points to ${target}, which does not exist; using an empty config`)
      )
    }
    return {
      path: Option.map(read.right, () => target),
      targetPath: target,
      config: analysis.config,
      findings,
      secrets: analysis.secrets
    } satisfies ConfigSnapshot
  })

export const formatFinding = (f: ConfigFinding) => `Config ${f.severity} at ${f.path}: ${f.message}`

// ---------------------------------------------------------------------------------------------------------
// The service

export interface ConfigSecretsOptions {
  /** Defaults to a snapshot of `process.env` taken when the layer is built. */
  readonly env?: ConfigEnv
  /** Fail the layer when the config has errors (the daemon); `false` for tools that report them. */
  readonly failOnErrors?: boolean
  readonly argon2?: Argon2Params
}

const writeError = (kind: ConfigWriteError["kind"], file: string, message: string) =>
  new ConfigWriteError({ kind, path: file, message })

/** Logs the warnings of the first load; with `failOnErrors`, its errors fail the layer. */
const startupCheck = (initial: ConfigSnapshot, failOnErrors: boolean) =>
  Effect.gen(function*() {
    const file = initial.targetPath
    for (const f of initial.findings) if (f.severity === "warning") yield* Effect.logWarning(formatFinding(f))
    if (failOnErrors && hasErrors(initial.findings)) {
      const errors = initial.findings.filter((f) => f.severity === "error")
      for (const f of errors) yield* Effect.logError(formatFinding(f))
      return yield* new ConfigLoadError({
        kind: initial.refused ?? "config-invalid",
        path: Option.getOrElse(initial.path, () => file),
        message: `Configuration contains ${errors.length} error(s), aborting startup: ${
          errors.map((f) => `${f.path}: ${f.message}`).join("; ")
        }. Fix them (cara config check lists them) and start again.`,
        findings: errors
      })
    }
  })

/** Secret lookups against the current snapshot (a write-back replaces it). */
const secretAccess = (current: Ref.Ref<ConfigSnapshot>) => {
  const secretOption = (ref: SecretRef | string) =>
    Effect.gen(function*() {
      const at = typeof ref === "string" ? ref : ref.path
      const slot = (yield* Ref.get(current)).secrets.get(at)
      if (slot === undefined) return Option.none<Redacted.Redacted<string>>()
      if (slot.state === "open") return Option.some(slot.value)
      return yield* new ConfigSecretError({
        kind: slot.state === "locked" ? "config-secret-locked" : "config-secret-wrong-password",
        path: at,
        message: slot.state === "locked"
          ? `${at} is sealed (enc:v2) and CARAPACE_CONFIG_PASSWORD is not set; set CARAPACE_CONFIG_PASSWORD to the password it was sealed with and restart`
          : `CARAPACE_CONFIG_PASSWORD does not open the sealed ${at} (wrong password or corrupted value); set the password it was sealed with, or replace the value and restart`
      })
    })

  const secret = (ref: SecretRef | string) =>
    Effect.flatMap(secretOption(ref), (o) =>
      Option.match(o, {
        onSome: Effect.succeed,
        onNone: () => {
          const at = typeof ref === "string" ? ref : ref.path
          return Effect.fail(
            new ConfigSecretError({
              kind: "config-secret-missing",
              path: at,
              message: `no value is configured at ${at}; set it in the config or its env variable`
            })
          )
        }
      }))
  return { secret, secretOption }
}

interface WriteContext {
  readonly file: string
  readonly env: ConfigEnv
  readonly stateDir: StateDirShape
  readonly current: Ref.Ref<ConfigSnapshot>
  readonly lock: Effect.Semaphore
  readonly argon2: Argon2Params | undefined
}

/**
 * The one way the file is written: re-read it, plan edits against what is on disk now, splice them in,
 * prove the result, guard against downgrades and new errors, and replace the file atomically only if
 * nobody changed it meanwhile (otherwise start over from the new content).
 */
const makeWriteBack = ({ argon2, current, env, file, lock, stateDir }: WriteContext) =>
(
  plan: (raw: JsonObject) => Effect.Effect<ReadonlyArray<Edit>, ConfigWriteError>
): Effect.Effect<void, ConfigWriteError> =>
  lock.withPermits(1)(
    Effect.gen(function*() {
      const target = yield* Effect.promise(() => fs.realpath(file).catch(() => file))
      for (let attempt = 0; attempt < 5; attempt++) {
        const before = yield* Effect.mapError(readConfigText(target), (f) =>
          writeError("config-write-io", target, f.message))
        const text = Option.getOrElse(before, () =>
          "{}\n")
        let raw: Json
        try {
          raw = JSON5.parse(text)
        } catch (e) {
          return yield* writeError(
            "config-write-refused",
            target,
            `config file at ${target} failed to parse (${
              (e as Error).message
            }); refusing to write into an unparseable file. Fix its syntax first`
          )
        }
        if (!isObject(raw)) {
          return yield* writeError(
            "config-write-refused",
            target,
            `config file at ${target} is not a JSON5 object; fix it first`
          )
        }
        const edits = yield* plan(raw)
        if (edits.length === 0) return
        const edited = applyEdits(text, edits)
        if (Either.isLeft(edited)) {
          return yield* writeError("config-write-refused", target, `cannot edit ${target}: ${edited.left.reason}`)
        }
        const violations = downgradeViolations(raw, edited.right.value, Option.isSome(configPassword(env)))
        if (violations.length > 0) {
          return yield* writeError(
            "config-write-downgrade",
            target,
            `refusing to replace or change sealed values at ${
              violations.join(", ")
            } without sealing them; set CARAPACE_CONFIG_PASSWORD and retry`
          )
        }
        const spf = yield* probeStorePassphraseFile(stateDir.root)
        const analyse = (t: string) =>
          analyzeConfig({
            text: Option.some(t),
            file: target,
            env,
            storePassphraseFile: spf,
            ...(argon2 ? { argon2 } : {})
          })
        const old = yield* analyse(text)
        const next = yield* analyse(edited.right.text)
        const known = new Set(old.findings.filter((f) => f.severity === "error").map((f) => `${f.path}\0${f.message}`))
        const fresh = next.findings.filter((f) => f.severity === "error" && !known.has(`${f.path}\0${f.message}`))
        if (fresh.length > 0) {
          return yield* writeError(
            "config-write-refused",
            target,
            `invalid config after the write: ${fresh.map((f) => `${f.path}: ${f.message}`).join("; ")}`
          )
        }
        const still = yield* Effect.mapError(readConfigText(target), (f) =>
          writeError("config-write-io", target, f.message))
        if (
          !Option.getEquivalence((a: string, b: string) =>
            a === b
          )(still, before)
        ) continue
        yield* Effect.mapError(stateDir.writeAtomic(target, edited.right.text, { mode: 0o600 }), (e) =>
          writeError("config-write-io", target, e.message))
        yield* Ref.update(current, (s) => ({ ...s, path: Option.some(file), secrets: next.secrets }))
        return
      }
      return yield* writeError(
        "config-write-conflict",
        target,
        `${target} kept changing while cara tried to update it; stop other writers and retry`
      )
    })
  )

type WriteBack = ReturnType<typeof makeWriteBack>

/** The sealing helpers of the write operations. */
const sealing = ({ argon2, env, file }: WriteContext) => {
  const requirePassword = (what: string) =>
    Option.match(configPassword(env), {
      onNone: () =>
        Effect.fail(
          writeError(
            "config-password-missing",
            file,
            `CARAPACE_CONFIG_PASSWORD is required to ${what} so the value is sealed (enc:v2) in the config; set it in the daemon environment and retry`
          )
        ),
      onSome: Effect.succeed
    })

  /** A set that reuses the ciphertext when the file already holds the same value (no churn). */
  const sealedEdit = (raw: JsonObject, at: string, plaintext: string, password: string) =>
    Effect.gen(function*() {
      const p = at.split(".")
      const existing = getIn(raw, p)
      if (typeof existing === "string" && !isExactPlaceholder(existing)) {
        const envelope = parseEnvelope(existing)
        if (Either.isRight(envelope)) {
          const key = yield* deriveKey(password, envelope.right.salt, argon2 ?? ARGON2_PARAMS)
          const opened = openWithKey(key, envelope.right)
          if (Either.isRight(opened) && opened.right === plaintext) return [] as ReadonlyArray<Edit>
        }
      }
      const sealer = yield* makeSealer(password, argon2 ?? ARGON2_PARAMS)
      return [{ op: "set", path: p, value: sealer.seal(plaintext) }] as ReadonlyArray<Edit>
    })
  return { requirePassword, sealedEdit }
}

/** The service's write operations (each one write-back). */
const writeOps = (ctx: WriteContext, writeBack: WriteBack) => {
  const { file } = ctx
  const { requirePassword, sealedEdit } = sealing(ctx)
  const setMatrixAccessToken = (token: Redacted.Redacted<string>, deviceId: string) =>
    Effect.gen(function*() {
      const d = deviceId.trim()
      if (d === "" || utf8Bytes(d) > 255) {
        return yield* writeError("config-write-refused", file, "the device id to persist must be 1 to 255 bytes")
      }
      if (Redacted.value(token).trim() === "") {
        return yield* writeError("config-write-refused", file, "refusing to persist an empty access token")
      }
      // A token from a password login was never in the config: known to the redactor from now on.
      registerSecret(token)
      // Snapshot the password once, before sealing: it cannot vanish between check and seal.
      const password = yield* requirePassword("persist the Matrix access token")
      yield* writeBack((raw) =>
        Effect.gen(function*() {
          if (raw["matrix"] !== undefined && !isObject(raw["matrix"])) {
            return yield* writeError(
              "config-write-refused",
              file,
              "matrix in the config is not an object; fix it first"
            )
          }
          const tokenEdits = yield* sealedEdit(raw, "matrix.accessToken", Redacted.value(token), password)
          const deviceEdits: ReadonlyArray<Edit> = getIn(raw, ["matrix", "deviceId"]) === d
            ? []
            : [{ op: "set", path: ["matrix", "deviceId"], value: d }]
          return [...tokenEdits, ...deviceEdits]
        })
      )
      yield* Effect.logInfo("Persisted the Matrix access token (sealed) and device id to the config file")
    }).pipe(Effect.withSpan("ConfigSecrets.setMatrixAccessToken"))

  const removeMatrixPassword = () =>
    writeBack((raw) =>
      Effect.succeed(
        isObject(raw["matrix"]) && Object.hasOwn(raw["matrix"], "password")
          ? [{ op: "delete", path: ["matrix", "password"] } as const]
          : []
      )
    ).pipe(
      Effect.withSpan("ConfigSecrets.removeMatrixPassword")
    )

  const setSealedSecret = (at: string, value: Redacted.Redacted<string>) =>
    Effect.gen(function*() {
      if (!isSecretPath(at)) {
        return yield* writeError(
          "config-write-refused",
          file,
          `${at} is not a secret path; only secret paths are sealed`
        )
      }
      const plaintext = Redacted.value(value)
      if (isMalformedPlaceholder(plaintext)) {
        return yield* writeError(
          "config-write-refused",
          file,
          `malformed env placeholder at ${at}: use \${UPPERCASE_NAME}`
        )
      }
      if (isExactPlaceholder(plaintext)) {
        // A placeholder is a reference, not a secret: it is written as is, never sealed.
        yield* writeBack(() => Effect.succeed([{ op: "set", path: at.split("."), value: plaintext.trim() }]))
        return
      }
      const password = yield* requirePassword(`write ${at}`)
      yield* writeBack((raw) => sealedEdit(raw, at, plaintext, password))
    }).pipe(Effect.withSpan("ConfigSecrets.setSealedSecret"))

  // the same write-back (validation, downgrade and conflict checks) for a plain value
  const setValue = (at: string, value: unknown) =>
    isSecretPath(at)
      ? writeError("config-write-refused", file, `${at} is a secret path; it is written sealed (setSealedSecret)`)
      : writeBack(() => Effect.succeed([{ op: "set", path: at.split("."), value }]))
  return { setMatrixAccessToken, removeMatrixPassword, setSealedSecret, setValue }
}

export const makeConfigSecrets = (options: ConfigSecretsOptions = {}) =>
  Effect.gen(function*() {
    const env: ConfigEnv = options.env ?? { ...process.env }
    const stateDir = yield* StateDir
    const initial: ConfigSnapshot = yield* loadConfigSnapshot(env, options.argon2)
    yield* startupCheck(initial, options.failOnErrors ?? true)
    const current = yield* Ref.make(initial)
    const lock = yield* Effect.makeSemaphore(1)
    const ctx: WriteContext = { file: initial.targetPath, env, stateDir, current, lock, argon2: options.argon2 }
    return {
      path: initial.path,
      config: initial.config,
      findings: initial.findings,
      ...secretAccess(current),
      ...writeOps(ctx, makeWriteBack(ctx))
    } satisfies ConfigSecretsShape
  }).pipe(Effect.annotateLogs({ service: "ConfigSecrets" }))

/** The daemon's ConfigSecrets: `process.env`, and startup fails on config errors. */
export const ConfigSecretsLive = Layer.effect(ConfigSecrets, makeConfigSecrets())

/** ConfigSecrets with an explicit env and options (tests, tools). */
export const ConfigSecretsWith = (options: ConfigSecretsOptions) =>
  Layer.effect(ConfigSecrets, makeConfigSecrets(options))
