// The store-passphrase chain (reference §3) and the maintenance lock.
//
// The lock: Node has no flock, so mutual exclusion comes from a kernel record lock that SQLite takes for
// us (fcntl, through node:sqlite): `{state_dir}/.matrix-rekey.lock` is an empty SQLite file and the holder
// keeps a `BEGIN EXCLUSIVE` transaction open on it for the life of its scope. The kernel drops the lock
// when the holder's process dies in any way (SIGKILL included), so a killed holder never blocks the next
// start, and two live processes can never both hold it (SQLite also arbitrates between connections of one
// process). Nothing is ever written to the file, so there is no journal to recover. Who holds it is told
// by a small sidecar `{state_dir}/.matrix-rekey.lock.holder` ({pid, holder, startTime}) written after the
// lock is taken; a refused contender reads it only to name the holder, checking the pid against
// /proc/<pid>/stat's start time so a dead holder's leftover (or a reused pid) is reported as unknown.
// A pid file with O_EXCL was rejected: replacing a stale one needs a compare-and-swap that POSIX lacks.
import { Effect, Layer, Option, Redacted, Schema, type Scope } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import type { Matrix } from "../domain/config.js"
import { DLQ_FILE } from "../domain/dlq.js"
import { registerSecret } from "../domain/redact.js"
import {
  EncryptedStateIoError,
  INSTALLATION_ID_FILE,
  InstallationIdError,
  interruptedRekey,
  LOCK_FILE,
  LockHolderKind,
  MARKER_FILE,
  missingStoreSecret,
  MissingStoreSecretError,
  PASSPHRASE_FILE,
  PENDING_FILE,
  RekeyLockHeldError,
  STORE_KEY_INFO,
  StoreKeyDerivationError
} from "../domain/storePassphrase.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"
import { StateDir, type StateDirShape } from "../services/StateDir.js"
import {
  type RekeyLock,
  type ResolvedPassphrase,
  StorePassphrase,
  type StorePassphraseShape
} from "../services/StorePassphrase.js"
// Layer imports by design: the store passphrase re-keys the crypto store it protects.
import { CRYPTO_FILE, STATE_FILE } from "./CryptoStoreLive.js"
import { createExclusiveFile, readCappedSync } from "./durableFile.js"

export type PassphraseEnv = Readonly<Record<string, string | undefined>>

const errText = (e: unknown) => (e instanceof Error ? ((e as NodeJS.ErrnoException).code ?? e.message) : String(e))
const codeOf = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code

// ---------------------------------------------------------------------------------------------------------
// Derivation (§3.2)

/** lowercase_hex(HKDF-SHA256(salt = installation id ASCII, ikm = password, info = "carapace-matrix-store-v1", 32)). */
export const deriveStorePassphrase = (password: string, installationId: string): string =>
  Buffer.from(
    crypto.hkdfSync("sha256", Buffer.from(password, "utf8"), Buffer.from(installationId, "ascii"), STORE_KEY_INFO, 32)
  )
    .toString("hex")

/** `CARAPACE_CONFIG_PASSWORD` from process env only; empty means unset. */
export const configPasswordOf = (env: PassphraseEnv): Option.Option<Redacted.Redacted<string>> => {
  const p = env["CARAPACE_CONFIG_PASSWORD"]
  return p === undefined || p === "" ? Option.none() : Option.some(Redacted.make(p))
}

// ---------------------------------------------------------------------------------------------------------
// installation_id (§3.1)

const INSTALLATION_ID_MAX = 4096
const INSTALLATION_ID_RE = /^[0-9a-f]{64}$/

const iidError = (file: string, message: string) =>
  new InstallationIdError({ kind: "installation-id", path: file, message })

