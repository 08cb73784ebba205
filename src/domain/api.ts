import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import { Schema } from "effect"
import { ChannelInfo } from "./channel.js"
import { DlqDetail, DlqReplayReport, DlqSummary } from "./dlq.js"
import {
  FlowId,
  InvalidVerificationUser,
  OwnDevice,
  VerificationFailed,
  VerificationFlow,
  VerificationFlowNotFound,
  VerificationFlowNotReady,
  VerificationFlowTerminal,
  VerificationTargetNotFound,
  VerificationTimeout
} from "./verification.js"

// ---------------------------------------------------------------------------------------------------------
// Errors. Every error body has one shape: `{ "ok": false, "error": { "kind", "message", "retryAfterMs"?,
// "reason"? } }`. `kind` is a stable kebab-case string (reference §9.4 / §12 vocabulary); clients must
// tolerate kinds they do not know. One class per HTTP status, so the client decodes by status alone.

// The kinds each class carries, as literal unions (the server can only answer with these); a client decodes
// a kind it does not know (a newer daemon) to its class's first kind, keeping the message.

export const BadRequestKind = Schema.Literal(
  "invalid-request",
  "invalid-json",
  "invalid-room-id",
  "invalid-string",
  "invalid-length",
  "body-too-large",
  "websocket-handshake-invalid",
  "websocket-upgrade-required"
)
export const UnauthorizedKind = Schema.Literal("unauthorized", "token-in-query")
export const ForbiddenKind = Schema.Literal(
  "non-local-client",
  "csrf-origin-mismatch",
  "host-not-allowed",
  "non-canonical-path"
)
export const NotFoundKind = Schema.Literal("not-found", "dlq-record-not-found")
export const UnsupportedMediaTypeKind = Schema.Literal("unsupported-media-type")
export const TooManyRequestsKind = Schema.Literal("rate-limited")
/** The Matrix runtime's own kinds a failed call keeps (reference §12), and the DLQ's dispatch failure. */
export const BadGatewayKind = Schema.Literal(
  "send-failed",
  "send-terminal",
  "room-not-found",
  "unsupported-room",
  "command-queue-full",
  "sync-failed",
  "auth-probe",
  "dlq-dispatch-failure"
)
export const ServiceUnavailableKind = Schema.Literal(
  "matrix-runtime-unavailable",
  "not-connected",
  "dlq-crypto",
  "dlq-io",
  "dlq-serialization",
  "dlq-dispatch-failure",
  "dlq-cap-saturation"
)

const detail = <K extends Schema.Schema<any, any, never>>(kind: K) => ({
  kind,
  message: Schema.String,
  retryAfterMs: Schema.optional(Schema.Int),
  reason: Schema.optional(Schema.String)
})

const ErrorWire = Schema.Struct({ ok: Schema.Literal(false), error: Schema.Struct(detail(Schema.String)) })
interface ErrorFields<K extends string> {
  readonly kind: K
  readonly message: string
  readonly retryAfterMs?: number | undefined
  readonly reason?: string | undefined
}

/** Wire form of an error class: the class on the inside, the shared body on the outside, with its status. */
const wire = <K extends string, A extends ErrorFields<K>>(
  cls: Schema.Schema<A, any, never> & (new(props: ErrorFields<K>) => A),
  kinds: { readonly literals: ReadonlyArray<K> },
  status: number
) =>
  Schema.transform(ErrorWire, Schema.typeSchema(cls), {
    strict: false,
    decode: (w) =>
      new cls({
        ...w.error,
        kind: (kinds.literals as ReadonlyArray<string>).includes(w.error.kind)
          ? (w.error.kind as K)
          : kinds.literals[0]!
      }),
    encode: (e) => ({
      ok: false as const,
      error: {
        kind: e.kind,
        message: e.message,
        ...(e.retryAfterMs !== undefined ? { retryAfterMs: e.retryAfterMs } : {}),
        ...(e.reason !== undefined ? { reason: e.reason } : {})
      }
    })
  }).annotations(HttpApiSchema.annotations({ status }))

