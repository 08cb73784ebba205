// The command tree of `cara`: every command's name, flags, arguments and description, and nothing else.
// Each handler imports its module when the command runs, so `cara --help`, `cara --version` and
// `cara status` load only what they use (the agent SDKs, Matrix, SQLite and the config loader stay out).
// docs/cli.md is generated from this tree (scripts/docs-cli.ts).
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import { DEFAULT_GATEWAY_PORT } from "../domain/gateway.js"

/** A handler that loads its module on first use. */
const lazy = <M, A, E, R>(load: () => Promise<M>, pick: (m: M) => (a: A) => Effect.Effect<void, E, R>) => (a: A) =>
  Effect.flatMap(Effect.promise(load), (m) => pick(m)(a))

const json = Options.boolean("json").pipe(Options.withDescription("print the result as JSON"))
/** `--host` / `--port` of every command that talks to the daemon (defaults resolved by `resolveTarget`). */
export const hostOption = Options.text("host").pipe(
  Options.withDescription("gateway host (default 127.0.0.1)"),
  Options.optional
)
export const portOption = Options.integer("port").pipe(
  Options.withAlias("p"),
  Options.withDescription(`gateway port (default: gateway.port from the config, else ${DEFAULT_GATEWAY_PORT})`),
  Options.optional
)
/** The flags of the commands that only ask the daemon (src/cli/direct.ts reads the same ones without @effect/cli). */
export const gatewayOptions = { host: hostOption, port: portOption, json }
const gateway = gatewayOptions

// ---------------------------------------------------------------------------------------------------------
// cara config …

const configPath = Args.text({ name: "path" }).pipe(
  Args.withDescription("a dotted config path, e.g. gateway.port or matrix.userId")
)
const loadConfig = () => import("./config.js")

const configCommand = Command.make("config").pipe(
  Command.withDescription("Inspect and maintain the config file."),
  Command.withSubcommands([
    Command.make("check", { json }, lazy(loadConfig, (m) => m.check)).pipe(
      Command.withDescription("Load and validate the config; print every finding with its path; exit 1 on errors.")
    ),
    Command.make("show", { json }, lazy(loadConfig, (m) => m.show)).pipe(
      Command.withDescription("Print the config as the daemon reads it (defaults filled in); every secret is masked.")
    ),
    Command.make("get", { json, path: configPath }, lazy(loadConfig, (m) => m.get)).pipe(
      Command.withDescription(
        "Print one value of the config (a secret is masked); exit 1 when the path does not exist."
      )
    ),
    Command.make(
      "set",
      {
        path: configPath,
        value: Args.text({ name: "value" }).pipe(
          Args.withDescription("the new value: JSON5 (42, true, [\"a\"]) or plain text")
        )
      },
      lazy(loadConfig, (m) => m.set)
    ).pipe(
      Command.withDescription(
        "Set one value in the config file in place (comments kept). A value for a secret field is sealed with CARAPACE_CONFIG_PASSWORD (a ${VAR} reference is kept as is). Refuses while the daemon runs where the daemon owns the value."
      )
    ),
    Command.make(
      "rekey",
      {
        newPasswordEnv: Options.text("new-password-env").pipe(
          Options.withDescription("read the new password from this environment variable instead of a prompt"),
          Options.optional
        )
      },
      lazy(loadConfig, (m) => m.rekey)
    ).pipe(
      Command.withDescription(
        "Re-seal every enc:v2 value of the config from CARAPACE_CONFIG_PASSWORD to a new password, in place (comments kept). Stop the daemon first."
      )
    )
  ])
)

// ---------------------------------------------------------------------------------------------------------
// cara matrix …

const idArg = Args.text({ name: "id" }).pipe(Args.withDescription("a record id from `cara matrix dlq list`"))
const all = Options.boolean("all").pipe(Options.withDescription("every record in the DLQ"))
const loadDlq = () => import("./dlq.js")

const flowArg = Args.text({ name: "flow-id" }).pipe(Args.withDescription("a flow id from `cara matrix verifications`"))

/** The options and arguments of the commands lite.ts also reads (test/unit/cli-direct.test.ts compares the readings). */
export const actionConfigs = {
  "matrix dlq show": {
    ...gateway,
    id: idArg,
    reveal: Options.boolean("reveal").pipe(Options.withDescription("also print the message body (only to a terminal)"))
  },
  "matrix dlq replay": { ...gateway, id: Args.optional(idArg), all },
  "matrix dlq purge": {
    ...gateway,
    id: Args.optional(idArg),
    all,
    yes: Options.boolean("yes").pipe(Options.withDescription("skip the typed confirmation (for scripts)"))
  },
  "matrix accept": { ...gateway, flowId: flowArg },
  "matrix cancel": { ...gateway, flowId: flowArg },
  "matrix verify": {
    user: Args.text({ name: "user" }).pipe(Args.withDescription("the Matrix user id, e.g. @alice:example.org")),
    device: Args.text({ name: "device" }).pipe(
      Args.withDescription("one of their device ids (omit to verify the user in a DM)"),
      Args.optional
    ),
    ...gateway
  }
}