/** Reads a small regular file without following a final symlink (unless allowed) and without blocking on a FIFO. */
const readSmallFile = (
  file: string,
  max: number,
  allowSymlink: boolean
): { state: "absent" } | { state: "ok"; text: string } | {
  state: "bad"
  problem: string
} => {
  try {
    const r = readCappedSync(file, max, { followSymlink: allowSymlink })
    if (r.state !== "refused") return r
    if (r.reason === "symlink") {
      return { state: "bad", problem: `${file} is a symbolic link; it must be a regular file` }
    }
    if (r.reason === "not-file") return { state: "bad", problem: `${file} is not a regular file` }
    return r.size !== undefined
      ? { state: "bad", problem: `${file} is ${r.size} bytes; it must be at most ${max} bytes` }
      : { state: "bad", problem: `${file} is larger than ${max} bytes` }
  } catch (e) {
    return { state: "bad", problem: `${file} could not be read (${errText(e)})` }
  }
}

const parseInstallationId = (file: string, text: string): string | InstallationIdError => {
  const id = text.trim()
  if (id === "") {
    return iidError(
      file,
      `failed to read or create Matrix installation id: ${file} is empty. Restore the original file from a backup, or remove it to let cara mint a fresh id (this rotates every derived key: a store derived from it will no longer open).`
    )
  }
  if (!INSTALLATION_ID_RE.test(id)) {
    return iidError(
      file,
      `failed to read or create Matrix installation id: the contents of ${file} are not the expected format (64 lowercase ASCII-hex chars). Restore the original file from a backup, or remove it to let cara mint a fresh id (this rotates every derived key: a store derived from it will no longer open).`
    )
  }
  return id
}

const sizeOf = (file: string) => {
  try {
    return fs.lstatSync(file).size
  } catch {
    return undefined
  }
}

/**
 * The files that exist now and are keyed from `installation_id`: the Matrix stores when their passphrase is
 * derived (no explicit passphrase, no pinned store_passphrase), and a non-empty inbound DLQ (its key always
 * mixes in the id). While any exists, a missing id means lost state, not a first start.
 */
export const installationIdDependents = (root: string, m: Matrix | null | undefined): Array<string> => {
  if (m === undefined || m === null || m.enabled === false || m.encrypted === false) return []
  const out: Array<string> = []
  const derived = m.storePassphrase === undefined && sizeOf(path.join(root, PASSPHRASE_FILE)) === undefined
  if (derived) {
    out.push(...[CRYPTO_FILE, STATE_FILE].map((f) => path.join(root, f)).filter((f) => sizeOf(f) !== undefined))
  }
  const dlq = path.join(root, DLQ_FILE)
  if ((sizeOf(dlq) ?? 0) > 0) out.push(dlq)
  return out
}

/** `installation_id` is gone while `dependents` were keyed from it: refuse rather than mint a new one. */
export const installationIdMissing = (file: string, dependents: ReadonlyArray<string>) =>
  new InstallationIdError({
    kind: "installation-id-missing",
    path: file,
    message: `Matrix installation id ${file} is missing, but ${dependents.join(", ")} ${
      dependents.length > 1 ? "were" : "was"
    } keyed from it; a new id would make ${
      dependents.length > 1 ? "them" : "it"
    } unreadable, so none is minted. Restore installation_id from a backup (64 lowercase hex characters and a newline; it is not a secret). If it is lost for good, the derived-key state cannot be opened again: move the Matrix stores and the DLQ aside and follow the disaster recovery in docs/channels.md.`
  })

/**
 * What is wrong with `{root}/installation_id`, looked at without creating anything: unreadable or malformed
 * (`installation-id`), or absent while state is keyed from it (`installation-id-missing`). Undefined when
 * the daemon can use it (or mint it). Only for an enabled, encrypted Matrix channel (nothing else uses it).
 */
