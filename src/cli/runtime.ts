import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import { reportFailure } from "./failure.js"
import { installStderrRedaction, LoggingLive, logLevelFromEnv } from "./logging.js"

/**
 * Runs one command's program as the process: stderr logging with secrets redacted, operator-facing failure
 * reports, exit codes. Shared by the full command line (run.ts) and the commands started without it (direct.ts).
 */
export const runCommand = <E>(program: Effect.Effect<void, E>) => {
  installStderrRedaction()
  return program.pipe(
    Effect.tapErrorCause(reportFailure),
    Effect.provide(Layer.merge(LoggingLive, Logger.minimumLogLevel(logLevelFromEnv()))),
    NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
  )
}
