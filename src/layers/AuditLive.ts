import { Effect, Layer } from "effect"
import { AUDIT_FILE, AuditError, encodeAuditRecord } from "../domain/audit.js"
import { Audit, type AuditShape } from "../services/Audit.js"
import { StateDir, type StateDirShape } from "../services/StateDir.js"

/** The audit log over a state dir (for programs that hold a StateDirShape rather than the Audit tag). */
export const makeAudit = (stateDir: StateDirShape): AuditShape => ({
  append: (event, data) =>
    stateDir.append(AUDIT_FILE, encodeAuditRecord(event, data)).pipe(
      Effect.mapError((e) => new AuditError({ kind: "audit-io", message: e.message })),
      Effect.withSpan("Audit.append", { attributes: { event } })
    )
})

/** The Audit service: needs StateDir. */
export const AuditLive = Layer.effect(Audit, Effect.map(StateDir, makeAudit))
