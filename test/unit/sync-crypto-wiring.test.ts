// The sync gate (src/layers/matrix/syncCrypto.ts) on a real matrix-js-sdk 43 client with the Rust crypto: the
// method it wraps must exist where the sync loop calls it, and idle syncs with unchanged key counts must stop
// at the gate while changed ones reach the OlmMachine.
import type { MatrixClient } from "matrix-js-sdk"
import { describe, expect, it } from "vitest"
import { gateSyncCrypto } from "../../src/layers/matrix/syncCrypto.js"
import { rustClient } from "../support/rustClient.js"

describe("sync crypto gate on the installed SDK", () => {
  it("wraps processSyncChanges; idle syncs stop at the gate, changed ones reach the machine", async () => {
    const client = await rustClient()
    try {
      let clock = 1_000
      const stats = gateSyncCrypto(client, () => clock)
      expect(stats, "matrix-js-sdk's crypto backend has no processSyncChanges: see src/layers/matrix/syncCrypto.ts")
        .toBeDefined()
      const crypto = client.getCrypto() as unknown as { processSyncChanges: (c: unknown) => Promise<Array<unknown>> }
      const idle = {
        toDeviceEvents: [],
        oneTimeKeysCounts: { signed_curve25519: 50 },
        unusedFallbackKeys: ["signed_curve25519"]
      }
      expect(await crypto.processSyncChanges(idle)).toEqual([])
      clock += 30_000
      expect(await crypto.processSyncChanges({ ...idle })).toEqual([])
      expect(stats).toEqual({ processed: 1, skipped: 1 })
      await crypto.processSyncChanges({ ...idle, oneTimeKeysCounts: { signed_curve25519: 49 } })
      await crypto.processSyncChanges({
        ...idle,
        oneTimeKeysCounts: { signed_curve25519: 49 },
        deviceLists: { changed: ["@a:example.org"] }
      })
      expect(stats).toEqual({ processed: 3, skipped: 1 })
    } finally {
      client.stopClient()
    }
  }, 30_000)

  it("leaves a client without the method alone", () => {
    const bare = { getCrypto: () => ({}) } as unknown as MatrixClient
    expect(gateSyncCrypto(bare)).toBeUndefined()
    expect(gateSyncCrypto({ getCrypto: () => undefined } as unknown as MatrixClient)).toBeUndefined()
  })
})
