// Recovery key (reference §5): the on-disk files, the rotation marker and cleanup journal formats, the
// refusal reasons with their wire values, and the operator-facing errors with their §12 kinds.
// Nothing here touches the disk or the network; src/domain/recoveryMachine.ts decides over these values.
import { Either, Schema } from "effect"
import * as crypto from "node:crypto"

// ---------------------------------------------------------------------------------------------------------
// Files (relative to {state_dir}, §3.4)

export const KEY_FILE = "matrix/recovery_key"
export const PENDING_FILE = "matrix/recovery_key.pending"
export const MINTING_FILE = "matrix/recovery_key.minting"
export const ROTATING_FILE = "matrix/recovery_key.rotating"
export const CLEANUP_FILE = "matrix/recovery_key.cleanup"

export const MINTING_CONTENT = "recovery-minting-in-progress\n"
/** The text marker of older releases; read (as stage `started` without digests), never written. */
export const LEGACY_ROTATION_MARKER = "recovery-rotation-in-progress"

/** Every reader of `recovery_key*` (and the rotation marker) caps here. */
export const MAX_KEY_BYTES = 4096
export const MAX_JOURNAL_BYTES = 16 * 1024

// ---------------------------------------------------------------------------------------------------------
// Key format (§5.1)

const BASE58 = /^[1-9A-HJ-NP-Za-km-z]+$/

export const KEY_FORMAT_MESSAGE =
  "Matrix recovery key must be 12 base58 groups of four characters (the final group may be three characters)"

/**
 * Validates a recovery key as typed or pasted: 12 whitespace-separated base58 groups of 4 (the last may
 * be 3). Returns the canonical text (groups joined by one space), which is what gets written and hashed.
 */
export const normalizeRecoveryKey = (text: string): Either.Either<string, "empty" | "format"> => {
  const groups = text.trim().split(/[ \t\r\n\f\v]+/).filter((g) => g !== "")
  if (groups.length === 0) return Either.left("empty")
  if (groups.length !== 12) return Either.left("format")
  for (const [i, g] of groups.entries()) {
    const okLength = g.length === 4 || (i === 11 && g.length === 3)
    if (!okLength || !BASE58.test(g)) return Either.left("format")
  }
  return Either.right(groups.join(" "))
}

/** Anything shaped like a recovery key is replaced before text reaches a log. */
const KEY_SHAPE =
  /(?<![1-9A-HJ-NP-Za-km-z])(?:[1-9A-HJ-NP-Za-km-z]{4}\s+){11}[1-9A-HJ-NP-Za-km-z]{3,4}(?![1-9A-HJ-NP-Za-km-z])/g
export const redactRecoveryKeys = (text: string): string => text.replace(KEY_SHAPE, "[REDACTED]")

/** `sha256_hex(trim(key_text))`: the digest that binds markers to key files. */
export const keyDigest = (keyText: string): string =>
  crypto.createHash("sha256").update(keyText.trim(), "utf8").digest("hex")

/** Constant-time comparison of two hex digests (lengths are public). */
export const digestsEqual = (a: string, b: string): boolean => {
  const x = Buffer.from(a, "utf8")
  const y = Buffer.from(b, "utf8")
  return x.length === y.length && crypto.timingSafeEqual(x, y)
}

// ---------------------------------------------------------------------------------------------------------
// Rotation marker (§5.5)

/**
 * `installing` (not in the reference) is written ahead of the homeserver step, with both digests: a crash
 * during or after the upload then leaves a marker that names both candidate keys, and the repair asks the
 * homeserver which one its secret storage now accepts. An older release fails closed on it (unknown stage).
 */
export const RotationStage = Schema.Literal("started", "installing", "pending_key_written", "final_key_replaced")
export type RotationStage = typeof RotationStage.Type

export const RotationMarker = Schema.Struct({
  stage: RotationStage,
  keySha256: Schema.optional(Schema.String),
  previousKeySha256: Schema.optional(Schema.String),
  updatedAtMs: Schema.Number
})
export type RotationMarker = typeof RotationMarker.Type

/** How a marker file read: typed JSON, the legacy text marker, or unusable (with the reason on the wire). */
export type MarkerContent =
  | { readonly _tag: "Typed"; readonly marker: RotationMarker }
  | { readonly _tag: "Legacy" }
  | { readonly _tag: "Invalid"; readonly reason: "corrupt_typed_marker" | "unknown_legacy_marker" }

