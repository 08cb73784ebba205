// The CLI bundle's import graph (dist/cli/bundle-graph.json, written by scripts/bundle.mjs): what a chunk
// loads before it runs, to check that the CLI's fast paths never pull in Effect.
import * as fs from "node:fs"
import * as path from "node:path"

export const BUNDLE_GRAPH = path.resolve("dist/cli/bundle-graph.json")

export interface BundleOutput {
  readonly entryPoint?: string
  readonly inputs: ReadonlyArray<string>
  readonly imports: ReadonlyArray<{ readonly path: string; readonly kind: string }>
}

export const readBundleGraph = () => JSON.parse(fs.readFileSync(BUNDLE_GRAPH, "utf8")) as Record<string, BundleOutput>

/** An Effect module among a chunk's inputs. */
export const EFFECT_INPUT = /node_modules\/(effect|@effect)\//

/**
 * The chunks the output of `entryPoint` (e.g. `dist/src/cli/lite.js`) loads before it runs (static imports;
 * dynamic ones load on demand), with their source inputs and their total size in bytes.
 */
export const staticClosure = (graph: Record<string, BundleOutput>, entryPoint: string) => {
  const entry = Object.entries(graph).find(([, o]) => o.entryPoint === entryPoint)
  if (entry === undefined) throw new Error(`no chunk of ${entryPoint} in ${BUNDLE_GRAPH}`)
  const seen = new Set<string>()
  const queue = [entry[0]]
  while (queue.length > 0) {
    const file = queue.pop()!
    if (seen.has(file)) continue
    seen.add(file)
    for (const i of graph[file]!.imports) if (i.kind !== "dynamic-import" && graph[i.path]) queue.push(i.path)
  }
  const inputs = [...seen].flatMap((f) => graph[f]!.inputs)
  const bytes = [...seen].reduce((n, f) => n + fs.statSync(path.resolve("dist/cli", f)).size, 0)
  return { inputs, bytes }
}