/** 400: the request is malformed (bad JSON, bad ids, oversize body). */
export class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", detail(BadRequestKind)) {}
/** 401: no or wrong credentials (`unauthorized`), or a token in the query string (`token-in-query`). */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", detail(UnauthorizedKind)) {}
/** 403: refused although authenticated or before auth (`csrf-origin-mismatch`, `non-local-client`). */
export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", detail(ForbiddenKind)) {}
/** 404: the named thing does not exist (`dlq-record-not-found`). */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", detail(NotFoundKind)) {}
/** 415: a state-changing request whose body is not `application/json` (`unsupported-media-type`). */
export class UnsupportedMediaType
  extends Schema.TaggedError<UnsupportedMediaType>()("UnsupportedMediaType", detail(UnsupportedMediaTypeKind))
{}
/** 429: per-IP rate limit (`rate-limited`); `retryAfterMs` and `Retry-After` say when to retry. */
export class TooManyRequests
  extends Schema.TaggedError<TooManyRequests>()("TooManyRequests", detail(TooManyRequestsKind))
{}
/** 502: the Matrix runtime refused or failed the call (`send-failed`, `room-not-found`, ...). */
export class BadGateway extends Schema.TaggedError<BadGateway>()("BadGateway", detail(BadGatewayKind)) {}
/** 503: the Matrix runtime is unavailable (`matrix-runtime-unavailable`, `not-connected`, ...). */
export class ServiceUnavailable
  extends Schema.TaggedError<ServiceUnavailable>()("ServiceUnavailable", detail(ServiceUnavailableKind))
{}

export const BadRequestWire = wire(BadRequest, BadRequestKind, 400)
export const UnauthorizedWire = wire(Unauthorized, UnauthorizedKind, 401)
export const ForbiddenWire = wire(Forbidden, ForbiddenKind, 403)
export const NotFoundWire = wire(NotFound, NotFoundKind, 404)
export const UnsupportedMediaTypeWire = wire(UnsupportedMediaType, UnsupportedMediaTypeKind, 415)
export const TooManyRequestsWire = wire(TooManyRequests, TooManyRequestsKind, 429)
export const BadGatewayWire = wire(BadGateway, BadGatewayKind, 502)
export const ServiceUnavailableWire = wire(ServiceUnavailable, ServiceUnavailableKind, 503)

export type ApiError =
  | BadRequest
  | Unauthorized
  | Forbidden
  | NotFound
  | UnsupportedMediaType
  | TooManyRequests
  | BadGateway
  | ServiceUnavailable

export const isApiError = (u: unknown): u is ApiError =>
  u instanceof BadRequest || u instanceof Unauthorized || u instanceof Forbidden || u instanceof NotFound ||
  u instanceof UnsupportedMediaType || u instanceof TooManyRequests ||
  u instanceof BadGateway || u instanceof ServiceUnavailable

// ---------------------------------------------------------------------------------------------------------
// health: no auth

/** `GET /health`, `GET /health/live`: liveness. */
export class Health extends Schema.Class<Health>("Health")({
  status: Schema.Literal("ok"),
  version: Schema.String,
  uptimeSeconds: Schema.NonNegativeInt
}) {}

const ReadyChannel = Schema.Struct({
  id: Schema.String,
  status: Schema.String,
  /** Matrix: seconds since the homeserver last answered a /sync (`null`: not yet since the start). */
  lastSuccessfulSyncAgoSeconds: Schema.optional(Schema.NullOr(Schema.NonNegativeInt))
})

/** `GET /health/ready` 200. */
export class Ready extends Schema.Class<Ready>("Ready")({
  status: Schema.Literal("ready"),
  version: Schema.String,
  uptimeSeconds: Schema.NonNegativeInt,
  channels: Schema.Array(ReadyChannel)
}) {}

/** `GET /health/ready` 503 (with `Retry-After: 5`) while a registered channel is in `error`. */
export class NotReady extends Schema.Class<NotReady>("NotReady")({
  status: Schema.Literal("not_ready"),
  version: Schema.String,
  uptimeSeconds: Schema.NonNegativeInt,
  channels: Schema.Array(ReadyChannel),
  reasons: Schema.Array(Schema.String)
}, HttpApiSchema.annotations({ status: 503 })) {}

export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("health", "/health").addSuccess(Health))
  .add(HttpApiEndpoint.get("live", "/health/live").addSuccess(Health))
  .add(HttpApiEndpoint.get("ready", "/health/ready").addSuccess(Ready).addError(NotReady))
{}

// ---------------------------------------------------------------------------------------------------------
// Auth middleware (implemented in src/layers/GatewayAuth.ts)

