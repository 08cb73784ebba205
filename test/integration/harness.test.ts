// Self-test of the test harness against the real Synapse: provisioning errors, the shared server, two "humans"
// exchanging encrypted messages, SAS verification both ways of ending, in-room user verification, and a
// strict-rate-limit server that really answers 429.
import { chmod, cp, mkdtemp, rm, stat, writeFile } from "node:fs/promises"
import os from "node:os"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Human } from "../support/human.js"
import { describeSynapse, skipSynapse, startSynapse } from "../support/synapse/index.js"
import {
  findRepoRoot,
  provisionSynapse,
  REQUIREMENTS_RELATIVE,
  SynapseProvisionError
} from "../support/synapse/provision.js"

const processGone = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return false
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH"
  }
}

const withEnv = async <A>(vars: Record<string, string | undefined>, f: () => Promise<A>): Promise<A> => {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]))
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
  try {
    return await f()
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
}

// Provisioning failures must say what is missing and how to fix it. These run real pythons/pips on temp dirs.
describe.skipIf(skipSynapse())("Synapse provisioning errors", () => {
  let tmp: string
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "cara-provision-"))
  })
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true })
  })

  const fakeRepo = async (name: string) => {
    const root = path.join(tmp, name)
    await cp(path.join(findRepoRoot(), REQUIREMENTS_RELATIVE), path.join(root, REQUIREMENTS_RELATIVE), {
      recursive: true
    })
    return root
  }

  it("names the missing Python and the ways out", async () => {
    const root = await fakeRepo("no-python")
    const err = await withEnv(
      { CARA_SYNAPSE_PYTHON: path.join(tmp, "does-not-exist", "python3") },
      () => provisionSynapse({ repoRoot: root, log: () => {} }).then(() => undefined, (e: unknown) => e)
    )
    expect(err).toBeInstanceOf(SynapseProvisionError)
    expect((err as SynapseProvisionError).kind).toBe("python_missing")
    expect((err as Error).message).toMatch(/Python >= 3\.10/)
    expect((err as Error).message).toMatch(/CARA_SKIP_SYNAPSE=1/)
  })

  it("refuses a Python older than 3.10 and says which one it found", async () => {
    const root = await fakeRepo("old-python")
    const fake = path.join(tmp, "python3.8")
    // answers the version probe like an old interpreter would
    await writeFile(fake, "#!/bin/sh\necho 3.8.10\necho 3.31.1\n")
    await chmod(fake, 0o755)
    const err = await withEnv(
      { CARA_SYNAPSE_PYTHON: fake },
      () => provisionSynapse({ repoRoot: root, log: () => {} }).then(() => undefined, (e: unknown) => e)
    )
    expect((err as SynapseProvisionError).kind).toBe("python_too_old")
    expect((err as Error).message).toContain("3.8.10")
  })

  it("says PyPI is unreachable when pip cannot connect, and leaves no half-built venv", async () => {
    const root = await fakeRepo("offline")
    const lines: Array<string> = []
    const err = await withEnv(
      {
        PIP_INDEX_URL: "https://127.0.0.1:9/simple",
        PIP_RETRIES: "1",
        PIP_FIND_LINKS: undefined,
        PIP_NO_INDEX: undefined,
        CARA_SYNAPSE_PYTHON: undefined
      },
      () => provisionSynapse({ repoRoot: root, log: (l) => lines.push(l) }).then(() => undefined, (e: unknown) => e)
    )
    expect((err as SynapseProvisionError).kind).toBe("pypi_unreachable")
    expect((err as Error).message).toMatch(/could not reach PyPI/)
    expect((err as Error).message).toMatch(/Connection refused|Failed to establish a new connection/)
    expect(lines.some((l) => l.includes("installing Synapse into .venv-synapse (first run"))).toBe(true)
    await expect(stat(path.join(root, ".venv-synapse"))).rejects.toThrow(/ENOENT/)
    await expect(stat(path.join(root, ".venv-synapse.lock"))).rejects.toThrow(/ENOENT/)
  })
})

