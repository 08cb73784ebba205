import { Context, type Effect, type Option, type Redacted } from "effect"
import type { CryptoStoreError } from "../domain/cryptoStore.js"

/**
 * The IndexedDB factory surface (fake-indexeddb's own typings name DOM types this project does not load;
 * requests are loosely typed for the same reason).
 */
export interface IdbFactory {
  open(name: string, version?: number): any
  deleteDatabase(name: string): any
  databases(): Promise<Array<{ readonly name: string; readonly version: number }>>
  cmp(first: unknown, second: unknown): number
}

/** How the store is protected at rest (the reference's `matrix.encrypted` and store passphrase). */
export type CryptoStoreSecret =
  | {
    readonly encrypted: true
    /** The store passphrase (resolved by StorePassphrase). `None` fails with `missing-store-secret`. */
    readonly passphrase: Option.Option<Redacted.Redacted<string>>
  }
  | { readonly encrypted: false }

export interface CryptoStoreOptions {
  readonly secret: CryptoStoreSecret
  /** `cryptoDatabasePrefix` for `initRustCrypto`; default `"cara"`. Distinct per store in one process. */
  readonly cryptoDatabasePrefix?: string
  /** `dbName` for matrix-js-sdk's `IndexedDBStore`; default `"cara-sync"`. Distinct per store in one process. */
  readonly syncStoreName?: string
  /**
   * Route this store's names through `globalThis.indexedDB` (default true): crypto-wasm only reads the
   * global. Other names keep going to an in-memory fallback, so a second, non-durable client in the same
   * process (the tests' human) is not affected.
   */
  readonly installGlobal?: boolean
}

export interface CryptoStoreStats {
  /** IndexedDB transactions written to SQLite since open. */
  readonly commits: number
  /** Transactions that were aborted because the disk write failed. */
  readonly failedCommits: number
  readonly lastError: string | undefined
}

/**
 * The durable, encrypted IndexedDB the Matrix layer runs matrix-js-sdk on. Scoped: the store is open
 * (and owned exclusively by this process) for the life of the scope, flushed and closed on release.
 *
 * The Matrix layer uses it as:
 * ```ts
 * const store = new IndexedDBStore({ indexedDB: cs.indexedDB, dbName: cs.syncStoreName })
 * await client.initRustCrypto({ cryptoDatabasePrefix: cs.cryptoDatabasePrefix, storageKey: Option.getOrUndefined(Option.map(cs.storageKey, Redacted.value)) })
 * ```
 *
 * Release order: the client must be stopped, its in-flight sync processing finished and the sync store
 * saved (`store.save(true)`) before this scope closes; a transaction begun after the release aborts
 * (nothing acknowledged is lost, but matrix-js-sdk logs "Error passing sync changes to the crypto layer").
 */
export interface CryptoStoreShape {
  /** This store's IndexedDB factory (every committed transaction is on disk before `complete`). */
  readonly indexedDB: IdbFactory
  readonly cryptoDatabasePrefix: string
  readonly syncStoreName: string
  /** The crypto file's 32-byte data key, for `initRustCrypto({ storageKey })`; `None` when unencrypted. */
  readonly storageKey: Option.Option<Redacted.Redacted<Uint8Array>>
  /** The two SQLite files (`{state_dir}/matrix/matrix-sdk-crypto.sqlite3`, `…/matrix-sdk-state.sqlite3`). */
  readonly paths: { readonly crypto: string; readonly state: string }
  /** Checkpoints the WAL of both files (commits are durable already; this only compacts). */
  readonly flush: Effect.Effect<void, CryptoStoreError>
  /** Re-wraps both data keys under a new passphrase: one small row per file; data is not rewritten. */
  readonly rewrap: (newPassphrase: Redacted.Redacted<string>) => Effect.Effect<void, CryptoStoreError>
  readonly stats: Effect.Effect<CryptoStoreStats>
}

export class CryptoStore extends Context.Tag("cara/CryptoStore")<CryptoStore, CryptoStoreShape>() {}
