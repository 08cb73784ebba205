import { HttpApi, HttpApiEndpoint, HttpApiGroup } from "@effect/platform"
import { Schema } from "effect"

/** `GET /health`: liveness, no auth. */
export class Health extends Schema.Class<Health>("Health")({
  status: Schema.Literal("ok"),
  version: Schema.String,
  uptimeSeconds: Schema.NonNegativeInt
}) {}

export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("health", "/health").addSuccess(Health))
{}

/** The one HTTP contract: served by the daemon, turned into a typed client by the CLI. */
export class CaraApi extends HttpApi.make("cara").add(HealthGroup) {}
