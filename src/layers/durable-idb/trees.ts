// Key order and whole-tree building for fake-indexeddb's search trees (an open fills each store's and
// index's tree in one pass, durableIdb.ts fillStore and snapshot.ts).
import { IDBFactory } from "fake-indexeddb"
import type { RawRecord, RawTree } from "./internals.js"

/** Strings shared by many index keys (a sender key, a room id) kept once; a fill's table is dropped after it. */
export const interner = () => {
  const seen = new Map<string, string>()
  const one = (s: string) => {
    const known = seen.get(s)
    if (known !== undefined) return known
    seen.set(s, s)
    return s
  }
  return (key: unknown): unknown => {
    if (typeof key === "string") return one(key)
    if (Array.isArray(key)) {
      for (let i = 0; i < key.length; i++) if (typeof key[i] === "string") key[i] = one(key[i] as string)
    }
    return key
  }
}

/** Appends a record's entries for one index: none without an index key, one per key of a multiEntry array. */
export const pushEntries = (
  out: Array<RawRecord>,
  indexKey: unknown,
  multiEntry: boolean,
  primaryKey: unknown,
  intern: (key: unknown) => unknown
) => {
  if (indexKey === undefined) return
  if (multiEntry && Array.isArray(indexKey)) {
    for (const k of indexKey) out.push({ key: intern(k), value: primaryKey })
  } else out.push({ key: intern(indexKey), value: primaryKey })
}

const fallbackCmp = new IDBFactory()

/**
 * IndexedDB key order with fast paths for the keys stores are full of (strings, numbers, arrays of
 * them); anything else (dates, binary, mixed types) goes to fake-indexeddb's own comparison.
 */
export const compareKeys = (a: unknown, b: unknown): number => {
  const ta = typeof a
  if (ta === typeof b) {
    // JS string comparison is by UTF-16 code unit, as IndexedDB's; -0 and 0 compare equal in both.
    if (ta === "string" || ta === "number") {
      return (a as string) < (b as string)
        ? -1
        : (a as string) > (b as string)
        ? 1
        : 0
    }
    if (Array.isArray(a) && Array.isArray(b)) {
      const n = Math.min(a.length, b.length)
      for (let i = 0; i < n; i++) {
        const c = compareKeys(a[i], b[i])
        if (c !== 0) return c
      }
      return a.length < b.length ? -1 : a.length > b.length ? 1 : 0
    }
  }
  return fallbackCmp.cmp(a, b)
}

/** A tree's own order: by key, then (an index that allows duplicates) by primary key (the entry's value). */
export const treeOrder = (unique: boolean) =>
  unique
    ? (a: RawRecord, b: RawRecord) => compareKeys(a.key, b.key)
    : (a: RawRecord, b: RawRecord) => compareKeys(a.key, b.key) || compareKeys(a.value, b.value)

/** Whether `records` are in the tree's order, each strictly after the one before. */
export const inTreeOrder = (records: ReadonlyArray<RawRecord>, unique: boolean): boolean => {
  const order = treeOrder(unique)
  for (let i = 1; i < records.length; i++) if (order(records[i - 1]!, records[i]!) >= 0) return false
  return true
}

/** Fails loudly when the fake-indexeddb tree internals this relies on moved, or the tree is not empty. */
export const checkEmptyTree = (tree: RawTree) => {
  if (typeof tree._rebuild !== "function" || tree._numNodes !== 0) {
    throw new Error("durable-idb: fake-indexeddb tree internals changed")
  }
}

/** Builds an empty tree from records already in its order (inTreeOrder), balanced in one pass. */
export const setTree = (tree: RawTree, records: ReadonlyArray<RawRecord>) => {
  checkEmptyTree(tree)
  tree._root = tree._rebuild(records, undefined, false)
  tree._numNodes = records.length
  tree._numTombstones = 0
}

/**
 * Builds a whole (empty) tree from its records at once: sorted, then balanced in one pass, instead of
 * one red-black insertion per record (most of the time of opening a large store). Sorted by key only:
 * the sort is stable, and the entries of an index come in primary-key order, which is the tree's order
 * among equal index keys; the check after the sort verifies the tree's full order.
 */
export const bulkLoad = (tree: RawTree, records: Array<RawRecord>, unique: boolean, what: string) => {
  checkEmptyTree(tree)
  records.sort((a, b) => compareKeys(a.key, b.key))
  // The rows were written by committed transactions that IndexedDB's constraints held for.
  if (!inTreeOrder(records, unique)) throw new Error(`durable-idb: duplicate key in ${what}`)
  setTree(tree, records)
}

interface TreeNode {
  readonly record: RawRecord
  readonly left: TreeNode | undefined
  readonly right: TreeNode | undefined
  readonly deleted: boolean
}

/**
 * A tree's live records in order, by walking its nodes (fake-indexeddb's own iteration nests a generator
 * per level: measured ~10x slower over 50,000 records). Undefined when the node layout is not the known one.
 */
export const treeRecords = (tree: RawTree): Array<RawRecord> | undefined => {
  const out: Array<RawRecord> = []
  const stack: Array<TreeNode> = []
  let node = (tree._root ?? undefined) as TreeNode | undefined
  while (node !== undefined || stack.length > 0) {
    while (node !== undefined && node !== null) {
      if (typeof node !== "object" || !("record" in node) || typeof node.deleted !== "boolean") return undefined
      stack.push(node)
      node = node.left
    }
    const top = stack.pop()!
    if (!top.deleted) out.push(top.record)
    node = top.right
  }
  return out
}
