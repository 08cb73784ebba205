import { Effect, Layer } from "effect"
import { AgentRuntimeLive } from "../layers/AgentLive.js"
import { ConfigSecretsLive } from "../layers/ConfigSecretsLive.js"
import { ControlHttpFromConfig, GatewayServicesLive } from "../layers/ControlHttpLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { MatrixControlUnavailable } from "../services/MatrixControl.js"

// The gateway's listener, placed where the config says, with gateway.auth (a refused auth setup fails startup).
// MatrixControlUnavailable answers `matrix-runtime-unavailable` until the Matrix runtime provides MatrixControl.
const GatewayLive = ControlHttpFromConfig.pipe(Layer.provide(MatrixControlUnavailable))

// GatewayServicesLive: ChannelStatus, EventBus, Metrics, shared by the gateway and the channels.
const InfrastructureLive = Layer.mergeAll(ConfigSecretsLive, GatewayServicesLive).pipe(Layer.provideMerge(StateDirLive))

/**
 * The daemon: every feature layer launched together over the infrastructure layers. It runs until
 * interrupted (SIGTERM/SIGINT via NodeRuntime.runMain); closing the scope releases the port, the stores
 * and every other resource.
 */
export const daemon = Layer.launch(
  Layer.mergeAll(GatewayLive, AgentRuntimeLive).pipe(Layer.provide(InfrastructureLive))
).pipe(Effect.annotateLogs({ service: "daemon" }))
