import { Effect, Layer, Option, Redacted } from "effect"
import * as fs from "node:fs"
import { CryptoStoreError } from "../domain/cryptoStore.js"
import { CryptoStore, type CryptoStoreOptions, type CryptoStoreShape } from "../services/CryptoStore.js"
import { StateDir, type StateDirShape } from "../services/StateDir.js"
// Layer imports by design: the crypto store is built on the durable IndexedDB.
import { openDurableIdb } from "./durable-idb/durableIdb.js"
import { installIndexedDbRouter } from "./durable-idb/router.js"
import { ownerPath, SqliteFile, type StoreSecret } from "./durable-idb/sqliteFile.js"

export const MATRIX_DIR = "matrix"
export const CRYPTO_FILE = `${MATRIX_DIR}/matrix-sdk-crypto.sqlite3`
export const STATE_FILE = `${MATRIX_DIR}/matrix-sdk-state.sqlite3`
export const DEFAULT_CRYPTO_PREFIX = "cara"
export const DEFAULT_SYNC_STORE = "cara-sync"

// The role names bind each file's cipher record to its file (see cipher.ts).
const CRYPTO_ROLE = "crypto"
const STATE_ROLE = "state"

const ioFailure = (path: string, what: string) => (cause: unknown) =>
  cause instanceof CryptoStoreError
    ? cause
    : new CryptoStoreError({
      kind: "encrypted-state-io",
      path,
      message: `${what} failed (${
        cause instanceof Error ? cause.message : String(cause)
      }). Check the state directory and free disk space, then start again.`
    })

const toStoreSecret = (options: CryptoStoreOptions, dir: string): Effect.Effect<StoreSecret, CryptoStoreError> => {
  const secret = options.secret
  if (!secret.encrypted) return Effect.succeed({ encrypted: false })
  return Option.match(secret.passphrase, {
    onNone: () =>
      Effect.fail(
        new CryptoStoreError({
          kind: "missing-store-secret",
          path: dir,
          message:
            "matrix encrypted store requires CARAPACE_CONFIG_PASSWORD or MATRIX_STORE_PASSPHRASE. Set one of them (or matrix.storePassphrase), then start again."
        })
      ),
    onSome: (p) => {
      const passphrase = Redacted.value(p)
      return passphrase.trim() === ""
        ? Effect.fail(
          new CryptoStoreError({
            kind: "missing-store-secret",
            path: dir,
            message:
              "The Matrix store passphrase is empty. Set CARAPACE_CONFIG_PASSWORD or MATRIX_STORE_PASSPHRASE to a non-empty value, then start again."
          })
        )
        : Effect.succeed({ encrypted: true, passphrase })
    }
  })
}

const openFile = (file: string, role: string, secret: StoreSecret) =>
  Effect.acquireRelease(
    Effect.tryPromise({ try: () => SqliteFile.open(file, role, secret), catch: ioFailure(file, `Opening ${file}`) }),
    (f) => Effect.sync(() => f.close()).pipe(Effect.catchAllDefect(() => Effect.void))
  )

/** The pid file beside a store file, written through StateDir while this process owns the store. */
const ownerFile = (stateDir: StateDirShape, file: string) =>
  Effect.acquireRelease(
    stateDir.writeAtomic(ownerPath(file), `${process.pid}\n`).pipe(
      Effect.mapError(ioFailure(file, "Recording the store owner"))
    ),
    () => stateDir.remove(ownerPath(file)).pipe(Effect.ignore)
  )

/**
 * Opens the store in the current scope: takes the exclusive lock on both files, unwraps the data keys,
 * rebuilds the IndexedDB databases and (by default) routes their names through `globalThis.indexedDB`.
 * The scope's release detaches the factory, checkpoints and closes the files.
 */
