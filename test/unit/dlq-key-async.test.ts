// The daemon's DLQ key derivation runs argon2 off the event loop (issue 19): same parameters and output as
// the synchronous one, one derivation per key however many callers overlap, cached afterwards.
import { describe, expect, it } from "@effect/vitest"
import { deriveDlqKey, deriveDlqKeyAsync } from "../../src/domain/dlq.js"

const IID = "installation-00000000-0000-0000-0000-000000000000"

describe("deriveDlqKeyAsync", () => {
  it("matches the pinned v2 vector and shares one derivation between overlapping callers", async () => {
    const [a, b] = await Promise.all([deriveDlqKeyAsync("async staple", IID), deriveDlqKeyAsync("async staple", IID)])
    expect(a).toBe(b)
    expect(await deriveDlqKeyAsync("async staple", IID)).toBe(a)
    expect(deriveDlqKey("async staple", IID)).toBe(a)
    const pinned = await deriveDlqKeyAsync("correct horse battery staple", IID)
    expect(pinned.bytes.toString("hex")).toBe("92a4336c637a2792d43ce389686fb958777d557c27a79c287bac9d8350b12c78")
  })

  it("keeps the event loop free while it derives", async () => {
    let ticks = 0
    const timer = setInterval(() => void ticks++, 5)
    await deriveDlqKeyAsync("a passphrase only this test uses", IID)
    clearInterval(timer)
    expect(ticks).toBeGreaterThan(0)
  })
})
