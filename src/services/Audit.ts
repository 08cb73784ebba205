import { Context, type Effect } from "effect"
import type { AuditError } from "../domain/audit.js"

/** The audit log `{state_dir}/audit.jsonl`: every audit record of the project is appended through it. */
export interface AuditShape {
  /** Appends one redacted `{"ts","event","data"}` line and fsyncs it (durable when this succeeds). */
  readonly append: (event: string, data: Record<string, unknown>) => Effect.Effect<void, AuditError>
}

export class Audit extends Context.Tag("cara/Audit")<Audit, AuditShape>() {}
