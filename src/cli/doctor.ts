import { Console, Effect } from "effect"

/** `cara doctor [--json] [--offline]`: every installation check with its remediation; the exit code is the worst finding. */
export const doctor = ({ json, offline }: { readonly json: boolean; readonly offline: boolean }) =>
  Effect.gen(function*() {
    // Loaded on use, like the other programs: the store code stays out of the other commands' start-up.
    const { renderDoctor, runDoctor } = yield* Effect.promise(() => import("../programs/doctor.js"))
    const report = yield* runDoctor({ env: { ...process.env }, offline })
    yield* Console.log(renderDoctor(report, json))
    // The report is the message: exit with its code and no second error dump.
    process.exitCode = report.exitCode
  })
