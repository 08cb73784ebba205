import { Effect, Layer } from "effect"
import { AgentRuntimeLive } from "../layers/AgentLive.js"
import { AuditLive } from "../layers/AuditLive.js"
import { ConfigSecretsLive } from "../layers/ConfigSecretsLive.js"
import { ControlHttpFromConfig, GatewayServicesLive } from "../layers/ControlHttpLive.js"
import { UnhandledRejectionsLogged } from "../layers/ProcessGuards.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { StateFilesChecked } from "../layers/StateFilesCheck.js"
import { MatrixSyncLive } from "../layers/MatrixSyncLive.js"
import { RecoveryKeyLive } from "../layers/RecoveryKeyLive.js"
import { DaemonRekeyLockLive, StorePassphraseLive } from "../layers/StorePassphraseLive.js"
import { DlqLive } from "../layers/DlqLive.js"
import { VerificationLive } from "../layers/VerificationLive.js"

// The gateway's listener, placed where the config says, with gateway.auth (a refused auth setup fails startup).
// The Matrix runtime provides MatrixControl (send-test); it runs only when matrix.enabled, and its failures put
// the channel in `error` without stopping the gateway.
// The inbound DLQ: one instance shared by the Matrix runtime (append, replay) and the gateway (dlq endpoints).
const DlqDaemonLive = DlqLive.pipe(Layer.provide(StorePassphraseLive))
const MatrixLive = MatrixSyncLive().pipe(Layer.provide(RecoveryKeyLive), Layer.provide(Layer.mergeAll(AgentRuntimeLive, StorePassphraseLive, DlqDaemonLive, VerificationLive)))
// The same DLQ instance serves the gateway's dlq endpoints (layers are shared by reference within one build).
// One Verification registry: fed by the Matrix runtime, read by the verification endpoints.
const GatewayLive = ControlHttpFromConfig.pipe(Layer.provide(MatrixLive), Layer.provide(DlqDaemonLive), Layer.provide(VerificationLive))

// GatewayServicesLive: ChannelStatus, EventBus, Metrics, shared by the gateway and the channels.
const InfrastructureLive = Layer.mergeAll(ConfigSecretsLive, GatewayServicesLive, AuditLive).pipe(Layer.provideMerge(StateDirLive))

/**
 * The daemon: every feature layer launched together over the infrastructure layers. It runs until
 * interrupted (SIGTERM/SIGINT via NodeRuntime.runMain); closing the scope releases the port, the stores
 * and every other resource.
 */
export const daemon = Layer.launch(
  // DaemonRekeyLockLive first: no store is opened unless this daemon holds .matrix-rekey.lock. Then every
  // state file is looked at (a damaged or missing one refuses the start, naming the file) before any opens it.
  Layer.mergeAll(GatewayLive, AgentRuntimeLive).pipe(
    Layer.provide(StateFilesChecked),
    Layer.provide(DaemonRekeyLockLive),
    Layer.provide(InfrastructureLive),
    Layer.provide(UnhandledRejectionsLogged)
  )
).pipe(Effect.annotateLogs({ service: "daemon" }))
