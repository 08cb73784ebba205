// The pure recovery-key machines: every §5.6 refusal reason is reached by a generated state and reported
// with its wire value; nothing is promoted without its digest binding; the formats round-trip.
import { Either } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  encodeRotationMarker,
  freshCleanupJournal,
  encodeCleanupJournal,
  keyDigest,
  normalizeRecoveryKey,
  parseCleanupJournal,
  parseRotationMarker,
  PromotionRefusalReason,
  promotionRefused,
  redactRecoveryKeys,
  type RotationMarker
} from "../../src/domain/recoveryKey.js"
import { type FileDigest, nextMintStep, nextRepairStep, type RepairObserved } from "../../src/domain/recoveryMachine.js"

const A = keyDigest("key-a")
const B = keyDigest("key-b")
const C = keyDigest("key-c")

const digestArb = fc.constantFrom(A, B, C)
const fileArb: fc.Arbitrary<FileDigest> = fc.oneof(
  fc.constant({ _tag: "Absent" } as const),
  fc.constant({ _tag: "Vanished" } as const),
  digestArb.map((digest) => ({ _tag: "Present", digest }) as const)
)
const markerArb: fc.Arbitrary<RepairObserved["marker"]> = fc.oneof(
  fc.constant({ _tag: "Absent" } as const),
  fc.constant({ _tag: "Legacy" } as const),
  fc.constant({ _tag: "Invalid", reason: "corrupt_typed_marker" } as const),
  fc.record({
    stage: fc.constantFrom("started", "pending_key_written", "final_key_replaced") as fc.Arbitrary<RotationMarker["stage"]>,
    keySha256: fc.option(digestArb, { nil: undefined }),
    previousKeySha256: fc.option(digestArb, { nil: undefined })
  }).map((m) => ({
    _tag: "Typed" as const,
    marker: {
      stage: m.stage,
      updatedAtMs: 1,
      ...(m.keySha256 === undefined ? {} : { keySha256: m.keySha256 }),
      ...(m.previousKeySha256 === undefined ? {} : { previousKeySha256: m.previousKeySha256 })
    }
  }))
)
const observedArb: fc.Arbitrary<RepairObserved> = fc.record({
  journal: fc.constant({ _tag: "Absent" } as const),
  marker: markerArb,
  current: fileArb,
  pending: fileArb
})

