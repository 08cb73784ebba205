// The recovery-key state machines (reference §5.3-§5.6) as pure functions from what was observed on disk
// (and, for the mint, on the homeserver) to the ONE next durable step. The executors
// (src/layers/RecoveryKeyLive.ts, src/programs/recoveryKey.ts) observe, ask, perform that step and observe
// again, so a crash after any step leaves files from which the same functions pick up.
//
// Files: K = recovery_key, N = recovery_key.pending, MM = recovery_key.minting, R = recovery_key.rotating,
// J = recovery_key.cleanup.
//
// One deliberate difference from the reference: a new key is generated locally and made durable in N
// BEFORE it is installed on the homeserver (mint and rotate alike). The reference uploads first and writes
// N afterwards, so a crash in between leaves secret storage locked by a key that exists nowhere.
import type {
  CleanupJournal,
  JournalContent,
  KeyState,
  MarkerContent,
  PromotionRefusalReason,
  RotationStage
} from "./recoveryKey.js"
import { digestsEqual } from "./recoveryKey.js"

// ---------------------------------------------------------------------------------------------------------
// Startup repair (§5.4 journal inspection + §5.6 decision table)

export type FileDigest =
  | { readonly _tag: "Absent" }
  /** Existed when listed but was gone when read (a concurrent removal). */
  | { readonly _tag: "Vanished" }
  | { readonly _tag: "Present"; readonly digest: string }

/**
 * Which local key the homeserver's default secret-storage key description accepts (its MAC check, no
 * decryption). `Unknown` until asked: the daemon's first repair runs before any network I/O, and the
 * question is asked only when the files alone cannot tell whether the upload happened.
 */
export type ServerKey = "Unknown" | "Current" | "Pending" | "Neither"

export interface RepairObserved {
  readonly journal:
    | { readonly _tag: "Absent" }
    | { readonly _tag: "Unreadable"; readonly detail: string }
    | JournalContent
  readonly marker: { readonly _tag: "Absent" } | MarkerContent
  readonly current: FileDigest
  readonly pending: FileDigest
  /** Absent means `Unknown`. */
  readonly server?: ServerKey
}

export type RepairAudit =
  | "cleared_stale_pending"
  | "promoted_pending"
  | "cleared_final_marker"
  | "cleared_started_marker"
  /** The new key never reached the homeserver: N removed, K stays; a rerun of rotate starts afresh. */
  | "rolled_back_pending"

export type RepairStep =
  | { readonly _tag: "Done" }
  /** Ask the homeserver which of K and N its secret storage accepts, then decide again. */
  | { readonly _tag: "AskServer" }
  | { readonly _tag: "RemoveCompletedJournal" }
  | { readonly _tag: "RemovePending"; readonly audit: RepairAudit }
  | { readonly _tag: "RemoveMarker"; readonly audit: RepairAudit }
  /** Replace K with N after re-hashing N against `expectedDigest`. */
  | { readonly _tag: "PromotePending"; readonly expectedDigest: string }
  | {
    readonly _tag: "Refuse"
    readonly reason: PromotionRefusalReason
    readonly stage: RotationStage | "legacy"
    readonly currentKey: KeyState
    readonly pendingKey: KeyState
  }
  /** `recovery-state-io`: journal or marker problems that are not a promotion refusal. */
  | {
    readonly _tag: "StateIo"
    readonly why:
      | "journal_unreadable"
      | "journal_corrupt"
      | "journal_unsupported_version"
      | "journal_started"
      | "marker_invalid"
      | "replacement_without_digest"
      | "outcome_unknown"
    readonly detail?: string
  }

const eq = (a: string | undefined, b: string | undefined) => a !== undefined && b !== undefined && digestsEqual(a, b)

const keyState = (f: FileDigest, previous: string | undefined, next: string | undefined): KeyState => {
  if (f._tag === "Absent" || f._tag === "Vanished") return "missing"
  if (eq(f.digest, next)) return "matches_new_key"
  if (eq(f.digest, previous)) return "matches_previous_key"
  return previous === undefined && next === undefined ? "unknown" : "mismatch"
}

/**
 * A rotation whose files cannot tell whether the new key N reached the homeserver: the server's answer decides
 * (roll back when it holds K, forward when it holds N; neither means the key was reset elsewhere).
 */