export const installationIdProblem = (root: string, m: Matrix | null | undefined): InstallationIdError | undefined => {
  if (m === undefined || m === null || m.enabled === false || m.encrypted === false) return undefined
  const file = path.join(root, INSTALLATION_ID_FILE)
  const read = readSmallFile(file, INSTALLATION_ID_MAX, false)
  if (read.state === "absent") {
    const keyed = installationIdDependents(root, m)
    return keyed.length > 0 ? installationIdMissing(file, keyed) : undefined
  }
  if (read.state === "bad") {
    return iidError(
      file,
      `failed to read Matrix installation id: ${read.problem}. Restore the original file from a backup.`
    )
  }
  const parsed = parseInstallationId(file, read.text)
  return typeof parsed === "string" ? undefined : parsed
}

/**
 * Reads `{root}/installation_id`, creating it first if absent: temp file + fsync + hard link (which never
 * replaces) + directory fsync, so racing creators (daemon, CLI) converge on the first one linked. When
 * `dependents` (files keyed from the id) names any existing file, an absent id is refused instead.
 */
export const readOrCreateInstallationId = (
  root: string,
  dependents: () => ReadonlyArray<string> = () => []
): Effect.Effect<string, InstallationIdError> =>
  Effect.gen(function*() {
    const file = path.join(root, INSTALLATION_ID_FILE)
    for (let attempt = 0; attempt < 3; attempt++) {
      const read = readSmallFile(file, INSTALLATION_ID_MAX, false)
      if (read.state === "ok") {
        const parsed = parseInstallationId(file, read.text)
        return typeof parsed === "string" ? parsed : yield* parsed
      }
      if (read.state === "bad") {
        return yield* iidError(
          file,
          `failed to read or create Matrix installation id: ${read.problem}. Restore the original file, or remove it to let cara mint a fresh id (this rotates every derived key).`
        )
      }
      const keyed = dependents()
      if (keyed.length > 0) return yield* installationIdMissing(file, keyed)
      // false: another creator linked first; the next pass reads its value.
      // "exists": another creator linked first; the next pass reads its value.
      yield* Effect.tryPromise({
        try: () => createExclusiveFile(file, `${crypto.randomBytes(32).toString("hex")}\n`, 0o600),
        catch: (e) =>
          iidError(
            file,
            `failed to read or create Matrix installation id at ${file} (${
              errText(e)
            }). Check that the state directory is writable by this user.`
          )
      })
    }
    return yield* iidError(
      file,
      `failed to read or create Matrix installation id at ${file}: it kept disappearing while being read. Check what else touches the state directory.`
    )
  })

// ---------------------------------------------------------------------------------------------------------
// Passphrase files (§3.3, §3.4)

export const PASSPHRASE_FILE_MAX = 64 * 1024

const stateIo = (file: string, message: string) =>
  new EncryptedStateIoError({ kind: "encrypted-state-io", path: file, message })

/**
 * The trimmed content of a passphrase file; `None` when absent. `allowSymlink` for the pinned file only
 * (operators may link it from a secrets mount); the pending file is ours and must be a regular file.
 */
export const readPassphraseFile = (
  file: string,
  allowSymlink: boolean
): Effect.Effect<Option.Option<string>, EncryptedStateIoError> =>
  Effect.suspend(() => {
    const read = readSmallFile(file, PASSPHRASE_FILE_MAX, allowSymlink)
    if (read.state === "absent") return Effect.succeed(Option.none())
    if (read.state === "bad") {
      return Effect.fail(
        stateIo(
          file,
          `Matrix encrypted-state file operation failed: ${read.problem}. Fix the file's type and permissions, then retry.`
        )
      )
    }
    const value = read.text.trim()
    if (value === "") {
      return Effect.fail(
        stateIo(
          file,
          `Matrix encrypted-state file operation failed: ${file} is empty. Rerun \`cara matrix rekey-store --new\` if a rekey was in progress, or restore the file from a backup.`
        )
      )
    }
    return Effect.succeed(Option.some(value))
  })

/** lstat-based existence probe; an error other than not-found is an I/O problem, not "absent". */
export const probeExists = (file: string): Effect.Effect<boolean, EncryptedStateIoError> =>
  Effect.try({
    try: () => {
      try {
        fs.lstatSync(file)
        return true
      } catch (e) {
        if (codeOf(e) === "ENOENT") return false
        throw e
      }
    },
    catch: (e) =>
      stateIo(
        file,
        `Matrix encrypted-state file operation failed: checking ${file} failed (${
          errText(e)
        }). Check the state directory's permissions.`
      )
  })

