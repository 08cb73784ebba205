// Every state file the daemon opens, looked at before anything opens it (the daemon runs this right after
// taking the maintenance lock; `cara doctor` runs it in its stores check). A file that exists must be what
// it should be, and a file that other state shows must exist must be there; otherwise the daemon refuses
// to start with a kind that names the file and the remedy. Nothing here writes.
//
//   file                                   "cannot be opened as what it should be"           "must exist" evidence
//   installation_id                        unreadable, not 64 lowercase hex                   derived-key stores, a non-empty DLQ
//   matrix/store_passphrase (pinned)       empty, not a regular file, too large               (none on disk: a wrong key is caught
//                                                                                              by the store's cipher record)
//   matrix/matrix-sdk-crypto.sqlite3       empty, truncated, not SQLite, not a store          a token whose device has keys on the
//                                                                                              homeserver (crypto-store-missing, at login)
//   matrix/matrix-sdk-state.sqlite3        the same                                           (rebuildable from the homeserver)
//   matrix/inbound-ledger.sqlite           empty, truncated, not SQLite, no inbound table     (a new ledger only forgets in-flight work)
//   carapace.sqlite                        empty, truncated, not SQLite, no agent_messages    (a new history is empty)
//
// The recovery_key* files are checked by the recovery-key start-up (against the homeserver), the DLQ line
// by line (undecodable lines are quarantined, by design).
import { Effect, Layer, Option } from "effect"
import type { CaraConfig } from "../domain/config.js"
import { corruptHistoryMessage, corruptLedgerMessage, StateFileError } from "../domain/stateFiles.js"
import { PASSPHRASE_FILE } from "../domain/storePassphrase.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"
import { StateDir } from "../services/StateDir.js"
// Layer imports by design: it checks each store's files with that store's own readers.
import { CRYPTO_FILE, STATE_FILE } from "./CryptoStoreLive.js"
import { corruptStoreMessage, storeStructureProblem } from "./durable-idb/sqliteFile.js"
import { inspectLedgerFile, LEDGER_FILE } from "./InboundLive.js"
import { DATABASE_FILE, inspectHistoryFile } from "./SessionsLive.js"
import { inspectSqlite } from "./sqliteState.js"
import { installationIdProblem, readPassphraseFile } from "./StorePassphraseLive.js"

/** Every problem of the state files under `root` for this config, the most fundamental first. */
export const stateFileProblems = (
  root: string,
  resolve: (rel: string) => string,
  config: CaraConfig
): Effect.Effect<Array<StateFileError>> =>
  Effect.gen(function*() {
    const out: Array<StateFileError> = []
    const m = config.matrix
    const matrixOn = m !== undefined && m !== null && m.enabled !== false
    if (matrixOn) {
      for (const [rel, role] of [[CRYPTO_FILE, "crypto"], [STATE_FILE, "state"]] as const) {
        const file = resolve(rel)
        const look = inspectSqlite(file, storeStructureProblem)
        if (look.state === "bad") {
          out.push(
            new StateFileError({
              kind: role === "crypto" ? "crypto-store-corrupt" : "state-store-corrupt",
              path: file,
              message: corruptStoreMessage(file, role, look.reason)
            })
          )
        }
      }
      const ledger = resolve(LEDGER_FILE)
      const look = inspectLedgerFile(ledger)
      if (look.state === "bad") {
        out.push(
          new StateFileError({
            kind: "inbound-ledger-corrupt",
            path: ledger,
            message: corruptLedgerMessage(ledger, look.reason)
          })
        )
      }
      // after the stores: a damaged store is the first thing to fix, whatever its key
      const iid = installationIdProblem(root, m)
      if (iid !== undefined) out.push(new StateFileError({ kind: iid.kind, path: iid.path, message: iid.message }))
      if (m.encrypted !== false && m.storePassphrase === undefined) {
        const pinned = yield* Effect.either(readPassphraseFile(resolve(PASSPHRASE_FILE), true))
        if (pinned._tag === "Left") {
          out.push(
            new StateFileError({ kind: "encrypted-state-io", path: pinned.left.path, message: pinned.left.message })
          )
        }
      }
    }
    const history = resolve(DATABASE_FILE)
    const look = inspectHistoryFile(history)
    if (look.state === "bad") {
      out.push(
        new StateFileError({
          kind: "session-history-corrupt",
          path: history,
          message: corruptHistoryMessage(history, look.reason)
        })
      )
    }
    return out
  })

/**
 * The daemon's refusal: fails with the first problem (the others are named by `cara doctor`). Provided
 * after the maintenance lock and before every layer that opens a state file.
 */
export const StateFilesChecked = Layer.effectDiscard(
  Effect.gen(function*() {
    const stateDir = yield* StateDir
    const { config } = yield* ConfigSecrets
    const problems = yield* stateFileProblems(stateDir.root, stateDir.resolve, config)
    const first = Option.fromNullable(problems[0])
    if (Option.isNone(first)) return
    const more = problems.length - 1
    const e = first.value
    return yield* (more === 0
      ? e
      : new StateFileError({
        kind: e.kind,
        path: e.path,
        message: `${e.message} (${more} more state file problem${more > 1 ? "s" : ""}: run \`cara doctor\`)`
      }))
  })
)
