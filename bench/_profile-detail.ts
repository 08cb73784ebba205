// A measurement aid (not a bench: the leading underscore keeps scripts/bench.mjs from running it). Reads a
// .cpuprofile and prints, for a window of it, the self time by package and by function, the inclusive time
// ("total": the share of samples with the function anywhere on the stack) of the top functions, and for the
// functions named in --callers the call chains (up to 6 frames) that lead to their self time.
// Run: `vite-node bench/_profile-detail.ts <file.cpuprofile> [--from-ms N] [--to-ms N] [--callers a,b]`.
import * as fs from "node:fs"
import * as path from "node:path"

interface Node {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<Node>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const args = process.argv.slice(2)
const file = args[0]
if (file === undefined) throw new Error("usage: _profile-detail.ts <file.cpuprofile> [--from-ms N] [--to-ms N]")
const opt = (name: string) => {
  const i = args.indexOf(name)
  return i < 0 ? undefined : args[i + 1]
}
const fromUs = Number(opt("--from-ms") ?? 0) * 1000
const toUs = opt("--to-ms") === undefined ? Infinity : Number(opt("--to-ms")) * 1000
const callers = (opt("--callers") ?? "").split(",").filter((s) => s !== "")
const top = Number(opt("--top") ?? 30)
// --match a,b: also list the inclusive time of every function whose label contains one of these
const matches = (opt("--match") ?? "").split(",").filter((s) => s !== "")

const prof = JSON.parse(fs.readFileSync(file, "utf8")) as Profile
const byId = new Map(prof.nodes.map((n) => [n.id, n]))
const parent = new Map<number, number>()
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

const owner = (n: Node): string => {
  const { url, functionName } = n.callFrame
  if (url === "") return functionName.startsWith("(") ? functionName : "(native)"
  if (url.startsWith("wasm://")) return "matrix-sdk-crypto (wasm)"
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (pkg) return pkg[1]!
  if (url.startsWith("node:")) return "node (internals)"
  const ours = /\/(dist\/)?(src\/.+)$/.exec(url)
  return ours ? `cara ${ours[2]}` : path.basename(url)
}
const label = (n: Node) =>
  `${n.callFrame.functionName || "(anonymous)"} (${owner(n)}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ""})`

const selfFn = new Map<string, number>()
const selfPkg = new Map<string, number>()
const total = new Map<string, number>()
const chains = new Map<string, Map<string, number>>()
let busy = 0
let t = 0
prof.samples.forEach((id, i) => {
  const d = prof.timeDeltas[i] ?? 0
  t += d
  if (t < fromUs || t >= toUs) return
  const n = byId.get(id)
  if (n === undefined || n.callFrame.functionName === "(idle)") return
  busy += d
  const l = label(n)
  selfFn.set(l, (selfFn.get(l) ?? 0) + d)
  selfPkg.set(owner(n), (selfPkg.get(owner(n)) ?? 0) + d)
  const seen = new Set<string>()
  const stack: Array<string> = []
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const f = byId.get(cur)!
    const fl = label(f)
    stack.push(fl)
    if (!seen.has(fl)) {
      seen.add(fl)
      total.set(fl, (total.get(fl) ?? 0) + d)
    }
  }
  const wanted = callers.find((c) => l.startsWith(c))
  if (wanted !== undefined) {
    const chain = stack.slice(1, 7).join(" < ")
    const m = chains.get(wanted) ?? new Map<string, number>()
    m.set(chain, (m.get(chain) ?? 0) + d)
    chains.set(wanted, m)
  }
})

const pct = (us: number) => `${((100 * us) / Math.max(1, busy)).toFixed(1)}%`
const list = (m: Map<string, number>, k: number) =>
  [...m].sort((a, b) => b[1] - a[1]).slice(0, k).map(([name, us]) => `  ${pct(us).padStart(6)}  ${name}`).join("\n")
process.stdout.write(`busy ${Math.round(busy / 1000)} ms (window ${fromUs / 1000}–${toUs / 1000} ms)\n`)
process.stdout.write(`\nself by package:\n${list(selfPkg, 20)}\n\nself by function:\n${list(selfFn, top)}\n`)
process.stdout.write(`\ntotal (inclusive) by function:\n${list(total, top * 2)}\n`)
if (matches.length > 0) {
  const picked = new Map([...total].filter(([name]) => matches.some((m) => name.includes(m))))
  process.stdout.write(`\ntotal (inclusive) of ${matches.join(", ")}:\n${list(picked, 60)}\n`)
}
for (const [name, m] of chains) process.stdout.write(`\ncallers of ${name}:\n${list(m, 8)}\n`)
