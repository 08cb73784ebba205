// `cara matrix recovery-key show | restore | rotate` (reference §5.4, §5.5, §5.7). CLI-only by design: these
// never traverse the control API. restore and rotate hold the maintenance lock (the daemon must be
// stopped); show only reads the key file.
import { Effect, Either, Option, Redacted } from "effect"
import * as sdk from "matrix-js-sdk"
import * as path from "node:path"
import {
  CLEANUP_FILE,
  KEY_FILE,
  KEY_FORMAT_MESSAGE,
  MAX_KEY_BYTES,
  normalizeRecoveryKey,
  recoveryError,
  stateIo
} from "../domain/recoveryKey.js"
import type { EncryptedStateIoError, RekeyLockHeldError } from "../domain/storePassphrase.js"
import { homeserverUrlOf } from "../domain/wellKnown.js"
import { makeCryptoStore } from "../layers/CryptoStoreLive.js"
import {
  fileAudit,
  makeKeyring,
  nodeRecoveryFiles,
  type RecoveryFiles,
  restoreAtStartup,
  rotateTestFault,
  runRepair,
  runRestoreCleanup,
  runRotateCommand,
  sdkServer
} from "../layers/RecoveryKeyLive.js"
import { ChannelStatus } from "../services/ChannelStatus.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"
import { StateDir } from "../services/StateDir.js"
import { StorePassphrase } from "../services/StorePassphrase.js"

type Op = "show" | "restore" | "rotate"

/** Matrix configured, enabled and encrypted (§5.4 step 1). */
const configGate = (op: Op) =>
  Effect.gen(function*() {
    const { config } = yield* ConfigSecrets
    const m = config.matrix
    const cmd = `cara matrix recovery-key ${op}`
    if (m === undefined || m === null) {
      return yield* recoveryError(
        "recovery-config-precondition",
        `Matrix recovery configuration precondition failed: ${cmd} requires Matrix configuration (a \`matrix\` section in the config).`
      )
    }
    if (m.enabled === false) {
      return yield* recoveryError(
        "recovery-config-precondition",
        `Matrix recovery configuration precondition failed: ${cmd} requires matrix.enabled=true.`
      )
    }
    if (m.encrypted === false) {
      return yield* recoveryError(
        "recovery-config-precondition",
        `Matrix recovery configuration precondition failed: ${cmd} requires matrix.encrypted=true; the key file is unused while encrypted=false.`
      )
    }
    return m
  })

const lockRefused = (op: Op) => (e: RekeyLockHeldError | EncryptedStateIoError) =>
  recoveryError("recovery-key-refused", `Matrix recovery-key ${op} refused: ${e.message}`)

// ---------------------------------------------------------------------------------------------------------
// show

export const showKey = (options: { readonly allowNonTerminal: boolean; readonly stdoutIsTty: boolean }) =>
  Effect.gen(function*() {
    yield* configGate("show")
    if (!options.stdoutIsTty && !options.allowNonTerminal) {
      return yield* recoveryError(
        "recovery-key-refused",
        "Matrix recovery-key show refuses non-terminal stdout; rerun with --allow-non-terminal only when intentional capture is required"
      )
    }
    const stateDir = yield* StateDir
    const files = nodeRecoveryFiles(stateDir)
    const text = yield* files.read(KEY_FILE, MAX_KEY_BYTES)
    const key = Option.map(text, (t) => t.trim())
    if (Option.isNone(key) || key.value === "") {
      return yield* recoveryError(
        "recovery-key-refused",
        `Matrix recovery key unavailable at ${
          stateDir.resolve(KEY_FILE)
        }. Start the daemon once (it mints the key) or restore it with \`cara matrix recovery-key restore\`.`
      )
    }
    return Redacted.make(key.value)
  })

// ---------------------------------------------------------------------------------------------------------
// restore

