import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect } from "effect"

/** `cara doctor [--json] [--offline]`: every installation check with its remediation; the exit code is the worst finding. */
export const doctorCommand = Command.make(
  "doctor",
  {
    json: Options.boolean("json").pipe(Options.withDescription("print the report as JSON")),
    offline: Options.boolean("offline").pipe(Options.withDescription("skip the homeserver checks (reachability, token, cross-signing, backup)"))
  },
  ({ json, offline }) =>
    Effect.gen(function*() {
      // Loaded on use, like the other programs: the store code stays out of the other commands' start-up.
      const { renderDoctor, runDoctor } = yield* Effect.promise(() => import("../programs/doctor.js"))
      const report = yield* runDoctor({ env: { ...process.env }, offline })
      yield* Console.log(renderDoctor(report, json))
      // The report is the message: exit with its code and no second error dump.
      process.exitCode = report.exitCode
    })
).pipe(
  Command.withDescription(
    "Check the installation: config, CARAPACE_CONFIG_PASSWORD, state dir and file modes, the maintenance lock, rekey and recovery markers, the stores, the homeserver, the token, cross-signing and backup. Exit 0 = all ok, 1 = warnings, 2 = errors."
  )
)
