// Two parties on crypto-wasm's OlmMachine, each on its own durable store in this one process (the
// router keeps their databases apart); the test plays the homeserver. After both sides restart from
// disk: same device identity keys, cross-signing keys still there, no new key upload, the existing Olm
// session is reused (no one-time-key claim; the bot's one-time key is gone, so only the stored inbound
// session can decrypt), and the old Megolm message still decrypts.
import * as wasm from "@matrix-org/matrix-sdk-crypto-wasm"
import { Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import type { CryptoStoreShape } from "../../src/services/CryptoStore.js"
import { withStore } from "../support/cryptostore-child.idb.js"
import { tmpDir } from "../support/tmp.js"

const BOT = "@bot:example.org"
const ALICE = "@alice:example.org"

const work = tmpDir("cara-cs-olm-")

/** What the pretend homeserver remembers between the two runs. */
interface Server {
  deviceKeys: Record<string, unknown>
  otks: Record<string, Record<string, unknown>>
  uploadsWithDeviceKeys: number
}

const machineOn = async (store: CryptoStoreShape, user: string, device: string) => {
  const key = Redacted.value(Option.getOrThrow(store.storageKey))
  const handle = await wasm.StoreHandle.openWithKey(store.cryptoDatabasePrefix, key)
  return wasm.OlmMachine.initFromStore(new wasm.UserId(user), new wasm.DeviceId(device), handle)
}

/** Answers every outgoing request of `m` like a homeserver would. */
const pump = async (m: wasm.OlmMachine, user: string, server: Server) => {
  for (const r of await m.outgoingRequests()) {
    const req = r as { id: string; type: wasm.RequestType; body: string }
    if (req.type === wasm.RequestType.KeysUpload) {
      const body = JSON.parse(req.body) as { device_keys?: unknown; one_time_keys?: Record<string, unknown> }
      if (body.device_keys !== undefined) {
        server.deviceKeys[user] = body.device_keys
        server.uploadsWithDeviceKeys++
      }
      server.otks[user] = { ...server.otks[user], ...body.one_time_keys }
      const count = Object.keys(server.otks[user] ?? {}).length
      await m.markRequestAsSent(req.id, req.type, JSON.stringify({ one_time_key_counts: { signed_curve25519: count } }))
    } else if (req.type === wasm.RequestType.KeysQuery) {
      const device_keys: Record<string, Record<string, unknown>> = {}
      for (const [u, keys] of Object.entries(server.deviceKeys)) {
        device_keys[u] = { [(keys as { device_id: string }).device_id]: keys }
      }
      await m.markRequestAsSent(req.id, req.type, JSON.stringify({ device_keys, failures: {} }))
    } else {
      await m.markRequestAsSent(req.id, req.type, "{}")
    }
  }
}

const roomEvent = (room: string, content: string) =>
  JSON.stringify({
    type: "m.room.encrypted",
    event_id: `$${Math.random().toString(36).slice(2)}`,
    sender: ALICE,
    origin_server_ts: Date.now(),
    room_id: room,
    content: JSON.parse(content)
  })

const decrypt = async (bot: wasm.OlmMachine, room: string, content: string) => {
  const settings = new wasm.DecryptionSettings(wasm.TrustRequirement.Untrusted)
  const out = await bot.decryptRoomEvent(roomEvent(room, content), new wasm.RoomId(room), settings)
  return (JSON.parse(out.event) as { content: { body: string } }).content.body
}

/** Alice shares a room key with the bot over Olm; returns whether she had to claim a one-time key. */
const shareRoomKey = async (alice: wasm.OlmMachine, bot: wasm.OlmMachine, room: string, server: Server) => {
  const claim = await alice.getMissingSessions([new wasm.UserId(BOT)])
  if (claim) {
    const [keyId, key] = Object.entries(server.otks[BOT] ?? {})[0]!
    delete server.otks[BOT]![keyId] // a homeserver hands out each one-time key once
    const device = (server.deviceKeys[BOT] as { device_id: string }).device_id
    await alice.markRequestAsSent(
      (claim as { id: string }).id,
      wasm.RequestType.KeysClaim,
      JSON.stringify({ one_time_keys: { [BOT]: { [device]: { [keyId]: key } } }, failures: {} })
    )
  }
  const events: Array<unknown> = []
  for (
    const req of await alice.shareRoomKey(new wasm.RoomId(room), [new wasm.UserId(BOT)], new wasm.EncryptionSettings())
  ) {
    const body = JSON.parse(req.body) as { messages: Record<string, Record<string, unknown>> }
    for (const devices of Object.values(body.messages)) {
      for (const content of Object.values(devices)) events.push({ sender: ALICE, type: req.event_type, content })
    }
    await alice.markRequestAsSent(req.id, wasm.RequestType.ToDevice, "{}")
  }
  expect(events.length).toBe(1)
  await bot.receiveSyncChanges(
    JSON.stringify(events),
    new wasm.DeviceLists(),
    new Map([["signed_curve25519", 49]]),
    new Set()
  )
  return claim !== undefined && claim !== null
}

describe("Olm/Megolm state across a restart of both parties", () => {
  it("reuses identity, cross-signing keys and the Olm session; old Megolm messages still decrypt", async () => {
    const botRoot = path.join(work, "bot")
    const aliceRoot = path.join(work, "alice")
    const botOpts = { installGlobal: true, cryptoDatabasePrefix: "bot", syncStoreName: "bot-sync" }
    const aliceOpts = { installGlobal: true, cryptoDatabasePrefix: "alice", syncStoreName: "alice-sync" }
    const server: Server = { deviceKeys: {}, otks: {}, uploadsWithDeviceKeys: 0 }
    const both = <A>(body: (bot: CryptoStoreShape, alice: CryptoStoreShape) => Promise<A>) =>
      withStore(botRoot, botOpts, (b) => withStore(aliceRoot, aliceOpts, (a) => body(b, a)))

    // Run 1
    const first = await both(async (botStore, aliceStore) => {
      const bot = await machineOn(botStore, BOT, "BOTDEVICE")
      const alice = await machineOn(aliceStore, ALICE, "ALICEDEVICE")
      await bot.bootstrapCrossSigning(true)
      await pump(bot, BOT, server)
      await pump(alice, ALICE, server)
      await alice.updateTrackedUsers([new wasm.UserId(BOT)])
      await bot.updateTrackedUsers([new wasm.UserId(ALICE)])
      await pump(alice, ALICE, server)
      await pump(bot, BOT, server)
      const claimed = await shareRoomKey(alice, bot, "!one:example.org", server)
      const m1 = await alice.encryptRoomEvent(
        new wasm.RoomId("!one:example.org"),
        "m.room.message",
        JSON.stringify({ msgtype: "m.text", body: "before restart" })
      )
      const body = await decrypt(bot, "!one:example.org", m1)
      const status = await bot.crossSigningStatus()
      const result = {
        claimed,
        body,
        m1,
        botEd: bot.identityKeys.ed25519.toBase64(),
        botCurve: bot.identityKeys.curve25519.toBase64(),
        aliceCurve: alice.identityKeys.curve25519.toBase64(),
        crossSigning: [status.hasMaster, status.hasSelfSigning, status.hasUserSigning]
      }
      bot.close()
      alice.close()
      return result
    })
    expect(first.claimed).toBe(true)
    expect(first.body).toBe("before restart")
    expect(first.crossSigning).toEqual([true, true, true])
    const uploadsAfterFirstRun = server.uploadsWithDeviceKeys
    expect(uploadsAfterFirstRun).toBe(2)

    // Run 2: both stores rebuilt from their files
    const second = await both(async (botStore, aliceStore) => {
      const bot = await machineOn(botStore, BOT, "BOTDEVICE")
      const alice = await machineOn(aliceStore, ALICE, "ALICEDEVICE")
      await pump(bot, BOT, server)
      await pump(alice, ALICE, server)
      const status = await bot.crossSigningStatus()
      const claimed = await shareRoomKey(alice, bot, "!two:example.org", server)
      const m2 = await alice.encryptRoomEvent(
        new wasm.RoomId("!two:example.org"),
        "m.room.message",
        JSON.stringify({ msgtype: "m.text", body: "after restart" })
      )
      const result = {
        claimed,
        newBody: await decrypt(bot, "!two:example.org", m2),
        oldBody: await decrypt(bot, "!one:example.org", first.m1),
        botEd: bot.identityKeys.ed25519.toBase64(),
        botCurve: bot.identityKeys.curve25519.toBase64(),
        aliceCurve: alice.identityKeys.curve25519.toBase64(),
        crossSigning: [status.hasMaster, status.hasSelfSigning, status.hasUserSigning]
      }
      bot.close()
      alice.close()
      return result
    })
    expect(second.botEd).toBe(first.botEd)
    expect(second.botCurve).toBe(first.botCurve)
    expect(second.aliceCurve).toBe(first.aliceCurve)
    expect(second.crossSigning).toEqual([true, true, true])
    expect(server.uploadsWithDeviceKeys).toBe(uploadsAfterFirstRun) // no new device
    expect(second.claimed).toBe(false) // the Olm session was reused
    expect(second.newBody).toBe("after restart")
    expect(second.oldBody).toBe("before restart")
  }, 60_000)
})
