// `cara matrix rekey-store --new`: the executor of the pure machine in src/domain/rekeyMachine.ts. It holds
// the maintenance lock, observes the files and stores, performs exactly one durable step, and observes
// again. It never compensates on failure: every state it leaves is one the machine advances from, so an
// interruption (crash, SIGKILL, full disk) is resolved by running the command again.
import { Effect, Option, Redacted } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { CryptoStoreError } from "../domain/cryptoStore.js"
import { type Candidate, nextStep, type Observed, type RefusalReason, type Step } from "../domain/rekeyMachine.js"
import {
  AUDIT_FILE,
  EncryptedStateIoError,
  type InstallationIdError,
  MARKER_CONTENT,
  MARKER_FILE,
  MissingStoreSecretError,
  PASSPHRASE_FILE,
  PENDING_FILE,
  RekeyRefusedError,
  StoreKeyDerivationError
} from "../domain/storePassphrase.js"
import { makeAudit } from "../layers/AuditLive.js"
import { CRYPTO_FILE, MATRIX_DIR, STATE_FILE } from "../layers/CryptoStoreLive.js"
import { dlqKeyedStore } from "../layers/DlqLive.js"
import { SqliteFile } from "../layers/durable-idb/sqliteFile.js"
import {
  configPasswordOf,
  deriveStorePassphrase,
  type PassphraseEnv,
  readPassphraseFile
} from "../layers/StorePassphraseLive.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"
import { StateDir, type StateDirShape } from "../services/StateDir.js"
import { StorePassphrase } from "../services/StorePassphrase.js"

// ---------------------------------------------------------------------------------------------------------
// What the executor works on

/** A store whose data key is wrapped under the store passphrase. */
export interface KeyedStore {
  readonly name: string
  readonly path: string
  /** Whether the store exists (a missing store is not part of the set and is never created here). */
  readonly exists: Effect.Effect<boolean>
  /** Whether `passphrase` opens it; read-only. */
  readonly opens: (passphrase: Redacted.Redacted<string>) => Effect.Effect<boolean, EncryptedStateIoError>
  /** Re-wraps its key from `from` to `to` in one durable write. */
  readonly rewrap: (
    from: Redacted.Redacted<string>,
    to: Redacted.Redacted<string>
  ) => Effect.Effect<void, EncryptedStateIoError>
}

/** The file writes of a rotation (StateDir's atomic write and remove; tests inject crashes here). */
export interface RekeyFiles {
  readonly write: (relative: string, content: string) => Effect.Effect<void, EncryptedStateIoError>
  readonly remove: (relative: string) => Effect.Effect<void, EncryptedStateIoError>
}

const stateIo = (file: string, message: string) =>
  new EncryptedStateIoError({ kind: "encrypted-state-io", path: file, message })

export const stateDirFiles = (stateDir: StateDirShape): RekeyFiles => ({
  write: (rel, content) =>
    stateDir.writeAtomic(rel, content).pipe(
      Effect.mapError((e) => stateIo(e.path, `Matrix encrypted-state file operation failed: ${e.message}`))
    ),
  remove: (rel) =>
    stateDir.remove(rel).pipe(
      Effect.mapError((e) => stateIo(e.path, `Matrix encrypted-state file operation failed: ${e.message}`))
    )
})

// The role names are part of each file's on-disk cipher record (its associated data); see CryptoStoreLive.
const SQLITE_STORES = [[CRYPTO_FILE, "crypto"], [STATE_FILE, "state"]] as const

const describeCause = (
  e: unknown
) => (e instanceof CryptoStoreError ? e.message : e instanceof Error ? e.message : String(e))

/** The CryptoStore's SQLite files as keyed stores (opened briefly, one at a time, while the lock is held). */
export const sqliteStores = (stateDir: StateDirShape): ReadonlyArray<KeyedStore> =>
  SQLITE_STORES.map(([rel, role]): KeyedStore => {
    const file = stateDir.resolve(rel)
    const withOpen = <A>(
      passphrase: Redacted.Redacted<string>,
      use: (f: SqliteFile) => Promise<A>,
      mismatch: () => A
    ) =>
      Effect.tryPromise({
        try: async () => {
          let f: SqliteFile
          try {
            f = await SqliteFile.open(file, role, { encrypted: true, passphrase: Redacted.value(passphrase) })
          } catch (e) {
            if (e instanceof CryptoStoreError && e.kind === "encrypted-store-passphrase-mismatch") return mismatch()
            throw e
          }
          try {
            return await use(f)
          } finally {
            f.close()
          }
        },
        catch: (e) => stateIo(file, `Matrix encrypted-state file operation failed: ${describeCause(e)}`)
      })
    return {
      name: path.basename(file),
      path: file,
      exists: Effect.sync(() => fs.existsSync(file)),
      opens: (p) => withOpen(p, async () => true, () => false),
      rewrap: (from, to) =>
        withOpen(from, (f) => f.rewrap(Redacted.value(to)), () => {
          throw stateIo(
            file,
            `Matrix encrypted-state file operation failed: ${file} no longer opens with the passphrase it was probed with; rerun \`cara matrix rekey-store --new\`.`
          )
        })
    }
  })

