// Real processes: a bot store holding an Olm session and a Megolm room key (crypto-wasm's OlmMachine on
// the durable CryptoStore, the test playing the homeserver) is rekeyed by the built CLI, which is SIGKILLed
// at random moments, many times over; after each kill the daemon's view is checked (refuse or open with the
// right key); a last run completes; then the bot opens its store with the pinned passphrase, keeps its
// identity, and still decrypts the message sent before the rekey.
import * as wasm from "@matrix-org/matrix-sdk-crypto-wasm"
import { Either, Option, Redacted } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { CRYPTO_FILE } from "../../src/layers/CryptoStoreLive.js"
import { SqliteFile } from "../../src/layers/durable-idb/sqliteFile.js"
import type { CryptoStoreShape } from "../../src/services/CryptoStore.js"
import { cleanEnv, CLI, runCli } from "../support/cli.js"
import { withStore } from "../support/cryptostore-child.idb.js"
import { BASE_ENV, daemonResolve, PASSWORD, tempRoot } from "../support/rekey-fixtures.js"

const BOT = "@bot:example.org"
const ALICE = "@alice:example.org"
const ROOM = "!room:example.org"

const roots: Array<string> = []
afterAll(() => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true })
})

const machine = async (store: CryptoStoreShape, user: string, device: string) => {
  const handle = await wasm.StoreHandle.openWithKey(
    store.cryptoDatabasePrefix,
    Redacted.value(Option.getOrThrow(store.storageKey))
  )
  return wasm.OlmMachine.initFromStore(new wasm.UserId(user), new wasm.DeviceId(device), handle)
}

/** The pretend homeserver: device keys and one-time keys by user. */
const server = {
  deviceKeys: {} as Record<string, { device_id: string }>,
  otks: {} as Record<string, Record<string, unknown>>
}

const serve = async (m: wasm.OlmMachine, user: string) => {
  for (const r of await m.outgoingRequests()) {
    const req = r as { id: string; type: wasm.RequestType; body: string }
    let response = "{}"
    if (req.type === wasm.RequestType.KeysUpload) {
      const body = JSON.parse(req.body) as {
        device_keys?: { device_id: string }
        one_time_keys?: Record<string, unknown>
      }
      if (body.device_keys !== undefined) server.deviceKeys[user] = body.device_keys
      server.otks[user] = { ...server.otks[user], ...body.one_time_keys }
      response = JSON.stringify({
        one_time_key_counts: { signed_curve25519: Object.keys(server.otks[user] ?? {}).length }
      })
    } else if (req.type === wasm.RequestType.KeysQuery) {
      const device_keys = Object.fromEntries(
        Object.entries(server.deviceKeys).map(([u, k]) => [u, { [k.device_id]: k }])
      )
      response = JSON.stringify({ device_keys, failures: {} })
    }
    await m.markRequestAsSent(req.id, req.type, response)
  }
}

const encryptedEvent = (content: string) =>
  JSON.stringify({
    type: "m.room.encrypted",
    event_id: "$before-rekey",
    sender: ALICE,
    origin_server_ts: 1,
    room_id: ROOM,
    content: JSON.parse(content)
  })

const decryptBody = async (bot: wasm.OlmMachine, content: string) => {
  const out = await bot.decryptRoomEvent(
    encryptedEvent(content),
    new wasm.RoomId(ROOM),
    new wasm.DecryptionSettings(wasm.TrustRequirement.Untrusted)
  )
  return (JSON.parse(out.event) as { content: { body: string } }).content.body
}

const runUntilKilled = (env: NodeJS.ProcessEnv, root: string, mode: "random" | "after-pending") =>
  new Promise<"killed" | "exited">((resolve) => {
    const child: ChildProcess = spawn(process.execPath, [CLI, "matrix", "rekey-store", "--new"], {
      env,
      stdio: "ignore"
    })
    let done = false
    const kill = () => {
      if (!done) child.kill("SIGKILL")
    }
    child.once("exit", (_code, signal) => {
      done = true
      clearInterval(poll)
      resolve(signal === "SIGKILL" ? "killed" : "exited")
    })
    const pending = path.join(root, "matrix/store_passphrase.pending")
    const poll = setInterval(() => {
      if (mode === "after-pending" && fs.existsSync(pending)) {
        clearInterval(poll)
        setTimeout(kill, Math.floor(Math.random() * 200))
      }
    }, 2)
    if (mode === "random") setTimeout(kill, 300 + Math.floor(Math.random() * 1500))
  })