// ---------------------------------------------------------------------------------------------------------
// The maintenance lock

export const LOCK_HOLDER_FILE = `${LOCK_FILE}.holder`

interface HolderRecord {
  readonly pid: number
  readonly holder: LockHolderKind
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot); absent where /proc does not exist. */
  readonly startTime?: string
}

/** The start time of a live process, to tell it from a later process that reuses the pid. */
export const processStartTime = (pid: number): string | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // The command name (field 2) may contain spaces and parentheses: count fields after the last ")".
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return rest[19] // field 22 overall = index 19 after fields 1 and 2
  } catch {
    return undefined
  }
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return codeOf(e) === "EPERM"
  }
}

const liveHolder = (root: string): HolderRecord | undefined => {
  const read = readSmallFile(path.join(root, LOCK_HOLDER_FILE), 4096, false)
  if (read.state !== "ok") return undefined
  try {
    const r = JSON.parse(read.text) as Partial<HolderRecord>
    if (typeof r.pid !== "number" || !Number.isInteger(r.pid) || r.pid <= 0) return undefined
    // every kind the schema knows (doctor included): a hand-kept list here once forgot one
    if (!Schema.is(LockHolderKind)(r.holder)) return undefined
    if (!isAlive(r.pid)) return undefined
    const now = processStartTime(r.pid)
    if (r.startTime !== undefined && now !== undefined && now !== r.startTime) return undefined
    return r as HolderRecord
  } catch {
    return undefined
  }
}

const describeHolder = (h: HolderRecord | undefined): string => {
  if (h === undefined) return "another cara process (its kind could not be determined)"
  switch (h.holder) {
    case "daemon":
      return `the cara daemon (pid ${h.pid})`
    case "rekey-store":
      return `\`cara matrix rekey-store\` (pid ${h.pid}), which is rotating the Matrix store passphrase`
    case "recovery-key":
      return `\`cara matrix recovery-key\` (pid ${h.pid}), which is changing the recovery key`
    case "doctor":
      return `\`cara doctor\` (pid ${h.pid}), which is checking that the stores open`
  }
}

const heldMessage = (file: string, me: LockHolderKind, h: HolderRecord | undefined): string => {
  const who = describeHolder(h)
  const next = h?.holder === "daemon"
    ? "Stop the daemon first"
    : h === undefined
    ? "Stop the other cara process (daemon or maintenance command) first"
    : "Wait for it to finish"
  const what = me === "daemon"
    ? "this daemon would share the Matrix stores with it and mix ciphers"
    : "the stores must not change underneath a running process"
  return `Matrix rekey lock at ${file} is held by ${who}; ${what}. ${next}, then retry.`
}

const isBusy = (e: unknown) => {
  const err = e as { errcode?: number; message?: string } | undefined
  return err?.errcode === 5 || err?.errcode === 6 || /database is locked/i.test(err?.message ?? "")
}

