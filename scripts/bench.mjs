// `npm run bench`: runs every bench/*.ts (each prints one JSON object on its last stdout line) several
// times, and writes docs/benchmarks.md with the command, the machine, the date, and each figure as the
// median with its spread (min–max) over the runs. Figures, not pass/fail: nothing here is a test.
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const root = path.resolve(new URL("..", import.meta.url).pathname)
const runs = Number(process.env.BENCH_RUNS ?? 3)
const only = process.argv.slice(2)
const viteNode = path.join(root, "node_modules/vite-node/vite-node.mjs")

const benches = fs.readdirSync(path.join(root, "bench"))
  .filter((f) => f.endsWith(".ts") && !f.startsWith("_"))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()

// Flattens {a: {b: 1}} into [["a.b", 1]]; only numbers are figures.
const flatten = (value, prefix = "") =>
  typeof value === "number"
    ? [[prefix, value]]
    : value !== null && typeof value === "object" && !Array.isArray(value)
    ? Object.entries(value).flatMap(([k, v]) => flatten(v, prefix === "" ? k : `${prefix}.${k}`))
    : []

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}
const fmt = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(Math.abs(x) < 10 ? 3 : 1))

const sections = []
for (const file of benches) {
  const samples = []
  let notes = {}
  for (let i = 1; i <= runs; i++) {
    process.stderr.write(`bench ${file}: run ${i}/${runs}\n`)
    const result = spawnSync(process.execPath, [viteNode, path.join("bench", file)], {
      cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 64 * 1024 * 1024
    })
    const last = result.stdout.trim().split("\n").pop() ?? ""
    if (result.status !== 0) throw new Error(`bench ${file} failed (exit ${result.status})`)
    const parsed = JSON.parse(last)
    notes = Object.fromEntries(Object.entries(parsed).filter(([, v]) => typeof v === "string"))
    samples.push(new Map(flatten(parsed)))
  }
  const keys = [...samples[0].keys()]
  const rows = keys.map((k) => {
    const xs = samples.map((s) => s.get(k)).filter((x) => typeof x === "number")
    return `| ${k} | ${fmt(median(xs))} | ${fmt(Math.min(...xs))} – ${fmt(Math.max(...xs))} |`
  })
  const noteLines = Object.entries(notes).map(([k, v]) => `- ${k}: ${v}`)
  sections.push([`## ${file.replace(/\.ts$/, "")}`, "", ...noteLines, "", "| figure | median | spread (min – max) |", "| --- | --- | --- |", ...rows, ""].join("\n"))
}

const cpu = os.cpus()
const header = [
  "# Benchmarks",
  "",
  `Written by \`npm run bench\` (BENCH_RUNS=${runs}${only.length ? `, only ${only.join(" ")}` : ""}) on ${new Date().toISOString()}.`,
  "",
  `Machine: ${cpu.length} × ${cpu[0]?.model ?? "unknown CPU"}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB memory, ` +
    `${os.type()} ${os.release()}, Node ${process.versions.node}.`,
  "",
  "Each figure is the median over the runs, with the smallest and largest value seen. Times in ms unless the",
  "name says otherwise; sizes in bytes; RSS in MB.",
  ""
].join("\n")

fs.mkdirSync(path.join(root, "docs"), { recursive: true })
fs.writeFileSync(path.join(root, "docs/benchmarks.md"), header + "\n" + sections.join("\n"))
process.stderr.write(`wrote docs/benchmarks.md (${benches.length} bench${benches.length === 1 ? "" : "es"}, ${runs} runs each)\n`)
