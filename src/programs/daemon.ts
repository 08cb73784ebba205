import { Effect, Layer } from "effect"
import { AgentRuntimeLive } from "../layers/AgentLive.js"
import { AuditLive } from "../layers/AuditLive.js"
import { ConfigSecretsLive } from "../layers/ConfigSecretsLive.js"
import { ControlHttpFromConfig, GatewayServicesLive } from "../layers/ControlHttpLive.js"
import { DlqLive } from "../layers/DlqLive.js"
import { MatrixSyncLive } from "../layers/MatrixSyncLive.js"
import { UnhandledRejectionsLogged } from "../layers/ProcessGuards.js"
import { RecoveryKeyLive } from "../layers/RecoveryKeyLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { StateFilesChecked } from "../layers/StateFilesCheck.js"
import { DaemonRekeyLockLive, StorePassphraseLive } from "../layers/StorePassphraseLive.js"
import { VerificationLive } from "../layers/VerificationLive.js"

// The daemon's layer graph in named tiers, each provided once (every tier sees the tiers below it).

/** The state directory, the config with its secrets, ChannelStatus / EventBus / Metrics, and the audit log. */
const Infrastructure = Layer.mergeAll(ConfigSecretsLive, GatewayServicesLive, AuditLive).pipe(
  Layer.provideMerge(StateDirLive)
)

/**
 * Before any store opens: this daemon holds `.matrix-rekey.lock`, then every state file is looked at (a
 * damaged or missing one refuses the start, naming the file).
 */
const Guards = StateFilesChecked.pipe(Layer.provideMerge(DaemonRekeyLockLive))

/** The store passphrase and the recovery key. */
const Secrets = Layer.mergeAll(StorePassphraseLive, RecoveryKeyLive)

/** The inbound DLQ: one instance for the Matrix runtime (append, replay) and the gateway (dlq endpoints). */
const Stores = DlqLive

/** The agent runtime (sessions, language models). */
const Agent = AgentRuntimeLive

/**
 * The Matrix runtime (MatrixSync, MatrixControl for `send-test`) and the Verification registry it feeds; the
 * runtime runs only when matrix.enabled, and its failures put the channel in `error` without stopping the
 * gateway.
 */
const Matrix = MatrixSyncLive().pipe(Layer.provideMerge(VerificationLive))

/** The gateway's listener, placed where the config says, with gateway.auth (a refused auth setup fails startup). */
const Control = ControlHttpFromConfig

/**
 * The daemon: the tiers built bottom-up. It runs until interrupted (SIGTERM/SIGINT via NodeRuntime.runMain);
 * closing the scope releases the port, the stores and every other resource.
 */
export const daemon = Layer.launch(
  Control.pipe(
    Layer.provideMerge(Matrix),
    Layer.provideMerge(Agent),
    Layer.provideMerge(Stores),
    Layer.provideMerge(Secrets),
    Layer.provide(Guards),
    Layer.provide(Infrastructure),
    Layer.provide(UnhandledRejectionsLogged)
  )
).pipe(Effect.annotateLogs({ service: "daemon" }))
