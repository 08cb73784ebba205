// The pure recovery-key machines: every §5.6 refusal reason is reached by a generated state and reported
// with its wire value; nothing is promoted without its digest binding; the formats round-trip.
import { Either } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  encodeCleanupJournal,
  encodeRotationMarker,
  freshCleanupJournal,
  keyDigest,
  normalizeRecoveryKey,
  parseCleanupJournal,
  parseRotationMarker,
  PromotionRefusalReason,
  promotionRefused,
  redactRecoveryKeys,
  type RotationMarker,
  RotationStage
} from "../../src/domain/recoveryKey.js"
import { type FileDigest, nextMintStep, nextRepairStep, type RepairObserved } from "../../src/domain/recoveryMachine.js"

const A = keyDigest("key-a")
const B = keyDigest("key-b")
const C = keyDigest("key-c")

/**
 * The whole repair state space with no journal: every marker (absent, legacy, invalid, each stage with each
 * combination of digests), every K and N (absent, vanished, one of three contents) and every homeserver
 * answer. Enumerated, not sampled: 3,000 random draws missed `current_key_mismatch` now and then.
 */
const allRepairStates = (): Array<RepairObserved> => {
  const digests = [undefined, A, B, C] as const
  const markers: Array<RepairObserved["marker"]> = [
    { _tag: "Absent" },
    { _tag: "Legacy" },
    { _tag: "Invalid", reason: "corrupt_typed_marker" }
  ]
  for (const stage of RotationStage.literals) {
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
  const out: Array<RepairObserved> = []
  for (const marker of markers) {
    for (const current of files) {
      for (const pending of files) {
        for (const server of ["Unknown", "Current", "Pending", "Neither"] as const) {
          out.push({ journal: { _tag: "Absent" }, marker, current, pending, server })
        }
      }
    }
  }
  return out
}
const STATES = allRepairStates()
const digestOf = (f: FileDigest) => (f._tag === "Present" ? f.digest : undefined)
const markerDigests = (o: RepairObserved) =>
  o.marker._tag === "Typed"
    ? { next: o.marker.marker.keySha256, prev: o.marker.marker.previousKeySha256, stage: o.marker.marker.stage }
    : undefined

describe("startup repair table (§5.6)", () => {
  it("reaches every refusal reason over the whole state space, and refusals carry the wire value", () => {
    const seen = new Set<string>()
    for (const o of STATES) {
      const step = nextRepairStep(o)
      if (step._tag !== "Refuse") continue
      seen.add(step.reason)
      const err = promotionRefused(step.reason, { marker: "/s/R", pending: "/s/N", key: "/s/K" })
      expect(err.kind).toBe("recovery-key-promotion-refused")
      expect(err.reason).toBe(step.reason)
      expect(err.message).toContain(`(${step.reason})`)
      expect(err.message).toContain("Refusing to promote pending key at /s/N over current key at /s/K")
    }
    expect([...seen].sort()).toEqual([...PromotionRefusalReason.literals].sort())
  })

  it("promotes N only when it is bound: by both digests after the upload was recorded, or by the homeserver's own answer", () => {
    for (const o of STATES) {
      const step = nextRepairStep(o)
      if (step._tag !== "PromotePending") continue
      const m = markerDigests(o)
      expect(m, JSON.stringify(o)).toBeDefined()
      if (m === undefined) continue
      const pend = digestOf(o.pending)
      expect(pend).toBeDefined()
      expect(step.expectedDigest).toBe(pend)
      expect(digestOf(o.current)).toBe(m.prev) // K is the key the rotation started from
      if (m.stage === "pending_key_written") expect(pend).toBe(m.next)
      else {
        expect(["started", "installing"]).toContain(m.stage)
        expect(o.server).toBe("Pending") // the homeserver says N opens its secret storage
        if (m.stage === "installing") expect(pend).toBe(m.next)
      }
    }
  })

  it("never deletes the only copy of the key the homeserver holds: N goes only when K is the new key or the server holds K", () => {
    for (const o of STATES) {
      const step = nextRepairStep(o)
      if (step._tag !== "RemovePending") continue
      const m = markerDigests(o)
      expect(m).toBeDefined()
      if (m === undefined) continue
      const cur = digestOf(o.current)
      const ok = (cur !== undefined && cur === m.next) ||
        (o.server === "Current" && cur !== undefined && cur === m.prev)
      expect(ok, JSON.stringify(o)).toBe(true)
    }
  })

  it("never clears a marker whose digests do not match the current key", () => {
    // the mutation this catches: clearing R on any `cur` (or on a digest of N instead of K)
    for (const o of STATES) {
      const step = nextRepairStep(o)
      if (step._tag !== "RemoveMarker") continue
      const m = markerDigests(o)
      expect(m, JSON.stringify(o)).toBeDefined()
      if (m === undefined) continue
      const cur = digestOf(o.current)
      expect(cur, JSON.stringify(o)).toBeDefined()
      expect(o.pending._tag).toBe("Absent")
      if (m.stage === "pending_key_written" || m.stage === "final_key_replaced") expect(cur).toBe(m.next)
      else if (m.stage === "started") expect(cur).toBe(m.prev)
      else {
        // installing: K is the new key, or the homeserver confirmed that K (the old key) still opens it
        expect(cur === m.next || (cur === m.prev && o.server === "Current"), JSON.stringify(o)).toBe(true)
      }
    }
  })

  it("asks the homeserver only where the files cannot tell, and never once it answered", () => {
    for (const o of STATES) {
      const step = nextRepairStep(o)
      if (step._tag === "AskServer") expect(o.server).toBe("Unknown")
    }
    // the reference's rows that need no network keep needing none
    const offline = STATES.filter((o) => o.server === "Unknown" && markerDigests(o)?.stage === "pending_key_written")
    for (const o of offline) expect(nextRepairStep(o)._tag).not.toBe("AskServer")
  })

  it("follows the table rows", () => {
    const typed = (
      stage: RotationMarker["stage"],
      keySha256?: string,
      previousKeySha256?: string
    ): RepairObserved["marker"] => ({
      _tag: "Typed",
      marker: {
        stage,
        updatedAtMs: 1,
        ...(keySha256 ? { keySha256 } : {}),
        ...(previousKeySha256 ? { previousKeySha256 } : {})
      }
    })
    const present = (digest: string): FileDigest => ({ _tag: "Present", digest })
    const absent: FileDigest = { _tag: "Absent" }
    const none = { _tag: "Absent" } as const
    expect(nextRepairStep({ journal: none, marker: none, current: present(A), pending: absent })._tag).toBe("Done")
    expect(
      nextRepairStep({
        journal: none,
        marker: typed("pending_key_written", B, A),
        current: present(A),
        pending: present(B)
      })
    )
      .toEqual({ _tag: "PromotePending", expectedDigest: B })
    expect(
      nextRepairStep({
        journal: none,
        marker: typed("pending_key_written", B, A),
        current: present(B),
        pending: present(B)
      })
    )
      .toEqual({ _tag: "RemovePending", audit: "cleared_stale_pending" })
    expect(
      nextRepairStep({ journal: none, marker: typed("final_key_replaced", B, A), current: present(B), pending: absent })
    )
      .toEqual({ _tag: "RemoveMarker", audit: "cleared_final_marker" })
    expect(
      nextRepairStep({ journal: none, marker: typed("started", undefined, A), current: present(A), pending: absent })
    )
      .toEqual({ _tag: "RemoveMarker", audit: "cleared_started_marker" })
    expect(
      nextRepairStep({
        journal: none,
        marker: typed("pending_key_written", B, A),
        current: present(A),
        pending: absent
      })
    )
      .toMatchObject({ _tag: "StateIo", why: "outcome_unknown" })
    expect(
      nextRepairStep({
        journal: none,
        marker: { _tag: "Invalid", reason: "unknown_legacy_marker" },
        current: present(A),
        pending: absent
      })
    )
      .toMatchObject({ _tag: "StateIo", why: "marker_invalid" })
    // write-ahead rows (not in the reference): the homeserver decides between rolling forward and back
    const installing = typed("installing", B, A)
    expect(nextRepairStep({ journal: none, marker: installing, current: present(A), pending: present(B) })).toEqual({
      _tag: "AskServer"
    })
    expect(
      nextRepairStep({ journal: none, marker: installing, current: present(A), pending: present(B), server: "Pending" })
    )
      .toEqual({ _tag: "PromotePending", expectedDigest: B })
    expect(
      nextRepairStep({ journal: none, marker: installing, current: present(A), pending: present(B), server: "Current" })
    )
      .toEqual({ _tag: "RemovePending", audit: "rolled_back_pending" })
    expect(
      nextRepairStep({ journal: none, marker: installing, current: present(A), pending: present(B), server: "Neither" })
    )
      .toMatchObject({ _tag: "Refuse", reason: "server_key_matches_neither" })
    expect(
      nextRepairStep({ journal: none, marker: installing, current: present(A), pending: absent, server: "Current" })
    )
      .toEqual({ _tag: "RemoveMarker", audit: "rolled_back_pending" })
    expect(
      nextRepairStep({ journal: none, marker: installing, current: present(A), pending: absent, server: "Neither" })
    )
      .toMatchObject({ _tag: "StateIo", why: "outcome_unknown" })
    expect(
      nextRepairStep({
        journal: none,
        marker: typed("started", undefined, A),
        current: present(A),
        pending: present(B)
      })
    ).toEqual({ _tag: "AskServer" })
    expect(
      nextRepairStep({
        journal: none,
        marker: typed("started", undefined, A),
        current: present(A),
        pending: present(B),
        server: "Pending"
      })
    )
      .toEqual({ _tag: "PromotePending", expectedDigest: B })
    expect(
      nextRepairStep({
        journal: none,
        marker: typed("started", undefined, A),
        current: present(C),
        pending: present(B)
      })
    )
      .toMatchObject({ _tag: "Refuse", reason: "unbound_started_pending" })
  })

  it("inspects the cleanup journal first: started refuses, completed is removed, corrupt and newer versions refuse", () => {
    const base = {
      marker: { _tag: "Absent" } as const,
      current: { _tag: "Absent" } as const,
      pending: { _tag: "Absent" } as const
    }
    const started = parseCleanupJournal(encodeCleanupJournal(freshCleanupJournal()))
    expect(started._tag).toBe("Parsed")
    expect(nextRepairStep({ ...base, journal: started })).toMatchObject({ _tag: "StateIo", why: "journal_started" })
    const completed = parseCleanupJournal(encodeCleanupJournal({ ...freshCleanupJournal(), phase: "completed" }))
    expect(nextRepairStep({ ...base, journal: completed })).toEqual({ _tag: "RemoveCompletedJournal" })
    expect(nextRepairStep({ ...base, journal: parseCleanupJournal("{nope") })).toMatchObject({
      _tag: "StateIo",
      why: "journal_corrupt"
    })
    expect(
      nextRepairStep({
        ...base,
        journal: parseCleanupJournal(JSON.stringify({ ...freshCleanupJournal(), version: 2 }))
      })
    )
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
      server: fc.constantFrom("Unknown", "None", "MatchesPending", "Other") as fc.Arbitrary<
        "Unknown" | "None" | "MatchesPending" | "Other"
      >
    })
    fc.assert(
      fc.property(arb, (o) => {
        const s = nextMintStep(o)
        if (s._tag === "InstallPending" || s._tag === "PromotePending") {
          expect(o.minting && o.pending && o.key === "Absent").toBe(true)
        }
        if (s._tag === "PromotePending") expect(o.server).toBe("MatchesPending")
        if (s._tag === "InstallPending" || s._tag === "WritePending" || s._tag === "WriteMintingMarker") {
          expect(o.server).toBe("None")
        }
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
    expect(parseRotationMarker("{\"stage\":\"bogus\",\"updatedAtMs\":1}")).toEqual({
      _tag: "Invalid",
      reason: "corrupt_typed_marker"
    })
    expect(parseRotationMarker("something else")).toEqual({ _tag: "Invalid", reason: "unknown_legacy_marker" })
    expect(JSON.parse(encodeRotationMarker({ stage: "started", updatedAtMs: 1 }))).toEqual({
      stage: "started",
      updatedAtMs: 1
    })
  })
})
