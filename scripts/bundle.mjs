// Bundles the compiled CLI (dist/src, from `tsc -p tsconfig.build.json`) into dist/cli: one ES module per
// entry and per lazily imported command, with the Effect packages tree-shaken into shared chunks.
// `cara --help` then loads a handful of files instead of ~800 modules (issue 19 §5; docs/benchmarks.md).
// Packages that find files next to themselves (the WASM crypto) or are large and self-contained stay
// external and are resolved from node_modules as before; no package that depends on `effect` may be
// external, so there is only one copy of Effect's runtime.
import * as esbuild from "esbuild"
import * as fs from "node:fs"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")
const entry = path.join(root, "dist/src/cli/bin.js")
const out = path.join(root, "dist/cli")

export const EXTERNAL = [
  "matrix-js-sdk",
  "@matrix-org/*",
  "fake-indexeddb",
  "openai",
  "@anthropic-ai/sdk",
  "markdown-it",
  "sanitize-html",
  "matrix-encrypt-attachment",
  "json5"
]

if (!fs.existsSync(entry)) {
  process.stderr.write("bundle: dist/src/cli/bin.js is missing; run `tsc -p tsconfig.build.json` first\n")
  process.exit(1)
}
// built beside the old bundle and swapped in, so a failed build leaves the previous one whole
const tmp = `${out}.tmp-${process.pid}`
fs.rmSync(tmp, { recursive: true, force: true })
const result = await esbuild.build({
  entryPoints: [entry],
  outdir: tmp,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node24",
  external: EXTERNAL,
  chunkNames: "[name]-[hash]",
  legalComments: "none",
  // smaller files to read and parse; identifiers kept, so stack traces still name functions
  minifyWhitespace: true,
  minifySyntax: true,
  // CommonJS dependencies bundled into ES modules (ws, ...) still `require` Node's built-ins
  banner: {
    js:
      "import { createRequire as __caraCreateRequire } from \"node:module\"; const require = __caraCreateRequire(import.meta.url);"
  },
  logLevel: "warning"
})
if (result.errors.length > 0) process.exit(1)
fs.rmSync(out, { recursive: true, force: true })
fs.renameSync(tmp, out)
