// The `rekey-store --new` state machine (reference §4), as a pure function from what is on disk to the one
// next durable step. The executor (src/programs/rekeyStore.ts) observes, asks, performs that step, and
// observes again; a crash anywhere leaves files from which the same function picks up.
//
// Files: F = matrix/store_passphrase (pinned), P = store_passphrase.pending (the new passphrase),
// M = store_passphrase.rekeying (marker). The order of one rotation:
//
//   write P -> write M -> rewrap every store to P -> F := P (atomic replace) -> remove P -> remove M
//
// Invariants the order gives (and the property test checks after every crash):
// - every store always opens with F, P or the derived key (P is durable before any store moves to it;
//   F is replaced only when every store opens with P; P is removed only once F equals it);
// - while P or M exists, the daemon refuses (`interrupted-rekey`), so it never opens a half-moved set;
// - with neither, every store opens with what the daemon resolves (F if present, else derived).
//
// Unlike the reference, an existing F does not stop a new rotation: OLD is then F.

/** A passphrase the executor can offer: the derived one (CARAPACE_CONFIG_PASSWORD + installation id), F, or P. */
export type Candidate = "derived" | "final" | "pending"

export interface StoreObservation {
  /** A name for messages (`matrix-sdk-crypto.sqlite3`). */
  readonly name: string
  /**
   * The first candidate that opens it, tried in the order pending, final, derived (only those available);
   * `none` when none does.
   */
  readonly opensWith: Candidate | "none"
}

export interface Observed {
  readonly finalPresent: boolean
  readonly pendingPresent: boolean
  readonly markerPresent: boolean
  /** F's content equals P's (after the promote step). False when either is absent. */
  readonly finalEqualsPending: boolean
  /** `CARAPACE_CONFIG_PASSWORD` is set (so the derived candidate exists). */
  readonly derivedAvailable: boolean
  readonly stores: ReadonlyArray<StoreObservation>
  /** This invocation has already written P: a clean state then means "done", not "start a rotation". */
  readonly startedThisRun: boolean
}

export type RefusalReason =
  /** No F, and no CARAPACE_CONFIG_PASSWORD: nothing to derive the current key from. */
  | { readonly _tag: "MissingOldSecret" }
  /** No store exists yet: nothing to rekey. */
  | { readonly _tag: "NoStores" }
  /** Some store opens with none of the passphrases available. No store has been written. */
  | { readonly _tag: "StoreUnopenable"; readonly stores: ReadonlyArray<string>; readonly derivedAvailable: boolean }
  /** With nothing in flight, a store does not open with what the daemon would use. */
  | { readonly _tag: "StoreNotCurrent"; readonly stores: ReadonlyArray<string>; readonly current: "final" | "derived" }

export type Step =
  | { readonly _tag: "WritePending" }
  | { readonly _tag: "WriteMarker" }
  | { readonly _tag: "RewrapStore"; readonly store: string; readonly from: "final" | "derived" }
  | { readonly _tag: "PromotePending" }
  | { readonly _tag: "RemovePending" }
  | { readonly _tag: "RemoveMarker" }
  | { readonly _tag: "Done" }
  | { readonly _tag: "Refuse"; readonly reason: RefusalReason }

const refuse = (reason: RefusalReason): Step => ({ _tag: "Refuse", reason })

/** The next durable step of a rotation from the observed files. Total and pure. */
export const nextStep = (o: Observed): Step => {
  const unopenable = o.stores.filter((s) => s.opensWith === "none").map((s) => s.name)

  if (o.pendingPresent) {
    // Checked before any write of this step, so a wrong password never leaves a store half-moved.
    if (unopenable.length > 0) {
      return refuse({ _tag: "StoreUnopenable", stores: unopenable, derivedAvailable: o.derivedAvailable })
    }
    if (!o.markerPresent) return { _tag: "WriteMarker" }
    for (const s of o.stores) {
      if (s.opensWith === "final" || s.opensWith === "derived") {
        return { _tag: "RewrapStore", store: s.name, from: s.opensWith }
      }
    }
    if (!o.finalEqualsPending) return { _tag: "PromotePending" }
    return { _tag: "RemovePending" }
  }

  // Without P, every store must open with what the daemon will resolve once the files are clean.
  const current = o.finalPresent ? "final" : "derived"
  if (!o.finalPresent && !o.derivedAvailable && o.stores.length > 0) return refuse({ _tag: "MissingOldSecret" })
  if (unopenable.length > 0) {
    return refuse({ _tag: "StoreUnopenable", stores: unopenable, derivedAvailable: o.derivedAvailable })
  }
  const notCurrent = o.stores.filter((s) => s.opensWith !== current).map((s) => s.name)
  if (notCurrent.length > 0) return refuse({ _tag: "StoreNotCurrent", stores: notCurrent, current })

  // M alone: the last step of a rotation (or a marker whose P was never written), stores are current.
  if (o.markerPresent) return { _tag: "RemoveMarker" }
  if (o.startedThisRun) return { _tag: "Done" }
  if (!o.finalPresent && !o.derivedAvailable) return refuse({ _tag: "MissingOldSecret" })
  if (o.stores.length === 0) return refuse({ _tag: "NoStores" })
  return { _tag: "WritePending" }
}

/** Whether the daemon may open the stores in this state (no rotation in flight). */
export const daemonMayOpen = (o: Pick<Observed, "pendingPresent" | "markerPresent">): boolean =>
  !o.pendingPresent && !o.markerPresent
