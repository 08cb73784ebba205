// Restart to first sync with a large crypto store: the bot logs in and answers once, is stopped, and
// BENCH_SESSIONS (5,000) Megolm sessions are imported offline into its own durable store (the bot's device, the
// bot's store key); then the daemon starts again: spawn → "ready", spawn → "Matrix client synced", RSS after it,
// and the time from the sync to the answer of a message sent right then (target: within 1 s), next to the
// two-human floor (BENCH_RESTART_FLOOR round trips between two humans on the same Synapse, p50).
// Run: `npm run bench -- matrix-restart` or `node_modules/.bin/vite-node bench/matrix-restart.ts`.
import * as wasm from "@matrix-org/matrix-sdk-crypto-wasm"
import { Effect, Option, Redacted } from "effect"
import { makeCryptoStore } from "../src/layers/CryptoStoreLive.js"
import { StateDirAt } from "../src/layers/StateDirLive.js"
import { deriveStorePassphrase, readOrCreateInstallationId } from "../src/layers/StorePassphraseLive.js"
import { CONFIG_PASSWORD } from "../test/integration/matrix-support.js"
import {
  dirSize,
  dmWithBot,
  emit,
  envNumber,
  floorRoundTrips,
  log,
  percentile,
  pidOf,
  replyTo,
  round,
  sample,
  world
} from "./_matrix-lib.js"

const SESSIONS = envNumber("BENCH_SESSIONS", 5000)
const FLOOR = envNumber("BENCH_RESTART_FLOOR", 20)

/** Imports `n` fresh Megolm sessions into the stopped bot's store, as the bot's own device would hold them. */
const importSessions = async (root: string, userId: string, deviceId: string, n: number): Promise<number> => {
  const gen = await wasm.OlmMachine.initialize(new wasm.UserId("@gen:localhost"), new wasm.DeviceId("GEN"))
  for (let i = 0; i < n; i++) {
    await gen.shareRoomKey(new wasm.RoomId(`!bench${i}:localhost`), [], new wasm.EncryptionSettings())
  }
  const exported = await gen.exportRoomKeys(() => true)
  gen.close()
  const installationId = await Effect.runPromise(readOrCreateInstallationId(root))
  const passphrase = deriveStorePassphrase(CONFIG_PASSWORD, installationId)
  return Effect.runPromise(
    Effect.scoped(
      Effect.gen(function*() {
        const s = yield* makeCryptoStore({
          secret: { encrypted: true, passphrase: Option.some(Redacted.make(passphrase)) },
          installGlobal: true
        })
        return yield* Effect.promise(async () => {
          const handle = await wasm.StoreHandle.openWithKey(
            s.cryptoDatabasePrefix,
            Redacted.value(Option.getOrThrow(s.storageKey))
          )
          const m = await wasm.OlmMachine.initFromStore(new wasm.UserId(userId), new wasm.DeviceId(deviceId), handle)
          await m.importExportedRoomKeys(exported, () => {})
          const total = (JSON.parse(await m.exportRoomKeys(() => true)) as Array<unknown>).length
          m.close()
          return total
        })
      })
    ).pipe(Effect.provide(StateDirAt(root)))
  )
}

const main = async () => {
  const w = await world()
  try {
    const alice = await w.human()
    const floorP50 = FLOOR > 0 ? percentile(await floorRoundTrips(alice, await w.human(), FLOOR, 2), 50) : 0
    const bot = await w.bot({ allowUsers: [alice.userId] })
    await bot.start()
    const deviceId = /Matrix client synced .*deviceId=(\S+)/.exec(bot.output())?.[1]
    if (deviceId === undefined) throw new Error("no deviceId in the daemon's synced line")
    const roomId = await dmWithBot(alice, bot)
    await replyTo(alice, roomId, bot.user.userId, await alice.sendText(roomId, "before the restart"))
    await bot.stop("SIGTERM")

    log(`importing ${SESSIONS} Megolm sessions into the bot's store`)
    const sessionsInStore = await importSessions(bot.dir, bot.user.userId, deviceId, SESSIONS)

    const t0 = performance.now()
    await bot.start({}, /cara .* ready: gateway listening/)
    const readyMs = performance.now() - t0
    await bot.waitForLog(/Matrix client synced/, 120_000)
    const syncedMs = performance.now() - t0
    const rssAfterSync = sample(pidOf(bot)).rssMB
    const t1 = performance.now()
    await replyTo(alice, roomId, bot.user.userId, await alice.sendText(roomId, "first after the restart"))
    const firstReplyMs = performance.now() - t1
    emit({
      bench: "matrix-restart",
      sessions: SESSIONS,
      sessionsInStore,
      startToReadyMs: Math.round(readyMs),
      startToFirstSyncMs: Math.round(syncedMs),
      rssMBAfterSync: rssAfterSync,
      firstReplyAfterSyncMs: Math.round(firstReplyMs),
      floorP50Ms: round(floorP50),
      stateDirBytes: dirSize(bot.dir),
      note:
        "first sync = the daemon's 'Matrix client synced' line; on a restart matrix-js-sdk may report it from the saved sync before its first /sync request returns"
    })
  } finally {
    await w.close()
  }
}

await main()
process.exit(0)
