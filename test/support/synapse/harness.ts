// Starts a throwaway Synapse on 127.0.0.1 for the integration tests: a free port, a fresh temp data dir,
// a rendered homeserver.yaml, /health polling, users via the shared-secret admin API, and a stop() that
// always leaves no process and no data dir behind.
import { type ChildProcess, spawn } from "node:child_process"
import { createHmac, randomBytes } from "node:crypto"
import { closeSync, openSync } from "node:fs"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { createServer } from "node:net"
import os from "node:os"
import path from "node:path"
import { type ProvisionOptions, provisionSynapse } from "./provision.js"

export const SERVER_NAME = "localhost"
const READY_TIMEOUT_MS = 60_000
const STOP_GRACE_MS = 10_000
const HIGH = { per_second: 10_000, burst_count: 10_000 } as const

export interface RegisteredUser {
  readonly userId: string
  readonly password: string
  readonly accessToken: string
  /** the device the registration itself created (it has no keys; a client logs in to get its own) */
  readonly deviceId: string
}

export interface RegisterOptions {
  readonly admin?: boolean
}

export interface StartSynapseOptions {
  /** start with a low rc_message (for rate-limit tests); every other limit stays off */
  readonly strictMessageRateLimit?: { readonly perSecond: number; readonly burst: number }
  /** forwarded to provisionSynapse */
  readonly provision?: ProvisionOptions
  /**
   * name the server by its own address (`127.0.0.1:<port>`) instead of `localhost`, so that a user id's server
   * name leads to this homeserver (server discovery, `.well-known` tests)
   */
  readonly serverNameIsAddress?: boolean
}

const serverNameFor = (port: number, options: StartSynapseOptions) =>
  options.serverNameIsAddress === true ? `127.0.0.1:${port}` : SERVER_NAME

export interface SynapseServer {
  readonly baseUrl: string
  readonly serverName: string
  readonly registrationSecret: string
  readonly synapseVersion: string
  /** a user registered as server admin at start (for admin API calls) */
  readonly adminToken: string
  readonly pid: number
  readonly dataDir: string
  /** wall time from spawn to the first 200 from /health */
  readonly readyMs: number
  registerUser(localpart?: string, password?: string, options?: RegisterOptions): Promise<RegisteredUser>
  /** the last lines of Synapse's own log (for failure messages) */
  logTail(lines?: number): Promise<string>
  stop(): Promise<void>
}

/** A port the kernel just handed out on loopback. Synapse binds it a moment later; a lost race is retried. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on("error", reject)
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address()
      srv.close(() => {
        if (addr !== null && typeof addr === "object") resolve(addr.port)
        else reject(new Error("could not get a free port"))
      })
    })
  })

const randomSecret = () => randomBytes(24).toString("base64url")

const renderConfig = (
  port: number,
  dataDir: string,
  secrets: { registration: string; macaroon: string; form: string },
  options: StartSynapseOptions
): string => {
  const strict = options.strictMessageRateLimit
  const config = {
    server_name: serverNameFor(port, options),
    public_baseurl: `http://127.0.0.1:${port}/`,
    report_stats: false,
    listeners: [{
      port,
      bind_addresses: ["127.0.0.1"],
      type: "http",
      tls: false,
      x_forwarded: false,
      resources: [{ names: ["client"], compress: false }]
    }],
    database: { name: "sqlite3", args: { database: path.join(dataDir, "homeserver.db") } },
    media_store_path: path.join(dataDir, "media"),
    signing_key_path: path.join(dataDir, "server.signing.key"),
    registration_shared_secret: secrets.registration,
    enable_registration: false,
    macaroon_secret_key: secrets.macaroon,
    form_secret: secrets.form,
    // never talk to any other server
    trusted_key_servers: [],
    federation_domain_whitelist: [],
    presence: { enabled: false },
    url_preview_enabled: false,
    enable_metrics: false,
    bcrypt_rounds: 4,
    // every rate limit off (Complement and Element's test setups do the same), unless a test asks for rc_message
    rc_message: strict ? { per_second: strict.perSecond, burst_count: strict.burst } : HIGH,
    rc_registration: HIGH,
    rc_registration_token_validity: HIGH,
    rc_login: { address: HIGH, account: HIGH, failed_attempts: HIGH },
    rc_joins: { local: HIGH, remote: HIGH },
    rc_joins_per_room: HIGH,
    rc_invites: { per_room: HIGH, per_user: HIGH, per_issuer: HIGH },
    rc_key_requests: HIGH,
    rc_3pid_validation: HIGH,
    rc_third_party_invite: HIGH,
    rc_admin_redaction: HIGH,
    rc_room_creation: HIGH,
    rc_presence: { per_user: HIGH },
    rc_delayed_event_mgmt: HIGH,
    rc_reports: HIGH,
    rc_user_directory: HIGH,
    rc_media_create: HIGH
  }
  // JSON is valid YAML, and serialising it cannot produce an indentation or quoting mistake.
  return `# generated by test/support/synapse/harness.ts for one test run\n${JSON.stringify(config, null, 2)}\n`
}

/** Shared-secret registration (Synapse admin API): nonce, then HMAC-SHA1 over nonce\0user\0password\0admin-flag. */
export const registerWithSharedSecret = async (
  baseUrl: string,
  registrationSecret: string,
  localpart: string = `u-${randomBytes(5).toString("hex")}`,
  password: string = randomSecret(),
  options: RegisterOptions = {}
): Promise<RegisteredUser> => {
  const url = `${baseUrl}/_synapse/admin/v1/register`
  const nonceRes = await fetch(url)
  if (!nonceRes.ok) throw new Error(`GET ${url} answered ${nonceRes.status}: ${await nonceRes.text()}`)
  const { nonce } = (await nonceRes.json()) as { nonce: string }
  const admin = options.admin === true
  const mac = createHmac("sha1", registrationSecret)
    .update(`${nonce}\0${localpart}\0${password}\0${admin ? "admin" : "notadmin"}`)
    .digest("hex")
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ nonce, username: localpart, password, admin, mac })
  })
  const body = (await res.json()) as Record<string, unknown>
  if (!res.ok) {
    // the body names the problem (M_USER_IN_USE, M_INVALID_USERNAME ...); it never echoes the secret
    throw new Error(
      `registering ${localpart} failed: ${res.status} ${String(body["errcode"])} ${String(body["error"])}`
    )
  }
  return {
    userId: String(body["user_id"]),
    password,
    accessToken: String(body["access_token"]),
    deviceId: String(body["device_id"])
  }
}