describe("rekey-store SIGKILLed at random moments on a populated store", () => {
  it("reruns to completion; the bot then opens its store and decrypts the old Megolm message", async () => {
    const root = tempRoot()
    const aliceRoot = tempRoot(null)
    roots.push(root, aliceRoot)
    const env = { CARAPACE_CONFIG_PASSWORD: PASSWORD }
    const resolveNow = async () => {
      const r = await daemonResolve(root, env)
      return Either.map(r, (o) => Redacted.value(Option.getOrThrow(o).passphrase))
    }
    const derived = Either.getOrThrow(await resolveNow())
    const botOpts = (p: string) => ({
      installGlobal: true,
      secret: { encrypted: true as const, passphrase: Option.some(Redacted.make(p)) }
    })
    const aliceOpts = { installGlobal: true, cryptoDatabasePrefix: "alice", syncStoreName: "alice-sync" }

    // The bot gets an Olm session from Alice and a Megolm key for the room; one message is sent.
    const before = await withStore(
      root,
      botOpts(derived),
      (botStore) =>
        withStore(aliceRoot, aliceOpts, async (aliceStore) => {
          const bot = await machine(botStore, BOT, "BOTDEVICE")
          const alice = await machine(aliceStore, ALICE, "ALICEDEVICE")
          await serve(bot, BOT)
          await serve(alice, ALICE)
          await alice.updateTrackedUsers([new wasm.UserId(BOT)])
          await serve(alice, ALICE)
          const claim = (await alice.getMissingSessions([new wasm.UserId(BOT)])) as { id: string } | undefined
          const [keyId, key] = Object.entries(server.otks[BOT] ?? {})[0]!
          await alice.markRequestAsSent(
            claim!.id,
            wasm.RequestType.KeysClaim,
            JSON.stringify({ one_time_keys: { [BOT]: { BOTDEVICE: { [keyId]: key } } }, failures: {} })
          )
          const toDevice: Array<unknown> = []
          for (
            const req of await alice.shareRoomKey(
              new wasm.RoomId(ROOM),
              [new wasm.UserId(BOT)],
              new wasm.EncryptionSettings()
            )
          ) {
            const body = JSON.parse(req.body) as { messages: Record<string, Record<string, unknown>> }
            for (const devices of Object.values(body.messages)) {
              for (const content of Object.values(devices)) {
                toDevice.push({ sender: ALICE, type: req.event_type, content })
              }
            }
            await alice.markRequestAsSent(req.id, wasm.RequestType.ToDevice, "{}")
          }
          await bot.receiveSyncChanges(
            JSON.stringify(toDevice),
            new wasm.DeviceLists(),
            new Map([["signed_curve25519", 49]]),
            new Set()
          )
          const content = await alice.encryptRoomEvent(
            new wasm.RoomId(ROOM),
            "m.room.message",
            JSON.stringify({ msgtype: "m.text", body: "sent before the rekey" })
          )
          const result = {
            content,
            body: await decryptBody(bot, content),
            ed25519: bot.identityKeys.ed25519.toBase64()
          }
          bot.close()
          alice.close()
          return result
        })
    )
    expect(before.body).toBe("sent before the rekey")

    const cliEnv = cleanEnv(root, { ...BASE_ENV, ...env })
    const outcomes: Array<string> = []
    for (let round = 0; round < 8; round++) {
      const outcome = await runUntilKilled(cliEnv, root, round % 2 === 0 ? "after-pending" : "random")
      const P = fs.existsSync(path.join(root, "matrix/store_passphrase.pending"))
      const M = fs.existsSync(path.join(root, "matrix/store_passphrase.rekeying"))
      outcomes.push(`${outcome}${P ? "+P" : ""}${M ? "+M" : ""}`)
      const seen = await resolveNow()
      if (P || M) {
        expect(Either.isLeft(seen) && seen.left.kind, outcomes.join(" ")).toBe("interrupted-rekey")
      } else {
        // Clean state: what the daemon resolves opens the store.
        const p = Either.getOrThrow(seen)
        const f = await SqliteFile.open(path.join(root, CRYPTO_FILE), "crypto", { encrypted: true, passphrase: p })
        f.close()
      }
    }

    process.stderr.write(`rekey-sigkill outcomes: ${outcomes.join(" ")}\n`)
    const last = runCli(["matrix", "rekey-store", "--new", "--json"], cliEnv)
    expect(last.status, `${last.stderr} after ${outcomes.join(" ")}`).toBe(0)
    expect(fs.existsSync(path.join(root, "matrix/store_passphrase.pending"))).toBe(false)
    expect(fs.existsSync(path.join(root, "matrix/store_passphrase.rekeying"))).toBe(false)

    const resolved = await daemonResolve(root, {}) // the pinned file alone now suffices
    const pinned = Either.getOrThrow(resolved).pipe(Option.getOrThrow)
    expect(pinned.source).toBe("pinned-file")
    expect(Redacted.value(pinned.passphrase)).not.toBe(derived)

    const after = await withStore(root, botOpts(Redacted.value(pinned.passphrase)), async (botStore) => {
      const bot = await machine(botStore, BOT, "BOTDEVICE")
      const result = { body: await decryptBody(bot, before.content), ed25519: bot.identityKeys.ed25519.toBase64() }
      bot.close()
      return result
    })
    expect(after.ed25519).toBe(before.ed25519)
    expect(after.body).toBe("sent before the rekey")
  }, 120_000)
})