/** `Authorization: Bearer <gateway token>` on every protected route (also from loopback in token mode). */
export class GatewayAuthorization extends HttpApiMiddleware.Tag<GatewayAuthorization>()("cara/GatewayAuthorization", {
  failure: Schema.Union(UnauthorizedWire, ForbiddenWire, UnsupportedMediaTypeWire, TooManyRequestsWire)
}) {}

// ---------------------------------------------------------------------------------------------------------
// control: gateway and channel status

/** `GET /control/channels` (reference §9.5; Matrix metadata in `extra`, §11). */
export class Channels extends Schema.Class<Channels>("Channels")({
  total: Schema.Int,
  connected: Schema.Int,
  channels: Schema.Array(ChannelInfo)
}) {}

/** `GET /control/status`. */
export class ControlStatus extends Schema.Class<ControlStatus>("ControlStatus")({
  ok: Schema.Literal(true),
  version: Schema.String,
  startedAt: Schema.String,
  uptimeSeconds: Schema.NonNegativeInt,
  connectedChannels: Schema.Int,
  totalChannels: Schema.Int,
  runtime: Schema.Struct({ name: Schema.String, version: Schema.String, platform: Schema.String, arch: Schema.String })
}) {}

export class ControlGroup extends HttpApiGroup.make("control")
  .add(HttpApiEndpoint.get("channels", "/control/channels").addSuccess(Channels))
  .add(HttpApiEndpoint.get("status", "/control/status").addSuccess(ControlStatus))
  .middleware(GatewayAuthorization)
{}

// ---------------------------------------------------------------------------------------------------------
// matrix: operations on the Matrix runtime

/** `POST /control/matrix/send-test` body; unknown fields are tolerated. */
export const SendTestRequest = Schema.Struct({
  roomId: Schema.String,
  text: Schema.String
})

export const Retryability = Schema.Union(
  Schema.Struct({ kind: Schema.Literal("transient"), retryAfterMs: Schema.optional(Schema.Int) }),
  Schema.Struct({ kind: Schema.Literal("terminal") })
)

export const Delivery = Schema.Union(
  Schema.Struct({ outcome: Schema.Literal("sent"), messageId: Schema.String, conversationId: Schema.String }),
  Schema.Struct({
    outcome: Schema.Literal("failed"),
    error: Schema.String,
    retryability: Retryability,
    conversationId: Schema.optional(Schema.String),
    kind: Schema.optional(Schema.String)
  })
)
export type Delivery = typeof Delivery.Type

/** `ok` is true iff `delivery.outcome == "sent"`; transient failures are 200 with `outcome: "failed"`. */
export class SendTestResult extends Schema.Class<SendTestResult>("SendTestResult")({
  ok: Schema.Boolean,
  delivery: Delivery
}) {}

export class MatrixGroup extends HttpApiGroup.make("matrix")
  .add(
    HttpApiEndpoint.post("sendTest", "/control/matrix/send-test")
      .setPayload(SendTestRequest)
      .addSuccess(SendTestResult)
      .addError(BadRequestWire)
      .addError(BadGatewayWire)
      .addError(ServiceUnavailableWire)
  )
  .middleware(GatewayAuthorization)
{}

// ---------------------------------------------------------------------------------------------------------
// dlq: the inbound dead-letter queue (list / show / replay / purge). The body of a record travels only on
// `show` with `reveal=true`.

export class DlqList extends Schema.Class<DlqList>("DlqList")({
  ok: Schema.Literal(true),
  records: Schema.Array(DlqSummary),
  /** Lines that cannot be decoded now (no key yet, or awaiting quarantine at the next replay). */
  undecodable: Schema.Int
}) {}

export class DlqShow extends Schema.Class<DlqShow>("DlqShow")({ ok: Schema.Literal(true), record: DlqDetail }) {}

/** `{"id": "..."}` or `{"all": true}`; exactly one. */
export const DlqSelectRequest = Schema.Struct({
  id: Schema.optional(Schema.String),
  all: Schema.optional(Schema.Boolean)
})

export class DlqReplayResult
  extends Schema.Class<DlqReplayResult>("DlqReplayResult")({ ok: Schema.Literal(true), report: DlqReplayReport })
{}

export class DlqPurgeResult
  extends Schema.Class<DlqPurgeResult>("DlqPurgeResult")({ ok: Schema.Literal(true), purged: Schema.Int })
{}