const exited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null

const waitExit = (child: ChildProcess, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    if (exited(child)) return resolve(true)
    const timer = setTimeout(() => {
      child.off("exit", onExit)
      resolve(false)
    }, ms)
    const onExit = () => {
      clearTimeout(timer)
      resolve(true)
    }
    child.once("exit", onExit)
  })

const tailOf = async (file: string, lines: number): Promise<string> => {
  const text = await readFile(file, "utf8").catch(() => "")
  return text.trimEnd().split("\n").slice(-lines).join("\n")
}

class SynapseStartError extends Error {
  override readonly name = "SynapseStartError"
  constructor(message: string, readonly portInUse: boolean) {
    super(message)
  }
}

const startOnce = async (python: string, version: string, options: StartSynapseOptions): Promise<SynapseServer> => {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "cara-synapse-"))
  const port = await freePort()
  const secrets = { registration: randomSecret(), macaroon: randomSecret(), form: randomSecret() }
  const configPath = path.join(dataDir, "homeserver.yaml")
  await writeFile(configPath, renderConfig(port, dataDir, secrets, options), { mode: 0o600 })
  const logPath = path.join(dataDir, "synapse.log")
  const logFd = openSync(logPath, "a", 0o600)
  const t0 = performance.now()
  const child = spawn(python, ["-m", "synapse.app.homeserver", "--config-path", configPath], {
    cwd: dataDir,
    stdio: ["ignore", logFd, logFd],
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1" }
  })
  closeSync(logFd)
  // If this Node process dies without stop(), do not leave an orphan homeserver behind.
  const killOnExit = () => {
    if (!exited(child)) child.kill("SIGKILL")
  }
  process.on("exit", killOnExit)
  let spawnError: Error | undefined
  child.on("error", (e) => {
    spawnError = e
  })

  const baseUrl = `http://127.0.0.1:${port}`
  let stopped: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (!exited(child)) {
        child.kill("SIGTERM")
        if (!(await waitExit(child, STOP_GRACE_MS))) {
          child.kill("SIGKILL")
          await waitExit(child, STOP_GRACE_MS)
        }
      }
      process.off("exit", killOnExit)
      await rm(dataDir, { recursive: true, force: true })
    })()
    return stopped
  }

  const fail = async (why: string): Promise<never> => {
    const logTail = await tailOf(logPath, 40)
    await stop()
    throw new SynapseStartError(
      `Synapse did not become ready on ${baseUrl}: ${why}\n--- last lines of the Synapse log ---\n${logTail}`,
      /Address already in use|CannotListenError/.test(logTail)
    )
  }

  // Readiness: /health answers 200 "OK" once the listener is up and the database is prepared.
  for (;;) {
    if (spawnError) await fail(`could not run ${python}: ${spawnError.message}`)
    if (exited(child)) await fail(`the process exited (code ${child.exitCode}, signal ${child.signalCode})`)
    if (performance.now() - t0 > READY_TIMEOUT_MS) await fail(`no 200 from /health within ${READY_TIMEOUT_MS / 1000} s`)
    const ok = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(2_000) })
      .then((r) => r.ok)
      .catch(() => false)
    if (ok) break
    await new Promise((r) => setTimeout(r, 100))
  }
  const readyMs = performance.now() - t0

  let admin: RegisteredUser
  try {
    admin = await registerWithSharedSecret(baseUrl, secrets.registration, "harness-admin", randomSecret(), {
      admin: true
    })
  } catch (e) {
    return fail(`registering the admin user failed: ${(e as Error).message}`)
  }

  return {
    baseUrl,
    serverName: serverNameFor(port, options),
    registrationSecret: secrets.registration,
    synapseVersion: version,
    adminToken: admin.accessToken,
    pid: child.pid ?? -1,
    dataDir,
    readyMs,
    registerUser: (localpart, password, opts) =>
      registerWithSharedSecret(baseUrl, secrets.registration, localpart, password, opts),
    logTail: (lines = 40) => tailOf(logPath, lines),
    stop
  }
}

/**
 * Provisions (first run only) and starts a fresh Synapse. The caller owns it and must call stop().
 * Throws with the reason and the tail of Synapse's log when it cannot start.
 */
export const startSynapse = async (options: StartSynapseOptions = {}): Promise<SynapseServer> => {
  const provisioned = await provisionSynapse(options.provision ?? {})
  for (let attempt = 1;; attempt++) {
    try {
      return await startOnce(provisioned.python, provisioned.synapseVersion, options)
    } catch (e) {
      // the free port can be taken between our probe and Synapse's bind: try another
      if (e instanceof SynapseStartError && e.portInUse && attempt < 3) continue
      throw e
    }
  }
}