/** Validates key text from a file, stdin or a prompt: size cap, non-empty, format. */
export const parseKeyInput = (raw: Uint8Array | string) =>
  Effect.gen(function*() {
    const bytes = typeof raw === "string" ? Buffer.byteLength(raw) : raw.byteLength
    if (bytes > MAX_KEY_BYTES) {
      return yield* recoveryError(
        "recovery-key-invalid",
        `Matrix recovery key input exceeds ${MAX_KEY_BYTES} bytes; refuse to read. Pass a file that holds only the key.`
      )
    }
    const text = typeof raw === "string" ? raw : Buffer.from(raw).toString("utf8")
    const parsed = normalizeRecoveryKey(text)
    if (Either.isLeft(parsed)) {
      return yield* recoveryError(
        "recovery-key-invalid",
        parsed.left === "empty"
          ? "Matrix recovery key cannot be empty"
          : `${KEY_FORMAT_MESSAGE}. Check the key you saved from Element or \`cara matrix recovery-key show\`.`
      )
    }
    return Redacted.make(parsed.right)
  })

export interface RestoreResult {
  readonly keyPath: string
  readonly resumed: boolean
}

const RESTART_HINT =
  "Restart any running carapace daemon for the restored key to take effect: the key is used at the next start."

export const renderRestore = (r: RestoreResult) =>
  r.resumed
    ? `Matrix recovery key already restored at ${r.keyPath}; resumed and completed pending cleanup from prior restore.\n${RESTART_HINT}`
    : `Matrix recovery key restored at ${r.keyPath}\n${RESTART_HINT}`

/**
 * Restore: `readKey` is called only when a key is needed (not on the resume path), so a prompt is not shown
 * for a pure cleanup resume.
 */
export const restoreKey = <E, R>(
  readKey: Effect.Effect<Redacted.Redacted<string>, E, R>,
  files?: (root: string) => RecoveryFiles
) =>
  Effect.scoped(
    Effect.gen(function*() {
      yield* configGate("restore")
      const stateDir = yield* StateDir
      const sp = yield* StorePassphrase
      yield* sp.acquireLock("recovery-key").pipe(Effect.mapError(lockRefused("restore")))
      const f = files?.(stateDir.root) ?? nodeRecoveryFiles(stateDir)
      const audit = fileAudit(stateDir)
      const keyPath = stateDir.resolve(KEY_FILE)
      const keyPresent = yield* f.exists(KEY_FILE)
      const journalPresent = yield* f.exists(CLEANUP_FILE)
      let key = Option.none<string>()
      if (!(keyPresent && journalPresent)) {
        const k = yield* readKey
        if (keyPresent) {
          return yield* recoveryError(
            "recovery-key-refused",
            `Matrix recovery key already exists at ${keyPath}; refuse to overwrite. To replace it: stop the daemon, remove the file, then re-run.`
          )
        }
        key = Option.some(Redacted.value(k))
      }
      const outcome = yield* runRestoreCleanup(f, key, audit)
      if (outcome.failedRoles.length > 0) {
        return yield* stateIo(
          `Matrix recovery key was restored, but stale recovery-key cleanup failed: could not remove ${
            outcome.failedRoles.join(", ")
          }. Keep the daemon stopped, check the permissions of ${
            stateDir.resolve("matrix")
          }, then rerun \`cara matrix recovery-key restore\` to finish the cleanup.`
        )
      }
      yield* audit("matrix_recovery_key_restore", { pid: process.pid })
      return { keyPath, resumed: outcome.resumed } satisfies RestoreResult
    })
  )

// ---------------------------------------------------------------------------------------------------------
// rotate