const dlqCommand = Command.make("dlq").pipe(
  Command.withDescription("Inspect, replay and purge the Matrix inbound dead-letter queue of the running daemon."),
  Command.withSubcommands([
    Command.make("list", gateway, lazy(loadDlq, (m) => m.list)).pipe(
      Command.withDescription("List the records in the inbound DLQ (metadata only, never message bodies).")
    ),
    Command.make("show", actionConfigs["matrix dlq show"], lazy(loadDlq, (m) => m.show)).pipe(
      Command.withDescription("Show one DLQ record; --reveal prints the message body on a terminal.")
    ),
    Command.make("replay", actionConfigs["matrix dlq replay"], lazy(loadDlq, (m) => m.replay)).pipe(
      Command.withDescription("Replay one DLQ record now (or --all), answering each event at most once.")
    ),
    Command.make("purge", actionConfigs["matrix dlq purge"], lazy(loadDlq, (m) => m.purge)).pipe(
      Command.withDescription("Delete one DLQ record (or --all) after a typed confirmation; --yes for scripts.")
    )
  ])
)

const loadRecovery = () => import("./recoveryKey.js")

const recoveryKeyCommand = Command.make("recovery-key").pipe(
  Command.withDescription("Show, restore or rotate the Matrix recovery key (CLI only; never through the control API)."),
  Command.withSubcommands([
    Command.make(
      "show",
      {
        allowNonTerminal: Options.boolean("allow-non-terminal").pipe(
          Options.withDescription("print even when stdout is not a terminal (intentional capture only)")
        )
      },
      lazy(loadRecovery, (m) => m.show)
    ).pipe(Command.withDescription("Print the Matrix recovery key (only to a terminal unless --allow-non-terminal).")),
    Command.make(
      "restore",
      {
        keyFile: Options.file("key-file").pipe(
          Options.optional,
          Options.withDescription("read the key from this file (at most 4096 bytes)")
        ),
        stdin: Options.boolean("stdin").pipe(Options.withDescription("read the key from standard input"))
      },
      lazy(loadRecovery, (m) => m.restore)
    ).pipe(
      Command.withDescription(
        "With the daemon stopped: store a saved recovery key for the next start (--key-file PATH, --stdin, or a hidden prompt)."
      )
    ),
    Command.make(
      "rotate",
      { yes: Options.boolean("yes").pipe(Options.withDescription("confirm without the interactive prompt")) },
      lazy(loadRecovery, (m) => m.rotate)
    ).pipe(
      Command.withDescription(
        "With the daemon stopped: replace the recovery key (new secret-storage key and backup); the old key is abandoned."
      )
    )
  ])
)

const loadVerification = () => import("./verification.js")

const verificationCommands = [
  Command.make("verifications", gateway, lazy(loadVerification, (m) => m.list)).pipe(
    Command.withDescription("List Matrix SAS verification flows (with the emoji and decimals once captured).")
  ),
  Command.make("accept", actionConfigs["matrix accept"], lazy(loadVerification, (m) => m.accept)).pipe(
    Command.withDescription("Accept a verification request; the bot starts SAS once the peer is ready.")
  ),
  Command.make(
    "confirm",
    {
      flowId: flowArg,
      match: Options.boolean("match").pipe(Options.withDescription("the SAS values are the same on both devices")),
      noMatch: Options.boolean("no-match").pipe(
        Options.withDescription("the SAS values differ: reject (cancels with m.mismatched_sas)")
      ),
      skip: Options.boolean("unsafe-skip-sas-prompt").pipe(
        Options.withDescription("do not show the SAS and ask for `yes` (for automation; written to the audit log)")
      ),
      ...gateway
    },
    lazy(loadVerification, (m) => m.confirm)
  ).pipe(
    Command.withDescription(
      "Confirm (--match) or reject (--no-match) the SAS of a flow after comparing it with the other device."
    )
  ),
  Command.make("cancel", actionConfigs["matrix cancel"], lazy(loadVerification, (m) => m.cancel)).pipe(
    Command.withDescription("Cancel a verification flow (on the peer too).")
  ),
  Command.make("verify", actionConfigs["matrix verify"], lazy(loadVerification, (m) => m.verify)).pipe(
    Command.withDescription("Start a verification from the bot's side (a device, or the user in a DM room).")
  ),
  Command.make("devices", gateway, lazy(loadVerification, (m) => m.devices)).pipe(
    Command.withDescription("List the bot account's own devices and whether each is verified.")
  )
] as const

