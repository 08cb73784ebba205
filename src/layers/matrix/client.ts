// The matrix-js-sdk client as a scoped resource: the sync store on the CryptoStore's IndexedDB, the client,
// its Rust crypto. Release: settle the SDK's background crypto work, stop, drain the handlers, save.
import { Context, Effect, Layer, Option, Redacted, Ref } from "effect"
import * as sdk from "matrix-js-sdk"
import { MatrixError } from "../../domain/matrix.js"
import { describeSdkError as describe } from "../../domain/sendError.js"
import { CryptoStore } from "../../services/CryptoStore.js"
import { MatrixSettings } from "../../services/MatrixSync.js"
import { MatrixTransport } from "../../services/MatrixTransport.js"
import { RecoveryKey } from "../../services/RecoveryKey.js"
import { StateDir } from "../../services/StateDir.js"
import { HTTP_TIMEOUT_MS, MatrixCredentials } from "./auth.js"
import { makeSdkLogger } from "./logging.js"
import { gateSyncCrypto } from "./syncCrypto.js"
import { gateSyncSaves } from "./syncSaves.js"
import { sdkTransport } from "./transport.js"

export interface MatrixClientShape {
  readonly client: sdk.MatrixClient
  /** The sync store had no saved sync token: its first sync delivers history only. */
  readonly freshStore: boolean
  /** The saved sync token at start (the back-fill's lower bound for the first limited sync). */
  readonly savedSyncToken: string | null
  /**
   * Handler work (decrypt + gate + durable claim) that the sync store must not be saved before: the sync
   * token is never on disk before the events it covers are claimed. Handlers inside the SDK's sync
   * processing must never throw; their promises go here.
   */
  readonly track: (p: Promise<unknown>) => void
  /** The client is being released (long-running handler work stops early). */
  readonly stopping: Effect.Effect<boolean>
}

export class MatrixClient extends Context.Tag("cara/matrix/Client")<MatrixClient, MatrixClientShape>() {}

/** How long a stop waits for the SDK's in-flight crypto work before it frees the OlmMachine anyway. */
const SETTLE_MS = 10_000

/**
 * Waits (bounded) for the SDK's key-backup check: `initRustCrypto` starts one in the background, and an
 * identity change starts another; each ends by calling into the OlmMachine, which `stopClient` frees. The
 * forced check is only reachable through the backup manager's field (read defensively: an SDK upgrade that
 * renames it only loses the wait, and the daemon logs the rejection instead of crashing).
 */
const settleSdkWork = async (client: sdk.MatrixClient): Promise<void> => {
  const crypto = client.getCrypto()
  if (crypto === undefined) return
  const internal = crypto as unknown as { backupManager?: { keyBackupCheckInProgress?: Promise<unknown> | null } }
  const deadline = Date.now() + SETTLE_MS
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<void>((r) => (timer = setTimeout(r, SETTLE_MS)))
  try {
    // getKeyBackupInfo awaits the first check (whether or not it is still running)
    await Promise.race([crypto.getKeyBackupInfo().catch(() => undefined), timeout])
    for (
      let p = internal.backupManager?.keyBackupCheckInProgress;
      p && Date.now() < deadline;
      p = internal.backupManager?.keyBackupCheckInProgress
    ) {
      await Promise.race([p.catch(() => undefined), timeout])
    }
  } finally {
    clearTimeout(timer)
  }
}

/** The promises of in-flight handlers; `drain` resolves once none is left (also those added meanwhile). */
const makeInflight = () => {
  const inflight = new Set<Promise<unknown>>()
  return {
    track: (p: Promise<unknown>) => {
      const q = p.catch(() => undefined).finally(() => inflight.delete(q))
      inflight.add(q)
    },
    drain: async () => {
      while (inflight.size > 0) await Promise.all([...inflight])
    }
  }
}

/**
 * The sync store, started; its saves wait for the handlers, and the periodic one for news (syncSaves.ts).
 * Returns the unpatched save for the release.
 */
