// Measurement aids for the memory benches: a tiny Chrome DevTools Protocol client for a daemon started with
// `--inspect=127.0.0.1:0` (evaluate an expression, force a full GC, stream a heap snapshot to a file), and a
// summary of a .heapsnapshot: self size by constructor, and the module source text and compiled code held,
// grouped by the package (or our own file) they belong to.
import * as fs from "node:fs"

// ------------------------------------------------------------------------------------------------ inspector

export interface Inspector {
  readonly evaluate: (expression: string) => Promise<unknown>
  readonly collectGarbage: () => Promise<void>
  readonly heapSnapshot: (file: string) => Promise<void>
  readonly close: () => void
}

/** Connects to the inspector URL the daemon printed ("Debugger listening on ws://..."). */
export const connectInspector = async (output: string): Promise<Inspector> => {
  // the last one: the daemon re-execs itself (src/domain/v8flags.ts), and each process image opens its own
  const url = [...output.matchAll(/Debugger listening on (ws:\/\/\S+)/g)].pop()?.[1]
  if (url === undefined) throw new Error("the daemon printed no inspector URL (was it started with --inspect?)")
  const ws = new WebSocket(url)
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener("open", () => resolve(), { once: true })
    ws.addEventListener("error", () => reject(new Error(`cannot connect to ${url}`)), { once: true })
  })
  let nextId = 1
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  let onChunk: ((chunk: string) => void) | undefined
  ws.addEventListener("message", (ev) => {
    const msg = JSON.parse(String(ev.data)) as {
      id?: number
      method?: string
      params?: { chunk?: string }
      result?: unknown
      error?: { message: string }
    }
    if (msg.method === "HeapProfiler.addHeapSnapshotChunk") onChunk?.(msg.params?.chunk ?? "")
    if (msg.id === undefined) return
    const p = pending.get(msg.id)
    pending.delete(msg.id)
    if (msg.error) p?.reject(new Error(msg.error.message))
    else p?.resolve(msg.result)
  })
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve, reject) => {
      const id = nextId++
      pending.set(id, { resolve, reject })
      ws.send(JSON.stringify({ id, method, params }))
    })
  return {
    evaluate: async (expression) => {
      const r = (await call("Runtime.evaluate", { expression, returnByValue: true })) as {
        result?: { value?: unknown }
      }
      return r.result?.value
    },
    collectGarbage: async () => {
      await call("HeapProfiler.collectGarbage")
    },
    heapSnapshot: async (file) => {
      const fd = fs.openSync(file, "w", 0o600)
      onChunk = (c) => fs.writeSync(fd, c)
      try {
        await call("HeapProfiler.takeHeapSnapshot", { reportProgress: false })
      } finally {
        onChunk = undefined
        fs.closeSync(fd)
      }
    },
    close: () => ws.close()
  }
}

/** process.memoryUsage() of the inspected process, in MB. */
export const memoryUsageMB = async (inspector: Inspector): Promise<Record<string, number>> => {
  const v = (await inspector.evaluate("JSON.stringify(process.memoryUsage())")) as string
  const mu = JSON.parse(v) as Record<string, number>
  return Object.fromEntries(Object.entries(mu).map(([k, b]) => [k, Math.round(b / 2 ** 20)]))
}

// ------------------------------------------------------------------------------------------------ snapshot

interface Snapshot {
  readonly snapshot: {
    readonly meta: {
      readonly node_fields: ReadonlyArray<string>
      readonly node_types: readonly [ReadonlyArray<string>, ...Array<unknown>]
      readonly edge_fields: ReadonlyArray<string>
      readonly edge_types: readonly [ReadonlyArray<string>, ...Array<unknown>]
    }
  }
  readonly nodes: ReadonlyArray<number>
  readonly edges: ReadonlyArray<number>
  readonly strings: ReadonlyArray<string>
}

/** The package a module URL belongs to (`effect`, `@effect/platform`, `node:`), or our own file. */
export const ownerOfUrl = (url: string): string => {
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (pkg) return pkg[1]!
  if (url.startsWith("node:")) return "node:"
  const ours = /\/dist\/(src\/.+)$/.exec(url)
  return ours ? `cara ${ours[1]}` : url === "" ? "(no url)" : "(other)"
}

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1)

