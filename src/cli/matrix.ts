import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Layer } from "effect"
import { dlqCommand } from "./dlq.js"
import { RekeyRefusedError } from "../domain/storePassphrase.js"
import { ConfigSecretsLive } from "../layers/ConfigSecretsLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { StorePassphraseLive } from "../layers/StorePassphraseLive.js"
import { recoveryKeyCommand } from "./recoveryKey.js"
import { verificationCommands } from "./verification.js"

// Offline maintenance runs on the config and the state dir only; never through the control API.
const MaintenanceLive = StorePassphraseLive.pipe(Layer.provideMerge(ConfigSecretsLive), Layer.provideMerge(StateDirLive))

const rekeyStoreCommand = Command.make(
  "rekey-store",
  {
    fresh: Options.boolean("new").pipe(Options.withDescription("rotate the Matrix store key to a fresh random passphrase pinned in matrix/store_passphrase")),
    json: Options.boolean("json").pipe(Options.withDescription("print the result as JSON"))
  },
  ({ fresh, json }) =>
    Effect.gen(function*() {
      if (!fresh) return yield* new RekeyRefusedError({ kind: "rekey-refused", message: "matrix rekey-store currently requires --new" })
      const tty = process.stderr.isTTY === true && !json
      // Loaded on use: the store code (SQLite, IndexedDB) stays out of every other command's start-up.
      const { rekeyStore, renderResult } = yield* Effect.promise(() => import("../programs/rekeyStore.js"))
      const result = yield* rekeyStore({
        ...(tty ? { progress: (line: string) => Effect.sync(() => process.stderr.write(`rekey-store: ${line}\n`)) } : {})
      })
      yield* Console.log(renderResult(result, json))
    }).pipe(Effect.provide(MaintenanceLive))
).pipe(
  Command.withDescription(
    "With the daemon stopped: move the Matrix stores to a fresh random passphrase pinned in matrix/store_passphrase. Rerun after any interruption to finish it."
  )
)

/** `cara matrix ...`: one entry per subcommand. */
export const matrixCommand = Command.make("matrix").pipe(
  Command.withDescription("Maintain the Matrix channel's local state."),
  Command.withSubcommands([
    rekeyStoreCommand,
    dlqCommand,
    recoveryKeyCommand,
    ...verificationCommands
  ])
)
