// The pure verification domain: the SDK view to our state names (src/domain/verificationState.ts), the SAS
// values, and the branded ids of the service (FlowId, UserId, DeviceId).
import { Either, Schema } from "effect"
import { VerificationPhase } from "matrix-js-sdk/lib/crypto-api/index.js"
import { describe, expect, it } from "vitest"
import { UserId } from "../../src/domain/matrix.js"
import { FlowId, flowIdOf, sanitizeUserId, verificationTarget } from "../../src/domain/verification.js"
import { deriveState, isFinishedPhase, sasValuesOf, type StateInputs } from "../../src/domain/verificationState.js"

const base: StateInputs = {
  phase: VerificationPhase.Started,
  hasVerifier: true,
  verifyCalled: true,
  sasCaptured: true,
  confirmed: false,
  mismatched: false
}

describe("verification state derivation", () => {
  it("is confirmed only with the confirm flag, whatever else is known", () => {
    expect(deriveState(base)).toBe("keys_exchanged")
    expect(deriveState({ ...base, confirmed: true })).toBe("confirmed")
    // the request view wins once the request is finished
    expect(deriveState({ ...base, confirmed: true, phase: VerificationPhase.Done })).toBe("done")
    expect(deriveState({ ...base, confirmed: true, phase: VerificationPhase.Cancelled })).toBe("cancelled")
  })

  it("a local mismatch wins over every phase", () => {
    for (
      const phase of [
        VerificationPhase.Requested,
        VerificationPhase.Ready,
        VerificationPhase.Started,
        VerificationPhase.Done
      ]
    ) {
      expect(deriveState({ ...base, phase, mismatched: true })).toBe("mismatched")
    }
  })

  it("an unknown phase reads as requested", () => {
    expect(deriveState({ ...base, phase: 99 as VerificationPhase })).toBe("requested")
  })

  it("finished phases are cancelled and done only", () => {
    expect(
      [VerificationPhase.Unsent, VerificationPhase.Requested, VerificationPhase.Ready, VerificationPhase.Started].map(
        isFinishedPhase
      )
    )
      .toEqual([false, false, false, false])
    expect(isFinishedPhase(VerificationPhase.Cancelled)).toBe(true)
    expect(isFinishedPhase(VerificationPhase.Done)).toBe(true)
  })
})

describe("SAS values", () => {
  it("keeps each part the method gives and nothing else", () => {
    expect(sasValuesOf({ emoji: [["🐶", "Dog"]], decimal: [1, 2, 3] })).toEqual({
      emoji: [{ symbol: "🐶", description: "Dog" }],
      decimals: [1, 2, 3]
    })
    expect(sasValuesOf({ decimal: [4, 5, 6] })).toEqual({ decimals: [4, 5, 6] })
    expect(sasValuesOf({ emoji: [["🐱", "Cat"]] })).toEqual({ emoji: [{ symbol: "🐱", description: "Cat" }] })
    expect(sasValuesOf({})).toBeUndefined()
  })
})

describe("branded verification ids", () => {
  it("flow ids are FlowIds that decode as they are (an unknown one is the registry's 404, not a decode error)", () => {
    const id = flowIdOf("@alice:example.org", "txn")
    expect(Schema.is(FlowId)(id)).toBe(true)
    expect(Schema.decodeUnknownSync(FlowId)("not-even-mvr")).toBe("not-even-mvr")
  })

  it("sanitised user ids are always valid UserIds", () => {
    for (const raw of ["@alice:example.org", "\u202e", "@a\u200b:b", "no id at all"]) {
      expect(Schema.is(UserId)(sanitizeUserId(raw))).toBe(true)
    }
  })

  it("an operator's target: trimmed, an empty device meaning the user, an invalid user id the 422", () => {
    expect(verificationTarget(" @alice:example.org ", " PHONE ")).toEqual(
      Either.right({ userId: "@alice:example.org", deviceId: "PHONE" })
    )
    expect(verificationTarget("@alice:example.org", "  ")).toEqual(Either.right({ userId: "@alice:example.org" }))
    expect(verificationTarget("@alice:example.org")).toEqual(Either.right({ userId: "@alice:example.org" }))
    const bad = verificationTarget("alice")
    expect(Either.isLeft(bad) && bad.left.kind).toBe("invalid-user-id")
    // the brand alone would accept whitespace; the target does not
    expect(Either.isLeft(verificationTarget("@a b:example.org"))).toBe(true)
  })
})
