#!/bin/sh
":" // ; self=$0; while [ -h "$self" ]; do l=$(readlink "$self"); case $l in /*) self=$l ;; *) self=$(dirname "$self")/$l ;; esac; done
":" // ; dir=$(cd "$(dirname "$self")/.." && pwd -P)
":" // ; for n in "$dir/node_modules/node/bin/node" "$dir/../node/bin/node"; do [ -x "$n" ] && exec "$n" "$dir/dist/cli/bin.js" "$@"; done
":" // ; exec node "$self" "$@"
// The `cara` on PATH. Whatever Node the caller has (a system Node 20 is common), cara runs on the Node 24
// that the package depends on (the `node` package), found from this package's own directory, never from
// the caller's PATH.
//
// Run directly, this file is a shell script (the lines above; JavaScript reads each as a string and a
// comment): it `exec`s cara's Node, so no launcher process stays between cara and its signals or its
// terminal. The two usual layouts are tried (the `node` package nested in cara's node_modules, as in a
// global install, or hoisted beside cara); for any other layout it hands over to the JavaScript below.
//
// Run by a Node (`node bin/cara.cjs`, as the systemd unit does), this is plain CommonJS for any old Node.
"use strict"
const { spawn } = require("node:child_process")
const fs = require("node:fs")
const path = require("node:path")
const { pathToFileURL } = require("node:url")

const pkgDir = path.resolve(__dirname, "..")
const entry = path.join(pkgDir, "dist", "cli", "bin.js")

const findNode = () => {
  try {
    const nodePkg = require.resolve("node/package.json", { paths: [pkgDir] })
    return path.join(path.dirname(nodePkg), "bin", "node")
  } catch {
    return undefined
  }
}
const real = (p) => {
  try {
    return fs.realpathSync(p)
  } catch {
    return p
  }
}

const node = findNode()
if (node === undefined || !fs.existsSync(node)) {
  process.stderr.write(
    `cara: the Node 24 runtime it ships with is missing (no "node" package with its binary under ${pkgDir}).\n` +
      "Reinstall cara (npm install -g <cara tarball>) with install scripts allowed for the node package, or run `npm ci` in the checkout.\n"
  )
  process.exit(1)
} else if (real(process.execPath) === real(node)) {
  // already cara's own Node: run in this process
  import(pathToFileURL(entry).href)
} else {
  const child = spawn(node, [entry, ...process.argv.slice(2)], { stdio: "inherit" })
  // The terminal sends SIGINT / SIGHUP / SIGQUIT to the whole process group, cara included; passing them on
  // would deliver them twice (and a second SIGINT stops cara at once). So only SIGTERM is passed on (a
  // `kill` aimed at this process), the others are left for cara to handle.
  for (const sig of ["SIGINT", "SIGHUP", "SIGQUIT"]) process.on(sig, () => {})
  process.on("SIGTERM", () => child.kill("SIGTERM"))
  child.on("error", (e) => {
    process.stderr.write(`cara: cannot start ${node}: ${e.message}\n`)
    process.exit(1)
  })
  child.on("exit", (code, signal) => {
    if (signal !== null) {
      // die the same way, so the caller sees the signal rather than a plain exit code
      for (const sig of ["SIGINT", "SIGHUP", "SIGQUIT", "SIGTERM"]) process.removeAllListeners(sig)
      process.kill(process.pid, signal)
      return
    }
    process.exit(code === null ? 1 : code)
  })
}