const decodeMarker = Schema.decodeUnknownEither(Schema.parseJson(RotationMarker))

export const parseRotationMarker = (text: string): MarkerContent => {
  const body = text.startsWith("\uFEFF") ? text.slice(1) : text
  const trimmed = body.trim()
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    const r = decodeMarker(trimmed)
    return Either.isRight(r) ? { _tag: "Typed", marker: r.right } : { _tag: "Invalid", reason: "corrupt_typed_marker" }
  }
  return trimmed === LEGACY_ROTATION_MARKER ? { _tag: "Legacy" } : { _tag: "Invalid", reason: "unknown_legacy_marker" }
}

/** Single-line JSON, digests omitted when absent. */
export const encodeRotationMarker = (m: RotationMarker): string =>
  JSON.stringify({
    stage: m.stage,
    ...(m.keySha256 === undefined ? {} : { keySha256: m.keySha256 }),
    ...(m.previousKeySha256 === undefined ? {} : { previousKeySha256: m.previousKeySha256 }),
    updatedAtMs: m.updatedAtMs
  }) + "\n"

// ---------------------------------------------------------------------------------------------------------
// Restore cleanup journal (§5.4)

export const ArtifactRole = Schema.Literal("rotation_marker", "minting_marker", "pending_key")
export type ArtifactRole = typeof ArtifactRole.Type

/** The cleanup order and where each artifact lives. */
export const CLEANUP_ARTIFACTS: ReadonlyArray<{ readonly role: ArtifactRole; readonly path: string }> = [
  { role: "rotation_marker", path: ROTATING_FILE },
  { role: "minting_marker", path: MINTING_FILE },
  { role: "pending_key", path: PENDING_FILE }
]

export const ArtifactResult = Schema.Union(
  Schema.Struct({ state: Schema.Literal("pending", "removed", "not_found") }),
  Schema.Struct({ state: Schema.Literal("failed"), errorKind: Schema.Literal("remove_failed", "parent_sync_failed") })
)
export type ArtifactResult = typeof ArtifactResult.Type

export const CleanupArtifact = Schema.Struct({
  role: ArtifactRole,
  path: Schema.String,
  expectedProvenance: Schema.Literal("stale_after_operator_restore"),
  result: ArtifactResult
})
export type CleanupArtifact = typeof CleanupArtifact.Type

export const CleanupJournal = Schema.Struct({
  version: Schema.Number,
  phase: Schema.Literal("started", "completed"),
  artifacts: Schema.Array(CleanupArtifact)
})
export type CleanupJournal = typeof CleanupJournal.Type

export const freshCleanupJournal = (): CleanupJournal => ({
  version: 1,
  phase: "started",
  artifacts: CLEANUP_ARTIFACTS.map((a) => ({
    role: a.role,
    path: a.path,
    expectedProvenance: "stale_after_operator_restore" as const,
    result: { state: "pending" as const }
  }))
})

export const encodeCleanupJournal = (j: CleanupJournal): string => JSON.stringify(j, null, 2) + "\n"

/** How the journal file read (unknown phases and shapes fail to parse: fail closed). */
export type JournalContent =
  | { readonly _tag: "Parsed"; readonly journal: CleanupJournal }
  | { readonly _tag: "Corrupt"; readonly detail: string }
  | { readonly _tag: "UnsupportedVersion"; readonly version: unknown; readonly artifactCount: number }

const decodeJournal = Schema.decodeUnknownEither(CleanupJournal)

export const parseCleanupJournal = (text: string): JournalContent => {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (e) {
    return { _tag: "Corrupt", detail: e instanceof Error ? e.message : "not JSON" }
  }
  const version = (raw as { version?: unknown } | null)?.version
  if (typeof raw === "object" && raw !== null && version !== 1) {
    const artifacts = (raw as { artifacts?: unknown }).artifacts
    return { _tag: "UnsupportedVersion", version, artifactCount: Array.isArray(artifacts) ? artifacts.length : 0 }
  }
  const r = decodeJournal(raw)
  return Either.isRight(r)
    ? { _tag: "Parsed", journal: r.right }
    : { _tag: "Corrupt", detail: "unexpected fields or values" }
}

// ---------------------------------------------------------------------------------------------------------
// Refusal reasons of the startup repair (§5.6), wire values

