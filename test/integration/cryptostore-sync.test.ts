// Against the real Synapse: a matrix-js-sdk client whose crypto store and sync store are the CryptoStore
// restarts (both stores closed and rebuilt from their SQLite files) and resumes from its saved sync token
// with the same device keys, without uploading device keys again.
import { Option, Redacted } from "effect"
import * as sdk from "matrix-js-sdk"
import type { Logger } from "matrix-js-sdk/lib/logger.js"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import type { CryptoStoreShape } from "../../src/services/CryptoStore.js"
import { withStore } from "../support/cryptostore-child.idb.js"
import { describeSynapse } from "../support/synapse/index.js"

const quiet: Logger = {
  trace: () => {},
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  getChild: () => quiet
}

interface Seen {
  readonly method: string
  readonly url: URL
}

/** Runs one client session on the store: start, wait for `syncs` /sync requests, stop. */
const runClient = async (
  store: CryptoStoreShape,
  session: { baseUrl: string; userId: string; deviceId: string; accessToken: string },
  syncs: number,
  poke: () => Promise<void>
) => {
  const seen: Array<Seen> = []
  let uploadsDone = 0
  const fetchFn = async (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url)
    const method = init?.method ?? (input instanceof Request ? input.method : "GET")
    seen.push({ method, url })
    const res = await fetch(input, init)
    if (url.pathname.endsWith("/keys/upload") && res.ok) uploadsDone++
    return res
  }
  const syncStore = new sdk.IndexedDBStore({ indexedDB: store.indexedDB as never, dbName: store.syncStoreName })
  await syncStore.startup()
  const savedToken = (await syncStore.getSavedSyncToken()) ?? null
  const client = sdk.createClient({ ...session, store: syncStore, fetchFn: fetchFn as typeof fetch, logger: quiet })
  await client.initRustCrypto({
    cryptoDatabasePrefix: store.cryptoDatabasePrefix,
    storageKey: Redacted.value(Option.getOrThrow(store.storageKey))
  })
  // Wait (by events, not time) until `syncs` sync responses were fully processed (ClientEvent.Sync fires
  // after processing); a first run also waits for its key upload. A message into the user's room ends
  // each long-poll early. No poke after the last one, so nothing is being processed when we stop.
  let processed = 0
  await new Promise<void>((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`client did not process ${syncs} syncs`)), 45_000)
    const finish = () => {
      if (processed >= syncs && (savedToken !== null || uploadsDone > 0)) {
        clearTimeout(deadline)
        clearInterval(poll)
        resolve()
        return true
      }
      return false
    }
    const poll = setInterval(finish, 50)
    client.on(sdk.ClientEvent.Sync, (state) => {
      if (state !== sdk.SyncState.Prepared && state !== sdk.SyncState.Syncing) return
      processed++
      if (!finish() && processed < syncs) void poke()
    })
    void client.startClient({ initialSyncLimit: 1 })
  })
  const keys = await client.getCrypto()!.getOwnDeviceKeys()
  client.stopClient()
  // save(true) while a persist is in flight only awaits that older persist; the second call writes the latest.
  await syncStore.save(true)
  await syncStore.save(true)
  const tokenAfter = (await syncStore.getSavedSyncToken()) ?? null
  return { seen, savedToken, tokenAfter, keys, uploadsDone }
}

describeSynapse("CryptoStore with matrix-js-sdk", (hs) => {
  let root: string
  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "cara-cs-sync-"))
  })
  afterAll(() => {
    fs.rmSync(root, { recursive: true, force: true })
  })

  it("restarts on its saved sync token with the same device and no second key upload", async () => {
    const user = await hs.registerUser()
    const login = await (await fetch(`${hs.baseUrl}/_matrix/client/v3/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: user.userId },
        password: user.password
      })
    })).json() as { user_id: string; device_id: string; access_token: string }
    const session = {
      baseUrl: hs.baseUrl,
      userId: login.user_id,
      deviceId: login.device_id,
      accessToken: login.access_token
    }
    const room = await (await fetch(`${hs.baseUrl}/_matrix/client/v3/createRoom`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${session.accessToken}` },
      body: "{}"
    })).json() as { room_id: string }
    let txn = 0
    const poke = async () => {
      await fetch(
        `${hs.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(room.room_id)}/send/m.room.message/poke-${++txn}`,
        {
          method: "PUT",
          headers: { "content-type": "application/json", authorization: `Bearer ${session.accessToken}` },
          body: JSON.stringify({ msgtype: "m.text", body: "poke" })
        }
      )
    }
    const options = { installGlobal: true, cryptoDatabasePrefix: "sync-test", syncStoreName: "sync-test-sync" }

    const first = await withStore(root, options, (s) => runClient(s, session, 2, poke))
    expect(first.savedToken).toBeNull()
    expect(first.uploadsDone).toBeGreaterThanOrEqual(1)
    expect(first.tokenAfter).toEqual(expect.any(String))

    const second = await withStore(root, options, (s) => runClient(s, session, 3, poke))
    expect(second.savedToken).toBe(first.tokenAfter)
    const firstSync = second.seen.find((s) => s.url.pathname.endsWith("/sync"))
    expect(firstSync?.url.searchParams.get("since")).toBe(first.tokenAfter)
    expect(second.keys).toEqual(first.keys)
    expect(second.seen.filter((s) => s.url.pathname.endsWith("/keys/upload"))).toEqual([])
    expect(second.seen.filter((s) => s.url.pathname.endsWith("/login"))).toEqual([])

    // The server still holds the first run's device keys for this device.
    const query = await (await fetch(`${hs.baseUrl}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${session.accessToken}` },
      body: JSON.stringify({ device_keys: { [session.userId]: [session.deviceId] } })
    })).json() as { device_keys: Record<string, Record<string, { keys: Record<string, string> }>> }
    const serverKeys = query.device_keys[session.userId]?.[session.deviceId]?.keys
    expect(serverKeys?.[`curve25519:${session.deviceId}`]).toBe(first.keys.curve25519)
    expect(serverKeys?.[`ed25519:${session.deviceId}`]).toBe(first.keys.ed25519)
  }, 120_000)
})
