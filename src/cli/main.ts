import { Command } from "@effect/cli"
import { daemon } from "../programs/daemon.js"
import { configCommand } from "./config.js"
import { version } from "../version.js"

/** `cara` with no subcommand starts the gateway daemon. */
const root = Command.make("cara", {}, () => daemon).pipe(
  Command.withDescription("cara: an agent gateway for Matrix with end-to-end encryption. With no subcommand, starts the daemon."),
  Command.withSubcommands([configCommand])
)

export const cli = Command.run(root, { name: "cara", version })