export const PromotionRefusalReason = Schema.Literal(
  "missing_previous_key_digest",
  "missing_new_key_digest",
  "pending_key_missing",
  "pending_key_digest_mismatch",
  "current_key_mismatch",
  "current_key_missing",
  "unbound_started_pending",
  "final_stage_pending_present",
  "legacy_marker_missing_previous_key_digest",
  "server_key_matches_neither"
)
export type PromotionRefusalReason = typeof PromotionRefusalReason.Type

export const REFUSAL_TEXT: Record<PromotionRefusalReason, string> = {
  missing_previous_key_digest: "the marker does not record the digest of the key it replaces",
  missing_new_key_digest: "the marker does not record the digest of the new key",
  pending_key_missing: "the pending key file is missing",
  pending_key_digest_mismatch: "the pending key does not match the digest in the marker",
  current_key_mismatch: "the current key matches neither the previous nor the new key digest in the marker",
  current_key_missing: "the current key file is missing",
  unbound_started_pending: "the rotation never recorded the new key's digest, so the pending key is not bound to it",
  final_stage_pending_present:
    "the rotation recorded its final stage, yet a pending key that is not the current key is present",
  legacy_marker_missing_previous_key_digest: "the marker is a legacy text marker without key digests",
  server_key_matches_neither:
    "the homeserver's secret-storage key is opened by neither the current nor the pending key (was the recovery key reset elsewhere, e.g. in Element?)"
}

/** States of a key file relative to the marker, for the refusal audit record (no digests, no paths). */
export type KeyState = "missing" | "matches_previous_key" | "matches_new_key" | "mismatch" | "unknown"

/** `recovery-key-restore-failed` reasons (§5.8). */
export const RestoreFailureReason = Schema.Literal(
  "wrong-key",
  "empty-key-file",
  "server-not-configured",
  "transport-error",
  "sdk-io",
  "concurrent-request",
  "account-data-invalid",
  "backup-already-exists",
  "local-store",
  "auth-state",
  "sdk-internal",
  "unpickling-failed"
)
export type RestoreFailureReason = typeof RestoreFailureReason.Type

// ---------------------------------------------------------------------------------------------------------
// Errors

/** The §12 kinds of the recovery-key subsystem, plus the CLI-side refusals. */
/** The kinds the daemon's Matrix runtime reports too (`MatrixErrorKind` includes them). */
export const RECOVERY_RUNTIME_KINDS = [
  "recovery-key-restore-failed",
  "cross-signing-bootstrap-failed",
  "recovery-state-probe-failed",
  "recovery-state-io",
  "recovery-config-precondition",
  "recovery-key-promotion-refused"
] as const

export const RecoveryKeyErrorKind = Schema.Literal(
  ...RECOVERY_RUNTIME_KINDS,
  "auth-token-revoked",
  /** CLI: bad input (empty, malformed, oversize key). */
  "recovery-key-invalid",
  /** CLI: refused by policy (non-terminal show, daemon running, key exists, no confirmation). */
  "recovery-key-refused"
)
export type RecoveryKeyErrorKind = typeof RecoveryKeyErrorKind.Type

/**
 * A recovery-key failure an operator sees. The message says what to do next and never holds key material
 * or digests; `reason` carries the wire value of a promotion refusal or restore failure.
 */
export class RecoveryKeyError extends Schema.TaggedError<RecoveryKeyError>()("RecoveryKeyError", {
  kind: RecoveryKeyErrorKind,
  message: Schema.String,
  reason: Schema.optional(Schema.String)
}) {}

export const recoveryError = (kind: RecoveryKeyErrorKind, message: string, reason?: string) =>
  new RecoveryKeyError({ kind, message, ...(reason === undefined ? {} : { reason }) })

/** The §5.6 refusal, naming the three artifacts. */
export const promotionRefused = (
  reason: PromotionRefusalReason,
  paths: { marker: string; pending: string; key: string }
) =>
  recoveryError(
    "recovery-key-promotion-refused",
    `Matrix recovery-key promotion refused: Matrix recovery-key rotation marker at ${paths.marker} could not prove pending key ownership: ${
      REFUSAL_TEXT[reason]
    } (${reason}). Refusing to promote pending key at ${paths.pending} over current key at ${paths.key}. Remove stale recovery_key.rotating and recovery_key.pending only after confirming the current key is correct (for example by opening secret storage with it in Element).`,
    reason
  )

export const stateIo = (detail: string) =>
  recoveryError("recovery-state-io", `Matrix recovery state file operation failed: ${detail}`)
export const stateProbe = (detail: string) =>
  recoveryError("recovery-state-probe-failed", `Matrix recovery state probe failed: ${detail}`)
