import { createServer } from "node:http"
import { HttpApiBuilder, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { CaraApi, Health } from "../domain/api.js"
import { version } from "../version.js"

const HealthLive = HttpApiBuilder.group(CaraApi, "health", (handlers) =>
  Effect.gen(function*() {
    const started = Date.now()
    return handlers.handle("health", () =>
      Effect.sync(() =>
        new Health({ status: "ok", version, uptimeSeconds: Math.floor((Date.now() - started) / 1000) })
      ))
  }))

const ApiLive = HttpApiBuilder.api(CaraApi).pipe(Layer.provide(HealthLive))

export interface ListenOptions {
  readonly host: string
  readonly port: number
}

// The one line an operator (or a process manager's health probe) waits for.
const ReadyLog = Layer.effectDiscard(
  HttpServer.addressWith((address) =>
    Effect.logInfo(`cara ${version} ready: gateway listening on ${HttpServer.formatAddress(address)}`)
  )
)

/** Serves the control API on `host:port`; the socket is released when the layer's scope closes. */
export const ControlHttpLive = (options: ListenOptions) =>
  Layer.mergeAll(HttpApiBuilder.serve().pipe(Layer.provide(ApiLive)), ReadyLog).pipe(
    Layer.provide(NodeHttpServer.layer(createServer, { host: options.host, port: options.port }))
  )