/** A client on the daemon's store, token mode, started and synced (the daemon is stopped: we hold the lock). */
const offlineClient = (keyring: ReturnType<typeof makeKeyring>) =>
  Effect.gen(function*() {
    const secrets = yield* ConfigSecrets
    const sp = yield* StorePassphrase
    const m = secrets.config.matrix!
    const token = yield* secrets.secretOption("matrix.accessToken").pipe(
      Effect.orElseSucceed(() => Option.none<Redacted.Redacted<string>>())
    )
    const deviceId = m.deviceId
    if (Option.isNone(token) || deviceId === undefined || deviceId === null) {
      return yield* recoveryError(
        "recovery-config-precondition",
        "Matrix recovery configuration precondition failed: rotation needs the persisted access token and device id; start the daemon once so it logs in, stop it, then rerun."
      )
    }
    const { url: baseUrl } = yield* homeserverUrlOf(m, "set matrix.homeserverUrl").pipe(
      Effect.mapError((e) => recoveryError("recovery-config-precondition", e.message))
    )
    const passphrase = yield* sp.resolve.pipe(Effect.mapError((e) => stateIo(e.message)))
    const store = yield* makeCryptoStore({
      secret: { encrypted: true, passphrase }
    }).pipe(Effect.mapError((e) => stateIo(e.message)))
    const syncStore = new sdk.IndexedDBStore({ indexedDB: store.indexedDB as never, dbName: store.syncStoreName })
    yield* Effect.tryPromise({
      try: () => syncStore.startup(),
      catch: (e) => stateIo(`opening the sync store failed: ${String(e)}`)
    })
    const quiet = {
      trace: () => {},
      debug: () => {},
      info: () => {},
      warn: () => {},
      error: () => {},
      getChild: () => quiet
    }
    // module-level SDK loggers write to the console at call time; keep the command's output to its own lines
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const saved = { log: console.log, info: console.info, debug: console.debug, warn: console.warn }
        console.log =
          console.info =
          console.debug =
          console.warn =
            () => {}
        return saved
      }),
      (saved) => Effect.sync(() => Object.assign(console, saved))
    )
    const client = yield* Effect.acquireRelease(
      Effect.sync(() =>
        sdk.createClient({
          baseUrl,
          userId: m.userId!,
          deviceId,
          accessToken: Redacted.value(token.value),
          store: syncStore,
          localTimeoutMs: 30_000,
          cryptoCallbacks: keyring.callbacks,
          logger: quiet as never
        })
      ),
      (c) =>
        Effect.promise(async () => {
          c.stopClient()
          await syncStore.save(true).catch(() => undefined)
          await syncStore.save(true).catch(() => undefined)
          c.removeAllListeners()
        })
    )
    yield* Effect.tryPromise({
      try: () =>
        client.initRustCrypto({
          cryptoDatabasePrefix: store.cryptoDatabasePrefix,
          ...Option.match(store.storageKey, { onNone: () => ({}), onSome: (k) => ({ storageKey: Redacted.value(k) }) })
        }),
      catch: (e) => stateIo(`opening the crypto store failed: ${String(e)}`)
    })
    yield* Effect.tryPromise({
      try: () =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no sync within 60 s")), 60_000)
          client.on(sdk.ClientEvent.Sync, (state) => {
            if (state === sdk.SyncState.Prepared || state === sdk.SyncState.Syncing) {
              clearTimeout(timer)
              resolve()
            }
          })
          void client.startClient({ initialSyncLimit: 1 })
        }),
      catch: (e) =>
        recoveryError(
          "recovery-state-probe-failed",
          `Matrix recovery state probe failed: ${
            e instanceof Error ? e.message : String(e)
          }; check that the homeserver is reachable.`
        )
    })
    return client
  })

export const rotateKey = Effect.scoped(
  Effect.gen(function*() {
    yield* configGate("rotate")
    const stateDir = yield* StateDir
    const sp = yield* StorePassphrase
    yield* sp.acquireLock("recovery-key").pipe(Effect.mapError(lockRefused("rotate")))
    const files = nodeRecoveryFiles(stateDir)
    const audit = fileAudit(stateDir)
    // offline first: a refusal needs no homeserver (a state only the homeserver can settle is left as it is)
    yield* runRepair(files, audit)
    const keyring = makeKeyring()
    const client = yield* offlineClient(keyring)
    const status = yield* ChannelStatus
    const secrets = yield* ConfigSecrets
    // the same restore as a daemon start: the current key must open secret storage before it is replaced
    const { resumed } = yield* runRotateCommand(
      files,
      audit,
      sdkServer(client, keyring),
      restoreAtStartup({ client, keyring, secrets, status, audit, files }),
      Date.now,
      rotateTestFault
    )
    yield* audit("matrix_recovery_key_rotate", { rotated_at: Date.now(), ...(resumed ? { resumed: true } : {}) })
    return { keyPath: stateDir.resolve(KEY_FILE), resumed }
  })
)

export const renderRotate = (r: { keyPath: string; resumed?: boolean }) =>
  `${
    r.resumed === true
      ? "Matrix recovery key rotation interrupted earlier was completed (the homeserver already held the new key); not rotating again.\n"
      : ""
  }Matrix recovery key rotated at ${r.keyPath}\nThe previous Matrix recovery key is abandoned. Capture the new key from the owner-only local file (\`cara matrix recovery-key show\`) before relying on encrypted Matrix backup.`

export const keyFileLabel = (p: string) => path.basename(p)
