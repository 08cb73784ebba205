import { Effect, Layer } from "effect"
import { bindToHost } from "../domain/gateway.js"
import { AgentRuntimeLive } from "../layers/AgentLive.js"
import { ConfigSecretsLive } from "../layers/ConfigSecretsLive.js"
import { ControlHttpLive } from "../layers/ControlHttpLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { ConfigSecrets } from "../services/ConfigSecrets.js"

// The gateway's listener, placed where the config says (a bad bind is already a config error).
const GatewayLive = Layer.unwrapEffect(
  Effect.map(ConfigSecrets, ({ config }) =>
    ControlHttpLive({ host: bindToHost(config.gateway.bind) ?? "127.0.0.1", port: config.gateway.port })
  )
)

const InfrastructureLive = ConfigSecretsLive.pipe(Layer.provideMerge(StateDirLive))

/**
 * The daemon: every feature layer launched together over the infrastructure layers. It runs until
 * interrupted (SIGTERM/SIGINT via NodeRuntime.runMain); closing the scope releases the port, the stores
 * and every other resource.
 */
export const daemon = Layer.launch(
  Layer.mergeAll(GatewayLive, AgentRuntimeLive).pipe(Layer.provide(InfrastructureLive))
).pipe(Effect.annotateLogs({ service: "daemon" }))
