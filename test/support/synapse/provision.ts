// Installs the pinned Synapse (test/support/synapse-requirements.txt) into the git-ignored virtualenv
// `<repo>/.venv-synapse`, once. A stamp file records the hash of the requirements file, so an unchanged
// file costs one stat + read, and a changed one reinstalls from scratch. A mkdir-based lock next to the venv
// keeps two concurrent test runs from installing into the same directory at once.
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import { existsSync } from "node:fs"
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises"
import path from "node:path"
import { fileURLToPath } from "node:url"

export const REQUIREMENTS_RELATIVE = "test/support/synapse-requirements.txt"
export const VENV_DIRNAME = ".venv-synapse"
const STAMP_NAME = ".cara-provisioned.json"
const MIN_PYTHON: readonly [number, number] = [3, 10]
// Synapse refuses to start on an older SQLite (it checks at database open).
const MIN_SQLITE: readonly [number, number, number] = [3, 37, 2]
const LOCK_WAIT_MS = 15 * 60_000

export class SynapseProvisionError extends Error {
  override readonly name = "SynapseProvisionError"
  constructor(
    readonly kind:
      | "python_missing"
      | "python_too_old"
      | "venv_unavailable"
      | "sqlite_too_old"
      | "pypi_unreachable"
      | "pip_failed"
      | "import_failed"
      | "lock_timeout",
    message: string
  ) {
    super(message)
  }
}

export interface ProvisionedSynapse {
  readonly repoRoot: string
  readonly venvDir: string
  /** the venv's python: run `python -m synapse.app.homeserver` with it */
  readonly python: string
  readonly synapseVersion: string
  /** true when this call installed (cold path), false when the stamp matched */
  readonly installed: boolean
  /** wall time of the install (venv + pip + import check), 0 when nothing was installed */
  readonly installMs: number
}

export interface ProvisionOptions {
  /** repository root; found by walking up from this file when omitted */
  readonly repoRoot?: string
  /** progress lines; stderr by default */
  readonly log?: (line: string) => void
}

const defaultLog = (line: string) => {
  process.stderr.write(`[synapse] ${line}\n`)
}

/** The repository root: the nearest ancestor of this file that holds the requirements file. */
export const findRepoRoot = (): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(path.join(dir, REQUIREMENTS_RELATIVE))) return dir
    const parent = path.dirname(dir)
    if (parent === dir) {
      throw new Error(`cannot find ${REQUIREMENTS_RELATIVE} above ${fileURLToPath(import.meta.url)}`)
    }
    dir = parent
  }
}

interface RunResult {
  readonly code: number | null
  readonly output: string
}

const run = (command: string, args: ReadonlyArray<string>, env?: NodeJS.ProcessEnv): Promise<RunResult> =>
  new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: env ?? process.env })
    const chunks: Array<Buffer> = []
    child.stdout.on("data", (c: Buffer) => chunks.push(c))
    child.stderr.on("data", (c: Buffer) => chunks.push(c))
    // ENOENT and friends arrive as "error"; report them as a failed run rather than throwing.
    child.on("error", (e) => resolve({ code: null, output: String(e.message) }))
    child.on("close", (code) => resolve({ code, output: Buffer.concat(chunks).toString("utf8") }))
  })

const tail = (text: string, lines = 25): string => text.trimEnd().split("\n").slice(-lines).join("\n")

const versionAtLeast = (have: ReadonlyArray<number>, want: ReadonlyArray<number>): boolean => {
  for (let i = 0; i < want.length; i++) {
    const h = have[i] ?? 0
    const w = want[i] ?? 0
    if (h !== w) return h > w
  }
  return true
}

interface PythonInfo {
  readonly command: string
  readonly version: ReadonlyArray<number>
  readonly sqlite: ReadonlyArray<number>
}

const probePython = async (command: string): Promise<PythonInfo | undefined> => {
  const r = await run(command, [
    "-c",
    "import sys, sqlite3; print('.'.join(map(str, sys.version_info[:3]))); print(sqlite3.sqlite_version)"
  ])
  if (r.code !== 0) return undefined
  const [py, sq] = r.output.trim().split("\n")
  if (py === undefined || sq === undefined) return undefined
  return { command, version: py.split(".").map(Number), sqlite: sq.trim().split(".").map(Number) }
}

