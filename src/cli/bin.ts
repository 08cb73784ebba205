#!/usr/bin/env node
// Checked before anything else loads: on Node < 24 matrix-js-sdk stalls silently after its first sync.
const major = Number(process.versions.node.split(".")[0])
if (major < 24) {
  process.stderr.write(
    `cara: Node ${process.versions.node} is too old; cara needs Node >= 24. Run it as \`npx cara\` from the project ` +
      "(npm ci installs Node 24 into node_modules/.bin) or install Node 24.\n"
  )
  process.exit(1)
}
// The daemon re-execs itself once with the V8/malloc settings of a long-running process (src/domain/v8flags.ts).
const { daemonReexec } = await import("../domain/v8flags.js")
const reexec = daemonReexec(process)
if (reexec !== undefined && typeof process.execve === "function") {
  try {
    process.execve(process.execPath, [...reexec.args], reexec.env)
  } catch {
    // not possible here (platform, permissions): run with Node's defaults
  }
}
// Compiled code cached between runs (src/cli/compileCache.ts): most of a command's start is compiling modules.
const { enableCompileCache } = await import("./compileCache.js")
enableCompileCache()
// `cara --version` needs nothing but the package version, and `cara [command…] --help` only the text stored
// at build time (src/cli/helpTable.ts): both are answered before the CLI framework loads.
const args = process.argv.slice(2)
if (args.length === 1 && args[0] === "--version") {
  const { version } = await import("../version.js")
  process.stdout.write(`${version}\n`)
} else if (!(await printStoredHelp(args))) {
  // the commands that only ask the daemon skip the command tree when their arguments are plain (direct.ts), and
  // Effect too when lite.ts can be sure to print what they would; the acting ones (liteActions.ts) skip both or,
  // having sent nothing, go to the tree
  const { readActionArgs, readDirectArgs } = await import("./directArgs.js")
  const direct = readDirectArgs(args)
  const action = direct === undefined ? readActionArgs(args) : undefined
  if (action !== undefined) {
    if (!(await (await import("./liteActions.js")).runLiteAction(action))) (await import("./run.js")).run(process.argv)
  } else if (direct === undefined) (await import("./run.js")).run(process.argv)
  else if (!(await (await import("./lite.js")).runLite(direct.command, direct.flags))) {
    const { gatewayArgs, runDirect } = await import("./direct.js")
    runDirect(direct.command, gatewayArgs(direct.flags))
  }
}

async function printStoredHelp(argv: ReadonlyArray<string>): Promise<boolean> {
  const { helpKey, storedHelp } = await import("./helpTable.js")
  if (helpKey(argv) === undefined) return false
  const { version } = await import("../version.js")
  const text = storedHelp(argv, import.meta.dirname, version)
  if (text === undefined) return false
  process.stdout.write(text)
  return true
}
