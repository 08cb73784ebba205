import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer, Logger } from "effect"
import { reportFailure } from "./failure.js"
import { installStderrRedaction, LoggingLive, logLevelFromEnv } from "./logging.js"
import { cli } from "./main.js"

/** Runs the command line: one runtime, stderr logging, operator-facing failure reports, exit codes. */
export const run = (argv: ReadonlyArray<string>) => {
  installStderrRedaction()
  return cli(argv).pipe(
    Effect.tapErrorCause(reportFailure),
    Effect.provide(Layer.mergeAll(NodeContext.layer, LoggingLive, Logger.minimumLogLevel(logLevelFromEnv()))),
    NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
  )
}