describe("startup repair table (§5.6)", () => {
  it("reaches every refusal reason over the whole (small) state space, and refusals carry the wire value", () => {
    // Enumerated, not sampled: 3,000 random draws missed `current_key_mismatch` now and then.
    const digests = [undefined, A, B, C] as const
    const markers: Array<RepairObserved["marker"]> = [
      { _tag: "Absent" },
      { _tag: "Legacy" },
      { _tag: "Invalid", reason: "corrupt_typed_marker" }
    ]
    for (const stage of ["started", "pending_key_written", "final_key_replaced"] as const) {
      for (const keySha256 of digests) {
        for (const previousKeySha256 of digests) {
          markers.push({
            _tag: "Typed",
            marker: {
              stage,
              updatedAtMs: 1,
              ...(keySha256 === undefined ? {} : { keySha256 }),
              ...(previousKeySha256 === undefined ? {} : { previousKeySha256 })
            }
          })
        }
      }
    }
    const files: Array<FileDigest> = [
      { _tag: "Absent" },
      { _tag: "Vanished" },
      ...[A, B, C].map((digest) => ({ _tag: "Present", digest }) as const)
    ]
    const seen = new Set<string>()
    for (const marker of markers) {
      for (const current of files) {
        for (const pending of files) {
          const step = nextRepairStep({ journal: { _tag: "Absent" }, marker, current, pending })
          if (step._tag !== "Refuse") continue
          seen.add(step.reason)
          const err = promotionRefused(step.reason, { marker: "/s/R", pending: "/s/N", key: "/s/K" })
          expect(err.kind).toBe("recovery-key-promotion-refused")
          expect(err.reason).toBe(step.reason)
          expect(err.message).toContain(`(${step.reason})`)
          expect(err.message).toContain("Refusing to promote pending key at /s/N over current key at /s/K")
        }
      }
    }
    expect([...seen].sort()).toEqual([...PromotionRefusalReason.literals].sort())
  })

  it("promotes only when the marker binds both digests: pending == keySha256 and current == previousKeySha256", () => {
    fc.assert(
      fc.property(observedArb, (o) => {
        const step = nextRepairStep(o)
        if (step._tag !== "PromotePending") return
        expect(o.marker._tag).toBe("Typed")
        if (o.marker._tag !== "Typed") return
        const m = o.marker.marker
        expect(m.stage).toBe("pending_key_written")
        expect(o.pending).toEqual({ _tag: "Present", digest: m.keySha256 })
        expect(o.current).toEqual({ _tag: "Present", digest: m.previousKeySha256 })
        expect(step.expectedDigest).toBe(m.keySha256)
      }),
      { numRuns: 3000 }
    )
  })

  it("never deletes the current key's only copy: removals of N happen only when K already equals the new key", () => {
    fc.assert(
      fc.property(observedArb, (o) => {
        const step = nextRepairStep(o)
        if (step._tag === "RemovePending" && o.marker._tag === "Typed") {
          expect(o.current).toEqual({ _tag: "Present", digest: o.marker.marker.keySha256 })
        }
      }),
      { numRuns: 2000 }
    )
  })

  it("follows the table rows", () => {
    const typed = (stage: RotationMarker["stage"], keySha256?: string, previousKeySha256?: string): RepairObserved["marker"] => ({
      _tag: "Typed",
      marker: { stage, updatedAtMs: 1, ...(keySha256 ? { keySha256 } : {}), ...(previousKeySha256 ? { previousKeySha256 } : {}) }
    })
    const present = (digest: string): FileDigest => ({ _tag: "Present", digest })
    const absent: FileDigest = { _tag: "Absent" }
    const none = { _tag: "Absent" } as const
    expect(nextRepairStep({ journal: none, marker: none, current: present(A), pending: absent })._tag).toBe("Done")
    expect(nextRepairStep({ journal: none, marker: typed("pending_key_written", B, A), current: present(A), pending: present(B) }))
      .toEqual({ _tag: "PromotePending", expectedDigest: B })
    expect(nextRepairStep({ journal: none, marker: typed("pending_key_written", B, A), current: present(B), pending: present(B) }))
      .toEqual({ _tag: "RemovePending", audit: "cleared_stale_pending" })
    expect(nextRepairStep({ journal: none, marker: typed("final_key_replaced", B, A), current: present(B), pending: absent }))
      .toEqual({ _tag: "RemoveMarker", audit: "cleared_final_marker" })
    expect(nextRepairStep({ journal: none, marker: typed("started", undefined, A), current: present(A), pending: absent }))
      .toEqual({ _tag: "RemoveMarker", audit: "cleared_started_marker" })
    expect(nextRepairStep({ journal: none, marker: typed("pending_key_written", B, A), current: present(A), pending: absent }))
      .toMatchObject({ _tag: "StateIo", why: "outcome_unknown" })
    expect(nextRepairStep({ journal: none, marker: { _tag: "Invalid", reason: "unknown_legacy_marker" }, current: present(A), pending: absent }))
      .toMatchObject({ _tag: "StateIo", why: "marker_invalid" })
  })

  it("inspects the cleanup journal first: started refuses, completed is removed, corrupt and newer versions refuse", () => {
    const base = { marker: { _tag: "Absent" } as const, current: { _tag: "Absent" } as const, pending: { _tag: "Absent" } as const }
    const started = parseCleanupJournal(encodeCleanupJournal(freshCleanupJournal()))
    expect(started._tag).toBe("Parsed")
    expect(nextRepairStep({ ...base, journal: started })).toMatchObject({ _tag: "StateIo", why: "journal_started" })
    const completed = parseCleanupJournal(encodeCleanupJournal({ ...freshCleanupJournal(), phase: "completed" }))
    expect(nextRepairStep({ ...base, journal: completed })).toEqual({ _tag: "RemoveCompletedJournal" })
    expect(nextRepairStep({ ...base, journal: parseCleanupJournal("{nope") })).toMatchObject({ _tag: "StateIo", why: "journal_corrupt" })
    expect(nextRepairStep({ ...base, journal: parseCleanupJournal(JSON.stringify({ ...freshCleanupJournal(), version: 2 })) }))
      .toMatchObject({ _tag: "StateIo", why: "journal_unsupported_version" })
    // an unknown phase fails to parse (fail closed)
    expect(parseCleanupJournal(JSON.stringify({ ...freshCleanupJournal(), phase: "halfway" }))._tag).toBe("Corrupt")
  })
})

