#!/usr/bin/env node
// The `cara` on PATH. Whatever Node runs this file (a system Node 20 is common), cara itself runs on the
// Node 24 that the package depends on (the `node` package), found from this package's own directory and
// never from the caller's PATH. Plain CommonJS so that any old Node can execute it.
"use strict"
const { spawn } = require("node:child_process")
const path = require("node:path")

const pkgDir = path.resolve(__dirname, "..")
const entry = path.join(pkgDir, "dist", "src", "cli", "bin.js")

const findNode = () => {
  try {
    // resolved from the package directory: nested (global install) or hoisted (a project's dependency)
    const nodePkg = require.resolve("node/package.json", { paths: [pkgDir] })
    return path.join(path.dirname(nodePkg), "bin", "node")
  } catch {
    return undefined
  }
}

const node = findNode()
if (node === undefined) {
  process.stderr.write(
    `cara: the Node 24 runtime it ships with is missing (no "node" package under ${pkgDir}).\n` +
      "Reinstall cara (npm install -g <cara tarball>) with install scripts enabled, or run `npm ci` in the checkout.\n"
  )
  process.exit(1)
}

const child = spawn(node, [entry, ...process.argv.slice(2)], { stdio: "inherit" })
// Signals sent to this process (not to the terminal's process group) are passed on: cara shuts down cleanly.
const forward = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"]
for (const sig of forward) process.on(sig, () => child.kill(sig))
child.on("error", (e) => {
  process.stderr.write(`cara: cannot start ${node}: ${e.message}\n`)
  process.exit(1)
})
child.on("exit", (code, signal) => {
  if (signal !== null) {
    // die the same way, so the caller sees the signal rather than a plain exit code
    for (const sig of forward) process.removeAllListeners(sig)
    process.kill(process.pid, signal)
    return
  }
  process.exit(code === null ? 1 : code)
})