export const makeCryptoStore = Effect.fn("CryptoStore.open")(function*(options: CryptoStoreOptions) {
  const stateDir = yield* StateDir
  const prefix = options.cryptoDatabasePrefix ?? DEFAULT_CRYPTO_PREFIX
  const syncStoreName = options.syncStoreName ?? DEFAULT_SYNC_STORE
  const dir = stateDir.resolve(MATRIX_DIR)
  const secret = yield* toStoreSecret(options, dir)
  yield* stateDir.ensureDir(MATRIX_DIR).pipe(Effect.mapError(ioFailure(dir, `Creating ${dir}`)))

  const cryptoPath = stateDir.resolve(CRYPTO_FILE)
  const statePath = stateDir.resolve(STATE_FILE)
  // Both at once: each unwrap runs its own Argon2id derivation on the libuv pool.
  const [cryptoFile, stateFile] = yield* Effect.all(
    [openFile(cryptoPath, CRYPTO_ROLE, secret), openFile(statePath, STATE_ROLE, secret)],
    { concurrency: 2 }
  )
  yield* ownerFile(stateDir, cryptoPath)
  yield* ownerFile(stateDir, statePath)

  const cryptoPrefix = `${prefix}::`
  const durable = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () =>
        openDurableIdb([cryptoFile, stateFile], (name) => (name.startsWith(cryptoPrefix) ? cryptoFile : stateFile)),
      catch: ioFailure(dir, `Loading the Matrix store in ${dir}`)
    }),
    (d) => Effect.sync(() => d.detach())
  )

  if (options.installGlobal ?? true) {
    const router = installIndexedDbRouter()
    yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          router.claim({ prefixes: [cryptoPrefix], exact: [`matrix-js-sdk:${syncStoreName}`] }, durable.factory),
        catch: ioFailure(dir, "Registering the store's IndexedDB names")
      }),
      (release) => Effect.sync(release)
    )
  }

  const files = [cryptoFile, stateFile] as const

  const flush = Effect.try({
    try: () => {
      for (const f of files) f.checkpoint()
    },
    catch: ioFailure(dir, "Flushing the Matrix store")
  })

  const rewrap = (newPassphrase: Redacted.Redacted<string>) =>
    Effect.gen(function*() {
      if (!secret.encrypted) {
        return yield* Effect.fail(
          new CryptoStoreError({
            kind: "encrypted-state-io",
            path: dir,
            message: "The Matrix store is unencrypted (matrix.encrypted=false); there is no store key to re-wrap."
          })
        )
      }
      const next = Redacted.value(newPassphrase)
      if (next.trim() === "") {
        return yield* Effect.fail(
          new CryptoStoreError({
            kind: "missing-store-secret",
            path: dir,
            message: "The new store passphrase is empty; give a non-empty passphrase."
          })
        )
      }
      for (const f of files) {
        yield* Effect.tryPromise({
          try: () => f.rewrap(next),
          catch: ioFailure(f.path, `Re-wrapping the key of ${f.path}`)
        })
      }
    })

  const storageKey = Option.fromNullable(cryptoFile.dataKey).pipe(Option.map((k) => Redacted.make(new Uint8Array(k))))

  return {
    indexedDB: durable.factory,
    cryptoDatabasePrefix: prefix,
    syncStoreName,
    storageKey,
    paths: { crypto: cryptoPath, state: statePath },
    flush,
    rewrap,
    stats: Effect.sync(() => ({ ...durable.stats }))
  } satisfies CryptoStoreShape
})

/** The CryptoStore service, open for the life of the layer's scope. */
export const CryptoStoreLive = (options: CryptoStoreOptions) => Layer.scoped(CryptoStore, makeCryptoStore(options))

/** The same, with options computed by an effect (e.g. the passphrase from StorePassphrase). */
export const CryptoStoreLiveFrom = <E, R>(options: Effect.Effect<CryptoStoreOptions, E, R>) =>
  Layer.scoped(CryptoStore, Effect.flatMap(options, makeCryptoStore))

/**
 * Offline re-wrap for the rekey program: with the store closed (this takes its lock), makes both files'
 * data keys open with `newPassphrase`. Idempotent: a file that already opens with the new passphrase is
 * left alone, so a rerun after an interruption between the two files finishes the job.
 */
export const rewrapCryptoStore = Effect.fn("CryptoStore.rewrap")(function*(
  oldPassphrase: Redacted.Redacted<string>,
  newPassphrase: Redacted.Redacted<string>
) {
  const stateDir = yield* StateDir
  for (const [rel, role] of [[CRYPTO_FILE, CRYPTO_ROLE], [STATE_FILE, STATE_ROLE]] as const) {
    const file = stateDir.resolve(rel)
    if (!fs.existsSync(file)) continue
    yield* Effect.scoped(
      Effect.gen(function*() {
        const already = yield* openFile(file, role, { encrypted: true, passphrase: Redacted.value(newPassphrase) })
          .pipe(
            Effect.as(true),
            Effect.catchIf((e) => e.kind === "encrypted-store-passphrase-mismatch", () => Effect.succeed(false))
          )
        if (already) return
        yield* Effect.scoped(
          Effect.gen(function*() {
            const f = yield* openFile(file, role, { encrypted: true, passphrase: Redacted.value(oldPassphrase) })
            yield* ownerFile(stateDir, file)
            yield* Effect.tryPromise({
              try: () => f.rewrap(Redacted.value(newPassphrase)),
              catch: ioFailure(file, `Re-wrapping the key of ${file}`)
            })
          })
        )
      })
    )
  }
})
