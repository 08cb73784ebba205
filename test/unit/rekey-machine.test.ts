// The pure rekey state machine: one test per transition of the table it implements.
import { describe, expect, it } from "vitest"
import { daemonMayOpen, nextStep, type Observed, type StoreObservation } from "../../src/domain/rekeyMachine.js"

const clean: Observed = {
  finalPresent: false,
  pendingPresent: false,
  markerPresent: false,
  finalEqualsPending: false,
  derivedAvailable: true,
  stores: [{ name: "crypto", opensWith: "derived" }, { name: "state", opensWith: "derived" }],
  startedThisRun: false
}
const at = (opensWith: StoreObservation["opensWith"], ...more: Array<StoreObservation["opensWith"]>) =>
  [opensWith, ...more].map((o, i) => ({ name: i === 0 ? "crypto" : "state", opensWith: o }))

describe("nextStep", () => {
  it("fresh derive mode: writes the pending passphrase first", () => {
    expect(nextStep(clean)).toEqual({ _tag: "WritePending" })
  })

  it("fresh with a pinned passphrase (a second rotation): also starts with the pending file", () => {
    expect(nextStep({ ...clean, finalPresent: true, stores: at("final", "final") })).toEqual({ _tag: "WritePending" })
  })

  it("pending without marker: writes the marker", () => {
    expect(nextStep({ ...clean, pendingPresent: true, startedThisRun: true })).toEqual({ _tag: "WriteMarker" })
  })

  it("pending + marker: re-wraps the first store not on the pending passphrase, from what opens it", () => {
    const o = { ...clean, pendingPresent: true, markerPresent: true }
    expect(nextStep({ ...o, stores: at("derived", "derived") })).toEqual({
      _tag: "RewrapStore",
      store: "crypto",
      from: "derived"
    })
    expect(nextStep({ ...o, stores: at("pending", "derived") })).toEqual({
      _tag: "RewrapStore",
      store: "state",
      from: "derived"
    })
    expect(nextStep({ ...o, finalPresent: true, stores: at("pending", "final") })).toEqual({
      _tag: "RewrapStore",
      store: "state",
      from: "final"
    })
  })

  it("every store on the pending passphrase: promotes it, then removes pending, then the marker", () => {
    const o = { ...clean, pendingPresent: true, markerPresent: true, stores: at("pending", "pending") }
    expect(nextStep(o)).toEqual({ _tag: "PromotePending" })
    expect(nextStep({ ...o, finalPresent: true })).toEqual({ _tag: "PromotePending" }) // the old pinned value
    expect(nextStep({ ...o, finalPresent: true, finalEqualsPending: true })).toEqual({ _tag: "RemovePending" })
    expect(nextStep({ ...o, pendingPresent: false, finalPresent: true, stores: at("final", "final") })).toEqual({
      _tag: "RemoveMarker"
    })
  })

  it("clean after this run's rotation: done; clean at the start of a run: rotates again", () => {
    const o = { ...clean, finalPresent: true, stores: at("final", "final") }
    expect(nextStep({ ...o, startedThisRun: true })).toEqual({ _tag: "Done" })
    expect(nextStep(o)).toEqual({ _tag: "WritePending" })
  })

  it("a marker whose pending file was never written (stores untouched) is removed", () => {
    expect(nextStep({ ...clean, markerPresent: true })).toEqual({ _tag: "RemoveMarker" })
  })

  it("refuses before any write when a store opens with nothing available", () => {
    expect(
      nextStep({
        ...clean,
        pendingPresent: true,
        markerPresent: true,
        derivedAvailable: false,
        stores: at("pending", "none")
      })
    ).toEqual({
      _tag: "Refuse",
      reason: { _tag: "StoreUnopenable", stores: ["state"], derivedAvailable: false }
    })
    expect(nextStep({ ...clean, stores: at("none", "derived") })).toMatchObject({
      reason: { _tag: "StoreUnopenable", stores: ["crypto"] }
    })
  })

  it("refuses without the old secret, and without stores", () => {
    expect(nextStep({ ...clean, derivedAvailable: false, stores: at("none", "none") })).toEqual({
      _tag: "Refuse",
      reason: { _tag: "MissingOldSecret" }
    })
    expect(nextStep({ ...clean, derivedAvailable: false, stores: [] })).toEqual({
      _tag: "Refuse",
      reason: { _tag: "MissingOldSecret" }
    })
    expect(nextStep({ ...clean, stores: [] })).toEqual({ _tag: "Refuse", reason: { _tag: "NoStores" } })
  })

  it("refuses when, with nothing in flight, a store does not use what the daemon would resolve", () => {
    expect(nextStep({ ...clean, finalPresent: true, stores: at("final", "derived") })).toEqual({
      _tag: "Refuse",
      reason: { _tag: "StoreNotCurrent", stores: ["state"], current: "final" }
    })
  })

  it("the daemon may open only with neither pending nor marker present", () => {
    expect(daemonMayOpen({ pendingPresent: false, markerPresent: false })).toBe(true)
    expect(daemonMayOpen({ pendingPresent: true, markerPresent: false })).toBe(false)
    expect(daemonMayOpen({ pendingPresent: false, markerPresent: true })).toBe(false)
  })
})
