// A measurement aid, not product code: preloaded into the daemon (`NODE_OPTIONS=--import <this file>`) by
// bench/_modules.ts. It records every module the process resolves (ESM and CommonJS) with the module that
// first imported it, and writes them as JSON to $CARA_BENCH_MODULE_TRACE when the process exits, so the
// bench can say how much source each package brings in and which import chain pulls a big file in.
import { writeFileSync } from "node:fs"
import { registerHooks } from "node:module"

const out = process.env.CARA_BENCH_MODULE_TRACE
const parents = new Map()
registerHooks({
  resolve(specifier, context, nextResolve) {
    const r = nextResolve(specifier, context)
    if (!parents.has(r.url)) parents.set(r.url, { parent: context.parentURL ?? null, specifier })
    return r
  }
})
if (out) process.on("exit", () => writeFileSync(out, JSON.stringify([...parents]), { mode: 0o600 }))