/** Takes the maintenance lock in the current scope (see the top of this file for the mechanism). */
export const acquireRekeyLock = (
  stateDir: StateDirShape,
  holder: LockHolderKind
): Effect.Effect<RekeyLock, RekeyLockHeldError | EncryptedStateIoError, Scope.Scope> => {
  const file = stateDir.resolve(LOCK_FILE)
  const take = Effect.suspend((): Effect.Effect<DatabaseSync, RekeyLockHeldError | EncryptedStateIoError> => {
    // Create it 0600 only when absent: opening and closing an fd of a file this process holds a record
    // lock on would drop that lock (POSIX), so an existing lock file is touched only through SQLite.
    try {
      fs.lstatSync(file)
    } catch (e) {
      if (codeOf(e) !== "ENOENT") {
        return Effect.fail(
          stateIo(
            file,
            `Checking the Matrix rekey lock ${file} failed (${errText(e)}). Check the state directory's permissions.`
          )
        )
      }
      try {
        fs.closeSync(
          fs.openSync(
            file,
            fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
            0o600
          )
        )
      } catch (e2) {
        if (codeOf(e2) !== "EEXIST") {
          return Effect.fail(
            stateIo(
              file,
              `Creating the Matrix rekey lock ${file} failed (${errText(e2)}). Check the state directory's permissions.`
            )
          )
        }
      }
    }
    const st = fs.lstatSync(file)
    if (st.isSymbolicLink() || !st.isFile()) {
      return Effect.fail(
        stateIo(file, `The Matrix rekey lock ${file} is not a regular file. Move it aside, then retry.`)
      )
    }
    let db: DatabaseSync | undefined
    try {
      db = new DatabaseSync(file, { timeout: 0 })
      db.exec("BEGIN EXCLUSIVE")
      return Effect.succeed(db)
    } catch (e) {
      try {
        db?.close()
      } catch {
        // reporting the first failure
      }
      if (isBusy(e)) {
        return Effect.fail(
          new RekeyLockHeldError(((h) => ({
            kind: "rekey-lock-held" as const,
            path: file,
            holder: h?.holder ?? ("unknown" as const),
            ...(h !== undefined ? { holderPid: h.pid } : {}),
            message: heldMessage(file, holder, h)
          }))(liveHolder(stateDir.root)))
        )
      }
      return Effect.fail(
        stateIo(
          file,
          `Taking the Matrix rekey lock ${file} failed (${errText(e)}). Check the file and the state directory.`
        )
      )
    }
  })

  return Effect.gen(function*() {
    yield* Effect.acquireRelease(take, (db) =>
      Effect.sync(() => {
        // The sidecar goes first: once the lock is free, the next holder's sidecar must not be deleted.
        const h = readSmallFile(stateDir.resolve(LOCK_HOLDER_FILE), 4096, false)
        if (h.state === "ok" && (JSON.parse(h.text) as { pid?: unknown }).pid === process.pid) {
          fs.rmSync(stateDir.resolve(LOCK_HOLDER_FILE), { force: true })
        }
      }).pipe(
        Effect.catchAllDefect(() => Effect.void),
        Effect.ensuring(Effect.sync(() => {
          try {
            db.close()
          } catch {
            // closing drops the lock in any case; nothing else to do
          }
        }))
      ))
    const startTime = processStartTime(process.pid)
    const record: HolderRecord = { pid: process.pid, holder, ...(startTime !== undefined ? { startTime } : {}) }
    yield* stateDir.writeAtomic(LOCK_HOLDER_FILE, `${JSON.stringify(record)}\n`).pipe(
      Effect.mapError((e) => stateIo(e.path, `Recording the Matrix rekey lock holder failed: ${e.message}`))
    )
    return { path: file, holder } satisfies RekeyLock
  })
}

// ---------------------------------------------------------------------------------------------------------
// Resolution (§3.3)

export interface StorePassphraseOptions {
  /** Where `CARAPACE_CONFIG_PASSWORD` is read; a snapshot of `process.env` by default. */
  readonly env?: PassphraseEnv
}