describe("first mint (§5.3)", () => {
  it("never installs or promotes without the minting marker, and never mints over existing server recovery", () => {
    const arb = fc.record({
      key: fc.constantFrom("Absent", "Empty", "Present") as fc.Arbitrary<"Absent" | "Empty" | "Present">,
      pending: fc.boolean(),
      minting: fc.boolean(),
      server: fc.constantFrom("Unknown", "None", "MatchesPending", "Other") as fc.Arbitrary<"Unknown" | "None" | "MatchesPending" | "Other">
    })
    fc.assert(
      fc.property(arb, (o) => {
        const s = nextMintStep(o)
        if (s._tag === "InstallPending" || s._tag === "PromotePending") {
          expect(o.minting && o.pending && o.key === "Absent").toBe(true)
        }
        if (s._tag === "PromotePending") expect(o.server).toBe("MatchesPending")
        if (s._tag === "InstallPending" || s._tag === "WritePending" || s._tag === "WriteMintingMarker") expect(o.server).toBe("None")
        if (o.server === "Other" && o.key === "Absent") expect(s._tag).toBe("Refuse")
      })
    )
  })
})

describe("formats", () => {
  const KEY = "EsTd rWaS tBBQ AdNm y9T6 8nLy nvFa FAoR sSge 33mN atWL HTeG"

  it("accepts 12 base58 groups (last may be 3) in any whitespace and canonicalises them", () => {
    expect(normalizeRecoveryKey(`  ${KEY.replaceAll(" ", "\n")}\n`)).toEqual(Either.right(KEY))
    expect(Either.isRight(normalizeRecoveryKey(KEY.slice(0, -1)))).toBe(true)
    expect(normalizeRecoveryKey("   ")).toEqual(Either.left("empty"))
    expect(normalizeRecoveryKey(KEY.replace("EsTd", "EsT0"))).toEqual(Either.left("format")) // 0 is not base58
    expect(normalizeRecoveryKey(KEY.split(" ").slice(1).join(" "))).toEqual(Either.left("format"))
    expect(normalizeRecoveryKey(KEY.replace("rWaS", "rWa"))).toEqual(Either.left("format"))
  })

  it("redacts key-shaped text in logs", () => {
    expect(redactRecoveryKeys(`key is ${KEY}.`)).toBe("key is [REDACTED].")
  })

  it("marker JSON round-trips; legacy and invalid markers are classified", () => {
    const m: RotationMarker = { stage: "pending_key_written", keySha256: B, previousKeySha256: A, updatedAtMs: 5 }
    const text = encodeRotationMarker(m)
    expect(text.trim().includes("\n")).toBe(false)
    expect(parseRotationMarker(text)).toEqual({ _tag: "Typed", marker: m })
    expect(parseRotationMarker(`\uFEFF${text}`)).toEqual({ _tag: "Typed", marker: m })
    expect(parseRotationMarker("recovery-rotation-in-progress\n")).toEqual({ _tag: "Legacy" })
    expect(parseRotationMarker('{"stage":"bogus","updatedAtMs":1}')).toEqual({ _tag: "Invalid", reason: "corrupt_typed_marker" })
    expect(parseRotationMarker("something else")).toEqual({ _tag: "Invalid", reason: "unknown_legacy_marker" })
    expect(JSON.parse(encodeRotationMarker({ stage: "started", updatedAtMs: 1 }))).toEqual({ stage: "started", updatedAtMs: 1 })
  })
})
