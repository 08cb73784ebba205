// Recovery key against the real Synapse (issue 9): the first start cross-signs the bot and mints a key that
// opens secret storage; disaster recovery from that key on a new device keeps the identity and the room keys;
// rotation replaces the key on the server. The daemon and the CLI run as real processes (dist/).
import { Effect } from "effect"
import { decodeRecoveryKey, encodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/recovery-key.js"
import { calculateKeyCheck } from "matrix-js-sdk/lib/secret-storage.js"
import * as fs from "node:fs"
import * as path from "node:path"
import { expect, it } from "vitest"
import { runDoctor } from "../../src/programs/doctor.js"
import { runCli } from "../support/cli.js"
import { eventually } from "../support/eventually.js"
import { Human } from "../support/human.js"
import { describeSynapse, type SharedSynapse } from "../support/synapse/index.js"
import { type Bot } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

const until = <A>(what: string, check: () => Promise<A | undefined | false>, timeoutMs = 30_000): Promise<A> =>
  eventually(what, check, { timeoutMs, intervalMs: 200 })

/** A short-lived password session of the bot's account (its own device, logged out by `close`). */
const botSession = async (hs: SharedSynapse, bot: Bot) => {
  const login = await fetch(`${hs.baseUrl}/_matrix/client/v3/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: bot.user.userId },
      password: bot.user.password
    })
  })
  const { access_token: token } = (await login.json()) as { access_token: string }
  const call = async (method: string, p: string, body?: unknown): Promise<{ status: number; json: any }> => {
    const res = await fetch(`${hs.baseUrl}/_matrix/client/v3${p}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" })
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    return { status: res.status, json: await res.json().catch(() => undefined) }
  }
  const accountData = async (type: string) => {
    const r = await call("GET", `/user/${encodeURIComponent(bot.user.userId)}/account_data/${encodeURIComponent(type)}`)
    return r.status === 200 ? r.json : undefined
  }
  return {
    call,
    accountData,
    /** Whether `key` is the default secret-storage key and the cross-signing master key is stored under it. */
    opensSecretStorage: async (key: string): Promise<boolean> => {
      const id = (await accountData("m.secret_storage.default_key"))?.key as string | undefined
      if (id === undefined) return false
      const info = await accountData(`m.secret_storage.key.${id}`)
      const master = await accountData("m.cross_signing.master")
      if (info?.iv === undefined || master?.encrypted?.[id] === undefined) return false
      const { mac } = await calculateKeyCheck(decodeRecoveryKey(key), info.iv)
      return mac.replace(/=+$/, "") === String(info.mac).replace(/=+$/, "")
    },
    masterKey: async (): Promise<string> => {
      const r = await call("POST", "/keys/query", { device_keys: { [bot.user.userId]: [] } })
      return JSON.stringify(r.json.master_keys[bot.user.userId].keys)
    },
    devices: async (): Promise<Array<string>> =>
      ((await call("GET", "/devices")).json.devices as Array<{ device_id: string }>).map((d) => d.device_id),
    close: () => call("POST", "/logout", {})
  }
}

const extraOf = async (bot: Bot) => ((await bot.status())?.["extra"] ?? {}) as Record<string, unknown>

describeSynapse("Matrix recovery key (real daemon, real Synapse)", (hs) => {
  const world = useMatrixWorld(hs)
  const llm = () => world.llm

  const setup = async () => {
    const alice = await world.human()
    const bot = await world.bot({ allowUsers: [alice.userId] })
    return { alice, bot }
  }
  const envOf = (bot: Bot) => bot.cliEnv()
  const cli = (bot: Bot, args: ReadonlyArray<string>, input?: string) =>
    runCli(["matrix", "recovery-key", ...args], envOf(bot), input)
  const show = (bot: Bot) => {
    const r = cli(bot, ["show", "--allow-non-terminal"])
    expect(r.status, r.stderr).toBe(0)
    return r.stdout.trim()
  }
  const deviceOf = (bot: Bot) => /Matrix client synced .*deviceId=(\S+)/.exec(bot.output())?.[1]
  /** Waits until the start-up sequence is through: cross-signing recorded in the channel status. */
  const crossSigned = (bot: Bot) =>
    until(
      "cross-signing in the channel status",
      async () => ["verified", "bootstrapped"].includes(String((await extraOf(bot))["crossSigning"])),
      60_000
    )
  const ask = async (alice: Human, bot: Bot, roomId: string, text: string) => {
    const sent = await alice.sendText(roomId, text)
    await alice.waitForMessage(
      roomId,
      (m) => m.sender === bot.user.userId && (m.content["m.relates_to"] as any)?.["m.in_reply_to"]?.event_id === sent,
      45_000
    )
    return sent
  }

  it(
    "first start: the bot's device is cross-signed by its owner, and the key `show` prints opens secret storage",
    async () => {
      const { alice, bot } = await setup()
      await bot.start()
      await crossSigned(bot)
      const extra = await extraOf(bot)
      expect(extra["crossSigning"]).toBe("verified")
      expect(typeof extra["firstRecoveryKeyMintedAt"]).toBe("number")
      const deviceId = deviceOf(bot)!

      const roomId = await alice.createEncryptedDm(bot.user.userId)
      await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      const status = await until("the human to see the bot's device signed by its owner", async () => {
        const s = await alice.getDeviceVerificationStatus(bot.user.userId, deviceId)
        return s?.signedByOwner === true ? s : undefined
      })
      expect(status.signedByOwner).toBe(true)

      // show reads the file only, so it works while the daemon runs; the key is the only output
      const key = show(bot)
      expect(key).toMatch(/^(?:[1-9A-HJ-NP-Za-km-z]{4} ){11}[1-9A-HJ-NP-Za-km-z]{3,4}$/)
      expect(bot.output()).not.toContain(key)
      const session = await botSession(hs, bot)
      try {
        expect(await session.opensSecretStorage(key)).toBe(true)
        // a server-side key backup exists
        expect((await session.call("GET", "/room_keys/version")).status).toBe(200)
      } finally {
        await session.close()
      }
      await ask(alice, bot, roomId, "still there?")
    },
    240_000
  )

  it(
    "disaster recovery: store lost, key restored, the bot comes back as a new device of the same identity with the old room keys",
    async () => {
      const { alice, bot } = await setup()
      await bot.start()
      await crossSigned(bot)
      const oldDevice = deviceOf(bot)!
      const roomId = await alice.createEncryptedDm(bot.user.userId)
      await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      const preLoss = await ask(alice, bot, roomId, "remember this: the pre-loss secret")
      const sessionId = (await alice.fetchRawEvent(roomId, preLoss)).content["session_id"] as string
      const key = show(bot)

      const session = await botSession(hs, bot)
      let masterBefore: string
      try {
        masterBefore = await session.masterKey()
        // the backup upload lags the key by up to ~10 s: wait until the pre-loss message's key is on the server
        const version = (await session.call("GET", "/room_keys/version")).json.version as string
        await until(
          "the pre-loss room key in the server-side backup",
          async () =>
            (await session.call(
              "GET",
              `/room_keys/keys/${encodeURIComponent(roomId)}/${encodeURIComponent(sessionId)}?version=${version}`
            )).status === 200,
          60_000
        )
      } finally {
        await session.close()
      }
      expect((await bot.stop("SIGTERM")).code).toBe(0)

      // the disaster: everything under matrix/ is gone (stores, ledger, the key file); the operator kept the key
      fs.rmSync(path.join(bot.dir, "matrix"), { recursive: true, force: true })
      const restored = cli(bot, ["restore", "--stdin"], `${key}\n`)
      expect(restored.status, restored.stderr).toBe(0)
      expect(restored.stdout).toContain("Matrix recovery key restored at")
      expect(fs.readFileSync(path.join(bot.dir, "matrix", "recovery_key"), "utf8")).toBe(`${key}\n`)

      // without a password the daemon refuses to reuse the old device id with a fresh store, and creates no store
      await bot.start({ MATRIX_PASSWORD: "" }, /Matrix runtime stopped: .*crypto store of device/)
      expect(bot.output()).toContain(oldDevice)
      expect(fs.existsSync(path.join(bot.dir, "matrix", "matrix-sdk-crypto.sqlite3"))).toBe(false)
      expect((await bot.stop("SIGTERM")).code).toBe(0)

      // with MATRIX_PASSWORD in the daemon's environment the lost device is replaced by a new one (on a
      // pseudo-terminal, where the import of the backup's keys shows its count)
      await bot.start({}, /Matrix client synced/, { terminal: true })
      const newDevice = deviceOf(bot)!
      expect(newDevice).not.toBe(oldDevice)
      expect(bot.output()).toContain("logging in as a new device")
      // every key of the backup (the pre-loss message's session among them, checked above) was decrypted and imported
      const m = await bot.waitForLog(
        /Matrix room keys restored from the key backup.*backupKeysTotal=(\d+).*backupKeysImported=(\d+)/,
        60_000
      )
      expect(Number(m[1])).toBeGreaterThanOrEqual(1)
      expect(Number(m[2])).toBe(Number(m[1]))
      expect(bot.output()).toMatch(/cara: room keys restored from the backup (\d+)\/\1 \(100%\)/)
      await crossSigned(bot)

      const after = await botSession(hs, bot)
      try {
        expect(await after.masterKey()).toBe(masterBefore)
        const devices = await after.devices()
        expect(devices).toContain(newDevice)
        expect(devices).not.toContain(oldDevice)
        // no new mint: the restored key still opens secret storage
        expect(await after.opensSecretStorage(key)).toBe(true)
      } finally {
        await after.close()
      }
      expect(show(bot)).toBe(key)
      await until(
        "the human to see the new device signed by its owner",
        async () =>
          (await alice.getDeviceVerificationStatus(bot.user.userId, newDevice).catch(() => null))?.signedByOwner ===
            true,
        60_000
      )
      await ask(alice, bot, roomId, "are you back?")
    },
    360_000
  )

  it(
    "a token minted elsewhere for a device that never had keys starts a fresh store on that device (no password needed)",
    async () => {
      const { bot } = await setup()
      const login = await fetch(`${hs.baseUrl}/_matrix/client/v3/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          type: "m.login.password",
          identifier: { type: "m.id.user", user: bot.user.userId },
          password: bot.user.password
        })
      })
      const { access_token: token, device_id: deviceId } = (await login.json()) as {
        access_token: string
        device_id: string
      }
      const config = bot.config().replace(
        /password: "\$\{MATRIX_PASSWORD\}",/,
        `accessToken: ${JSON.stringify(token)},\n    deviceId: ${JSON.stringify(deviceId)},`
      )
      expect(config).not.toContain("MATRIX_PASSWORD")
      fs.writeFileSync(bot.configPath, config)
      await bot.start({ MATRIX_PASSWORD: "" })
      expect(deviceOf(bot)).toBe(deviceId)
      expect(bot.output()).not.toContain("logging in as a new device")
      await crossSigned(bot)
    },
    180_000
  )

  it(
    "rotate: the new key opens secret storage and the old one no longer does; the bot starts again and answers",
    async () => {
      const { alice, bot } = await setup()
      await bot.start()
      await crossSigned(bot)
      const roomId = await alice.createEncryptedDm(bot.user.userId)
      await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      await ask(alice, bot, roomId, "before the rotation")
      const oldKey = show(bot)

      // refused while the daemon holds the lock
      const refused = cli(bot, ["rotate", "--yes"])
      expect(refused.status).not.toBe(0)
      expect(refused.stderr + refused.stdout).toMatch(/refused/)
      expect(show(bot)).toBe(oldKey)

      expect((await bot.stop("SIGTERM")).code).toBe(0)
      const rotated = cli(bot, ["rotate", "--yes"])
      expect(rotated.status, rotated.stderr + rotated.stdout).toBe(0)
      expect(rotated.stdout).toContain("Matrix recovery key rotated at")
      const newKey = show(bot)
      expect(newKey).not.toBe(oldKey)
      expect(rotated.stdout + rotated.stderr).not.toContain(newKey)
      for (const f of ["recovery_key.pending", "recovery_key.rotating"]) {
        expect(fs.existsSync(path.join(bot.dir, "matrix", f))).toBe(false)
      }

      const session = await botSession(hs, bot)
      try {
        expect(await session.opensSecretStorage(newKey)).toBe(true)
        expect(await session.opensSecretStorage(oldKey)).toBe(false)
      } finally {
        await session.close()
      }

      await bot.start()
      await crossSigned(bot)
      await ask(alice, bot, roomId, "after the rotation")
    },
    300_000
  )

  it(
    "a garbage or a wrong (well-formed) recovery_key: the daemon refuses with recovery-key-restore-failed and doctor reports it",
    async () => {
      const { bot } = await setup()
      await bot.start()
      await crossSigned(bot)
      const key = show(bot)
      expect((await bot.stop("SIGTERM")).code).toBe(0)
      const K = path.join(bot.dir, "matrix", "recovery_key")
      const env = Object.fromEntries(
        Object.entries(bot.cliEnv()).filter((e): e is [string, string] => e[1] !== undefined)
      )
      const raw = new Uint8Array(32)
      globalThis.crypto.getRandomValues(raw)
      for (
        const [what, content] of [["wrong but well-formed", encodeRecoveryKey(raw)!], [
          "garbage",
          "this is not a recovery key"
        ]] as const
      ) {
        fs.writeFileSync(K, `${content}\n`, { mode: 0o600 })
        // the store holds every key, so no restore is needed: the check against the homeserver still runs
        await bot.start({}, /Matrix runtime stopped: Matrix recovery-key restore failed \(wrong-key\)/)
        expect(bot.output(), what).toContain("cara matrix recovery-key restore")
        const status = await bot.status()
        expect(status?.["status"], what).toBe("error")
        expect((status?.["extra"] as Record<string, unknown>)["lastErrorKind"], what).toBe(
          "recovery-key-restore-failed"
        )
        expect(bot.output()).not.toContain(content)
        expect((await bot.stop("SIGTERM")).code).toBe(0)
        const doctor = await Effect.runPromise(runDoctor({ env }))
        const finding = doctor.findings.find((f) => f.check === "cross-signing")
        expect(finding?.status, `${what}: ${JSON.stringify(finding)}`).toBe("error")
        expect(finding?.kind).toBe("recovery-key-restore-failed")
        expect(finding?.remediation).toContain("cara matrix recovery-key restore")
      }
      // the right key again: doctor says ok, the daemon starts
      fs.writeFileSync(K, `${key}\n`, { mode: 0o600 })
      const doctor = await Effect.runPromise(runDoctor({ env }))
      expect(doctor.findings.find((f) => f.check === "cross-signing")?.status).toBe("ok")
      await bot.start()
      await crossSigned(bot)
    },
    300_000
  )

  it(
    "an interrupted rotation (killed before and after the homeserver step) is resolved by rerunning rotate, or by a daemon start",
    async () => {
      const { alice, bot } = await setup()
      await bot.start()
      await crossSigned(bot)
      const roomId = await alice.createEncryptedDm(bot.user.userId)
      await alice.waitForMembership(roomId, bot.user.userId, "join", 30_000)
      const oldKey = show(bot)
      expect((await bot.stop("SIGTERM")).code).toBe(0)
      const mdir = path.join(bot.dir, "matrix")
      const rotate = (fault?: string) =>
        runCli(["matrix", "recovery-key", "rotate", "--yes"], {
          ...envOf(bot),
          ...(fault === undefined ? {} : { CARA_TEST_FAULT: fault })
        })
      const opens = async (key: string) => {
        const session = await botSession(hs, bot)
        try {
          return await session.opensSecretStorage(key)
        } finally {
          await session.close()
        }
      }

      // killed after the new key was written locally, before the homeserver step: the rerun rolls back and rotates
      const early = rotate("rotate-after:WritePending")
      expect(early.signal, early.stderr).toBe("SIGKILL")
      expect(fs.existsSync(path.join(mdir, "recovery_key.pending"))).toBe(true)
      expect(await opens(oldKey)).toBe(true)
      const rerun1 = rotate()
      expect(rerun1.status, rerun1.stderr + rerun1.stdout).toBe(0)
      expect(rerun1.stdout).toContain("Matrix recovery key rotated at")
      const middleKey = show(bot)
      expect(middleKey).not.toBe(oldKey)
      expect(await opens(middleKey)).toBe(true)

      // killed right after the homeserver installed the new key, before any marker recorded it
      const late = rotate("rotate-after:InstallPending")
      expect(late.signal, late.stderr).toBe("SIGKILL")
      expect(show(bot)).toBe(middleKey)
      const pending = fs.readFileSync(path.join(mdir, "recovery_key.pending"), "utf8").trim()
      expect(await opens(pending)).toBe(true)
      expect(await opens(middleKey)).toBe(false)
      const rerun2 = rotate()
      expect(rerun2.status, rerun2.stderr + rerun2.stdout).toBe(0)
      expect(rerun2.stdout).toContain("was completed")
      expect(show(bot)).toBe(pending)
      for (const f of ["recovery_key.pending", "recovery_key.rotating"]) {
        expect(fs.existsSync(path.join(mdir, f))).toBe(false)
      }

      // the same kill again, resolved this time by a daemon start: it asks the homeserver once it has synced
      const third = rotate("rotate-after:InstallPending")
      expect(third.signal, third.stderr).toBe("SIGKILL")
      const installed = fs.readFileSync(path.join(mdir, "recovery_key.pending"), "utf8").trim()
      await bot.start()
      await crossSigned(bot)
      expect(show(bot)).toBe(installed)
      for (const f of ["recovery_key.pending", "recovery_key.rotating"]) {
        expect(fs.existsSync(path.join(mdir, f))).toBe(false)
      }
      expect(await opens(installed)).toBe(true)
      await ask(alice, bot, roomId, "after the interrupted rotation")
    },
    360_000
  )
})
