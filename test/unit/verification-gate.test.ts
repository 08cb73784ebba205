// The gate that serialises the bot's SAS start with the SDK's processing of peer events (issue 17.5).
import type { MatrixClient } from "matrix-js-sdk"
import { describe, expect, it } from "vitest"
import { installCryptoGate, makeGate } from "../../src/layers/verification/cryptoGate.js"

const deferred = () => {
  let resolve: () => void = () => undefined
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}
const tick = () => new Promise((r) => setTimeout(r, 5))

class Backend {
  readonly calls: Array<string> = []
  async processSyncChanges(changes: { n: number }) {
    this.calls.push(`sync ${changes.n}`)
    return changes.n
  }
  async onKeyVerificationEvent(_ev: unknown) {
    this.calls.push("room event")
  }
}
const clientOf = (crypto: object | undefined) => ({ getCrypto: () => crypto }) as unknown as MatrixClient

describe("crypto gate", () => {
  it("runs one holder at a time, in order, and a failing holder releases it", async () => {
    const gate = makeGate()
    const order: Array<string> = []
    const first = deferred()
    const a = gate.run(async () => {
      order.push("a start")
      await first.promise
      order.push("a end")
    })
    const b = gate.run(async () => {
      order.push("b")
      throw new Error("b failed")
    })
    const c = gate.run(async () => order.push("c"))
    await tick()
    expect(order).toEqual(["a start"])
    first.resolve()
    await a
    await expect(b).rejects.toThrow("b failed")
    await c
    expect(order).toEqual(["a start", "a end", "b", "c"])
  })

  it("a holder that never settles releases the gate after its hold limit", async () => {
    const gate = makeGate()
    void gate.run(() => new Promise<void>(() => undefined), 20)
    const next = await gate.run(async () => "ran")
    expect(next).toBe("ran")
  })

  it("routes the SDK's sync and in-room verification processing through the gate, and uninstall restores the methods", async () => {
    const backend = new Backend()
    const gate = installCryptoGate(clientOf(backend))
    expect(gate.wrapsSdk).toBe(true)
    const held = deferred()
    const holder = gate.run(async () => {
      backend.calls.push("bot start")
      await held.promise
    })
    // the SDK calls the method on the instance at call time, as the sync loop does
    const synced = backend.processSyncChanges({ n: 1 })
    const roomEvent = backend.onKeyVerificationEvent({})
    await tick()
    expect(backend.calls).toEqual(["bot start"])
    held.resolve()
    await holder
    expect(await synced).toBe(1)
    await roomEvent
    expect(backend.calls).toEqual(["bot start", "sync 1", "room event"])
    gate.uninstall()
    expect(Object.prototype.hasOwnProperty.call(backend, "processSyncChanges")).toBe(false)
    expect(backend.processSyncChanges).toBe(Backend.prototype.processSyncChanges)
  })

  it("without the SDK's methods (or without crypto) it only serialises the bot's own calls", async () => {
    expect(installCryptoGate(clientOf({})).wrapsSdk).toBe(false)
    const none = installCryptoGate(clientOf(undefined))
    expect(none.wrapsSdk).toBe(false)
    expect(await none.run(async () => 7)).toBe(7)
  })
})