const byServer = (
  server: ServerKey | undefined,
  pendingDigest: string,
  refuse: (reason: PromotionRefusalReason) => RepairStep
): RepairStep => {
  switch (server ?? "Unknown") {
    case "Unknown":
      return { _tag: "AskServer" }
    case "Current":
      return { _tag: "RemovePending", audit: "rolled_back_pending" }
    case "Pending":
      return { _tag: "PromotePending", expectedDigest: pendingDigest }
    case "Neither":
      return refuse("server_key_matches_neither")
  }
}

/** The next step of the startup repair. Total and pure; `Done` means the daemon may go on. */
export const nextRepairStep = (o: RepairObserved): RepairStep => {
  switch (o.journal._tag) {
    case "Absent":
      break
    case "Unreadable":
      return { _tag: "StateIo", why: "journal_unreadable", detail: o.journal.detail }
    case "Corrupt":
      return { _tag: "StateIo", why: "journal_corrupt", detail: o.journal.detail }
    case "UnsupportedVersion":
      return { _tag: "StateIo", why: "journal_unsupported_version" }
    case "Parsed":
      if (o.journal.journal.phase === "completed") return { _tag: "RemoveCompletedJournal" }
      return { _tag: "StateIo", why: "journal_started" }
  }

  const m = o.marker
  if (m._tag === "Absent") return { _tag: "Done" }
  if (m._tag === "Invalid") return { _tag: "StateIo", why: "marker_invalid", detail: m.reason }
  const legacy = m._tag === "Legacy"
  const stage: RotationStage = legacy ? "started" : m.marker.stage
  const next = legacy ? undefined : m.marker.keySha256
  const prev = legacy ? undefined : m.marker.previousKeySha256
  const cur = o.current._tag === "Present" ? o.current.digest : undefined
  const refuse = (reason: PromotionRefusalReason): RepairStep => ({
    _tag: "Refuse",
    reason,
    stage: legacy ? "legacy" : stage,
    currentKey: keyState(o.current, prev, next),
    pendingKey: keyState(o.pending, prev, next)
  })

  // Case A: N exists.
  if (o.pending._tag !== "Absent") {
    if (o.pending._tag === "Vanished") return refuse("pending_key_missing")
    const pend = o.pending.digest
    // A marker that names N (`installing`, `pending_key_written`): N must be the key it names and K the one
    // it replaces; undefined means both hold and the stage decides.
    const boundPending = (): RepairStep | undefined => {
      if (next === undefined) return refuse("missing_new_key_digest")
      if (!eq(pend, next)) return refuse("pending_key_digest_mismatch")
      if (eq(cur, next)) return { _tag: "RemovePending", audit: "cleared_stale_pending" }
      if (cur === undefined) return refuse("current_key_missing")
      if (prev === undefined) return refuse("missing_previous_key_digest")
      if (!eq(cur, prev)) return refuse("current_key_mismatch")
      return undefined
    }
    switch (stage) {
      case "started":
        if (prev === undefined) {
          return refuse(legacy ? "legacy_marker_missing_previous_key_digest" : "missing_previous_key_digest")
        }
        if (cur === undefined) return refuse("current_key_missing")
        if (!eq(cur, prev)) return refuse("unbound_started_pending")
        // N was written but the marker never bound it: this release writes `installing` before the upload
        // (so the upload did not happen), an older one uploaded first. The homeserver tells which.
        return byServer(o.server, pend, refuse)
      case "installing":
        // the crash hit during or around the upload: roll forward if the homeserver has N, back if it has K
        return boundPending() ?? byServer(o.server, next!, refuse)
      case "pending_key_written":
        return boundPending() ?? { _tag: "PromotePending", expectedDigest: next! }
      case "final_key_replaced":
        if (next === undefined) return refuse("missing_new_key_digest")
        if (eq(cur, next)) return { _tag: "RemovePending", audit: "cleared_stale_pending" }
        if (cur === undefined) return refuse("current_key_missing")
        return refuse("final_stage_pending_present")
    }
  }

  // Case B: N absent.
  if (stage === "pending_key_written" || stage === "final_key_replaced" || stage === "installing") {
    if (next === undefined) return { _tag: "StateIo", why: "replacement_without_digest" }
    if (eq(cur, next)) return { _tag: "RemoveMarker", audit: "cleared_final_marker" }
    // `installing` without N and K still the old key: a rollback removed N; the homeserver must confirm K
    if (stage === "installing" && eq(cur, prev)) {
      if ((o.server ?? "Unknown") === "Unknown") return { _tag: "AskServer" }
      if (o.server === "Current") return { _tag: "RemoveMarker", audit: "rolled_back_pending" }
    }
    return { _tag: "StateIo", why: "outcome_unknown" }
  }
  if (prev !== undefined && eq(cur, prev)) return { _tag: "RemoveMarker", audit: "cleared_started_marker" }
  return refuse("pending_key_missing")
}

