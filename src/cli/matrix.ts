import { Console, Effect, Layer } from "effect"
import { progressLine } from "../domain/progress.js"
import { RekeyRefusedError } from "../domain/storePassphrase.js"
import { ConfigSecretsLive } from "../layers/ConfigSecretsLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { StorePassphraseLive } from "../layers/StorePassphraseLive.js"

// Offline maintenance runs on the config and the state dir only; never through the control API.
const MaintenanceLive = StorePassphraseLive.pipe(
  Layer.provideMerge(ConfigSecretsLive),
  Layer.provideMerge(StateDirLive)
)

/** `cara matrix rekey-store --new [--json]`: progress on a terminal (stderr), the result on stdout. */
export const rekeyStore = ({ fresh, json }: { readonly fresh: boolean; readonly json: boolean }) =>
  Effect.gen(function*() {
    if (!fresh) {
      return yield* new RekeyRefusedError({
        kind: "rekey-refused",
        message: "matrix rekey-store currently requires --new"
      })
    }
    // Loaded on use: the store code (SQLite, IndexedDB) stays out of every other command's start-up.
    const { rekeyStore, renderResult } = yield* Effect.promise(() => import("../programs/rekeyStore.js"))
    const progress = progressLine("rekey-store", { enabled: !json })
    const result = yield* rekeyStore(progress.hooks).pipe(Effect.ensuring(progress.done))
    yield* Console.log(renderResult(result, json))
  }).pipe(Effect.provide(MaintenanceLive))