const openSyncStore = (indexedDB: unknown, dbName: string, drain: () => Promise<void>) =>
  Effect.gen(function*() {
    const syncStore = new sdk.IndexedDBStore({ indexedDB: indexedDB as never, dbName })
    yield* Effect.tryPromise({
      try: () => syncStore.startup(),
      catch: (e) =>
        new MatrixError({ kind: "client-build", message: `failed to build Matrix client: sync store: ${describe(e)}` })
    })
    const savedSyncToken = (yield* Effect.promise(() => syncStore.getSavedSyncToken())) ?? null
    const save = gateSyncSaves(syncStore, drain)
    return { syncStore, savedSyncToken, save }
  })

const initCrypto = (client: sdk.MatrixClient) =>
  Effect.gen(function*() {
    const store = yield* CryptoStore
    const stateDir = yield* StateDir
    yield* Effect.tryPromise({
      try: () =>
        client.initRustCrypto({
          cryptoDatabasePrefix: store.cryptoDatabasePrefix,
          ...Option.match(store.storageKey, { onNone: () => ({}), onSome: (k) => ({ storageKey: Redacted.value(k) }) })
        }),
      catch: (e) =>
        new MatrixError({
          kind: "client-build",
          message: `failed to build Matrix client: crypto store: ${describe(e)}. The store in ${
            stateDir.resolve("matrix")
          } belongs to another user or device, or is damaged; never reuse a device id with a fresh store.`
        })
    })
    if (gateSyncCrypto(client) === undefined) {
      yield* Effect.logDebug("the SDK's processSyncChanges is not where expected: every sync goes to the crypto")
    }
  })

const makeClient = Effect.gen(function*() {
  const m = yield* MatrixSettings
  const creds = yield* MatrixCredentials
  const store = yield* CryptoStore
  const recovery = yield* RecoveryKey
  const runtime = yield* Effect.runtime<never>()
  const inflight = makeInflight()
  const stopping = yield* Ref.make(false)
  const { save, savedSyncToken, syncStore } = yield* openSyncStore(store.indexedDB, store.syncStoreName, inflight.drain)
  const client = yield* Effect.acquireRelease(
    Effect.try({
      try: () =>
        sdk.createClient({
          baseUrl: creds.baseUrl,
          userId: creds.userId,
          deviceId: creds.deviceId,
          accessToken: Redacted.value(creds.accessToken),
          store: syncStore,
          localTimeoutMs: HTTP_TIMEOUT_MS,
          verificationMethods: ["m.sas.v1"],
          cryptoCallbacks: recovery.cryptoCallbacks,
          logger: makeSdkLogger(runtime)
        }),
      catch: (e) => new MatrixError({ kind: "client-build", message: `failed to build Matrix client: ${describe(e)}` })
    }),
    (c) =>
      Ref.set(stopping, true).pipe(Effect.zipRight(Effect.promise(async () => {
        // stopClient frees the OlmMachine at once: the SDK's own key-backup check (started by initRustCrypto,
        // and again when our identity changes) must finish first, or it calls into freed memory
        await settleSdkWork(c)
        c.stopClient()
        await inflight.drain()
        // save(true) during an in-flight persist only awaits that older persist: save twice
        await save(true).catch(() => undefined)
        await save(true).catch(() => undefined)
        // the features' handlers are removed here, not with their own scopes: a sync processed while the
        // client settles must still be claimed before its token is saved
        c.removeAllListeners()
      })))
  )
  if (m.encrypted) yield* initCrypto(client)
  return {
    client,
    freshStore: savedSyncToken === null,
    savedSyncToken,
    track: inflight.track,
    stopping: Ref.get(stopping)
  } satisfies MatrixClientShape
})

/** The client for the life of the layer; it also provides the transport Outbound sends through. */
export const MatrixClientLive = Layer.scopedContext(
  Effect.map(
    makeClient,
    (c) => Context.make(MatrixClient, c).pipe(Context.add(MatrixTransport, sdkTransport(c.client)))
  )
)