const top = (m: Map<string, number>, n: number, unit = (v: number) => `${mb(v)} MB`) =>
  [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${k} ${unit(v)}`).join("; ")

const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v)

/**
 * Reads a .heapsnapshot. A module's Script is a "code" node with an internal `source` edge (its text)
 * and a `name` edge (its URL); a function's SharedFunctionInfo links to its Script through `script`, so
 * compiled code (bytecode, SFIs) can be put on the module that defines it.
 */
export const summariseHeap = (file: string, n = 12) => {
  const s = JSON.parse(fs.readFileSync(file, "utf8")) as Snapshot
  const meta = s.snapshot.meta
  const NF = meta.node_fields.length
  const EF = meta.edge_fields.length
  const types = meta.node_types[0]
  const edgeTypes = meta.edge_types[0]
  const T = meta.node_fields.indexOf("type")
  const NAME = meta.node_fields.indexOf("name")
  const SIZE = meta.node_fields.indexOf("self_size")
  const EC = meta.node_fields.indexOf("edge_count")
  const { edges: E, nodes: N, strings: S } = s
  const firstEdge = new Uint32Array(N.length / NF + 1)
  for (let i = 0, e = 0; i < N.length; i += NF) {
    firstEdge[i / NF] = e
    e += N[i + EC]! * EF
  }
  const edgeName = (k: number) => {
    const t = edgeTypes[E[k]!]
    return t === "element" || t === "hidden" ? String(E[k + 1]) : S[E[k + 1]!]!
  }
  const child = (i: number, name: string): number | undefined => {
    for (let k = firstEdge[i / NF]!, end = k + N[i + EC]! * EF; k < end; k += EF) {
      if (edgeName(k) === name) return E[k + 2]
    }
    return undefined
  }

  let total = 0
  const byConstructor = new Map<string, number>()
  const counts = new Map<string, number>()
  const scriptUrl = new Map<number, string>()
  const sources = new Map<string, number>()
  const sourcesByOwner = new Map<string, number>()
  for (let i = 0; i < N.length; i += NF) {
    const type = types[N[i + T]!]!
    const name = S[N[i + NAME]!]!
    const size = N[i + SIZE]!
    total += size
    const key = type === "object" || type === "closure"
      ? `${name}${type === "closure" ? "()" : ""}`
      : `(${type === "hidden" || type === "code" ? name.replace(/ \(.*\)$/, "") : type})`
    add(byConstructor, key, size)
    add(counts, key, 1)
    if (type === "code") {
      const src = child(i, "source")
      const url = child(i, "name")
      if (src !== undefined && url !== undefined && types[N[src + T]!]!.includes("string")) {
        const u = S[N[url + NAME]!]!
        scriptUrl.set(i, u)
        const bytes = N[src + SIZE]!
        add(sources, u.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*\/dist\//, "dist/"), bytes)
        add(sourcesByOwner, ownerOfUrl(u), bytes)
      }
    }
  }
  // compiled code per module: SharedFunctionInfos and what hangs off them (bytecode, feedback metadata)
  const codeByOwner = new Map<string, number>()
  for (let i = 0; i < N.length; i += NF) {
    if (S[N[i + NAME]!] !== "system / SharedFunctionInfo" && !S[N[i + NAME]!]!.startsWith("(")) continue
    const script = child(i, "script")
    if (script === undefined) continue
    const u = scriptUrl.get(script)
    if (u === undefined) continue
    let bytes = N[i + SIZE]!
    for (let k = firstEdge[i / NF]!, end = k + N[i + EC]! * EF; k < end; k += EF) {
      const to = E[k + 2]!
      if (/BytecodeArray|FeedbackMetadata|ScopeInfo/.test(S[N[to + NAME]!]!)) bytes += N[to + SIZE]!
    }
    add(codeByOwner, ownerOfUrl(u), bytes)
  }
  const stringBytes = [...byConstructor].filter(([k]) => /string\)$/.test(k)).reduce((a, [, v]) => a + v, 0)
  const sourceBytes = [...sources.values()].reduce((a, b) => a + b, 0)
  return {
    totalMB: Number(mb(total)),
    stringsMB: Number(mb(stringBytes)),
    moduleSourceMB: Number(mb(sourceBytes)),
    modules: scriptUrl.size,
    byConstructor: [...byConstructor].sort((a, b) => b[1] - a[1]).slice(0, n)
      .map(([k, v]) => `${k} ${mb(v)} MB ×${counts.get(k)}`).join("; "),
    moduleSourceByPackage: top(sourcesByOwner, n),
    biggestModuleSources: top(sources, n, (v) => `${(v / 1024).toFixed(0)} KB`),
    compiledCodeByPackage: top(codeByOwner, n)
  }
}
