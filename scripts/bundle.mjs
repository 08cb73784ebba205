// Bundles the compiled CLI (dist/src, from `tsc -p tsconfig.build.json`) into dist/cli: one ES module per
// entry and per lazily imported command, with the Effect packages tree-shaken into shared chunks.
// `cara --help` then loads a handful of files instead of ~800 modules (issue 19 §5; docs/benchmarks.md).
// Packages that find files next to themselves (the WASM crypto) or are large and self-contained stay
// external and are resolved from node_modules as before; no package that depends on `effect` may be
// external, so there is only one copy of Effect's runtime.
import * as esbuild from "esbuild"
import { execFile } from "node:child_process"
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
// `import * as http from "node:http"` makes Node build the module's ES namespace, which reads every export,
// `WebSocket` and friends included: that getter loads Node's bundled undici (~1 MB of JavaScript), ~60 ms of
// every command that talks to the daemon. Taken through `require` instead, the getters stay unread.
const builtinsByRequire = {
  name: "builtins-by-require",
  setup(build) {
    build.onResolve(
      { filter: /^(node:)?https?$/ },
      (args) =>
        args.namespace === "builtin-cjs"
          ? undefined
          : { path: args.path.replace(/^node:/, ""), namespace: "builtin-cjs" }
    )
    build.onLoad({ filter: /.*/, namespace: "builtin-cjs" }, (args) => ({
      contents: `module.exports = require("node:${args.path}")`,
      loader: "js"
    }))
  }
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
  plugins: [builtinsByRequire],
  metafile: true,
  logLevel: "warning"
})
if (result.errors.length > 0) process.exit(1)

// Which sources went into each output file and what it imports, for test/unit/cli-lite.test.ts: the start
// without Effect (src/cli/lite.ts) must stay in chunks that never import Effect's.
const graph = Object.fromEntries(
  Object.entries(result.metafile.outputs).map(([file, o]) => [
    path.basename(file),
    {
      ...(o.entryPoint !== undefined ? { entryPoint: path.relative(root, path.resolve(root, o.entryPoint)) } : {}),
      inputs: Object.keys(o.inputs).map((i) => path.relative(root, path.resolve(root, i))),
      imports: o.imports.map((i) => ({ path: i.external ? i.path : path.basename(i.path), kind: i.kind }))
    }
  ])
)
fs.writeFileSync(path.join(tmp, "bundle-graph.json"), JSON.stringify(graph))

// The help of every command path, as the new bundle prints it, stored for bin.ts to print without the CLI
// framework (src/cli/helpTable.ts). Run from the temporary directory, so the table always matches its bundle.
const helpOf = (words) =>
  new Promise((resolve, reject) => {
    const env = {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "",
      CARA_HELP_TABLE: "off",
      CARA_COMPILE_CACHE: "off"
    }
    execFile(
      process.execPath,
      [path.join(tmp, "bin.js"), ...words, "--help"],
      { env, encoding: "utf8" },
      (e, stdout, stderr) =>
        e !== null || stderr !== ""
          ? reject(new Error(`cara ${words.join(" ")} --help: ${e?.message ?? stderr}`))
          : resolve(stdout)
    )
  })
const rootHelp = await helpOf([])
// the root's COMMANDS list: "  - config check [--json]  …" (the same reading as src/cli/docs.ts's commandPaths)
const paths = [
  ...new Set(
    rootHelp.split("\n").flatMap((line) => {
      const m = /^\s*- ((?:[a-z][\w-]*)(?: [a-z][\w-]*)*)/.exec(line)
      return m === null ? [] : [m[1]]
    })
  )
]
const texts = { "": rootHelp }
for (let i = 0; i < paths.length; i += 2) {
  const batch = paths.slice(i, i + 2)
  const got = await Promise.all(batch.map((p) => helpOf(p.split(" "))))
  batch.forEach((p, j) => (texts[p] = got[j]))
}
const { version } = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"))
fs.writeFileSync(path.join(tmp, "help.json"), JSON.stringify({ version, texts }))
fs.rmSync(out, { recursive: true, force: true })
fs.renameSync(tmp, out)