// ---------------------------------------------------------------------------------------------------------
// Cross-signing at start-up (§5.2 step 7), after the restore from `recovery_key` ran

export interface CrossSigningObserved {
  /** The account has a cross-signing identity on the homeserver. */
  readonly onServer: boolean
  /** Which private keys our store holds. */
  readonly cached: { readonly master: boolean; readonly selfSigning: boolean; readonly userSigning: boolean }
  /** The SDK's own readiness check (asked only when the keys are on the server and cached). */
  readonly ready: boolean
}

export type CrossSigningStep =
  /** An identity exists that this device cannot use: never create a new one over it (restore the key). */
  | "IdentityUnavailable"
  /** Set up already (every restart): only our device's signature is checked. */
  | "SignDeviceOnly"
  /** No identity yet (first start), or ours is incomplete: the SDK bootstrap (password UIA if asked). */
  | "Bootstrap"

export const nextCrossSigningStep = (o: CrossSigningObserved): CrossSigningStep => {
  if (o.onServer && !(o.cached.master && o.cached.selfSigning)) return "IdentityUnavailable"
  // Re-running the SDK bootstrap on a set-up device would re-export the keys to secret storage, which needs
  // the secret-storage key: a plain restart must not depend on it.
  if (o.onServer && o.cached.userSigning && o.ready) return "SignDeviceOnly"
  return "Bootstrap"
}

// ---------------------------------------------------------------------------------------------------------
// First mint (§5.3), run after cross-signing is in place

/**
 * What the homeserver's secret storage looks like: none, a default key that the local N opens, or a
 * default key that nothing local opens. `Unknown` until probed (the probe is a network call, made only
 * when the decision needs it).
 */
export type ServerSecretStorage = "Unknown" | "None" | "MatchesPending" | "Other"

export interface MintObserved {
  readonly key: "Absent" | "Empty" | "Present"
  readonly pending: boolean
  readonly minting: boolean
  readonly server: ServerSecretStorage
}

export type MintStep =
  | { readonly _tag: "Done"; readonly warnEmptyKeyWithMarker?: true }
  | { readonly _tag: "ProbeServer" }
  | { readonly _tag: "WriteMintingMarker" }
  /** Generate a recovery key locally and write it to N (no-replace). */
  | { readonly _tag: "WritePending" }
  /** Install N on the homeserver: new secret storage holding the cross-signing keys, new key backup. */
  | { readonly _tag: "InstallPending" }
  /** N -> K (no-replace); the first mint is recorded when this step was taken. */
  | { readonly _tag: "PromotePending" }
  | { readonly _tag: "RemoveMintingMarker" }
  | {
    readonly _tag: "Refuse"
    readonly why: "server_has_recovery" | "stale_marker_server_has_recovery" | "pending_without_marker"
  }

export const nextMintStep = (o: MintObserved): MintStep => {
  if (o.key === "Present") return o.minting ? { _tag: "RemoveMintingMarker" } : { _tag: "Done" }
  // An empty K fails the startup restore before the mint runs; never delete MM on its account.
  if (o.key === "Empty") return o.minting ? { _tag: "Done", warnEmptyKeyWithMarker: true } : { _tag: "Done" }
  if (o.server === "Unknown") return { _tag: "ProbeServer" }
  if (o.pending) {
    // N is trusted only inside a mint (MM present): anything else may be a half rotation or a hand edit.
    if (!o.minting) return { _tag: "Refuse", why: "pending_without_marker" }
    if (o.server === "MatchesPending") return { _tag: "PromotePending" }
    if (o.server === "None") return { _tag: "InstallPending" }
    return { _tag: "Refuse", why: "stale_marker_server_has_recovery" }
  }
  if (o.server !== "None") {
    return { _tag: "Refuse", why: o.minting ? "stale_marker_server_has_recovery" : "server_has_recovery" }
  }
  return o.minting ? { _tag: "WritePending" } : { _tag: "WriteMintingMarker" }
}

