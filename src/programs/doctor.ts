// `cara doctor`: a read-mostly health check of one installation. Each check looks at one thing the daemon
// needs (config, password, state dir and modes, the maintenance lock, rekey and recovery markers, the stores,
// the homeserver, the token, cross-signing and backup) and reports it with what to do next. The only writes
// are the lock's own files while the stores are test-opened, and only when no other process holds the lock.
import { Effect, Either, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { defaultAgent, hasErrors, parseModelRef } from "../domain/config.js"
import {
  CLEANUP_FILE,
  KEY_FILE,
  MINTING_FILE,
  PENDING_FILE as RK_PENDING_FILE,
  ROTATING_FILE
} from "../domain/recoveryKey.js"
import type { StateFileErrorKind } from "../domain/stateFiles.js"
import { LOCK_FILE, MARKER_FILE, PASSPHRASE_FILE, PENDING_FILE } from "../domain/storePassphrase.js"
import { homeserverUrlOf } from "../domain/wellKnown.js"
import { type ConfigEnv, type ConfigSnapshot, loadConfigSnapshot } from "../layers/ConfigSecretsLive.js"
import { CRYPTO_FILE, STATE_FILE } from "../layers/CryptoStoreLive.js"
import { SqliteFile, type StoreSecret } from "../layers/durable-idb/sqliteFile.js"
import { makeKeyring } from "../layers/RecoveryKeyLive.js"
import { makeStateDir, resolveStateDirPath } from "../layers/StateDirLive.js"
import { stateFileProblems } from "../layers/StateFilesCheck.js"
import {
  acquireRekeyLock,
  configPasswordOf,
  deriveStorePassphrase,
  LOCK_HOLDER_FILE
} from "../layers/StorePassphraseLive.js"
import { StateDir, type StateDirShape } from "../services/StateDir.js"

export type Status = "ok" | "skip" | "warn" | "error"

export interface Finding {
  /** Stable id of the check (`config`, `state-dir`, `token`, ...). */
  readonly check: string
  readonly status: Status
  readonly message: string
  /** What to do next; present on every `warn` and `error`. */
  readonly remediation?: string
  /** The error kind the daemon would report for the same problem, when there is one. */
  readonly kind?: string
}

export interface DoctorReport {
  readonly stateDir: string
  readonly configPath: string | null
  readonly findings: ReadonlyArray<Finding>
  readonly exitCode: 0 | 1 | 2
}

export interface DoctorOptions {
  readonly env: ConfigEnv
  /** Skip the homeserver checks (reachability, token, cross-signing, backup). */
  readonly offline?: boolean
  /** Per-request timeout of the homeserver checks. */
  readonly timeoutMs?: number
}

/** The check ids, in report order (the docs test checks the documented list against it). */
export const DOCTOR_CHECKS = [
  "config",
  "config-password",
  "agent",
  "state-dir",
  "file-modes",
  "lock",
  "rekey",
  "recovery",
  "stores",
  "homeserver",
  "token",
  "cross-signing",
  "backup"
] as const

/** 0 when every finding is ok or skipped, 1 when the worst is a warning, 2 when any is an error. */
export const exitCodeOf = (findings: ReadonlyArray<Finding>): 0 | 1 | 2 =>
  findings.some((f) => f.status === "error") ? 2 : findings.some((f) => f.status === "warn") ? 1 : 0

const ok = (check: string, message: string): Finding => ({ check, status: "ok", message })
const skip = (check: string, message: string): Finding => ({ check, status: "skip", message })
const warn = (check: string, message: string, remediation: string, kind?: string): Finding => ({
  check,
  status: "warn",
  message,
  remediation,
  ...(kind !== undefined ? { kind } : {})
})
const fail = (check: string, message: string, remediation: string, kind?: string): Finding => ({
  check,
  status: "error",
  message,
  remediation,
  ...(kind !== undefined ? { kind } : {})
})

const lstat = (p: string): fs.Stats | undefined => {
  try {
    return fs.lstatSync(p)
  } catch {
    return undefined
  }
}
const exists = (p: string) => lstat(p) !== undefined
const octal = (mode: number) => (mode & 0o777).toString(8).padStart(3, "0")

// ---------------------------------------------------------------------------------------------------------
// Config

const configChecks = (snap: ConfigSnapshot, env: ConfigEnv): Array<Finding> => {
  const out: Array<Finding> = []
  const errors = snap.findings.filter((f) => f.severity === "error")
  const warnings = snap.findings.filter((f) => f.severity === "warning")
  const where = Option.getOrElse(snap.path, () => snap.targetPath)
  if (Option.isNone(snap.path)) {
    out.push(
      warn(
        "config",
        `no config file at ${snap.targetPath}; defaults apply and no channel is enabled`,
        "create the file (see README.md, step 1), then run `cara config check`"
      )
    )
  } else if (errors.length > 0) {
    out.push(fail(
      "config",
      `${where} has ${errors.length} error(s): ${errors.map((f) => `${f.path}: ${f.message}`).join("; ")}`,
      "fix each path named above, then run `cara config check` until it reports OK; the daemon refuses to start until then",
      "config-invalid"
    ))
  } else if (warnings.length > 0) {
    out.push(
      warn(
        "config",
        `${where} is valid with ${warnings.length} warning(s): ${
          warnings.map((f) => `${f.path}: ${f.message}`).join("; ")
        }`,
        "run `cara config check` and resolve the warnings"
      )
    )
  } else {
    out.push(ok("config", `${where} is valid`))
  }
  if (errors.length === 0 && snap.config.gateway.auth?.mode === "none") {
    // auth off is allowed (explicitly, on loopback) but never quietly: it is a warning on every report
    out[out.length - 1] = warn(
      "config",
      `${where}: gateway.auth.mode is "none", so any local process or page that reaches the port can drive cara`,
      "set gateway.auth.mode \"token\" with token \"${CARAPACE_GATEWAY_TOKEN}\" and export CARAPACE_GATEWAY_TOKEN (openssl rand -hex 32)",
      "gateway-auth-off"
    )
  }

  const password = (env["CARAPACE_CONFIG_PASSWORD"] ?? "") !== ""
  const locked = [...snap.secrets.entries()].filter(([, s]) => s.state !== "open").map(([p, s]) => `${p} (${s.state})`)
  const m = snap.config.matrix
  const matrixOn = m !== undefined && m !== null && m.enabled
  if (locked.length > 0) {
    out.push(fail(
      "config-password",
      password
        ? `CARAPACE_CONFIG_PASSWORD does not open ${locked.join(", ")}`
        : `CARAPACE_CONFIG_PASSWORD is not set, so ${locked.join(", ")} stay sealed`,
      "export CARAPACE_CONFIG_PASSWORD with the password the values were sealed with (the daemon's EnvironmentFile and this shell)",
      password ? "config-secret-wrong-password" : "config-secret-locked"
    ))
  } else if (password) {
    out.push(ok("config-password", "CARAPACE_CONFIG_PASSWORD is set and opens every sealed value"))
  } else if (matrixOn) {
    out.push(warn(
      "config-password",
      "CARAPACE_CONFIG_PASSWORD is not set: the access token cannot be written back sealed, and the default store key cannot be derived",
      "generate one (openssl rand -hex 32), keep a copy in a password manager, and export it wherever cara runs"
    ))
  } else {
    out.push(ok("config-password", "CARAPACE_CONFIG_PASSWORD is not set and nothing needs it"))
  }

  const agent = defaultAgent(snap.config)
  const model = Option.flatMap(agent, (a) => Option.fromNullable(a.model))
  if (Option.isNone(model)) {
    out.push((matrixOn ? fail : warn)(
      "agent",
      "no default agent: agents.default (or agents.defaults) has no model, so inbound messages have nothing to run",
      "add `agents: { default: { model: \"anthropic:claude-sonnet-4-6\" } }` (or an openai:... model) to the config"
    ))
  } else {
    const ref = parseModelRef(model.value)
    if (Option.isNone(ref)) {
      out.push(
        fail(
          "agent",
          `agents.default.model "${model.value}" is not provider:model`,
          "write it as anthropic:<model> or openai:<model>"
        )
      )
    } else {
      const provider = ref.value.provider
      if (provider === "local") {
        out.push(ok("agent", `default agent: ${model.value} (the built-in test model: it echoes, it does not think)`))
        return out
      }
      const section = snap.config[provider]
      const keyEnv = provider === "anthropic" ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY"
      const hasKey = section?.apiKey !== undefined || (env[keyEnv] ?? "") !== ""
      // a local OpenAI-compatible server needs no key, from the config or OPENAI_BASE_URL
      const hasBase = (section?.baseUrl !== undefined && section.baseUrl !== "") ||
        (provider === "openai" && (env["OPENAI_BASE_URL"] ?? "").trim() !== "")
      if (!hasKey && !hasBase) {
        out.push(
          fail(
            "agent",
            `the default agent uses ${provider}, but no API key is configured`,
            `set ${provider}.apiKey (e.g. "\${${keyEnv}}") or export ${keyEnv}`
          )
        )
      } else {
        out.push(ok("agent", `default agent: ${model.value}`))
      }
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// State dir, file modes, markers

const stateDirChecks = (root: string): { findings: Array<Finding>; present: boolean } => {
  const st = lstat(root)
  if (st === undefined) {
    return {
      findings: [
        warn(
          "state-dir",
          `${root} does not exist yet`,
          "start the daemon once (it creates the directory with mode 0700), or set CARAPACE_STATE_DIR"
        )
      ],
      present: false
    }
  }
  const real = st.isSymbolicLink()
    ? (() => {
      try {
        return fs.statSync(root)
      } catch {
        return undefined
      }
    })()
    : st
  if (real === undefined || !real.isDirectory()) {
    return {
      findings: [
        fail(
          "state-dir",
          `${root} is not a directory`,
          "move it aside or point CARAPACE_STATE_DIR at a directory",
          "state-dir-io"
        )
      ],
      present: false
    }
  }
  const findings: Array<Finding> = []
  if (typeof process.getuid === "function" && real.uid !== process.getuid()) {
    findings.push(
      fail(
        "state-dir",
        `${root} is owned by uid ${real.uid}, not by this user`,
        `run cara as the owner, or chown -R the directory to the user that runs the daemon`,
        "state-dir-permissions"
      )
    )
  } else if ((real.mode & 0o777) !== 0o700) {
    findings.push(
      warn(
        "state-dir",
        `${root} has mode ${octal(real.mode)}, expected 700`,
        `chmod 700 ${root} (the daemon also resets it at start)`,
        "state-dir-permissions"
      )
    )
  } else {
    findings.push(ok("state-dir", `${root} exists with mode 700`))
  }
  return { findings, present: true }
}

/** Every file under the state dir must be 0600 and every directory 0700 (nothing for group or others). */
const fileModeChecks = (root: string): Array<Finding> => {
  const loose: Array<string> = []
  const walk = (dir: string, depth: number) => {
    let entries: Array<fs.Dirent>
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true })
    } catch {
      return
    }
    for (const e of entries) {
      const p = path.join(dir, e.name)
      const st = lstat(p)
      if (st === undefined || st.isSymbolicLink()) continue
      if (st.isDirectory()) {
        if ((st.mode & 0o077) !== 0) loose.push(`${p} (${octal(st.mode)}, expected 700)`)
        if (depth < 4) walk(p, depth + 1)
      } else if (st.isFile() && (st.mode & 0o077) !== 0) {
        loose.push(`${p} (${octal(st.mode)}, expected 600)`)
      }
    }
  }
  walk(root, 0)
  if (loose.length === 0) return [ok("file-modes", "every file is 600 and every directory 700")]
  return [fail(
    "file-modes",
    `readable by group or others: ${loose.join(", ")}`,
    "chmod 600 each file and chmod 700 each directory listed; then ask who could read them, and rotate what they hold (see docs/security.md)",
    "state-dir-permissions"
  )]
}

const rekeyChecks = (stateDir: StateDirShape): Array<Finding> => {
  const pending = stateDir.resolve(PENDING_FILE)
  const marker = stateDir.resolve(MARKER_FILE)
  const present = [pending, marker].filter(exists)
  if (present.length === 0) return [ok("rekey", "no store rekey in flight")]
  return [fail(
    "rekey",
    `Matrix store rekey interrupted: ${present.join(" and ")} present`,
    "with the daemon stopped, rerun `cara matrix rekey-store --new` (it finishes or rolls back the rotation); do not delete these files by hand",
    "interrupted-rekey"
  )]
}

const recoveryChecks = (stateDir: StateDirShape): Array<Finding> => {
  const out: Array<Finding> = []
  const cleanup = stateDir.resolve(CLEANUP_FILE)
  if (exists(cleanup)) {
    let phase = "unreadable"
    try {
      phase = String((JSON.parse(fs.readFileSync(cleanup, "utf8")) as { phase?: unknown }).phase ?? "unknown")
    } catch {
      // an unreadable journal is reported as such
    }
    if (phase !== "completed") {
      out.push(fail(
        "recovery",
        `recovery-key cleanup journal ${cleanup} is in phase ${phase}: a restore's cleanup did not finish, and startup refuses recovery repair`,
        "keep the daemon stopped and rerun `cara matrix recovery-key restore` with the same key to finish the cleanup",
        "recovery-state-io"
      ))
    }
  }
  const leftovers = [ROTATING_FILE, RK_PENDING_FILE, MINTING_FILE].map((f) => stateDir.resolve(f)).filter(exists)
  if (leftovers.length > 0) {
    out.push(warn(
      "recovery",
      `recovery-key operation in flight: ${leftovers.join(", ")}`,
      "rerun `cara matrix recovery-key rotate` (daemon stopped) or start the daemon: either finishes or rolls back the rotation, asking the homeserver which key it holds (recovery-key-promotion-refused names the reason when it cannot); never delete these files by hand"
    ))
  }
  if (out.length === 0) {
    out.push(
      ok(
        "recovery",
        exists(stateDir.resolve(KEY_FILE))
          ? "recovery key present, no operation in flight"
          : "no recovery key yet (created at cross-signing bootstrap), no operation in flight"
      )
    )
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// The maintenance lock and the stores

type LockState =
  | { readonly state: "free" }
  | { readonly state: "held"; readonly by: string }
  | { readonly state: "error"; readonly message: string }

const holderOf = (root: string): string => {
  try {
    const h = JSON.parse(fs.readFileSync(path.join(root, LOCK_HOLDER_FILE), "utf8")) as {
      pid?: unknown
      holder?: unknown
    }
    return `${String(h.holder ?? "a cara process")} (pid ${String(h.pid ?? "?")})`
  } catch {
    return "another cara process"
  }
}

const resolvePassphrase = (
  snap: ConfigSnapshot,
  env: ConfigEnv,
  stateDir: StateDirShape
): Either.Either<{ value: string; source: string }, string> => {
  const slot = snap.secrets.get("matrix.storePassphrase")
  if (slot?.state === "open") {
    return Either.right({
      value: Redacted.value(slot.value),
      source: "matrix.storePassphrase / MATRIX_STORE_PASSPHRASE"
    })
  }
  try {
    const pinned = fs.readFileSync(stateDir.resolve(PASSPHRASE_FILE), "utf8").trim()
    if (pinned !== "") return Either.right({ value: pinned, source: "the pinned store_passphrase file" })
  } catch {
    // no pinned file: derive
  }
  const password = configPasswordOf(env)
  if (Option.isNone(password)) {
    return Either.left(
      "no store key source: CARAPACE_CONFIG_PASSWORD, MATRIX_STORE_PASSPHRASE and the pinned file are all absent"
    )
  }
  let iid: string
  try {
    iid = fs.readFileSync(stateDir.resolve("installation_id"), "utf8").trim()
  } catch {
    return Either.left("the stores exist but installation_id is missing, so the derived key cannot be computed")
  }
  return Either.right({
    value: deriveStorePassphrase(Redacted.value(password.value), iid),
    source: "derived from CARAPACE_CONFIG_PASSWORD"
  })
}

/** The short next step of each state-file refusal (the message holds the detail). */
const STATE_FILE_REMEDY: Record<StateFileErrorKind, string> = {
  "crypto-store-corrupt":
    "restore both Matrix store files from a backup; without one, move them aside and follow Disaster recovery in docs/channels.md (never let the daemon build a new store under the old device id)",
  "state-store-corrupt":
    "restore it from the backup the crypto store came from, or move it aside so the next start rebuilds it from the homeserver",
  "inbound-ledger-corrupt": "restore it from a backup, or move it aside (the next start begins a new ledger)",
  "session-history-corrupt": "restore it from a backup, or move it aside (the next start begins an empty history)",
  "installation-id-missing":
    "restore installation_id from a backup; the daemon will not mint a new one while state is keyed from it",
  "installation-id": "restore installation_id from a backup (64 lowercase hex characters)",
  "encrypted-state-io": "fix or restore the file named above"
}

const lockAndStoreChecks = (snap: ConfigSnapshot, env: ConfigEnv, stateDir: StateDirShape, rekeyInFlight: boolean) =>
  Effect.scoped(Effect.gen(function*() {
    const out: Array<Finding> = []
    // Held only while the stores are test-opened, so no daemon can start on them meanwhile; under its own
    // name, so a daemon refused meanwhile is told that doctor holds it.
    const lock: LockState = yield* acquireRekeyLock(stateDir, "doctor").pipe(
      Effect.as<LockState>({ state: "free" }),
      Effect.catchAll((e) =>
        Effect.succeed<LockState>(
          e._tag === "RekeyLockHeldError"
            ? { state: "held", by: holderOf(stateDir.root) }
            : { state: "error", message: e.message }
        )
      )
    )
    if (lock.state === "error") {
      out.push(
        fail("lock", lock.message, "check the state directory's permissions and free disk space", "encrypted-state-io")
      )
    } else if (lock.state === "held") {
      out.push(
        ok(
          "lock",
          `${
            stateDir.resolve(LOCK_FILE)
          } is held by ${lock.by}; maintenance commands (rekey-store, recovery-key restore|rotate) need it stopped`
        )
      )
    } else {
      out.push(ok("lock", "the maintenance lock is free (no daemon or maintenance command running)"))
    }

    // A damaged state file (or a missing one other state needs) is what the daemon would refuse first.
    const problems = yield* stateFileProblems(stateDir.root, stateDir.resolve, snap.config)
    if (problems.length > 0) {
      for (const p of problems) out.push(fail("stores", p.message, STATE_FILE_REMEDY[p.kind], p.kind))
      return out
    }

    const m = snap.config.matrix
    const crypto = stateDir.resolve(CRYPTO_FILE)
    const state = stateDir.resolve(STATE_FILE)
    if (m === undefined || m === null || !m.enabled) {
      out.push(skip("stores", "matrix is not enabled"))
    } else if (!exists(crypto) && !exists(state)) {
      out.push(ok("stores", "no Matrix store yet; the first start creates it"))
    } else if (lock.state !== "free") {
      out.push(
        skip(
          "stores",
          "not opened: another process holds them (a running daemon reports store problems in `cara status`)"
        )
      )
    } else if (rekeyInFlight) {
      out.push(skip("stores", "not opened while a rekey is in flight (see the rekey finding)"))
    } else {
      let secret: StoreSecret = { encrypted: false }
      let source = "unencrypted"
      if (m.encrypted) {
        const p = resolvePassphrase(snap, env, stateDir)
        if (Either.isLeft(p)) {
          out.push(
            fail(
              "stores",
              p.left,
              "export the CARAPACE_CONFIG_PASSWORD (or MATRIX_STORE_PASSPHRASE) that was in effect when the store was created",
              "missing-store-secret"
            )
          )
          return out
        }
        secret = { encrypted: true, passphrase: p.right.value }
        source = p.right.source
      }
      const problems: Array<{ file: string; message: string; kind: string | undefined }> = []
      for (const [file, role] of [[crypto, "crypto"], [state, "state"]] as const) {
        if (!exists(file)) continue
        const opened = yield* Effect.either(Effect.tryPromise(() => SqliteFile.open(file, role, secret)))
        if (Either.isRight(opened)) {
          try {
            opened.right.close()
          } catch {
            // closing a read-only probe cannot lose data
          }
        } else {
          const cause = opened.left.error as { kind?: unknown; message?: unknown }
          problems.push({
            file,
            message: String(cause.message ?? cause),
            kind: typeof cause.kind === "string" ? cause.kind : undefined
          })
        }
      }
      if (problems.length === 0) {
        out.push(ok("stores", `the Matrix stores open with the store key (${source})`))
      } else {
        const mismatch = problems.some((p) => p.kind === "encrypted-store-passphrase-mismatch")
        out.push(fail(
          "stores",
          problems.map((p) => `${p.file}: ${p.message}`).join("; "),
          mismatch
            ? "the resolved store key does not open the store: export the CARAPACE_CONFIG_PASSWORD / MATRIX_STORE_PASSPHRASE that was in effect when it was created (after `cara config rekey`, the pinned store_passphrase file must still be there)"
            : "check the files' permissions and free disk space",
          mismatch ? "encrypted-store-passphrase-mismatch" : (problems[0]?.kind ?? "encrypted-state-io")
        ))
      }
    }
    return out
  }))

// ---------------------------------------------------------------------------------------------------------
// The homeserver

interface HttpAnswer {
  readonly status: number
  readonly json: unknown
}

const request = (url: string, timeoutMs: number, init: { token?: string; body?: unknown } = {}) =>
  Effect.tryPromise({
    try: async (): Promise<HttpAnswer> => {
      const res = await fetch(url, {
        method: init.body === undefined ? "GET" : "POST",
        headers: {
          ...(init.token !== undefined ? { authorization: `Bearer ${init.token}` } : {}),
          ...(init.body !== undefined ? { "content-type": "application/json" } : {})
        },
        ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
        signal: AbortSignal.timeout(timeoutMs)
      })
      const text = await res.text()
      let json: unknown = undefined
      try {
        json = JSON.parse(text)
      } catch {
        // a non-JSON answer is judged by its status
      }
      return { status: res.status, json }
    },
    catch: (e) => {
      const err = e as { name?: string; cause?: { code?: string }; message?: string }
      return err.name === "TimeoutError"
        ? `no answer within ${timeoutMs} ms`
        : (err.cause?.code ?? err.message ?? "connection failed")
    }
  })

/**
 * The daemon's start-up check, run by doctor: matrix/recovery_key against the homeserver's default
 * secret-storage key description (the SDK's MAC check: no decryption, nothing imported).
 */
const recoveryKeyCheck = (base: string, timeoutMs: number, token: string, userId: string, keyFile: string) =>
  Effect.gen(function*() {
    const remedy =
      "stop the daemon, remove matrix/recovery_key after saving it aside, and run `cara matrix recovery-key restore` with the key Element shows for this account; the daemon refuses to start until then"
    const accountData = (type: string) =>
      request(
        `${base}/_matrix/client/v3/user/${encodeURIComponent(userId)}/account_data/${encodeURIComponent(type)}`,
        timeoutMs,
        { token }
      )
    const def = yield* Effect.either(accountData("m.secret_storage.default_key"))
    if (Either.isLeft(def) || (def.right.status !== 200 && def.right.status !== 404)) {
      return warn(
        "cross-signing",
        `reading secret storage failed (${Either.isLeft(def) ? def.left : `HTTP ${def.right.status}`})`,
        "rerun `cara doctor`; if it persists, check the homeserver",
        "recovery-state-probe-failed"
      )
    }
    const id = field(def.right.json, "key")
    const info = typeof id === "string" ? yield* Effect.either(accountData(`m.secret_storage.key.${id}`)) : undefined
    if (info === undefined || Either.isLeft(info) || info.right.status !== 200) {
      return fail(
        "cross-signing",
        `${userId} is cross-signed and matrix/recovery_key exists, but the homeserver has no secret-storage key for it (reason=server-not-configured)`,
        remedy,
        "recovery-key-restore-failed"
      )
    }
    let text = ""
    try {
      text = fs.readFileSync(keyFile, "utf8").slice(0, 4096).trim()
    } catch (e) {
      return fail(
        "cross-signing",
        `matrix/recovery_key cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`,
        remedy,
        "recovery-state-io"
      )
    }
    const opens = yield* Effect.promise(() => makeKeyring().matches(text, info.right.json as never))
    return opens
      ? ok("cross-signing", `${userId} is cross-signed and matrix/recovery_key opens the homeserver's secret storage`)
      : fail(
        "cross-signing",
        `matrix/recovery_key does not open the homeserver's secret storage (reason=wrong-key)`,
        remedy,
        "recovery-key-restore-failed"
      )
  })

const field = (v: unknown, ...keys: Array<string>): unknown =>
  keys.reduce<unknown>(
    (acc, k) => (acc !== null && typeof acc === "object" ? (acc as Record<string, unknown>)[k] : undefined),
    v
  )

/** The base URL doctor probes: matrix.homeserverUrl, or the one discovery finds (as the daemon does). */
const homeserverBase = (m: NonNullable<ConfigSnapshot["config"]["matrix"]>) =>
  homeserverUrlOf(m, "set matrix.homeserverUrl").pipe(
    Effect.map(({ discovered, url }) => ({
      base: url,
      via: discovered ? " (discovered through .well-known: matrix.homeserverUrl is not set)" : ""
    })),
    Effect.mapError((e) => e.message),
    Effect.either
  )

/** `/_matrix/client/versions` answers. */
const reachabilityCheck = (base: string, via: string, timeoutMs: number) =>
  Effect.gen(function*() {
    const versions = yield* Effect.either(request(`${base}/_matrix/client/versions`, timeoutMs))
    if (
      Either.isLeft(versions) || versions.right.status !== 200 || !Array.isArray(field(versions.right.json, "versions"))
    ) {
      return fail(
        "homeserver",
        `${base} is not reachable as a Matrix homeserver (${
          Either.isLeft(versions) ? versions.left : `HTTP ${versions.right.status}`
        })`,
        "check matrix.homeserverUrl (scheme and host only), DNS, TLS and the firewall; `curl <url>/_matrix/client/versions` must answer",
        "sync-failed"
      )
    }
    const count = (field(versions.right.json, "versions") as Array<unknown>).length
    return ok("homeserver", `${base} answers (${count} spec versions)${via}`)
  })

type Matrix = NonNullable<ConfigSnapshot["config"]["matrix"]>

/** The token check; `auth` is set when the token is valid enough to probe further. */
const tokenCheck = (snap: ConfigSnapshot, m: Matrix, base: string, timeoutMs: number) =>
  Effect.gen(function*() {
    const slot = snap.secrets.get("matrix.accessToken")
    if (slot === undefined || slot.state !== "open") {
      const finding = slot === undefined
        ? skip("token", "no access token yet: the first start logs in with matrix.password and writes the token back")
        : fail(
          "token",
          "the access token is sealed and CARAPACE_CONFIG_PASSWORD does not open it",
          "export CARAPACE_CONFIG_PASSWORD",
          "config-secret-locked"
        )
      return { findings: [finding, ...needs("the access token")], auth: undefined }
    }
    const token = Redacted.value(slot.value)
    const whoami = yield* Effect.either(request(`${base}/_matrix/client/v3/account/whoami`, timeoutMs, { token }))
    if (Either.isLeft(whoami)) {
      const finding = fail(
        "token",
        `whoami failed: ${whoami.left}`,
        "check the network, then rerun `cara doctor`",
        "auth-probe"
      )
      return { findings: [finding, ...needs("a valid token")], auth: undefined }
    }
    if (whoami.right.status !== 200) {
      const errcode = String(field(whoami.right.json, "errcode") ?? `HTTP ${whoami.right.status}`)
      const finding = fail(
        "token",
        `the homeserver refuses the access token (${errcode})`,
        "mint a new token: remove matrix.accessToken and matrix.deviceId, set matrix.password for one start, and restart; or put a fresh token and its device id in the config",
        "auth-token-revoked"
      )
      return { findings: [finding, ...needs("a valid token")], auth: undefined }
    }
    const userId = String(field(whoami.right.json, "user_id") ?? "")
    return { findings: [tokenOwner(m, userId, field(whoami.right.json, "device_id"))], auth: { token, userId } }
  })

const needs = (what: string) => [skip("cross-signing", `needs ${what}`), skip("backup", `needs ${what}`)]

/** Whether the token belongs to the configured account and device. */
const tokenOwner = (m: Matrix, userId: string, deviceId: unknown): Finding => {
  if (m.userId !== undefined && userId !== m.userId) {
    return fail(
      "token",
      `the token belongs to ${userId}, not to matrix.userId ${m.userId}`,
      "put the token of the configured account in the config, or fix matrix.userId",
      "auth-session-user-mismatch"
    )
  }
  if (m.deviceId !== undefined && typeof deviceId === "string" && deviceId !== m.deviceId) {
    return fail(
      "token",
      `the token is for device ${deviceId}, not matrix.deviceId ${m.deviceId}`,
      "set matrix.deviceId to the token's device, or mint a token for the configured device",
      "auth-session-device-mismatch"
    )
  }
  return ok(
    "token",
    `the access token is valid for ${userId}${typeof deviceId === "string" ? ` (device ${deviceId})` : ""}`
  )
}

/** The account's cross-signing identity on the server, and the installation's recovery key. */
const crossSigningCheck = (base: string, timeoutMs: number, token: string, userId: string, stateDir: StateDirShape) =>
  Effect.gen(function*() {
    const keys = yield* Effect.either(
      request(`${base}/_matrix/client/v3/keys/query`, timeoutMs, { token, body: { device_keys: { [userId]: [] } } })
    )
    if (Either.isLeft(keys) || keys.right.status !== 200) {
      return warn(
        "cross-signing",
        `keys/query failed (${Either.isLeft(keys) ? keys.left : `HTTP ${keys.right.status}`})`,
        "rerun `cara doctor`; if it persists, check the homeserver",
        "recovery-state-probe-failed"
      )
    }
    if (field(keys.right.json, "master_keys", userId) === undefined) {
      return warn(
        "cross-signing",
        `${userId} has no cross-signing identity on the server`,
        "start the daemon with matrix.password set once: it bootstraps cross-signing and writes matrix/recovery_key"
      )
    }
    if (!exists(stateDir.resolve(KEY_FILE))) {
      return warn(
        "cross-signing",
        `${userId} is cross-signed, but this installation has no matrix/recovery_key`,
        "restore the saved key with `cara matrix recovery-key restore --key-file FILE` (daemon stopped)"
      )
    }
    return yield* recoveryKeyCheck(base, timeoutMs, token, userId, stateDir.resolve(KEY_FILE))
  })

/** The server-side key backup. */
const backupCheck = (base: string, timeoutMs: number, token: string) =>
  Effect.gen(function*() {
    const backup = yield* Effect.either(request(`${base}/_matrix/client/v3/room_keys/version`, timeoutMs, { token }))
    const again = "rerun `cara doctor`; if it persists, check the homeserver"
    if (Either.isLeft(backup)) return warn("backup", `room_keys/version failed (${backup.left})`, again)
    if (backup.right.status === 200) {
      return ok("backup", `server-side key backup version ${String(field(backup.right.json, "version") ?? "?")} exists`)
    }
    if (backup.right.status === 404) {
      return warn(
        "backup",
        "no server-side key backup",
        "start the daemon with the recovery key in place: it creates the backup; without one, history is lost with the device"
      )
    }
    return warn("backup", `room_keys/version answered HTTP ${backup.right.status}`, again)
  })

const homeserverChecks = (snap: ConfigSnapshot, stateDir: StateDirShape, timeoutMs: number) =>
  Effect.gen(function*() {
    const m = snap.config.matrix
    const ids = ["homeserver", "token", "cross-signing", "backup"]
    if (m === undefined || m === null || !m.enabled) return ids.map((c) => skip(c, "matrix is not enabled"))
    if (hasErrors(snap.findings)) return ids.map((c) => skip(c, "the config has errors; fix them first"))
    const found = yield* homeserverBase(m)
    if (Either.isLeft(found)) {
      const finding = fail("homeserver", found.left, "set matrix.homeserverUrl (scheme and host only)", "sync-failed")
      return [finding, ...ids.slice(1).map((c) => skip(c, "the homeserver is not known"))]
    }
    const { base, via } = found.right
    const reach = yield* reachabilityCheck(base, via, timeoutMs)
    if (reach.status === "error") return [reach, ...ids.slice(1).map((c) => skip(c, "the homeserver is not reachable"))]
    const token = yield* tokenCheck(snap, m, base, timeoutMs)
    if (token.auth === undefined) return [reach, ...token.findings]
    const { token: t, userId } = token.auth
    return [
      reach,
      ...token.findings,
      yield* crossSigningCheck(base, timeoutMs, t, userId, stateDir),
      yield* backupCheck(base, timeoutMs, t)
    ]
  })

// ---------------------------------------------------------------------------------------------------------

/** Runs every check against the installation that `env` names (CARAPACE_STATE_DIR, CARAPACE_CONFIG_PATH, ...). */
export const runDoctor = (options: DoctorOptions): Effect.Effect<DoctorReport> =>
  Effect.gen(function*() {
    const env = options.env
    const root = resolveStateDirPath(env as NodeJS.ProcessEnv)
    const findings: Array<Finding> = []
    // Looked at before anything opens the state dir: opening it repairs the root's mode.
    const dir = stateDirChecks(root)
    const stateDir = yield* Effect.either(makeStateDir(root))
    if (Either.isLeft(stateDir)) {
      return {
        stateDir: root,
        configPath: null,
        findings: [
          ...dir.findings,
          fail(
            "state-dir",
            stateDir.left.message,
            "fix the path named above, then rerun `cara doctor`",
            stateDir.left.kind
          )
        ],
        exitCode: 2
      }
    }
    const sd = stateDir.right
    const snap = yield* loadConfigSnapshot(env).pipe(Effect.provideService(StateDir, sd))
    findings.push(...configChecks(snap, env))
    findings.push(...dir.findings)
    findings.push(...fileModeChecks(root))
    const rekey = rekeyChecks(sd)
    const lockAndStores = yield* lockAndStoreChecks(snap, env, sd, rekey[0]?.status === "error")
    findings.push(lockAndStores[0]!, ...rekey, ...recoveryChecks(sd), ...lockAndStores.slice(1))
    if (options.offline === true) {
      findings.push(...["homeserver", "token", "cross-signing", "backup"].map((c) => skip(c, "--offline")))
    } else {
      findings.push(...(yield* homeserverChecks(snap, sd, options.timeoutMs ?? 10_000)))
    }
    return { stateDir: root, configPath: Option.getOrNull(snap.path), findings, exitCode: exitCodeOf(findings) }
  })

const mark: Record<Status, string> = { ok: "ok   ", skip: "skip ", warn: "WARN ", error: "ERROR" }

export const renderDoctor = (r: DoctorReport, json: boolean): string => {
  if (json) return JSON.stringify(r, null, 2)
  const lines = [`cara doctor: state dir ${r.stateDir}, config ${r.configPath ?? "(none)"}`]
  for (const f of r.findings) {
    lines.push(`${mark[f.status]} ${f.check}: ${f.message}${f.kind !== undefined ? ` [${f.kind}]` : ""}`)
    if (f.remediation !== undefined) lines.push(`        -> ${f.remediation}`)
  }
  const count = (s: Status) => r.findings.filter((f) => f.status === s).length
  lines.push(`${count("error")} error(s), ${count("warn")} warning(s); exit ${r.exitCode}`)
  return lines.join("\n")
}