const matrixCommand = Command.make("matrix").pipe(
  Command.withDescription("Maintain the Matrix channel's local state."),
  Command.withSubcommands([
    Command.make(
      "rekey-store",
      {
        fresh: Options.boolean("new").pipe(
          Options.withDescription(
            "rotate the Matrix store key to a fresh random passphrase pinned in matrix/store_passphrase"
          )
        ),
        json
      },
      lazy(() => import("./matrix.js"), (m) => m.rekeyStore)
    ).pipe(
      Command.withDescription(
        "With the daemon stopped: move the Matrix stores to a fresh random passphrase pinned in matrix/store_passphrase. Rerun after any interruption to finish it."
      )
    ),
    dlqCommand,
    recoveryKeyCommand,
    ...verificationCommands
  ])
)

// ---------------------------------------------------------------------------------------------------------
// cara doctor | setup | status | verify

const doctorCommand = Command.make(
  "doctor",
  {
    json,
    offline: Options.boolean("offline").pipe(
      Options.withDescription("skip the homeserver checks (reachability, token, cross-signing, backup)")
    )
  },
  lazy(() => import("./doctor.js"), (m) => m.doctor)
).pipe(
  Command.withDescription(
    "Check the installation: config, CARAPACE_CONFIG_PASSWORD, state dir and file modes, the maintenance lock, rekey and recovery markers, the stores, the homeserver, the token, cross-signing and backup. Exit 0 = all ok, 1 = warnings, 2 = errors."
  )
)

const list = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.repeated)

const setupCommand = Command.make(
  "setup",
  {
    homeserver: Options.text("homeserver").pipe(
      Options.withDescription("the homeserver URL (default: found from --user through .well-known/matrix/client)"),
      Options.optional
    ),
    user: Options.text("user").pipe(
      Options.withDescription("the bot's Matrix user id, e.g. @cara:example.org"),
      Options.optional
    ),
    allowUsers: list("allow-user", "a user who may invite cara and get answers (repeatable)"),
    allowServers: list("allow-server", "a homeserver whose users may all invite cara (repeatable)"),
    provider: Options.text("provider").pipe(
      Options.withDescription("anthropic, openai or local (the built-in test model local:echo)"),
      Options.optional
    ),
    model: Options.text("model").pipe(
      Options.withDescription("the model name, e.g. claude-sonnet-4-6"),
      Options.optional
    ),
    yes: Options.boolean("yes").pipe(Options.withDescription("ask nothing: take the flags and the defaults")),
    force: Options.boolean("force").pipe(
      Options.withDescription("replace an existing config (a .bak-<time> copy is kept)")
    )
  },
  lazy(() => import("./setup.js"), (m) => m.setupHandler)
).pipe(
  Command.withDescription(
    "Write carapace.json5 for a bot account: finds the homeserver, checks it offers password login, keeps secrets as ${VAR} references, prints the exports still needed and runs `cara config check`. Interactive on a terminal; scriptable with flags and --yes. Never overwrites without --force."
  )
)

const statusCommand = Command.make("status", gateway, lazy(() => import("./status.js"), (m) => m.status)).pipe(
  Command.withDescription("Show the gateway's health and, with CARAPACE_GATEWAY_TOKEN, channel and Matrix status.")
)

const verifyCommand = Command.make(
  "verify",
  {
    outcome: Options.choice("outcome", ["matrix", "auto"]).pipe(
      Options.withDescription("what to verify (only matrix today)"),
      Options.withDefault("matrix" as const)
    ),
    matrixTo: Options.text("matrix-to").pipe(
      Options.withDescription("room id to send a probe message to (end-to-end check)"),
      Options.optional
    ),
    port: Options.integer("port").pipe(
      Options.withAlias("p"),
      Options.withDescription(`gateway port (default: gateway.port, else ${DEFAULT_GATEWAY_PORT})`),
      Options.optional
    ),
    wait: Options.integer("wait").pipe(
      Options.withDescription("seconds to wait for the matrix channel to connect"),
      Options.withDefault(30)
    ),
    json: Options.boolean("json").pipe(Options.withDescription("print the checks and the verdict as JSON at the end"))
  },
  lazy(() => import("./verify.js"), (m) => m.verify)
).pipe(
  Command.withDescription(
    "Check the Matrix set-up end to end against the running daemon; PASS/FAIL lines, exit 0 only on pass."
  )
)

/** `cara` with no subcommand starts the gateway daemon (after checking that there is a config to run on). */
export const root = Command.make("cara", {}, lazy(() => import("./daemon.js"), (m) => m.startDaemon)).pipe(
  Command.withDescription(
    "cara: an agent gateway for Matrix with end-to-end encryption. With no subcommand, starts the daemon."
  ),
  Command.withSubcommands([configCommand, doctorCommand, matrixCommand, setupCommand, statusCommand, verifyCommand])
)
