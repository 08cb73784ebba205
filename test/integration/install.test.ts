// The installable package: `npm pack`, then `npm install -g` of the tarball into a fresh prefix with the
// machine's own npm and Node (20 here) first on PATH, then the installed `cara` runs (on the Node 24 it
// depends on). Slow (a real install from the registry; the local npm cache helps), hence integration tier.
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"

const root = path.resolve(".")
const work = fs.mkdtempSync(path.join(os.tmpdir(), "cara-install-"))
// async: removing the installed tree (Node 24 alone is 120 MB) must not block the worker either
afterAll(() => fs.promises.rm(work, { recursive: true, force: true }), 300_000)

// The caller's PATH without the project's node_modules/.bin (which holds Node 24 when run by `npm test`):
// the install must work with the system Node and npm, as a user's machine has them.
const systemPath = (process.env["PATH"] ?? "").split(path.delimiter).filter((p) => !p.includes("node_modules")).join(
  path.delimiter
)
const baseEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { PATH: systemPath }
  for (const key of ["HOME", "LANG", "TMPDIR"]) if (process.env[key] !== undefined) env[key] = process.env[key]
  // how this machine reaches the registry (a TLS-inspecting proxy's CA, proxies, npm's own settings): a user's
  // shell has them too, and without them the install cannot fetch a thing
  for (const [key, value] of Object.entries(process.env)) {
    if (
      value !== undefined &&
      /^(NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|(https?|no)_proxy|npm_config_(registry|cafile|ca|proxy|https_proxy|strict_ssl))$/i
        .test(key)
    ) {
      env[key] = value
    }
  }
  return { ...env, ...extra }
}

// Asynchronous on purpose: a minute-long spawnSync blocks the vitest worker and its RPC times out.
const sh = (cmd: string, args: ReadonlyArray<string>, opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) =>
  new Promise<string>((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd ?? root,
      env: opts.env ?? baseEnv(),
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()))
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()))
    child.on("error", reject)
    child.on(
      "close",
      (code, signal) =>
        code === 0
          ? resolve(stdout)
          : reject(new Error(`${cmd} ${args.join(" ")} exited ${code ?? signal}:\n${stdout}${stderr}`))
    )
  })

describe("npm pack + npm install -g", () => {
  it("installs a working cara into a fresh prefix", { timeout: 600_000 }, async () => {
    if (!fs.existsSync(path.join(root, "dist/cli/bin.js"))) throw new Error("run `npm run build` first")
    // dist/ is already built (npm test builds first): no need to run `prepare` again
    const packed = JSON.parse(
      await sh("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", work])
    ) as Array<{
      filename: string
      size: number
      files: Array<{ path: string }>
    }>
    const tarball = path.join(work, packed[0]!.filename)
    const files = packed[0]!.files.map((f) => f.path)
    expect(files).toContain("bin/cara.cjs")
    expect(files).toContain("dist/cli/bin.js")
    // the bundle replaces the compiled modules: none of dist/src is shipped
    expect(files.filter((f) => f.startsWith("dist/src/"))).toEqual([])
    expect(files).toContain("package.json")
    // only what runs: no tests, no TypeScript sources, no source maps of sources that are not shipped
    expect(
      files.filter((f) => f.startsWith("test/") || f.startsWith("src/") || f.endsWith(".ts") || f.endsWith(".map"))
    ).toEqual([])

    const prefix = path.join(work, "prefix")
    const started = Date.now()
    await sh("npm", ["install", "-g", "--prefix", prefix, "--prefer-offline", "--no-audit", "--no-fund", tarball])
    const installMs = Date.now() - started
    console.log(
      `cara tarball ${packed[0]!.size} bytes, ${files.length} files; install into a fresh prefix took ${
        Math.round(installMs / 1000)
      } s`
    )

    const cara = path.join(prefix, "bin", "cara")
    expect(fs.existsSync(cara)).toBe(true)
    const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { version: string }
    // on PATH, from the prefix, with the system Node as the only `node` there
    const env = (extra: Record<string, string> = {}) =>
      baseEnv({ ...extra, PATH: `${path.join(prefix, "bin")}${path.delimiter}${systemPath}` })
    expect((await sh("cara", ["--version"], { cwd: work, env: env() })).trim()).toBe(pkg.version)

    // the same file run by the system Node (its JavaScript half): it starts cara's own Node 24 too
    const launcher = path.join(prefix, "lib", "node_modules", "cara", "bin", "cara.cjs")
    expect((await sh("node", [launcher, "--version"], { cwd: work, env: env() })).trim()).toBe(pkg.version)

    const stateDir = path.join(work, "state")
    fs.mkdirSync(stateDir, { mode: 0o700 })
    fs.writeFileSync(path.join(stateDir, "carapace.json5"), `{ gateway: { port: 18789 } }\n`, { mode: 0o600 })
    const check = await sh("cara", ["config", "check"], { cwd: work, env: env({ CARAPACE_STATE_DIR: stateDir }) })
    expect(check).toContain(`Config file: ${path.join(stateDir, "carapace.json5")}`)
    expect(check).toMatch(/OK \(0 warning\(s\)\)/)
  })
})
