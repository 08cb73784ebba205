// Gates the SDK's per-sync call into the Rust crypto (`processSyncChanges`, the public SyncCryptoCallbacks method
// the sync loop calls on the crypto backend): a sync the OlmMachine would learn nothing from is not handed over,
// which spares the account save it does after every call (src/domain/syncCryptoGate.ts says which syncs).
import type * as sdk from "matrix-js-sdk"
import { decideSyncCrypto, initialSyncCryptoGate, type SyncCryptoChanges } from "../../domain/syncCryptoGate.js"

type ProcessSyncChanges = (changes: SyncCryptoChanges) => Promise<ReadonlyArray<unknown>>

/** Counts of what the gate did, for the bench and the logs. */
export interface SyncCryptoGateStats {
  processed: number
  skipped: number
}

/**
 * Wraps the crypto backend's `processSyncChanges` on this client. Returns undefined (and changes nothing) when the
 * SDK does not have the method where expected: an SDK upgrade then only loses the saving.
 */
export const gateSyncCrypto = (
  client: sdk.MatrixClient,
  now: () => number = Date.now
): SyncCryptoGateStats | undefined => {
  const crypto = client.getCrypto() as unknown as { processSyncChanges?: ProcessSyncChanges } | undefined
  const original = crypto?.processSyncChanges
  if (crypto === undefined || typeof original !== "function") return undefined
  const stats: SyncCryptoGateStats = { processed: 0, skipped: 0 }
  let state = initialSyncCryptoGate
  crypto.processSyncChanges = async (changes) => {
    const decision = decideSyncCrypto(state, changes, now())
    if (!decision.process) {
      stats.skipped++
      return []
    }
    const received = await original.call(crypto, changes)
    // the state moves on only once the machine has taken the sync (a failed call is retried by the next one)
    state = decision.state
    stats.processed++
    return received
  }
  return stats
}