/** Finds a python >= 3.10: $CARA_SYNAPSE_PYTHON if set, else the usual names on PATH. */
export const findPython = async (): Promise<PythonInfo> => {
  const explicit = process.env["CARA_SYNAPSE_PYTHON"]
  const candidates = explicit
    ? [explicit]
    : ["python3", "python3.14", "python3.13", "python3.12", "python3.11", "python3.10", "python"]
  const found: Array<PythonInfo> = []
  for (const c of candidates) {
    const info = await probePython(c)
    if (info === undefined) continue
    if (versionAtLeast(info.version, MIN_PYTHON)) return info
    found.push(info)
  }
  const need = `Python >= ${MIN_PYTHON.join(".")}`
  if (found.length === 0) {
    throw new SynapseProvisionError(
      "python_missing",
      `the integration tests need ${need} to run Synapse, and none was found ` +
        `(tried ${candidates.join(", ")}). Install it (Debian/Ubuntu: apt-get install python3 python3-venv), ` +
        `or point CARA_SYNAPSE_PYTHON at one, or set CARA_SKIP_SYNAPSE=1 to skip the integration tests.`
    )
  }
  throw new SynapseProvisionError(
    "python_too_old",
    `the integration tests need ${need} to run Synapse; found only ` +
      found.map((f) => `${f.command} ${f.version.join(".")}`).join(", ") +
      `. Install a newer Python (Debian/Ubuntu: apt-get install python3 python3-venv) and/or point ` +
      `CARA_SYNAPSE_PYTHON at it, or set CARA_SKIP_SYNAPSE=1 to skip the integration tests.`
  )
}

const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex")

interface Stamp {
  readonly requirementsSha256: string
  readonly synapseVersion: string
  readonly python: string
}

const readStamp = async (venvDir: string): Promise<Stamp | undefined> => {
  try {
    const raw: unknown = JSON.parse(await readFile(path.join(venvDir, STAMP_NAME), "utf8"))
    if (typeof raw !== "object" || raw === null) return undefined
    const r = raw as Record<string, unknown>
    if (typeof r["requirementsSha256"] !== "string" || typeof r["synapseVersion"] !== "string") return undefined
    return {
      requirementsSha256: r["requirementsSha256"],
      synapseVersion: r["synapseVersion"],
      python: typeof r["python"] === "string" ? r["python"] : ""
    }
  } catch {
    return undefined
  }
}

const venvPython = (venvDir: string) => path.join(venvDir, "bin", "python")

const upToDate = async (venvDir: string, reqHash: string): Promise<Stamp | undefined> => {
  const stamp = await readStamp(venvDir)
  if (stamp === undefined || stamp.requirementsSha256 !== reqHash) return undefined
  if (!existsSync(venvPython(venvDir))) return undefined
  return stamp
}

