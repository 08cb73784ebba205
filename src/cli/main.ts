import * as Command from "@effect/cli/Command"
import { Effect } from "effect"
import { configCommand } from "./config.js"
import { doctorCommand } from "./doctor.js"
import { matrixCommand } from "./matrix.js"
import { setupCommand } from "./setup.js"
import { statusCommand } from "./status.js"
import { verifyCommand } from "./verify.js"
import { version } from "../version.js"

/** `cara` with no subcommand starts the gateway daemon. */
// The daemon's modules (agent SDKs, Matrix) load only when the daemon runs, so the CLI's other commands start fast.
const runDaemon = Effect.promise(() => import("../programs/daemon.js")).pipe(Effect.flatMap((m) => m.daemon))

const root = Command.make("cara", {}, () => runDaemon).pipe(
  Command.withDescription("cara: an agent gateway for Matrix with end-to-end encryption. With no subcommand, starts the daemon."),
  Command.withSubcommands([configCommand, doctorCommand, matrixCommand, setupCommand, statusCommand, verifyCommand])
)

export const cli = Command.run(root, { name: "cara", version })