// ---------------------------------------------------------------------------------------------------------
// The executor

export interface RekeyDeps {
  readonly stateDir: StateDirShape
  readonly stores: ReadonlyArray<KeyedStore>
  readonly files: RekeyFiles
  /**
   * The derived passphrase (CARAPACE_CONFIG_PASSWORD + installation id); `None` without the password. The
   * effect runs only when a store needs it, so a pinned store does not depend on the installation id.
   */
  readonly derived: Option.Option<Effect.Effect<Redacted.Redacted<string>, RekeyError>>
  /** A fresh passphrase (64 lowercase hex by default). */
  readonly newPassphrase?: () => string
  /** One line per durable step, for progress on a TTY. */
  readonly progress?: (line: string) => Effect.Effect<void>
  /** Stores re-wrapped so far of those to re-wrap (a counter on a TTY). */
  readonly count?: (label: string, done: number, total: number) => Effect.Effect<void>
}

export type RekeyError =
  | EncryptedStateIoError
  | MissingStoreSecretError
  | RekeyRefusedError
  | StoreKeyDerivationError
  | InstallationIdError

export interface RekeyResult {
  /** A rotation was in flight when this run started (it was finished first). */
  readonly recovered: boolean
  readonly storeCount: number
  readonly passphrasePath: string
  readonly steps: ReadonlyArray<Step["_tag"]>
}

const freshPassphrase = () => crypto.randomBytes(32).toString("hex")

/** Observes F, P, M and which passphrase opens each existing store. */
export const observe = (deps: RekeyDeps, startedThisRun: boolean) =>
  Effect.gen(function*() {
    const sd = deps.stateDir
    const final = yield* readPassphraseFile(sd.resolve(PASSPHRASE_FILE), true)
    const pending = yield* readPassphraseFile(sd.resolve(PENDING_FILE), false)
    const markerPresent = yield* Effect.sync(() => {
      try {
        fs.lstatSync(sd.resolve(MARKER_FILE))
        return true
      } catch {
        return false
      }
    })
    // The derived key is computed only when some store needs it (a corrupt installation_id then matters).
    const derivedOnce = Option.isSome(deps.derived) ? yield* Effect.cached(deps.derived.value) : undefined
    const derived: Effect.Effect<Option.Option<Redacted.Redacted<string>>, RekeyError> = derivedOnce === undefined
      ? Effect.succeed(Option.none())
      : Effect.map(derivedOnce, Option.some)
    const candidates: Array<readonly [Candidate, Effect.Effect<Option.Option<Redacted.Redacted<string>>, RekeyError>]> =
      [
        ["pending", Effect.succeed(Option.map(pending, Redacted.make))],
        ["final", Effect.succeed(Option.map(final, Redacted.make))],
        ["derived", derived]
      ]
    const stores: Array<{ name: string; opensWith: Candidate | "none" }> = []
    for (const store of deps.stores) {
      if (!(yield* store.exists)) continue
      let opensWith: Candidate | "none" = "none"
      for (const [name, value] of candidates) {
        const v = yield* value
        if (Option.isSome(v) && (yield* store.opens(v.value))) {
          opensWith = name
          break
        }
      }
      stores.push({ name: store.name, opensWith })
    }
    const derivedAvailable = Option.isSome(deps.derived)
    const observed: Observed = {
      finalPresent: Option.isSome(final),
      pendingPresent: Option.isSome(pending),
      markerPresent,
      finalEqualsPending: Option.isSome(final) && Option.isSome(pending) && final.value === pending.value,
      derivedAvailable,
      stores,
      startedThisRun
    }
    return { observed, final, pending, derived }
  })