export const makeStorePassphrase = (options: StorePassphraseOptions = {}) =>
  Effect.gen(function*() {
    const stateDir = yield* StateDir
    const configSecrets = yield* ConfigSecrets
    const env: PassphraseEnv = options.env ?? { ...process.env }
    const final = stateDir.resolve(PASSPHRASE_FILE)
    const pending = stateDir.resolve(PENDING_FILE)
    const marker = stateDir.resolve(MARKER_FILE)

    const installationId = readOrCreateInstallationId(stateDir.root, () =>
      installationIdDependents(stateDir.root, configSecrets.config.matrix))

    const resolveDetailed = Effect.gen(function*() {
      const m = configSecrets.config.matrix
      if (m === undefined || m === null || m.enabled === false || m.encrypted === false) {
        return Option.none<ResolvedPassphrase>()
      }

      // Explicit passphrase: used verbatim; the pinned file and rekey files are not ours to judge.
      if (m.storePassphrase !== undefined) {
        const explicit = yield* configSecrets.secretOption(m.storePassphrase).pipe(
          Effect.mapError((e) =>
            new MissingStoreSecretError({
              kind: "missing-store-secret",
              message: `the configured Matrix store passphrase cannot be read: ${e.message}`
            })
          )
        )
        const value = Option.map(explicit, (v) =>
          Redacted.value(v).trim()).pipe(Option.filter((v) => v !== ""))
        if (Option.isSome(value)) {
          return Option.some<ResolvedPassphrase>({ passphrase: Redacted.make(value.value), source: "explicit" })
        }
        return yield* new MissingStoreSecretError({
          kind: "missing-store-secret",
          message: `${
            m.storePassphrase.source === "env" ? "MATRIX_STORE_PASSPHRASE" : "matrix.storePassphrase"
          } is empty; set it to the store passphrase, or remove it to use CARAPACE_CONFIG_PASSWORD.`
        })
      }

      // Any in-flight rekey file means some store may already use another key: refuse rather than guess.
      // (Stricter than the reference, which ignores leftovers once store_passphrase exists: here a rerun
      // rotates again, so a pending file next to a pinned one is a real rotation in flight.)
      const hasPending = yield* probeExists(pending)
      const hasMarker = yield* probeExists(marker)
      if (hasPending || hasMarker) return yield* interruptedRekey({ pending, marker, final })

      const pinned = yield* readPassphraseFile(final, true)
      if (Option.isSome(pinned)) {
        return Option.some<ResolvedPassphrase>({ passphrase: Redacted.make(pinned.value), source: "pinned-file" })
      }

      const password = configPasswordOf(env)
      if (Option.isNone(password)) return yield* missingStoreSecret()
      const iid = yield* installationId
      const derived = yield* Effect.try({
        try: () => deriveStorePassphrase(Redacted.value(password.value), iid),
        catch: () =>
          new StoreKeyDerivationError({
            kind: "store-key-derivation",
            message: "matrix store key derivation failed; check CARAPACE_CONFIG_PASSWORD and the installation_id file."
          })
      })
      return Option.some<ResolvedPassphrase>({ passphrase: Redacted.make(derived), source: "derived" })
    })

    // The pinned file and the derived key are secrets no config field holds: known to the redactor from here.
    const resolvedRegistered = Effect.tap(resolveDetailed, (r) =>
      Effect.sync(() =>
        Option.map(r, (p) => registerSecret(p.passphrase))
      ))
    return {
      resolve: Effect.map(resolvedRegistered, Option.map((r) => r.passphrase)),
      resolveDetailed: resolvedRegistered,
      installationId,
      acquireLock: (holder: LockHolderKind) => acquireRekeyLock(stateDir, holder)
    } satisfies StorePassphraseShape
  })

/** StorePassphrase over the StateDir and ConfigSecrets, reading `CARAPACE_CONFIG_PASSWORD` from `process.env`. */
export const StorePassphraseLive = Layer.effect(StorePassphrase, makeStorePassphrase())

/** The same with an explicit environment (tests, tools). */
export const StorePassphraseWith = (options: StorePassphraseOptions) =>
  Layer.effect(StorePassphrase, makeStorePassphrase(options))

/** Holds the maintenance lock as `holder` for the life of the layer (the daemon's whole life). */
export const RekeyLockHeld = (holder: LockHolderKind) =>
  Layer.scopedDiscard(Effect.flatMap(StorePassphrase, (sp) => sp.acquireLock(holder)))

/** The daemon's hold on the maintenance lock, for its whole life (acquired before any store is opened). */
export const DaemonRekeyLockLive = RekeyLockHeld("daemon").pipe(Layer.provide(StorePassphraseLive))