// ---------------------------------------------------------------------------------------------------------
// Rotation (§5.5): the steps of one run, in order. Resumption after a crash is the repair table's job.

export type RotateStep =
  /** R := {started, previousKeySha256}. */
  | "WriteStartedMarker"
  /** Generate the new key locally and write it to N (no-replace). */
  | "WritePending"
  /** R := {installing, keySha256, previousKeySha256}: write-ahead of the homeserver step. */
  | "WriteInstallingMarker"
  /** Install N on the homeserver (new default secret-storage key, new backup); the old key is abandoned. */
  | "InstallPending"
  /** R := {pending_key_written, keySha256, previousKeySha256}. */
  | "WritePendingWrittenMarker"
  /** K := N after re-hashing N. */
  | "ReplaceKey"
  /** R := {final_key_replaced, ...}. */
  | "WriteFinalMarker"
  | "RemoveMarker"

export const ROTATE_STEPS: ReadonlyArray<RotateStep> = [
  "WriteStartedMarker",
  "WritePending",
  "WriteInstallingMarker",
  "InstallPending",
  "WritePendingWrittenMarker",
  "ReplaceKey",
  "WriteFinalMarker",
  "RemoveMarker"
]

export type RotatePrecondition =
  | { readonly _tag: "Ok" }
  | { readonly _tag: "KeyMissing" }
  | { readonly _tag: "PendingPresent" }

/** Checked after the repair left a clean state: K must exist, N must not. */
export const rotatePrecondition = (
  o: { readonly keyPresent: boolean; readonly pendingPresent: boolean }
): RotatePrecondition =>
  !o.keyPresent ? { _tag: "KeyMissing" } : o.pendingPresent ? { _tag: "PendingPresent" } : { _tag: "Ok" }

// ---------------------------------------------------------------------------------------------------------
// Restore cleanup (§5.4)

export type CleanupStep =
  /** Write J in phase `started` (before K is written). */
  | { readonly _tag: "AnchorJournal" }
  | { readonly _tag: "WriteKey" }
  /** Unlink the artifact and record its result in J. */
  | { readonly _tag: "RemoveArtifact"; readonly index: number }
  | { readonly _tag: "MarkCompleted" }
  | { readonly _tag: "RemoveJournal" }
  | { readonly _tag: "Done" }
  | { readonly _tag: "Failed"; readonly failedRoles: ReadonlyArray<string> }

export interface CleanupObserved {
  readonly keyPresent: boolean
  readonly journal: CleanupJournal | undefined
  /** This run has a key to write (false on the resume path). */
  readonly haveKey: boolean
  /** Artifacts this run already tried to remove; a failure from an earlier run is retried once per run. */
  readonly attempted: ReadonlyArray<number>
}

export const nextCleanupStep = (o: CleanupObserved): CleanupStep => {
  const j = o.journal
  if (j === undefined) {
    if (o.keyPresent) return { _tag: "Done" }
    return o.haveKey ? { _tag: "AnchorJournal" } : { _tag: "Done" }
  }
  if (j.phase === "completed") return { _tag: "RemoveJournal" }
  if (!o.keyPresent) return o.haveKey ? { _tag: "WriteKey" } : { _tag: "Done" }
  const index = j.artifacts.findIndex((a, i) =>
    a.result.state === "pending" || (a.result.state === "failed" && !o.attempted.includes(i))
  )
  if (index >= 0) return { _tag: "RemoveArtifact", index }
  const failed = j.artifacts.filter((a) => a.result.state === "failed").map((a) => a.role)
  if (failed.length > 0) return { _tag: "Failed", failedRoles: failed }
  return { _tag: "MarkCompleted" }
}