const refusal = (deps: RekeyDeps, reason: RefusalReason): RekeyError => {
  const sd = deps.stateDir
  const P = sd.resolve(PENDING_FILE)
  const M = sd.resolve(MARKER_FILE)
  switch (reason._tag) {
    case "MissingOldSecret":
      return new MissingStoreSecretError({
        kind: "missing-store-secret",
        message: `matrix rekey-store needs the current store passphrase: no ${
          sd.resolve(PASSPHRASE_FILE)
        } is pinned and CARAPACE_CONFIG_PASSWORD is not set. Export the CARAPACE_CONFIG_PASSWORD that was in effect when the Matrix store was created, then rerun \`cara matrix rekey-store --new\`.`
      })
    case "NoStores":
      return new RekeyRefusedError({
        kind: "rekey-refused",
        message: `no Matrix stores found under ${
          sd.resolve(MATRIX_DIR)
        }; there is nothing to rekey. Start the daemon once so it creates them, then rerun.`
      })
    case "StoreUnopenable":
      return reason.derivedAvailable
        ? new RekeyRefusedError({
          kind: "rekey-refused",
          message: `Matrix store(s) ${
            reason.stores.join(", ")
          } accept none of the available passphrases (pinned, pending, or derived from CARAPACE_CONFIG_PASSWORD); no store was changed by this run. If you changed CARAPACE_CONFIG_PASSWORD since the store was created or since \`cara matrix rekey-store --new\` was first started, restore the previous value and rerun. Do not remove ${P} or ${M}.`
        })
        : new MissingStoreSecretError({
          kind: "missing-store-secret",
          message: `Matrix store(s) ${
            reason.stores.join(", ")
          } still use the key derived from CARAPACE_CONFIG_PASSWORD, which is not set; no store was changed by this run. Export the CARAPACE_CONFIG_PASSWORD that was in effect when the store was created, then rerun \`cara matrix rekey-store --new\`.`
        })
    case "StoreNotCurrent":
      return new RekeyRefusedError({
        kind: "rekey-refused",
        message: `Matrix store(s) ${reason.stores.join(", ")} do not open with the ${
          reason.current === "final"
            ? `pinned passphrase at ${sd.resolve(PASSPHRASE_FILE)}`
            : "passphrase derived from CARAPACE_CONFIG_PASSWORD"
        }, which the daemon would use; no store was changed. Restore the file or the password the stores were created with, then rerun.`
      })
  }
}

/**
 * Runs the machine to completion: finishes an interrupted rotation first (if any), and otherwise rotates
 * to a fresh passphrase. The caller holds the maintenance lock.
 */
export const runRekey = (deps: RekeyDeps) =>
  Effect.gen(function*() {
    const sd = deps.stateDir
    const say = deps.progress ?? (() => Effect.void)
    const steps: Array<Step["_tag"]> = []
    let started = false
    let recovered: boolean | undefined
    let storeCount = 0
    let rewrapped = 0
    for (;;) {
      const seen: {
        derived: Effect.Effect<Option.Option<Redacted.Redacted<string>>, RekeyError>
        final: Option.Option<string>
        observed: Observed
        pending: Option.Option<string>
      } = yield* observe(deps, started)
      const { derived, final, observed, pending } = seen
      // A run that starts on an interrupted rotation finishes that one and stops (no second rotation).
      if (recovered === undefined) {
        recovered = observed.pendingPresent || observed.markerPresent
        started = recovered
      }
      storeCount = observed.stores.length
      const step = nextStep({ ...observed, startedThisRun: started })
      steps.push(step._tag)
      switch (step._tag) {
        case "Done":
          return {
            recovered: recovered === true,
            storeCount,
            passphrasePath: sd.resolve(PASSPHRASE_FILE),
            steps
          } satisfies RekeyResult
        case "Refuse":
          return yield* Effect.fail(refusal(deps, step.reason))
        case "WritePending":
          yield* say(`writing the new passphrase to ${sd.resolve(PENDING_FILE)}`)
          yield* deps.files.write(PENDING_FILE, `${(deps.newPassphrase ?? freshPassphrase)()}\n`)
          started = true
          break
        case "WriteMarker":
          yield* say(`writing the rekey marker ${sd.resolve(MARKER_FILE)}`)
          yield* deps.files.write(MARKER_FILE, MARKER_CONTENT)
          break
        case "RewrapStore": {
          const store = deps.stores.find((s) => s.name === step.store)
          const from = step.from === "final" ? Option.map(final, Redacted.make) : yield* derived
          if (store === undefined || Option.isNone(from) || Option.isNone(pending)) {
            return yield* Effect.die(new Error(`rekey machine asked to rewrap ${step.store} without its inputs`))
          }
          yield* say(`re-wrapping the key of ${store.name}`)
          yield* store.rewrap(from.value, Redacted.make(pending.value))
          rewrapped += 1
          if (deps.count !== undefined) {
            yield* deps.count("stores re-wrapped", rewrapped, Math.max(rewrapped, observed.stores.length))
          }
          break
        }
        case "PromotePending":
          if (Option.isNone(pending)) {
            return yield* Effect.die(new Error("rekey machine asked to promote without a pending passphrase"))
          }
          yield* say(`pinning the new passphrase at ${sd.resolve(PASSPHRASE_FILE)}`)
          yield* deps.files.write(PASSPHRASE_FILE, `${pending.value}\n`)
          break
        case "RemovePending":
          yield* deps.files.remove(PENDING_FILE)
          break
        case "RemoveMarker":
          yield* deps.files.remove(MARKER_FILE)
          break
      }
    }
  })