export class DlqGroup extends HttpApiGroup.make("dlq")
  .add(HttpApiEndpoint.get("list", "/control/matrix/dlq").addSuccess(DlqList).addError(ServiceUnavailableWire))
  .add(
    HttpApiEndpoint.get("show", "/control/matrix/dlq/:id")
      .setPath(Schema.Struct({ id: Schema.String }))
      .setUrlParams(Schema.Struct({ reveal: Schema.optional(Schema.Literal("true", "false")) }))
      .addSuccess(DlqShow)
      .addError(NotFoundWire)
      .addError(ServiceUnavailableWire)
  )
  .add(
    HttpApiEndpoint.post("replay", "/control/matrix/dlq/replay")
      .setPayload(DlqSelectRequest)
      .addSuccess(DlqReplayResult)
      .addError(NotFoundWire)
      .addError(BadGatewayWire)
      .addError(ServiceUnavailableWire)
  )
  .add(
    HttpApiEndpoint.post("purge", "/control/matrix/dlq/purge")
      .setPayload(DlqSelectRequest)
      .addSuccess(DlqPurgeResult)
      .addError(NotFoundWire)
      .addError(ServiceUnavailableWire)
  )
  .middleware(GatewayAuthorization)
{}

// ---------------------------------------------------------------------------------------------------------
// verification: SAS flows (reference §6, §9.5). Their errors keep their own classes on the common error
// body, one status each, so the CLI knows a 409 `VerificationFlowNotReady` by type.

const kindWire = (cls: any, kinds: ReadonlyArray<string>, status: number) =>
  Schema.transform(
    Schema.Struct({
      ok: Schema.Literal(false),
      error: Schema.Struct({ kind: Schema.Literal(...(kinds as [string, ...Array<string>])), message: Schema.String })
    }),
    Schema.typeSchema(cls),
    {
      strict: false,
      decode: (w: { error: { kind: string; message: string } }) =>
        new cls({ kind: w.error.kind, message: w.error.message }),
      encode: (e: any) => ({ ok: false as const, error: { kind: e.kind as string, message: e.message as string } })
    }
  ).annotations(HttpApiSchema.annotations({ status }))

export const VerificationFlowNotFoundWire = kindWire(
  VerificationFlowNotFound,
  ["verification-flow-not-found"],
  404
) as unknown as Schema.Schema<VerificationFlowNotFound, unknown>
export const VerificationTargetNotFoundWire = kindWire(VerificationTargetNotFound, [
  "device-not-found",
  "user-identity-not-found"
], 404) as unknown as Schema.Schema<VerificationTargetNotFound, unknown>
export const VerificationFlowNotReadyWire = kindWire(
  VerificationFlowNotReady,
  ["verification-flow-not-ready"],
  409
) as unknown as Schema.Schema<VerificationFlowNotReady, unknown>
export const VerificationFlowTerminalWire = kindWire(
  VerificationFlowTerminal,
  ["verification-cancelled"],
  410
) as unknown as Schema.Schema<VerificationFlowTerminal, unknown>
export const InvalidVerificationUserWire = kindWire(
  InvalidVerificationUser,
  ["invalid-user-id"],
  422
) as unknown as Schema.Schema<InvalidVerificationUser, unknown>
export const VerificationFailedWire = kindWire(VerificationFailed, ["verification"], 502) as unknown as Schema.Schema<
  VerificationFailed,
  unknown
>
export const VerificationTimeoutWire = kindWire(
  VerificationTimeout,
  ["verification-timeout"],
  504
) as unknown as Schema.Schema<VerificationTimeout, unknown>

export class VerificationList extends Schema.Class<VerificationList>("VerificationList")({
  ok: Schema.Literal(true),
  verifications: Schema.Array(VerificationFlow)
}) {}

export class VerificationResult extends Schema.Class<VerificationResult>("VerificationResult")({
  ok: Schema.Literal(true),
  verification: VerificationFlow
}) {}

export class DeviceList extends Schema.Class<DeviceList>("DeviceList")({
  ok: Schema.Literal(true),
  devices: Schema.Array(OwnDevice)
}) {}

/** Bot-initiated flow: a device of `userId` when `deviceId` is given (empty = none), else the user. */
export const StartVerificationRequest = Schema.Struct({
  userId: Schema.String,
  deviceId: Schema.optional(Schema.String)
})

