// Promise helpers over the raw IndexedDB API, shared by the CryptoStore tests, the crash child and the bench.
import { Effect, Layer, Option, Redacted, type Scope } from "effect"
import type { CryptoStoreError } from "../../src/domain/cryptoStore.js"
import type { StateDirError } from "../../src/domain/errors.js"
import { CryptoStoreLive, makeCryptoStore } from "../../src/layers/CryptoStoreLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import type { CryptoStore, CryptoStoreOptions, CryptoStoreShape, IdbFactory } from "../../src/services/CryptoStore.js"

export type Db = any
export type Tx = any

export const request = <T = unknown>(req: any): Promise<T> =>
  new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result as T)
    req.onerror = (e: any) => {
      e?.preventDefault?.()
      reject(req.error)
    }
  })

/** Opens `name` at `version`, running `upgrade(db, tx, oldVersion)` when it is an upgrade. */
export const openDb = (
  factory: IdbFactory,
  name: string,
  version?: number,
  upgrade?: (db: Db, tx: Tx, oldVersion: number) => void
): Promise<Db> =>
  new Promise((resolve, reject) => {
    const req = version === undefined ? factory.open(name) : factory.open(name, version)
    req.onupgradeneeded = (e: any) => upgrade?.(req.result, req.transaction, e.oldVersion)
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
    req.onblocked = () => reject(new Error(`open ${name} blocked`))
  })

/** Resolves on `complete`, rejects on `abort`. */
export const done = (tx: Tx): Promise<void> =>
  new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve()
    tx.onabort = () => reject(tx.error ?? new Error("aborted"))
  })

export const deleteDb = (factory: IdbFactory, name: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const req = factory.deleteDatabase(name)
    req.onsuccess = () => resolve()
    req.onerror = () => reject(req.error)
  })

export const passphrase = (p: string) => ({ encrypted: true as const, passphrase: Option.some(Redacted.make(p)) })

export type StoreOptions = Partial<CryptoStoreOptions> & { readonly secret?: CryptoStoreOptions["secret"] }

const withDefaults = (options: StoreOptions): CryptoStoreOptions => ({
  secret: passphrase("correct horse battery staple"),
  installGlobal: false,
  ...options
})

/** Opens the store under `root` for the duration of `body`, then closes it. */
export const withStore = <A>(
  root: string,
  options: StoreOptions,
  body: (store: CryptoStoreShape) => Promise<A>
): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function*() {
        const store = yield* makeCryptoStore(withDefaults(options))
        return yield* Effect.promise(() => body(store))
      })
    ).pipe(Effect.provide(StateDirAt(root)))
  )

/** Opens the store and returns the typed failure, if any (the store is closed again either way). */
export const openFailure = (
  root: string,
  options: StoreOptions
): Promise<CryptoStoreError | StateDirError | undefined> =>
  Effect.runPromise(
    Effect.scoped(makeCryptoStore(withDefaults(options))).pipe(
      Effect.provide(StateDirAt(root)),
      Effect.flip,
      Effect.map((e) => e as CryptoStoreError | StateDirError | undefined),
      Effect.catchAll(() => Effect.succeed(undefined))
    )
  )

/** The store as a layer (for code that wants the service tag). */
export const storeLayer = (
  root: string,
  options: StoreOptions
): Layer.Layer<CryptoStore, CryptoStoreError | StateDirError> =>
  CryptoStoreLive(withDefaults(options)).pipe(Layer.provide(StateDirAt(root)))

export type Scoped<A> = Effect.Effect<A, CryptoStoreError | StateDirError, Scope.Scope>