describeSynapse("Synapse harness", (hs) => {
  it("reuses the provisioned venv: a second provision installs nothing", async () => {
    const p = await provisionSynapse({ log: () => {} })
    expect(p.installed).toBe(false)
    expect(p.synapseVersion).toBe(hs.synapseVersion)
    expect(p.synapseVersion).toBe("1.163.2")
  })

  it("serves /health and the client API", async () => {
    const health = await fetch(`${hs.baseUrl}/health`)
    expect(health.status).toBe(200)
    expect(await health.text()).toBe("OK")
    const versions = (await (await fetch(`${hs.baseUrl}/_matrix/client/versions`)).json()) as {
      versions: Array<string>
    }
    expect(versions.versions.length).toBeGreaterThan(0)
    expect(hs.serverName).toBe("localhost")
  })

  it("registers users with the shared secret; they can log in; a taken name is refused", async () => {
    const u = await hs.registerUser("harness-reg", "correct horse")
    expect(u.userId).toBe("@harness-reg:localhost")
    expect(u.accessToken.length).toBeGreaterThan(10)
    const whoami = await fetch(`${hs.baseUrl}/_matrix/client/v3/account/whoami`, {
      headers: { authorization: `Bearer ${u.accessToken}` }
    })
    expect(((await whoami.json()) as { user_id: string }).user_id).toBe(u.userId)
    const login = await fetch(`${hs.baseUrl}/_matrix/client/v3/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: "harness-reg" },
        password: "correct horse"
      })
    })
    expect(login.status).toBe(200)
    await expect(hs.registerUser("harness-reg", "other")).rejects.toThrow(/M_USER_IN_USE/)
  })

  describe("two humans", () => {
    let alice: Human
    let bob: Human
    let roomId: string

    beforeAll(async () => {
      const a = await hs.registerUser()
      const b = await hs.registerUser()
      ;[alice, bob] = await Promise.all([
        Human.login(hs.baseUrl, a.userId, a.password),
        Human.login(hs.baseUrl, b.userId, b.password)
      ])
      await Promise.all([alice.start(), bob.start()])
    })
    afterAll(async () => {
      await alice?.stop()
      await bob?.stop()
    })

    it("exchange encrypted messages in a room and each decrypts the other's", async () => {
      roomId = await alice.createEncryptedDm(bob.userId)
      await bob.joinRoom(roomId)
      await alice.waitForMembership(roomId, bob.userId, "join")

      const fromAlice = await alice.sendText(roomId, "hello bob, the word is pelican")
      const gotByBob = await bob.waitForMessage(roomId, (m) => m.eventId === fromAlice)
      expect(gotByBob).toMatchObject({ sender: alice.userId, body: "hello bob, the word is pelican", encrypted: true })

      const fromBob = await bob.sendText(roomId, "hi alice, pelican received")
      const gotByAlice = await alice.waitForMessage(roomId, (m) => m.body.startsWith("hi alice"))
      expect(gotByAlice).toMatchObject({
        eventId: fromBob,
        sender: bob.userId,
        body: "hi alice, pelican received",
        encrypted: true
      })

      // on the wire (as the server stores them) both are ciphertext that does not contain the text
      for (const id of [fromAlice, fromBob]) {
        const raw = await bob.fetchRawEvent(roomId, id)
        expect(raw.type).toBe("m.room.encrypted")
        expect(raw.content["algorithm"]).toBe("m.megolm.v1.aes-sha2")
        expect(typeof raw.content["ciphertext"]).toBe("string")
        expect(JSON.stringify(raw.content)).not.toContain("pelican")
      }
    })

    it("SAS: one starts, both see the same emoji and decimals, both confirm, each reports the other's device verified", async () => {
      await alice.waitForDevice(bob.userId, bob.deviceId)
      await bob.waitForDevice(alice.userId, alice.deviceId)
      expect((await alice.getDeviceVerificationStatus(bob.userId, bob.deviceId))?.verified).toBe(false)
      expect((await bob.getDeviceVerificationStatus(alice.userId, alice.deviceId))?.verified).toBe(false)

      const seenByHandler: Array<string> = []
      const off = bob.onVerificationRequest((v) => seenByHandler.push(v.otherUserId))
      const outgoing = await alice.requestDeviceVerification(bob.userId, bob.deviceId)
      const incoming = await bob.nextVerificationRequest(20_000, alice.userId)
      off()
      expect(seenByHandler).toEqual([alice.userId])
      expect(incoming.otherDeviceId).toBe(alice.deviceId)
      expect(incoming.roomId).toBeUndefined()
      expect(incoming.phase).toBe("requested")

      await incoming.accept()
      await outgoing.waitForPhase("ready")
      await outgoing.startSas()
      const [sasA, sasB] = await Promise.all([outgoing.waitForSas(), incoming.waitForSas()])

      expect(sasA.emoji).toHaveLength(7)
      expect(sasA.decimals).toHaveLength(3)
      for (const n of sasA.decimals) expect(n).toBeGreaterThanOrEqual(1000)
      for (const e of sasA.emoji) expect(e.symbol.length > 0 && e.description.length > 0).toBe(true)
      expect(sasB.emoji).toEqual(sasA.emoji)
      expect(sasB.decimals).toEqual(sasA.decimals)

      await Promise.all([outgoing.confirm(), incoming.confirm()])
      await Promise.all([outgoing.waitForDone(), incoming.waitForDone()])

      const aliceSeesBob = await alice.waitForDeviceVerified(bob.userId, bob.deviceId)
      const bobSeesAlice = await bob.waitForDeviceVerified(alice.userId, alice.deviceId)
      expect(aliceSeesBob).toMatchObject({ verified: true, localVerified: true })
      expect(bobSeesAlice).toMatchObject({ verified: true, localVerified: true })
    })

    it("SAS mismatch and cancel: the other side sees m.mismatched_sas / m.user and nothing is verified", async () => {
      const c = await hs.registerUser()
      const carol = await Human.login(hs.baseUrl, c.userId, c.password)
      try {
        await carol.start()
        const room = await carol.createEncryptedRoom([alice.userId])
        await alice.joinRoom(room)
        await carol.waitForDevice(alice.userId, alice.deviceId)
        await alice.waitForDevice(carol.userId, carol.deviceId)

        const outgoing = await carol.requestDeviceVerification(alice.userId, alice.deviceId)
        const incoming = await alice.nextVerificationRequest(20_000, carol.userId)
        await incoming.accept()
        await outgoing.waitForPhase("ready")
        await outgoing.startSas()
        await Promise.all([outgoing.waitForSas(), incoming.waitForSas()])
        incoming.mismatch()
        const seen = await outgoing.waitForCancel()
        expect(seen).toEqual({ code: "m.mismatched_sas", by: alice.userId })
        await expect(outgoing.waitForDone(1_000)).rejects.toThrow(/m\.mismatched_sas/)
        expect((await carol.getDeviceVerificationStatus(alice.userId, alice.deviceId))?.verified).toBe(false)
        expect((await alice.getDeviceVerificationStatus(carol.userId, carol.deviceId))?.verified).toBe(false)

        // cancelling a whole request: the peer sees m.user from the canceller
        const second = await carol.requestDeviceVerification(alice.userId, alice.deviceId)
        const secondIn = await alice.nextVerificationRequest(20_000, carol.userId)
        await secondIn.accept()
        await second.waitForPhase("ready")
        await secondIn.cancel()
        expect(await second.waitForCancel()).toEqual({ code: "m.user", by: alice.userId })
      } finally {
        await carol.stop()
      }
    })

    it("in-room user verification after both bootstrap cross-signing", async () => {
      await Promise.all([alice.bootstrapCrossSigning(), bob.bootstrapCrossSigning()])
      await alice.waitForCrossSigningIdentity(bob.userId)
      await bob.waitForCrossSigningIdentity(alice.userId)
      expect(await alice.isUserCrossSigningVerified(bob.userId)).toBe(false)

      const outgoing = await alice.requestVerificationDM(bob.userId, roomId)
      const incoming = await bob.nextVerificationRequest(20_000, alice.userId)
      expect(incoming.roomId).toBe(roomId)
      await incoming.accept()
      await outgoing.waitForPhase("ready")
      await outgoing.startSas()
      const [sasA, sasB] = await Promise.all([outgoing.waitForSas(), incoming.waitForSas()])
      expect(sasB).toEqual(sasA)
      await Promise.all([outgoing.confirm(), incoming.confirm()])
      await Promise.all([outgoing.waitForDone(), incoming.waitForDone()])

      const deadline = Date.now() + 10_000
      while (
        !(await alice.isUserCrossSigningVerified(bob.userId)) || !(await bob.isUserCrossSigningVerified(alice.userId))
      ) {
        if (Date.now() > deadline) throw new Error("user verification did not show on both sides within 10 s")
        await new Promise((r) => setTimeout(r, 50))
      }
      const s = await alice.getDeviceVerificationStatus(bob.userId, bob.deviceId)
      expect(s).toMatchObject({ verified: true, crossSigningVerified: true, signedByOwner: true })
    })
  })

  it("a strict-rate-limit Synapse answers 429 M_LIMIT_EXCEEDED when flooded; stop() leaves nothing behind", async () => {
    const strict = await startSynapse({ strictMessageRateLimit: { perSecond: 0.2, burst: 3 } })
    try {
      const u = await strict.registerUser()
      const auth = { authorization: `Bearer ${u.accessToken}`, "content-type": "application/json" }
      const created = await fetch(`${strict.baseUrl}/_matrix/client/v3/createRoom`, {
        method: "POST",
        headers: auth,
        body: "{}"
      })
      const { room_id } = (await created.json()) as { room_id: string }
      let limited: { status: number; body: Record<string, unknown> } | undefined
      let accepted = 0
      for (let i = 0; i < 30 && limited === undefined; i++) {
        const res = await fetch(
          `${strict.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(room_id)}/send/m.room.message/flood-${i}`,
          { method: "PUT", headers: auth, body: JSON.stringify({ msgtype: "m.text", body: `flood ${i}` }) }
        )
        const body = (await res.json()) as Record<string, unknown>
        if (res.status === 429) limited = { status: res.status, body }
        else if (res.ok) accepted++
      }
      expect(limited?.status).toBe(429)
      expect(limited?.body["errcode"]).toBe("M_LIMIT_EXCEEDED")
      expect(typeof limited?.body["retry_after_ms"]).toBe("number")
      expect(accepted).toBeGreaterThan(0)
    } finally {
      await strict.stop()
    }
    expect(processGone(strict.pid)).toBe(true)
    await expect(stat(strict.dataDir)).rejects.toThrow(/ENOENT/)
  })
})