const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    // EPERM: it exists but belongs to someone else
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** mkdir is atomic: whoever creates the directory holds the lock; a lock whose owner died is taken over. */
const acquireLock = async (lockDir: string, log: (line: string) => void): Promise<() => Promise<void>> => {
  const ownerFile = path.join(lockDir, "owner")
  const started = Date.now()
  let announced = false
  for (;;) {
    try {
      await mkdir(lockDir)
      await writeFile(ownerFile, `${process.pid}\n`)
      return async () => {
        await rm(lockDir, { recursive: true, force: true })
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
    }
    const owner = Number.parseInt(await readFile(ownerFile, "utf8").catch(() => ""), 10)
    const ownerDead = Number.isFinite(owner) ? !pidAlive(owner) : false
    // No owner file yet: the other process is between mkdir and writeFile; a very old one is a leftover.
    if (ownerDead || (!Number.isFinite(owner) && Date.now() - started > 10_000)) {
      log(`removing a stale install lock ${lockDir} (its process is gone)`)
      await rm(lockDir, { recursive: true, force: true })
      continue
    }
    if (Date.now() - started > LOCK_WAIT_MS) {
      throw new SynapseProvisionError(
        "lock_timeout",
        `another process (pid ${owner}) has been installing Synapse for over ${LOCK_WAIT_MS / 60_000} min ` +
          `(lock ${lockDir}). If no test run is active, remove that directory and retry.`
      )
    }
    if (!announced) {
      log(`waiting for another test run (pid ${owner}) that is installing Synapse...`)
      announced = true
    }
    await sleep(500)
  }
}

const NETWORK_PATTERNS = [
  /Could not fetch URL/i,
  /NewConnectionError/i,
  /Failed to establish a new connection/i,
  /Temporary failure in name resolution/i,
  /Name or service not known/i,
  /Connection refused/i,
  /Network is unreachable/i,
  /Read timed out/i,
  /ConnectTimeoutError/i,
  /ProxyError/i,
  /SSLError/i
]

const install = async (
  repoRoot: string,
  venvDir: string,
  requirements: string,
  reqHash: string,
  log: (line: string) => void
): Promise<{ version: string; ms: number }> => {
  const t0 = Date.now()
  const py = await findPython()
  if (!versionAtLeast(py.sqlite, MIN_SQLITE)) {
    throw new SynapseProvisionError(
      "sqlite_too_old",
      `${py.command} ${py.version.join(".")} links SQLite ${py.sqlite.join(".")}, but Synapse needs SQLite >= ` +
        `${MIN_SQLITE.join(".")}. Use a Python built against a newer SQLite (CARA_SYNAPSE_PYTHON=/path/to/python3).`
    )
  }
  const rel = path.relative(repoRoot, venvDir) || venvDir
  log(`installing Synapse into ${rel} (first run, ~1 min) with ${py.command} ${py.version.join(".")}...`)
  // A half-built or outdated venv is never patched in place: start clean so the result equals the pinned set.
  await rm(venvDir, { recursive: true, force: true })
  const venv = await run(py.command, ["-m", "venv", venvDir])
  if (venv.code !== 0) {
    await rm(venvDir, { recursive: true, force: true })
    throw new SynapseProvisionError(
      "venv_unavailable",
      `${py.command} -m venv failed, so Synapse cannot be installed for the integration tests. ` +
        `On Debian/Ubuntu install the venv module (apt-get install python3-venv), or point ` +
        `CARA_SYNAPSE_PYTHON at a Python that has it.\n${tail(venv.output)}`
    )
  }
  log(`downloading and installing the pinned packages from PyPI (${REQUIREMENTS_RELATIVE})...`)
  const pip = await run(
    venvPython(venvDir),
    [
      "-m",
      "pip",
      "install",
      "--disable-pip-version-check",
      "--no-input",
      "--only-binary=matrix-synapse",
      "--prefer-binary",
      "-r",
      requirements
    ],
    // pip's default retries and timeout would make an offline machine wait minutes before it says so; one
    // retry is kept because pip only prints the connection error when it retries
    { ...process.env, PIP_RETRIES: process.env["PIP_RETRIES"] ?? "1", PIP_DEFAULT_TIMEOUT: "30", PIP_TIMEOUT: "30" }
  )
  if (pip.code !== 0) {
    await rm(venvDir, { recursive: true, force: true })
    const networkLine = pip.output.split("\n").find((l) => NETWORK_PATTERNS.some((p) => p.test(l)))
    // "(from versions: none)" for an exact pin means the index answered nothing at all
    const nothingOnIndex = /\(from versions: none\)/.test(pip.output)
    throw networkLine !== undefined || nothingOnIndex
      ? new SynapseProvisionError(
        "pypi_unreachable",
        `pip could not reach PyPI (or the configured index found no packages) to install Synapse for the ` +
          `integration tests. Check the network or proxy (pip honours HTTPS_PROXY, PIP_INDEX_URL and pip.conf), ` +
          `then rerun; or set CARA_SKIP_SYNAPSE=1 to skip the integration tests.\n` +
          (networkLine === undefined ? "" : `${networkLine.trim()}\n`) +
          tail(pip.output, 8)
      )
      : new SynapseProvisionError(
        "pip_failed",
        `pip could not install ${REQUIREMENTS_RELATIVE} into ${rel} (exit ${pip.code}). The last lines of its ` +
          `output say why:\n${tail(pip.output)}`
      )
  }
  const check = await run(venvPython(venvDir), [
    "-c",
    // synapse.__version__ appends git details when the venv sits inside a git checkout: read the dist metadata
    "import importlib.metadata, synapse.app.homeserver; print(importlib.metadata.version('matrix-synapse'))"
  ])
  if (check.code !== 0) {
    await rm(venvDir, { recursive: true, force: true })
    throw new SynapseProvisionError(
      "import_failed",
      `Synapse installed but does not import (a broken dependency set in ${REQUIREMENTS_RELATIVE}?):\n${
        tail(check.output)
      }`
    )
  }
  const version = check.output.trim().split("\n").pop() ?? "unknown"
  const stamp: Stamp = { requirementsSha256: reqHash, synapseVersion: version, python: py.version.join(".") }
  // The stamp is written last and atomically: its presence means the venv is complete.
  const stampPath = path.join(venvDir, STAMP_NAME)
  await writeFile(`${stampPath}.tmp`, JSON.stringify(stamp, null, 2) + "\n")
  await rename(`${stampPath}.tmp`, stampPath)
  const ms = Date.now() - t0
  log(`Synapse ${version} installed in ${(ms / 1000).toFixed(1)} s`)
  return { version, ms }
}

/** Makes sure `.venv-synapse` holds the pinned Synapse; installs it when missing or outdated. */
export const provisionSynapse = async (options: ProvisionOptions = {}): Promise<ProvisionedSynapse> => {
  const log = options.log ?? defaultLog
  const repoRoot = options.repoRoot ?? findRepoRoot()
  const venvDir = path.join(repoRoot, VENV_DIRNAME)
  const requirements = path.join(repoRoot, REQUIREMENTS_RELATIVE)
  const reqHash = sha256(await readFile(requirements, "utf8"))

  const fast = await upToDate(venvDir, reqHash)
  if (fast) {
    return {
      repoRoot,
      venvDir,
      python: venvPython(venvDir),
      synapseVersion: fast.synapseVersion,
      installed: false,
      installMs: 0
    }
  }

  const release = await acquireLock(`${venvDir}.lock`, log)
  try {
    // Someone else may have finished the install while we waited for the lock.
    const again = await upToDate(venvDir, reqHash)
    if (again) {
      return {
        repoRoot,
        venvDir,
        python: venvPython(venvDir),
        synapseVersion: again.synapseVersion,
        installed: false,
        installMs: 0
      }
    }
    const { ms, version } = await install(repoRoot, venvDir, requirements, reqHash, log)
    return { repoRoot, venvDir, python: venvPython(venvDir), synapseVersion: version, installed: true, installMs: ms }
  } finally {
    await release()
  }
}
