// The recovery-key executors and the daemon's start-up sequence (reference §5.2-§5.6).
//
// The executors below run the pure machines of src/domain/recoveryMachine.ts: observe, decide one step,
// perform it, observe again. Every file mutation goes through `RecoveryFiles`, so tests can stop a run
// after any durable step and check what a rerun (or the next daemon start) makes of it.
import { Duration, Effect, Layer, Option, Redacted, Schedule } from "effect"
import { type MatrixClient, Method } from "matrix-js-sdk"
import type { CryptoCallbacks } from "matrix-js-sdk/lib/crypto-api/index.js"
import { decodeRecoveryKey, encodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/recovery-key.js"
import { calculateKeyCheck, type SecretStorageKeyDescription } from "matrix-js-sdk/lib/secret-storage.js"
import * as path from "node:path"
import { TOKEN_REVOCATION_CODES, TOKEN_REVOKED_HINT } from "../domain/matrix.js"
import {
  CLEANUP_ARTIFACTS,
  CLEANUP_FILE,
  type CleanupJournal,
  digestsEqual,
  encodeCleanupJournal,
  encodeRotationMarker,
  freshCleanupJournal,
  KEY_FILE,
  keyDigest,
  MAX_JOURNAL_BYTES,
  MAX_KEY_BYTES,
  MINTING_CONTENT,
  MINTING_FILE,
  parseCleanupJournal,
  parseRotationMarker,
  PENDING_FILE,
  promotionRefused,
  recoveryError,
  RecoveryKeyError,
  type RestoreFailureReason,
  ROTATING_FILE,
  type RotationMarker,
  stateIo,
  stateProbe
} from "../domain/recoveryKey.js"
import {
  type FileDigest,
  type MintObserved,
  nextCleanupStep,
  nextCrossSigningStep,
  nextMintStep,
  nextRepairStep,
  type RepairObserved,
  type RepairStep,
  ROTATE_STEPS,
  rotatePrecondition,
  type RotateStep,
  type ServerKey,
  type ServerSecretStorage
} from "../domain/recoveryMachine.js"
import { ChannelStatus, type ChannelStatusShape } from "../services/ChannelStatus.js"
import { ConfigSecrets, type ConfigSecretsShape } from "../services/ConfigSecrets.js"
import { RecoveryKey, type RecoveryKeyShape } from "../services/RecoveryKey.js"
import { type CappedResult, StateDir, type StateDirShape } from "../services/StateDir.js"
// Layer imports by design: its file audit goes through the Audit layer's helper.
import { progressLine } from "../domain/progress.js"
import { makeAudit } from "./AuditLive.js"

// ---------------------------------------------------------------------------------------------------------
// Files

/** A capped read: `None` when absent; refuses non-regular files and anything over `cap` bytes. */
export type CappedRead = Option.Option<string>

/** Every file mutation of the recovery-key machines (tests wrap it to crash after any step). */
export interface RecoveryFiles {
  readonly root: string
  readonly read: (rel: string, cap: number) => Effect.Effect<CappedRead, RecoveryKeyError>
  readonly exists: (rel: string) => Effect.Effect<boolean, RecoveryKeyError>
  /** Replaces the file atomically (temp + fsync + rename + dir fsync), 0600. */
  readonly write: (rel: string, content: string) => Effect.Effect<void, RecoveryKeyError>
  /** Creates the file only if absent (temp + fsync + hard link + dir fsync), 0600; EEXIST fails. */
  readonly create: (rel: string, content: string) => Effect.Effect<void, RecoveryKeyError>
  /** Replaces `to` with `from` after re-hashing `from` against `expectedDigest` (swap detection). */
  readonly promote: (from: string, to: string, expectedDigest: string) => Effect.Effect<void, RecoveryKeyError>
  /** Unlinks (missing is fine: returns false) and fsyncs the directory. */
  readonly remove: (rel: string) => Effect.Effect<boolean, RecoveryKeyError>
}

const label = (rel: string) => path.basename(rel)

const refusalText = (r: CappedResult, cap: number) =>
  r.state !== "refused"
    ? ""
    : r.reason === "too-large"
    ? `exceeds ${cap} bytes; refuse to read`
    : r.reason === "symlink"
    ? "is a symbolic link"
    : "not a regular file"

/** The recovery files over StateDir's durable operations (symlinks to regular files are followed on read). */
export const nodeRecoveryFiles = (stateDir: StateDirShape): RecoveryFiles => {
  const io = (rel: string, what: string) => (e: { readonly message: string }) =>
    stateIo(`failed to ${what} ${label(rel)}: ${e.message}`)
  const refused = (rel: string, what: string, detail: string) => stateIo(`failed to ${what} ${label(rel)}: ${detail}`)
  const readCapped = (rel: string, cap: number, what: string, followSymlink: boolean) =>
    stateDir.readCapped(rel, cap, { followSymlink }).pipe(
      Effect.mapError(io(rel, what)),
      Effect.flatMap((r) =>
        r.state === "ok"
          ? Effect.succeed(Option.some(r.text))
          : r.state === "absent"
          ? Effect.succeed(Option.none<string>())
          : Effect.fail(refused(rel, what, refusalText(r, cap)))
      )
    )
  return {
    root: stateDir.root,
    read: (rel, cap) => readCapped(rel, cap, "read", true),
    exists: (rel) => stateDir.exists(rel).pipe(Effect.mapError(io(rel, "inspect"))),
    write: (rel, content) => stateDir.writeAtomic(rel, content).pipe(Effect.mapError(io(rel, "write"))),
    create: (rel, content) =>
      stateDir.createExclusive(rel, content).pipe(
        Effect.mapError(io(rel, "create")),
        Effect.flatMap((r) => r === "created" ? Effect.void : Effect.fail(refused(rel, "create", "EEXIST")))
      ),
    promote: (from, to, expectedDigest) =>
      Effect.gen(function*() {
        // not followed: the pending key must be the file we wrote, not a link planted beside it.
        const text = yield* readCapped(from, MAX_KEY_BYTES, "reopen", false)
        if (Option.isNone(text)) return yield* refused(from, "reopen", "ENOENT")
        if (!digestsEqual(keyDigest(text.value), expectedDigest)) {
          return yield* stateIo(
            `the pending key changed since its digest was recorded; refusing to promote ${
              label(from)
            }. Inspect it before retrying.`
          )
        }
        yield* stateDir.rename(from, to, { mode: 0o600 }).pipe(Effect.mapError(io(to, "replace")))
      }),
    remove: (rel) => stateDir.remove(rel).pipe(Effect.mapError(io(rel, "remove")))
  }
}

// ---------------------------------------------------------------------------------------------------------
// Audit (durable, one JSON line; never key material, digests or paths of key files)

export type Audit = (event: string, data: Record<string, unknown>) => Effect.Effect<void>

/** The recovery machines' audit: a failed audit write is logged, never fatal to a key step already taken. */
export const fileAudit = (stateDir: StateDirShape): Audit => {
  const log = makeAudit(stateDir)
  return (event, data) =>
    log.append(event, data).pipe(
      Effect.catchAll((e) => Effect.logWarning(`writing the audit log failed: ${e.message}`))
    )
}

// ---------------------------------------------------------------------------------------------------------
// Startup repair (§5.4 journal check + §5.6)

const readDigest = (files: RecoveryFiles, rel: string) =>
  Effect.gen(function*() {
    if (!(yield* files.exists(rel))) return { _tag: "Absent" } as FileDigest
    const text = yield* files.read(rel, MAX_KEY_BYTES)
    return Option.match(text, {
      onNone: () => ({ _tag: "Vanished" }) as FileDigest,
      onSome: (t) => ({ _tag: "Present", digest: keyDigest(t) }) as FileDigest
    })
  })

export const observeRepair = (files: RecoveryFiles, server: ServerKey = "Unknown") =>
  Effect.gen(function*() {
    const journalText: Option.Option<RepairObserved["journal"]> = yield* files.read(CLEANUP_FILE, MAX_JOURNAL_BYTES)
      .pipe(
        Effect.map(Option.map((t): RepairObserved["journal"] => parseCleanupJournal(t))),
        Effect.catchAll((e) =>
          Effect.succeed(Option.some<RepairObserved["journal"]>({ _tag: "Unreadable", detail: e.message }))
        )
      )
    const markerText = yield* files.read(ROTATING_FILE, MAX_KEY_BYTES)
    const observed: RepairObserved = {
      journal: Option.getOrElse(journalText, () => ({ _tag: "Absent" as const })),
      marker: Option.match(markerText, { onNone: () => ({ _tag: "Absent" as const }), onSome: parseRotationMarker }),
      current: yield* readDigest(files, KEY_FILE),
      pending: yield* readDigest(files, PENDING_FILE),
      server
    }
    return observed
  })

const repairFailure = (files: RecoveryFiles, step: Extract<RepairStep, { _tag: "StateIo" }>) => {
  const J = path.join(files.root, CLEANUP_FILE)
  const R = path.join(files.root, ROTATING_FILE)
  switch (step.why) {
    case "journal_unreadable":
      return stateIo(
        `the recovery-key cleanup journal at ${J} cannot be read (${
          step.detail ?? "unknown"
        }). Refusing startup repair until recovery_key.cleanup and recovery-key artifacts are inspected.`
      )
    case "journal_corrupt":
      return stateIo(
        `recovery-key cleanup journal at ${J} is corrupt: ${
          step.detail ?? "unparseable"
        }. Refusing startup repair until recovery_key.cleanup and recovery-key artifacts are inspected.`
      )
    case "journal_unsupported_version":
      return stateIo(
        `recovery-key cleanup journal at ${J} has a version this release does not know (written by a newer cara?). Refusing startup repair; finish the restore with the newer release or inspect the journal and artifacts.`
      )
    case "journal_started":
      return stateIo(
        `recovery-key cleanup journal at ${J} is still started. Refusing startup repair so pending recovery key material is not trusted without cleanup provenance. Rerun \`cara matrix recovery-key restore\` with the daemon stopped to finish the cleanup.`
      )
    case "marker_invalid":
      return stateIo(
        `the recovery-key rotation marker at ${R} is unreadable (${
          step.detail ?? "invalid"
        }). Refusing startup repair; verify the current key in Element, then remove the marker before retrying rotation.`
      )
    case "replacement_without_digest":
      return stateIo(
        `the rotation marker at ${R} recorded key replacement without a key digest. Verify the current key in Element, restore it locally if needed, then remove the marker before retrying rotation.`
      )
    case "outcome_unknown":
      return stateIo(
        `a rotation marker exists at ${R} but no pending key was preserved. Rotation outcome is unknown; verify the current key in Element, restore it locally if needed, then remove the marker before retrying rotation.`
      )
  }
}

const keyText = (files: RecoveryFiles, rel: string) =>
  files.read(rel, MAX_KEY_BYTES).pipe(Effect.map(Option.map((t) => t.trim())))

/**
 * Runs the repair to `Done` or a refusal. The caller holds the lock (CLI) or is the daemon. Without a
 * `server` (the daemon before any network I/O) a state that needs the homeserver's answer is left as it is
 * and the run ends with `AskServer` last in the returned steps; the caller repeats the repair with a server.
 */
export const runRepair = (files: RecoveryFiles, audit: Audit, server?: RecoveryServer) =>
  Effect.gen(function*() {
    const taken: Array<RepairStep["_tag"]> = []
    let answer: ServerKey = "Unknown"
    for (let i = 0; i < 16; i++) {
      const observed = yield* observeRepair(files, answer)
      const step = nextRepairStep(observed)
      taken.push(step._tag)
      // an answer is about the files as they were: every mutation below asks again
      answer = "Unknown"
      switch (step._tag) {
        case "Done":
          return taken
        case "AskServer":
          if (server === undefined) return taken
          answer = yield* server.which(yield* keyText(files, KEY_FILE), yield* keyText(files, PENDING_FILE))
          break
        case "RemoveCompletedJournal":
          yield* files.remove(CLEANUP_FILE)
          break
        case "RemovePending":
          yield* files.remove(PENDING_FILE)
          yield* audit("matrix_recovery_key_rotate_recovered", { outcome: step.audit })
          break
        case "RemoveMarker":
          yield* files.remove(ROTATING_FILE)
          yield* audit("matrix_recovery_key_rotate_recovered", { outcome: step.audit })
          break
        case "PromotePending":
          yield* files.promote(PENDING_FILE, KEY_FILE, step.expectedDigest)
          yield* audit("matrix_recovery_key_rotate_recovered", { outcome: "promoted_pending" })
          break
        case "Refuse":
          yield* audit("matrix_recovery_key_pending_promotion_refused", {
            marker_stage: step.stage,
            reason: step.reason,
            artifacts: ["rotation_marker", "current_key", "pending_key"],
            current_key: step.currentKey,
            pending_key: step.pendingKey
          })
          return yield* promotionRefused(step.reason, {
            marker: path.join(files.root, ROTATING_FILE),
            pending: path.join(files.root, PENDING_FILE),
            key: path.join(files.root, KEY_FILE)
          })
        case "StateIo":
          if (step.why === "marker_invalid") {
            yield* audit("matrix_recovery_key_rotation_marker_invalid", { reason: step.detail })
          }
          if (step.why === "journal_started" || step.why === "journal_unsupported_version") {
            const j = observed.journal
            yield* audit("matrix_recovery_key_startup_cleanup_refused", {
              artifact_count: j._tag === "Parsed"
                ? j.journal.artifacts.length
                : j._tag === "UnsupportedVersion"
                ? j.artifactCount
                : 0
            })
          }
          return yield* repairFailure(files, step)
      }
    }
    return yield* Effect.die(new Error("recovery-key repair did not settle"))
  })

// ---------------------------------------------------------------------------------------------------------
// First mint (§5.3)

/** The homeserver side of a mint or rotation. */
export interface RecoveryServer {
  /** What secret storage holds, checked against `pendingKey` when given. */
  readonly probe: (
    pendingKey: Option.Option<string>
  ) => Effect.Effect<Exclude<ServerSecretStorage, "Unknown">, RecoveryKeyError>
  /** Installs the key: new default secret-storage key holding the cross-signing secrets, new key backup. */
  readonly install: (key: string) => Effect.Effect<void, RecoveryKeyError>
  /** A fresh recovery key (random 32 bytes, encoded). */
  readonly generate: Effect.Effect<string>
  /** Which of the two keys the default secret-storage key description accepts (MAC check). */
  readonly which: (
    current: Option.Option<string>,
    pending: Option.Option<string>
  ) => Effect.Effect<Exclude<ServerKey, "Unknown">, RecoveryKeyError>
}

export interface MintResult {
  readonly minted: boolean
  readonly warnings: ReadonlyArray<string>
}

export const observeMint = (files: RecoveryFiles, server: ServerSecretStorage) =>
  Effect.gen(function*() {
    const key = yield* files.read(KEY_FILE, MAX_KEY_BYTES)
    const observed: MintObserved = {
      key: Option.match(key, {
        onNone: () => "Absent" as const,
        onSome: (t) => (t.trim() === "" ? "Empty" as const : "Present" as const)
      }),
      pending: yield* files.exists(PENDING_FILE),
      minting: yield* files.exists(MINTING_FILE),
      server
    }
    return observed
  })

export const runMint = (files: RecoveryFiles, server: RecoveryServer, audit: Audit, now: () => number = Date.now) =>
  Effect.gen(function*() {
    const K = path.join(files.root, KEY_FILE)
    let probed: ServerSecretStorage = "Unknown"
    let minted = false
    const warnings: Array<string> = []
    for (let i = 0; i < 16; i++) {
      const step = nextMintStep(yield* observeMint(files, probed))
      switch (step._tag) {
        case "Done":
          if (step.warnEmptyKeyWithMarker) {
            warnings.push("recovery_key is empty while recovery_key.minting exists; left both in place")
          }
          return { minted, warnings } satisfies MintResult
        case "ProbeServer": {
          const pending = (yield* files.exists(PENDING_FILE))
            ? yield* files.read(PENDING_FILE, MAX_KEY_BYTES)
            : Option.none()
          probed = yield* server.probe(Option.map(pending, (t) => t.trim()))
          break
        }
        case "WriteMintingMarker":
          yield* files.write(MINTING_FILE, MINTING_CONTENT)
          break
        case "WritePending":
          yield* files.create(PENDING_FILE, `${yield* server.generate}\n`)
          break
        case "InstallPending": {
          const pending = yield* files.read(PENDING_FILE, MAX_KEY_BYTES)
          if (Option.isNone(pending)) break
          yield* server.install(pending.value.trim())
          probed = "Unknown"
          break
        }
        case "PromotePending": {
          // one rename, so no crash leaves both N and K (K was observed absent; the lock keeps restore out)
          const pending = yield* files.read(PENDING_FILE, MAX_KEY_BYTES)
          if (Option.isNone(pending)) break
          yield* files.promote(PENDING_FILE, KEY_FILE, keyDigest(pending.value))
          minted = true
          break
        }
        case "RemoveMintingMarker":
          yield* files.remove(MINTING_FILE)
          break
        case "Refuse":
          if (step.why === "pending_without_marker") {
            return yield* stateIo(
              `a pending recovery key exists without a mint or rotation marker and no recovery key at ${K}. Verify which key opens secret storage in Element, then restore it with \`cara matrix recovery-key restore\`.`
            )
          }
          return yield* stateProbe(
            step.why === "server_has_recovery"
              ? `Matrix recovery is already enabled on the homeserver but no local key file at ${K} — refuse to mint a new recovery secret (which would invalidate the existing backup). Retrieve the existing key via Element and run \`cara matrix recovery-key restore --key-file <file>\` or pipe it to \`cara matrix recovery-key restore --stdin\`.`
              : `a recovery-key mint marker exists, no key was preserved, and the homeserver already has recovery. Refuse to reset it because it may be a valid existing backup; remove the stale marker only after verifying the recovery key in Element or restoring it with \`cara matrix recovery-key restore\`.`
          )
      }
    }
    return yield* Effect.die(new Error("recovery-key mint did not settle"))
  }).pipe(
    Effect.tap((
      r
    ) => (r.minted ? audit("matrix_recovery_key_first_mint", { outcome: "minted", minted_at: now() }) : Effect.void))
  )

// ---------------------------------------------------------------------------------------------------------
// Rotation (§5.5). The caller holds the lock, ran the repair, and checked the preconditions.

/**
 * TEST ONLY. `CARA_TEST_FAULT=rotate-after:<RotateStep>` kills the process (SIGKILL, no cleanup) right after
 * that rotation step is durable, so the real-Synapse test can prove that a rerun of `rotate` resolves it.
 * Read here and nowhere else; never set it in production.
 */
export const rotateTestFault = (step: RotateStep) =>
  Effect.sync(() => {
    if (process.env["CARA_TEST_FAULT"] === `rotate-after:${step}`) process.kill(process.pid, "SIGKILL")
  })

export const runRotate = (
  files: RecoveryFiles,
  server: RecoveryServer,
  now: () => number = Date.now,
  afterStep: (step: RotateStep) => Effect.Effect<void> = () => Effect.void
) =>
  Effect.gen(function*() {
    const current = yield* files.read(KEY_FILE, MAX_KEY_BYTES)
    if (Option.isNone(current)) {
      return yield* stateIo(
        "no current recovery key; restore the current key first with `cara matrix recovery-key restore`"
      )
    }
    const prev = keyDigest(current.value)
    let next: string | undefined
    const marker = (stage: RotationMarker["stage"]) =>
      files.write(
        ROTATING_FILE,
        encodeRotationMarker({
          stage,
          previousKeySha256: prev,
          ...(next === undefined ? {} : { keySha256: next }),
          updatedAtMs: now()
        })
      )
    let newKey = ""
    for (const step of ROTATE_STEPS) {
      switch (step) {
        case "WriteStartedMarker":
          yield* marker("started")
          break
        case "WritePending":
          newKey = yield* server.generate
          yield* files.create(PENDING_FILE, `${newKey}\n`)
          break
        case "InstallPending":
          yield* server.install(newKey)
          break
        case "WriteInstallingMarker":
          next = keyDigest(newKey)
          yield* marker("installing")
          break
        case "WritePendingWrittenMarker":
          yield* marker("pending_key_written")
          break
        case "ReplaceKey":
          yield* files.promote(PENDING_FILE, KEY_FILE, keyDigest(newKey))
          break
        case "WriteFinalMarker":
          yield* marker("final_key_replaced")
          break
        case "RemoveMarker":
          yield* files.remove(ROTATING_FILE)
          break
      }
      yield* afterStep(step)
    }
  })

/**
 * `cara matrix recovery-key rotate` after the lock is held: the repair (asking the homeserver where the files
 * cannot tell), then either the interrupted rotation is reported complete (the homeserver already held the
 * new key: never rotate twice), or the preconditions, `verifyCurrent` (the current key must open secret
 * storage) and a fresh rotation. A crash after any durable step of either is resolved by running this again.
 */
export const runRotateCommand = <E, R>(
  files: RecoveryFiles,
  audit: Audit,
  server: RecoveryServer,
  verifyCurrent: Effect.Effect<unknown, E, R>,
  now: () => number = Date.now,
  afterStep?: (step: RotateStep) => Effect.Effect<void>
) =>
  Effect.gen(function*() {
    const taken = yield* runRepair(files, audit, server)
    if (taken.includes("PromotePending")) {
      yield* verifyCurrent
      return { resumed: true }
    }
    const pre = rotatePrecondition({
      keyPresent: yield* files.exists(KEY_FILE),
      pendingPresent: yield* files.exists(PENDING_FILE)
    })
    if (pre._tag === "KeyMissing") {
      return yield* stateIo(
        `no recovery key at ${
          path.join(files.root, KEY_FILE)
        }; restore the current key first with \`cara matrix recovery-key restore\`.`
      )
    }
    if (pre._tag === "PendingPresent") {
      return yield* stateIo(
        `a pending file already exists at ${
          path.join(files.root, PENDING_FILE)
        }; restart the daemon to promote it or move it aside after verifying the key in Element before rotating again.`
      )
    }
    yield* verifyCurrent
    yield* runRotate(files, server, now, afterStep)
    return { resumed: false }
  })

// ---------------------------------------------------------------------------------------------------------
// Restore with cleanup journal (§5.4). The caller holds the lock.

export interface RestoreOutcome {
  /** K existed with a journal: only the cleanup was resumed. */
  readonly resumed: boolean
  readonly failedRoles: ReadonlyArray<string>
}

const readJournal = (files: RecoveryFiles) =>
  Effect.gen(function*() {
    const text = yield* files.read(CLEANUP_FILE, MAX_JOURNAL_BYTES)
    if (Option.isNone(text)) return undefined
    const parsed = parseCleanupJournal(text.value)
    if (parsed._tag !== "Parsed") {
      return yield* stateIo(
        `recovery-key cleanup journal at ${path.join(files.root, CLEANUP_FILE)} is ${
          parsed._tag === "Corrupt" ? "corrupt" : "of an unknown version"
        }; inspect it and the recovery-key artifacts before retrying.`
      )
    }
    return parsed.journal
  })

/** Writes K (when `key` is given) and removes stale rotation/mint artifacts, journaled. */
export const runRestoreCleanup = (files: RecoveryFiles, key: Option.Option<string>, audit: Audit) =>
  Effect.gen(function*() {
    const attempted: Array<number> = []
    let resumed = false
    for (let i = 0; i < 32; i++) {
      const journal: CleanupJournal | undefined = yield* readJournal(files)
      const keyPresent = yield* files.exists(KEY_FILE)
      if (i === 0 && keyPresent && journal !== undefined) {
        resumed = true
        yield* audit("matrix_recovery_key_restore_cleanup_resumed", {})
      }
      const step = nextCleanupStep({ keyPresent, journal, haveKey: Option.isSome(key) && !resumed, attempted })
      switch (step._tag) {
        case "Done":
          return { resumed, failedRoles: [] } satisfies RestoreOutcome
        case "AnchorJournal":
          yield* files.write(CLEANUP_FILE, encodeCleanupJournal(freshCleanupJournal()))
          yield* audit("matrix_recovery_key_restore_cleanup_anchored", {})
          break
        case "WriteKey":
          if (Option.isNone(key)) return { resumed, failedRoles: [] }
          yield* files.create(KEY_FILE, `${key.value}\n`)
          break
        case "RemoveArtifact": {
          if (journal === undefined) break
          attempted.push(step.index)
          const artifact = journal.artifacts[step.index]!
          const rel = CLEANUP_ARTIFACTS.find((a) => a.role === artifact.role)?.path ?? artifact.path
          const result = yield* files.remove(rel).pipe(
            Effect.map((removed) => ({ state: removed ? "removed" as const : "not_found" as const })),
            Effect.catchAll(() => Effect.succeed({ state: "failed" as const, errorKind: "remove_failed" as const }))
          )
          yield* files.write(
            CLEANUP_FILE,
            encodeCleanupJournal({
              ...journal,
              artifacts: journal.artifacts.map((a, j) => (j === step.index ? { ...a, result } : a))
            })
          )
          break
        }
        case "MarkCompleted":
          if (journal === undefined) break
          yield* files.write(CLEANUP_FILE, encodeCleanupJournal({ ...journal, phase: "completed" }))
          break
        case "RemoveJournal":
          yield* files.remove(CLEANUP_FILE)
          break
        case "Failed": {
          const j = journal!
          yield* audit("matrix_recovery_key_restore_cleanup_failed", {
            artifacts: j.artifacts.map((a) => ({
              role: a.role,
              ...(a.result.state === "failed" ? { errorKind: a.result.errorKind } : { state: a.result.state })
            }))
          })
          return { resumed, failedRoles: step.failedRoles } satisfies RestoreOutcome
        }
      }
    }
    return yield* Effect.die(new Error("recovery-key restore cleanup did not settle"))
  })

// ---------------------------------------------------------------------------------------------------------
// The SDK side

/** The keys this process holds, and the secret-storage callback that offers the one that fits. */
export const makeKeyring = () => {
  const keys = new Set<string>()
  const matches = async (encoded: string, info: SecretStorageKeyDescription) => {
    try {
      const raw = decodeRecoveryKey(encoded)
      if (info.mac === undefined) return false
      const { mac } = await calculateKeyCheck(raw, info.iv)
      const trim = (s: string) => s.replace(/=+$/, "")
      return trim(mac) === trim(info.mac)
    } catch {
      return false
    }
  }
  const callbacks: CryptoCallbacks = {
    getSecretStorageKey: async ({ keys: wanted }) => {
      for (const encoded of keys) {
        for (const [keyId, info] of Object.entries(wanted)) {
          if (await matches(encoded, info)) return [keyId, decodeRecoveryKey(encoded)]
        }
      }
      return null
    }
  }
  return { add: (k: string) => keys.add(k.trim()), matches, callbacks }
}
export type Keyring = ReturnType<typeof makeKeyring>

const sdkText = (e: unknown) => {
  const err = e as { errcode?: unknown; httpStatus?: unknown; name?: unknown; message?: unknown }
  if (typeof err?.errcode === "string") {
    return `${err.errcode}${typeof err.httpStatus === "number" ? ` (HTTP ${err.httpStatus})` : ""}`
  }
  const msg = typeof err?.message === "string" ? err.message : String(e)
  return msg.replace(/https?:\/\/\S+/g, "[URL]").slice(0, 200)
}

/** The §5.8 reason of a failed restore; the SDK's text never reaches the operator. */
export const restoreReasonOf = (e: unknown): RestoreFailureReason => {
  const err = e as { errcode?: unknown; httpStatus?: unknown; name?: unknown; message?: unknown }
  const msg = String(err?.message ?? e).toLowerCase()
  if (err?.httpStatus === 401) return "auth-state"
  if (err?.name === "ConnectionError" || err?.name === "TimeoutError" || msg.includes("fetch failed")) {
    return "transport-error"
  }
  // before the wrong-key test: the store's "failed to be decrypted while unpickling" is not about the recovery key
  if (msg.includes("unpickl")) return "unpickling-failed"
  if (
    msg.includes("getsecretstoragekey") || msg.includes("mac") || msg.includes("decrypt") ||
    msg.includes("does not match")
  ) return "wrong-key"
  if (msg.includes("json") || msg.includes("serde")) return "account-data-invalid"
  if (msg.includes("store")) return "local-store"
  return "sdk-internal"
}

/** The homeserver side over a running, synced client. */
export const sdkServer = (client: MatrixClient, keyring: Keyring): RecoveryServer => {
  const probe = (pendingKey: Option.Option<string>) =>
    Effect.tryPromise({
      try: async (): Promise<Exclude<ServerSecretStorage, "Unknown">> => {
        const id = await client.secretStorage.getDefaultKeyId()
        if (id === null) return "None"
        const found = await client.secretStorage.getKey(id)
        if (found === null) return "None"
        return Option.isSome(pendingKey) && (await keyring.matches(pendingKey.value, found[1]))
          ? "MatchesPending"
          : "Other"
      },
      catch: (e) =>
        stateProbe(
          `reading secret storage from the homeserver failed: ${
            sdkText(e)
          }. Check that the homeserver is reachable and restart.`
        )
    })
  const install = (key: string) =>
    Effect.tryPromise({
      try: async () => {
        const crypto = client.getCrypto()
        if (crypto === undefined) throw new Error("the client has no crypto")
        keyring.add(key)
        await crypto.bootstrapSecretStorage({
          createSecretStorageKey: async () => ({ privateKey: decodeRecoveryKey(key), encodedPrivateKey: key }),
          setupNewSecretStorage: true,
          setupNewKeyBackup: true
        })
      },
      catch: (e) =>
        stateProbe(
          `Matrix recovery enable failed: ${sdkText(e)}. The new key is kept in recovery_key.pending; restart to retry.`
        )
    })
  const which = (current: Option.Option<string>, pending: Option.Option<string>) =>
    Effect.tryPromise({
      try: async (): Promise<Exclude<ServerKey, "Unknown">> => {
        const info = await defaultKeyDescription(client)
        if (info === null) return "Neither"
        if (Option.isSome(current) && (await keyring.matches(current.value, info))) return "Current"
        if (Option.isSome(pending) && (await keyring.matches(pending.value, info))) {
          keyring.add(pending.value)
          return "Pending"
        }
        return "Neither"
      },
      catch: (e) =>
        stateProbe(
          `reading secret storage from the homeserver failed: ${
            sdkText(e)
          }. Check that the homeserver is reachable, then rerun.`
        )
    })
  const generate = Effect.sync(() => {
    const raw = new Uint8Array(32)
    globalThis.crypto.getRandomValues(raw)
    const encoded = encodeRecoveryKey(raw)
    if (encoded === undefined) throw new Error("recovery key encoding failed")
    return encoded
  })
  return { probe, install, generate, which }
}

interface BootstrapContext {
  readonly client: MatrixClient
  readonly keyring: Keyring
  readonly secrets: ConfigSecretsShape
  readonly status: ChannelStatusShape
  readonly audit: Audit
  readonly files: RecoveryFiles
}

const isUiaChallenge = (e: unknown) => {
  const err = e as { httpStatus?: unknown; data?: { flows?: unknown } }
  return err?.httpStatus === 401 && err.data?.flows !== undefined
}

class MissingPassword extends Error {}

/**
 * Account data read from the homeserver itself. The SDK's `getAccountDataFromServer` answers from the
 * cached sync once the client is prepared, and after a restart that cache can predate the secret storage
 * (a kill during the first start) or be all there is (homeserver down).
 */
const accountDataFromServer = async (client: MatrixClient, type: string): Promise<Record<string, unknown> | null> => {
  try {
    return await client.http.authedRequest<Record<string, unknown>>(
      Method.Get,
      `/user/${encodeURIComponent(client.getSafeUserId())}/account_data/${encodeURIComponent(type)}`
    )
  } catch (e) {
    if ((e as { errcode?: unknown }).errcode === "M_NOT_FOUND") return null
    throw e
  }
}

/** The homeserver's default secret-storage key description (read from the server, not the sync cache). */
export const defaultKeyDescription = async (client: MatrixClient): Promise<SecretStorageKeyDescription | null> => {
  const def = await accountDataFromServer(client, "m.secret_storage.default_key")
  const id = typeof def?.["key"] === "string" ? def["key"] : null
  const info = id === null ? null : await accountDataFromServer(client, `m.secret_storage.key.${id}`)
  return info as unknown as SecretStorageKeyDescription | null
}

export interface RestoreOptions {
  /**
   * A daemon start: when the crypto store already holds the three cross-signing private keys and the
   * backup key, there is nothing to restore and the homeserver is not asked. (A rotation passes false: the
   * current key must be proved to open secret storage before it is replaced.)
   */
  readonly skipWhenStoreComplete?: boolean
}

/** Whether a restore failure is worth retrying (the homeserver was unreachable or overloaded). */
export const isTransientRestoreFailure = (e: RecoveryKeyError): boolean =>
  e.kind === "recovery-key-restore-failed" && e.reason === "transport-error"

/** §5.2 step 6: restore from `recovery_key` when the file exists (every start). */
export const restoreAtStartup = (ctx: BootstrapContext, options: RestoreOptions = {}) =>
  Effect.gen(function*() {
    const text = yield* ctx.files.read(KEY_FILE, MAX_KEY_BYTES)
    if (Option.isNone(text)) return false
    const K = path.join(ctx.files.root, KEY_FILE)
    const fail = (reason: RestoreFailureReason) =>
      recoveryError(
        "recovery-key-restore-failed",
        `Matrix recovery-key restore failed (${reason}): Matrix recovery-key restore from ${K} failed; reason=${reason}. Verify the key in Element, run \`cara matrix recovery-key restore\` with the daemon stopped, and restart.`,
        reason
      )
    if (text.value.trim() === "") return yield* fail("empty-key-file")
    const key = text.value.trim()
    ctx.keyring.add(key)
    const crypto = ctx.client.getCrypto()
    if (crypto === undefined) return yield* fail("sdk-internal")
    // The key on disk is checked against the homeserver at every start (the MAC check needs no decryption),
    // also when the store holds every key: a wrong K must fail here, not at the next rotation or disaster.
    yield* Effect.tryPromise({
      try: async () => {
        const info = await defaultKeyDescription(ctx.client)
        if (info === null) {
          throw Object.assign(new Error("no default secret storage key"), { reason: "server-not-configured" })
        }
        if (!(await ctx.keyring.matches(key, info))) {
          throw Object.assign(new Error("key does not open secret storage"), { reason: "wrong-key" })
        }
      },
      catch: (e) => fail(((e as { reason?: RestoreFailureReason }).reason) ?? restoreReasonOf(e))
    })
    if (options.skipWhenStoreComplete === true) {
      const complete = yield* Effect.promise(async () => {
        const c = (await crypto.getCrossSigningStatus()).privateKeysCachedLocally
        return c.masterKey && c.selfSigningKey && c.userSigningKey &&
          (await crypto.getSessionBackupPrivateKey()) !== null
      }).pipe(Effect.orElseSucceed(() => false))
      if (complete) {
        yield* Effect.logDebug(
          "Matrix recovery-key restore skipped: the key opens secret storage and the crypto store already holds the cross-signing and backup keys"
        )
        return true
      }
    }
    const restored = yield* Effect.tryPromise({
      try: async () => {
        const status = await crypto.getCrossSigningStatus()
        const cached = status.privateKeysCachedLocally
        if (
          !(cached.masterKey && cached.selfSigningKey && cached.userSigningKey) && status.privateKeysInSecretStorage
        ) {
          // reads the cross-signing keys out of secret storage (no new identity: they exist there)
          await crypto.bootstrapCrossSigning({})
        }
        // A store without the backup key is a new device (first start after a disaster recovery): it pulls
        // the room keys from the backup once, so history sent before the loss decrypts. Restarts skip this.
        const newDevice = (await crypto.getSessionBackupPrivateKey()) === null
        if (newDevice) {
          const info = await crypto.getKeyBackupInfo()
          if (info !== null) await crypto.loadSessionBackupPrivateKeyFromSecretStorage()
        }
        await crypto.checkKeyBackupAndEnable()
        if (newDevice && (await crypto.getSessionBackupPrivateKey()) !== null) {
          // a large backup takes a while: the operator's terminal shows the count (nothing off a terminal)
          const progress = progressLine("cara")
          const r = await crypto.restoreKeyBackup({
            progressCallback: (p) => {
              if (p.stage === "load_keys" && progress.hooks.count !== undefined) {
                Effect.runSync(
                  progress.hooks.count("room keys restored from the backup", p.successes + p.failures, p.total)
                )
              }
            }
          }).finally(() => Effect.runSync(progress.done))
          return { total: r.total, imported: r.imported }
        }
        return undefined
      },
      catch: (e) => fail(((e as { reason?: RestoreFailureReason }).reason) ?? restoreReasonOf(e))
    })
    if (restored !== undefined) {
      yield* Effect.logInfo("Matrix room keys restored from the key backup").pipe(
        Effect.annotateLogs({ backupKeysTotal: restored.total, backupKeysImported: restored.imported })
      )
    }
    yield* ctx.audit(
      "matrix_recovery_key_restored_at_startup",
      restored === undefined ? {} : { backup_keys_imported: restored.imported }
    )
    return true
  })

/** §5.2 step 7: cross-signing, never a new identity over an existing one; our device signed. */
export const bootstrapCrossSigning = (ctx: BootstrapContext, userId: string, deviceId: string) =>
  Effect.gen(function*() {
    const crypto = ctx.client.getCrypto()
    if (crypto === undefined) {
      return yield* recoveryError(
        "cross-signing-bootstrap-failed",
        "Matrix cross-signing bootstrap failed: the Matrix client has no end-to-end encryption."
      )
    }
    const password = yield* ctx.secrets.secretOption("matrix.password").pipe(
      Effect.orElseSucceed(() => Option.none<Redacted.Redacted<string>>())
    )
    let usedPassword = false
    const outcome = yield* Effect.tryPromise({
      try: async () => {
        const onServer = await crypto.userHasCrossSigningKeys(userId, true)
        const st = await crypto.getCrossSigningStatus()
        const c = st.privateKeysCachedLocally
        const cached = { master: c.masterKey, selfSigning: c.selfSigningKey, userSigning: c.userSigningKey }
        const ready = onServer && cached.master && cached.selfSigning && cached.userSigning &&
          (await crypto.isCrossSigningReady())
        const step = nextCrossSigningStep({ onServer, cached, ready })
        if (step === "IdentityUnavailable") return "identity-unavailable" as const
        if (step === "Bootstrap") {
          await crypto.bootstrapCrossSigning({
            authUploadDeviceSigningKeys: async (makeRequest) => {
              try {
                await makeRequest(null)
                return
              } catch (e) {
                if (!isUiaChallenge(e)) throw e
                if (Option.isNone(password)) throw new MissingPassword()
                usedPassword = true
                await makeRequest({
                  type: "m.login.password",
                  identifier: { type: "m.id.user", user: userId },
                  password: Redacted.value(password.value),
                  session: (e as { data?: { session?: string } }).data?.session
                } as never)
              }
            }
          })
        }
        const dev = await crypto.getDeviceVerificationStatus(userId, deviceId)
        if (dev !== null && !dev.signedByOwner) await crypto.crossSignDevice(deviceId)
        return "ok" as const
      },
      catch: (e) => e
    }).pipe(
      Effect.catchAll((e) =>
        Effect.gen(function*() {
          if (e instanceof MissingPassword) {
            yield* ctx.audit("matrix_cross_signing_bootstrap_failed", { outcome: "failed_missing_password" })
            return yield* recoveryError(
              "cross-signing-bootstrap-failed",
              "Matrix cross-signing bootstrap failed: cross-signing bootstrap requires password UIA; provide matrix.password or MATRIX_PASSWORD once and restart."
            )
          }
          // A token revoked while the start-up sequence runs is a revoked token, not a cross-signing problem.
          const code = (e as { errcode?: unknown }).errcode
          if (typeof code === "string" && TOKEN_REVOCATION_CODES.has(code)) {
            return yield* recoveryError(
              "auth-token-revoked",
              `Matrix access token rejected by homeserver: ${code} (${TOKEN_REVOKED_HINT})`
            )
          }
          yield* ctx.audit("matrix_cross_signing_bootstrap_failed", {
            outcome: usedPassword ? "failed_after_uia" : "failed_before_uia"
          })
          return yield* recoveryError(
            "cross-signing-bootstrap-failed",
            `Matrix cross-signing bootstrap failed: cross-signing bootstrap failed ${
              usedPassword ? "after" : "before"
            } UIA: ${sdkText(e)}. Check the password (matrix.password or MATRIX_PASSWORD) and restart.`
          )
        })
      )
    )
    if (outcome === "identity-unavailable") {
      yield* ctx.status.updateMatrix((x) => ({ ...x, crossSigning: "not-bootstrapped" }))
      return yield* recoveryError(
        "cross-signing-bootstrap-failed",
        "Matrix cross-signing bootstrap failed: the account already has a cross-signing identity, but this device has neither its private keys nor a recovery key that opens them. Refusing to create a new identity (every peer that verified the bot would see it change). Stop the daemon, run `cara matrix recovery-key restore` with the account's recovery key, and restart."
      )
    }
    return { usedPassword }
  })

export interface RecoveryKeyOptions {
  readonly files?: (stateDir: StateDirShape) => RecoveryFiles
}

export const makeRecoveryKey = (options: RecoveryKeyOptions = {}) =>
  Effect.gen(function*() {
    const stateDir = yield* StateDir
    const secrets = yield* ConfigSecrets
    const status = yield* ChannelStatus
    const files = (options.files ?? nodeRecoveryFiles)(stateDir)
    const audit = fileAudit(stateDir)
    const keyring = makeKeyring()

    const afterFirstSync = (client: MatrixClient) =>
      Effect.gen(function*() {
        const userId = client.getSafeUserId()
        const deviceId = client.getDeviceId() ?? ""
        const ctx: BootstrapContext = { client, keyring, secrets, status, audit, files }
        // an interrupted rotation the files alone could not settle (the repair before the store opened left
        // it): the homeserver's secret storage says whether the new key was installed
        yield* runRepair(files, audit, sdkServer(client, keyring))
        // a homeserver that is down (or restarting) delays the restore; it does not stop the runtime
        yield* restoreAtStartup(ctx, { skipWhenStoreComplete: true }).pipe(
          Effect.tapError((e) =>
            isTransientRestoreFailure(e)
              ? Effect.logWarning("Matrix recovery-key restore: homeserver unreachable; retrying")
              : Effect.void
          ),
          Effect.retry({
            schedule: Schedule.exponential(Duration.seconds(1)).pipe(
              Schedule.union(Schedule.spaced(Duration.seconds(30))),
              Schedule.upTo(Duration.minutes(10))
            ),
            while: isTransientRestoreFailure
          })
        )
        const { usedPassword } = yield* bootstrapCrossSigning(ctx, userId, deviceId)
        const mint = yield* runMint(files, sdkServer(client, keyring), audit)
        const mintedAt = Date.now()
        yield* audit("matrix_cross_signing_bootstrapped", {
          outcome: usedPassword ? "bootstrapped_after_uia" : "confirmed_or_bootstrapped_without_uia"
        })
        if (mint.minted) {
          yield* Effect.logWarning(
            "Matrix recovery key created and stored locally; capture the owner-only recovery key (`cara matrix recovery-key show`) before relying on encrypted Matrix backup"
          )
        }
        for (const w of mint.warnings) yield* Effect.logWarning(w)
        const verified = yield* Effect.promise(() =>
          client.getCrypto()?.getDeviceVerificationStatus(userId, deviceId) ?? Promise.resolve(null)
        ).pipe(Effect.map((s) => s?.crossSigningVerified === true), Effect.orElseSucceed(() => false))
        if (mint.minted) yield* status.updateMatrix((x) => ({ ...x, firstRecoveryKeyMintedAt: mintedAt }))
        if (usedPassword) {
          yield* secrets.removeMatrixPassword().pipe(
            Effect.catchAll((e) =>
              Effect.logWarning(`removing matrix.password from the config after cross-signing failed: ${e.message}`)
            )
          )
        }
        // published by the runtime at the end of its start-up sequence (`crossSigning: pending` until then)
        return verified ? "verified" as const : "bootstrapped" as const
      }).pipe(Effect.withSpan("RecoveryKey.afterFirstSync"))

    return {
      cryptoCallbacks: keyring.callbacks,
      repair: runRepair(files, audit).pipe(Effect.asVoid),
      afterFirstSync
    } satisfies RecoveryKeyShape
  })

export const RecoveryKeyLive = Layer.effect(RecoveryKey, makeRecoveryKey())