export const ConfirmVerificationRequest = Schema.Struct({ match: Schema.Boolean })

// the flow id is opaque and looked up as given: an unknown one is the registry's 404, not a decode error
const FlowPath = Schema.Struct({ flowId: FlowId })

const flowAction = <N extends "accept" | "cancel">(name: N) =>
  HttpApiEndpoint.post(name, `/control/matrix/verifications/:flowId/${name}`)
    .setPath(FlowPath)
    .addSuccess(VerificationResult)
    .addError(VerificationFlowNotFoundWire)
    .addError(VerificationFlowNotReadyWire)
    .addError(VerificationFlowTerminalWire)
    .addError(VerificationFailedWire)
    .addError(VerificationTimeoutWire)
    .addError(ServiceUnavailableWire)

const startFlow = <N extends "start" | "verify">(
  name: N,
  path: "/control/matrix/verifications" | "/control/matrix/verify"
) =>
  HttpApiEndpoint.post(name, path)
    .setPayload(StartVerificationRequest)
    .addSuccess(VerificationResult, { status: 201 })
    .addError(VerificationTargetNotFoundWire)
    .addError(InvalidVerificationUserWire)
    .addError(VerificationFailedWire)
    .addError(VerificationTimeoutWire)
    .addError(ServiceUnavailableWire)

export class VerificationGroup extends HttpApiGroup.make("verification")
  .add(
    HttpApiEndpoint.get("list", "/control/matrix/verifications").addSuccess(VerificationList).addError(
      ServiceUnavailableWire
    )
  )
  .add(startFlow("start", "/control/matrix/verifications"))
  .add(startFlow("verify", "/control/matrix/verify"))
  .add(flowAction("accept"))
  .add(
    HttpApiEndpoint.post("confirm", "/control/matrix/verifications/:flowId/confirm")
      .setPath(FlowPath)
      .setPayload(ConfirmVerificationRequest)
      .addSuccess(VerificationResult)
      .addError(VerificationFlowNotFoundWire)
      .addError(VerificationFlowNotReadyWire)
      .addError(VerificationFlowTerminalWire)
      .addError(VerificationFailedWire)
      .addError(VerificationTimeoutWire)
      .addError(ServiceUnavailableWire)
  )
  .add(flowAction("cancel"))
  .add(
    HttpApiEndpoint.get("devices", "/control/matrix/devices")
      .addSuccess(DeviceList)
      .addError(VerificationFailedWire)
      .addError(VerificationTimeoutWire)
      .addError(ServiceUnavailableWire)
  )
  .middleware(GatewayAuthorization)
{}

// ---------------------------------------------------------------------------------------------------------
// metrics: Prometheus text exposition, no auth (reference §13.3)

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

export class MetricsGroup extends HttpApiGroup.make("metrics")
  .add(
    HttpApiEndpoint.get("metrics", "/metrics").addSuccess(HttpApiSchema.Text({ contentType: PROMETHEUS_CONTENT_TYPE }))
  )
{}

/** The one HTTP contract: served by the daemon, turned into a typed client by the CLI. */
export class CaraApi extends HttpApi.make("cara")
  .add(HealthGroup)
  .add(ControlGroup)
  .add(MatrixGroup)
  .add(VerificationGroup)
  .add(DlqGroup)
  .add(MetricsGroup)
  .addError(BadRequestWire)
{}

// ---------------------------------------------------------------------------------------------------------
// WebSocket (`GET /ws`): not part of the HttpApi (an upgrade, not a request/response), but its frames are
// Schema types shared by the daemon and its clients.

export const WS_PROTOCOL_VERSION = 1

export const ChannelStatusPayload = Schema.Struct({
  total: Schema.Int,
  connected: Schema.Int,
  channels: Schema.Array(ChannelInfo),
  ts: Schema.Number
})

/** A server → client frame. `seq` counts events on one connection, from 1. */
export const WsFrame = Schema.Union(
  Schema.Struct({
    type: Schema.Literal("hello"),
    protocol: Schema.Literal(WS_PROTOCOL_VERSION),
    version: Schema.String,
    events: Schema.Array(Schema.String)
  }),
  Schema.Struct({
    type: Schema.Literal("event"),
    event: Schema.String,
    payload: Schema.Unknown,
    seq: Schema.Int
  })
)
export type WsFrame = typeof WsFrame.Type