// ---------------------------------------------------------------------------------------------------------
// Audit

/** Appends one `{"ts","event","data"}` line to `{state_dir}/audit.jsonl` (0600) and fsyncs it. */
export const appendAudit = (stateDir: StateDirShape, event: string, data: Record<string, unknown>) =>
  makeAudit(stateDir).append(event, data).pipe(
    Effect.mapError((e) =>
      stateIo(stateDir.resolve(AUDIT_FILE), `Writing the audit log failed (${e.message}). Check the state directory.`)
    )
  )

// ---------------------------------------------------------------------------------------------------------
// The program

export interface RekeyStoreOptions {
  readonly env?: PassphraseEnv
  readonly progress?: (line: string) => Effect.Effect<void>
  readonly count?: (label: string, done: number, total: number) => Effect.Effect<void>
}

/** The derived passphrase for the rekey (bypasses the daemon's interrupted-rekey gate on purpose). */
export const derivedFor = (env: PassphraseEnv, installationId: Effect.Effect<string, RekeyError>) =>
  Option.map(
    configPasswordOf(env),
    (password) =>
      Effect.map(installationId, (iid) => Redacted.make(deriveStorePassphrase(Redacted.value(password), iid)))
  )

/** Preconditions (reference §4.1), the lock, the audit events and the rotation. */
export const rekeyStore = (options: RekeyStoreOptions = {}) =>
  Effect.scoped(
    Effect.gen(function*() {
      const { config } = yield* ConfigSecrets
      const stateDir = yield* StateDir
      const sp = yield* StorePassphrase
      const env = options.env ?? { ...process.env }
      const refused = (message: string) => new RekeyRefusedError({ kind: "rekey-refused", message })
      const m = config.matrix
      if (m === undefined || m === null) {
        return yield* refused("matrix rekey-store requires Matrix configuration (a `matrix` section in the config).")
      }
      if (m.enabled === false) return yield* refused("matrix rekey-store requires matrix.enabled=true.")
      if (m.encrypted === false) {
        return yield* refused(
          "matrix rekey-store requires matrix.encrypted=true; an unencrypted store has no key to rotate."
        )
      }
      if (m.storePassphrase !== undefined) {
        return yield* refused(
          "matrix rekey-store only rekeys stores whose key cara manages (derived from CARAPACE_CONFIG_PASSWORD or pinned by a previous rekey); the store passphrase is set explicitly (matrix.storePassphrase or MATRIX_STORE_PASSPHRASE), so rotate it outside cara."
        )
      }

      yield* sp.acquireLock("rekey-store")
      yield* appendAudit(stateDir, "matrix_store_rekey_start", { pid: process.pid })
      const deps: RekeyDeps = {
        stateDir,
        // The inbound DLQ is keyed by the store passphrase too (reference §4.5): it moves in the same rotation.
        stores: [...sqliteStores(stateDir), dlqKeyedStore(stateDir, sp.installationId)],
        files: stateDirFiles(stateDir),
        derived: derivedFor(env, sp.installationId),
        ...(options.progress !== undefined ? { progress: options.progress } : {}),
        ...(options.count !== undefined ? { count: options.count } : {})
      }
      const result = yield* runRekey(deps)
      yield* appendAudit(stateDir, "matrix_store_rekey_complete", {
        sqlite_store_count: result.storeCount,
        pid: process.pid,
        recovered: result.recovered
      })
      return result
    })
  )

export const renderResult = (r: RekeyResult, json: boolean): string =>
  json
    ? JSON.stringify({ ok: true, recovered: r.recovered, storeCount: r.storeCount, passphrasePath: r.passphrasePath })
    : r.recovered
    ? `Finalized the interrupted Matrix store rekey and rotated ${r.storeCount} store(s); new store passphrase pinned at ${r.passphrasePath}`
    : `Matrix store rekeyed across ${r.storeCount} store(s); new store passphrase pinned at ${r.passphrasePath}`
