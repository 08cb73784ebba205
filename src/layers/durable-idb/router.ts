// The process-wide `globalThis.indexedDB`, routed by database name.
//
// crypto-wasm reads `globalThis.indexedDB` whenever it opens its databases, so there is only one global
// per process; yet a test process runs two clients (bot and human), and each durable store must see only
// its own databases. The router is that global: a durable store claims its names (the crypto prefix
// `<prefix>::`, the sync store's `matrix-js-sdk:<name>`), and every other name goes to an in-memory
// fallback factory (what a non-durable client such as the test's human uses). Claims may not overlap.
//
// Assigning `globalThis.indexedDB = x` replaces the fallback, not the router. Importing
// `fake-indexeddb/auto` after the router is installed redefines the property and bypasses it: don't.
import * as fakeIdb from "fake-indexeddb"
import type { IdbFactory } from "./internals.js"

type Factory = IdbFactory

export interface NameClaim {
  /** Names starting with one of these belong to the claimant. */
  readonly prefixes: ReadonlyArray<string>
  /** Exact names that belong to the claimant. */
  readonly exact: ReadonlyArray<string>
}

interface Claim extends NameClaim {
  readonly factory: Factory
}

const matches = (claim: NameClaim, name: string) =>
  claim.exact.includes(name) || claim.prefixes.some((p) => name.startsWith(p))

const overlaps = (a: NameClaim, b: NameClaim) =>
  a.prefixes.some((p) => b.prefixes.some((q) => p.startsWith(q) || q.startsWith(p))) ||
  a.exact.some((e) => matches(b, e)) ||
  b.exact.some((e) => matches(a, e))

export class IndexedDbRouter extends fakeIdb.IDBFactory implements IdbFactory {
  fallback: Factory = new fakeIdb.IDBFactory()
  private readonly claims: Array<Claim> = []

  /** The factory that serves `name`. */
  pick(name: string): Factory {
    return this.claims.find((c) => matches(c, name))?.factory ?? this.fallback
  }

  /** Routes `claim` to `factory` until the returned release function runs. Throws on an overlap. */
  claim(claim: NameClaim, factory: Factory): () => void {
    const clash = this.claims.find((c) => overlaps(c, claim))
    if (clash !== undefined) {
      throw new Error(
        `IndexedDB names ${
          JSON.stringify([...claim.prefixes.map((p) => `${p}*`), ...claim.exact])
        } are already claimed by another store in this process; give each store its own crypto prefix and sync store name`
      )
    }
    const entry: Claim = { prefixes: [...claim.prefixes], exact: [...claim.exact], factory }
    this.claims.push(entry)
    return () => {
      const i = this.claims.indexOf(entry)
      if (i !== -1) this.claims.splice(i, 1)
    }
  }

  open(name: string, version?: number) {
    const target = this.pick(String(name))
    // FDBFactory.open distinguishes "no version" by arity.
    return version === undefined ? target.open(name) : target.open(name, version)
  }

  cmp(first: unknown, second: unknown): number {
    return this.fallback.cmp(first, second)
  }

  deleteDatabase(name: string) {
    return this.pick(String(name)).deleteDatabase(name)
  }

  async databases() {
    const all = await Promise.all([this.fallback, ...this.claims.map((c) => c.factory)].map((f) => f.databases()))
    return all.flat()
  }
}

let router: IndexedDbRouter | undefined

const CLASSES: ReadonlyArray<readonly [string, unknown]> = [
  ["IDBCursor", fakeIdb.IDBCursor],
  ["IDBCursorWithValue", fakeIdb.IDBCursorWithValue],
  ["IDBDatabase", fakeIdb.IDBDatabase],
  ["IDBFactory", fakeIdb.IDBFactory],
  ["IDBIndex", fakeIdb.IDBIndex],
  ["IDBKeyRange", fakeIdb.IDBKeyRange],
  ["IDBObjectStore", fakeIdb.IDBObjectStore],
  ["IDBOpenDBRequest", fakeIdb.IDBOpenDBRequest],
  ["IDBRequest", fakeIdb.IDBRequest],
  ["IDBTransaction", fakeIdb.IDBTransaction],
  ["IDBVersionChangeEvent", fakeIdb.IDBVersionChangeEvent]
]

/** Installs the router as `globalThis.indexedDB` (once per process) and returns it. */
export const installIndexedDbRouter = (): IndexedDbRouter => {
  const g = globalThis as Record<string, unknown>
  if (router !== undefined && g["indexedDB"] === router) return router
  const r = router ?? new IndexedDbRouter()
  const previous = g["indexedDB"]
  // A factory installed before us (e.g. fake-indexeddb/auto) keeps serving the names nobody claims.
  if (previous !== undefined && previous !== r && previous instanceof fakeIdb.IDBFactory) {
    r.fallback = previous as Factory
  }
  Object.defineProperty(globalThis, "indexedDB", {
    configurable: true,
    enumerable: false,
    get: () => r,
    set: (value: unknown) => {
      if (value instanceof fakeIdb.IDBFactory && value !== r) r.fallback = value as Factory
    }
  })
  for (const [name, cls] of CLASSES) {
    if (g[name] === undefined) {
      Object.defineProperty(globalThis, name, { configurable: true, writable: true, enumerable: false, value: cls })
    }
  }
  router = r
  return r
}
