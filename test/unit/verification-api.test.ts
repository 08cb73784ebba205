import { FetchHttpClient, HttpApiClient, HttpClient, HttpClientRequest, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Either, Layer, Option, Redacted } from "effect"
import * as fs from "node:fs"
import { createServer } from "node:http"
import * as path from "node:path"
import { callFailed } from "../../src/cli/verification.js"
import { CaraApi } from "../../src/domain/api.js"
import { FlowId } from "../../src/domain/verification.js"
import { AuditLive } from "../../src/layers/AuditLive.js"
import { ChannelStatusWithMatrix } from "../../src/layers/ChannelStatusLive.js"
import {
  ControlHttpApp,
  GatewayAuditLive,
  GatewayDlqUnavailable,
  GatewayVerification,
  GatewayVerificationLive,
  GatewayVerificationUnavailable
} from "../../src/layers/ControlHttpLive.js"
import { GatewayGuardWith } from "../../src/layers/GatewayAuth.js"
import { MetricsLive } from "../../src/layers/MetricsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { VerificationLive } from "../../src/layers/VerificationLive.js"
import type { ChannelStatus } from "../../src/services/ChannelStatus.js"
import { EventBus } from "../../src/services/EventBus.js"
import { MatrixControlUnavailable } from "../../src/services/MatrixControl.js"
import type { StateDir } from "../../src/services/StateDir.js"
import { Verification } from "../../src/services/Verification.js"
import { tmpDir } from "../support/tmp.js"
import { FakeClient, FakeRequest } from "./verification-fakes.js"

const TOKEN = "gw-token-verification-0123456789abcdef"
const BOT = "@bot:example.org"
const ALICE = "@alice:example.org"

const dir = tmpDir("cara-verif-api-")

const base = Layer.mergeAll(
  EventBus.Live.pipe(Layer.provideMerge(MetricsLive)),
  AuditLive.pipe(Layer.provideMerge(StateDirAt(dir)))
).pipe(
  Layer.provideMerge(ChannelStatusWithMatrix)
)
// the gateway's registry: the real one (withRegistry), or GatewayVerificationUnavailable for a daemon without Matrix
const withRegistry = <ROut>(registry: Layer.Layer<ROut, never, EventBus | ChannelStatus | StateDir>) =>
  GatewayVerificationLive.pipe(Layer.provideMerge(registry))
const serverWith = <ROut>(
  registry: Layer.Layer<ROut | GatewayVerification, never, EventBus | ChannelStatus | StateDir>
) =>
  ControlHttpApp.pipe(
    Layer.provide([
      MatrixControlUnavailable,
      GatewayDlqUnavailable,
      GatewayAuditLive,
      GatewayGuardWith({ mode: "token", secret: Option.some(Redacted.make(TOKEN)) })
    ]),
    Layer.provideMerge(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port: 0 })),
    Layer.provideMerge(registry),
    Layer.provideMerge(base)
  )

const api = Effect.gen(function*() {
  const server = yield* HttpServer.HttpServer
  return yield* HttpApiClient.make(CaraApi, {
    baseUrl: HttpServer.formatAddress(server.address),
    transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(TOKEN))
  })
}).pipe(Effect.provide(FetchHttpClient.layer))

const rawPost = (p: string, body: unknown) =>
  Effect.flatMap(HttpServer.HttpServer, (s) =>
    Effect.promise(async () => {
      const r = await fetch(`${HttpServer.formatAddress(s.address)}${p}`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify(body)
      })
      return { status: r.status, body: (await r.json()) as any }
    }))

const waitListed = (n: number) =>
  Effect.gen(function*() {
    const v = yield* Verification
    for (let i = 0; i < 2000; i++) {
      if ((yield* v.list).length >= n) return
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 5)))
    }
  })

layer(serverWith(withRegistry(VerificationLive)))("verification API over HTTP (real registry, SDK fakes)", (it) => {
  it.scoped("list, accept, confirm-before-SAS 409 typed end to end, unknown 404, terminal 410, start 201 and 422", () =>
    Effect.gen(function*() {
      const v = yield* Verification
      const client = new FakeClient(BOT)
      client.devices.set(ALICE, [{ deviceId: "ALICEDEV" }])
      client.devices.set(BOT, [{ deviceId: "BOTDEV", displayName: "Carapace Matrix", verified: true }])
      yield* v.attach({ client: client.asClient(), botUserId: BOT, isAllowed: (u) => u === ALICE })
      const c = yield* api

      const req = new FakeRequest(ALICE, "txn-api-1", { deviceId: "ALICEDEV" })
      client.receive(req)
      yield* waitListed(1)
      const list = yield* c.verification.list()
      expect(list.ok).toBe(true)
      const flow = list.verifications.find((f) => f.protocolFlowId === "txn-api-1")!
      expect(flow).toMatchObject({ userId: ALICE, deviceId: "ALICEDEV", state: "requested" })

      // 409, decoded by the derived client as the domain's own class
      const early = yield* Effect.either(
        c.verification.confirm({ path: { flowId: flow.flowId }, payload: { match: true } })
      )
      expect(Either.isLeft(early)).toBe(true)
      if (Either.isLeft(early)) {
        expect(early.left._tag).toBe("VerificationFlowNotReady")
        expect((early.left as { kind: string }).kind).toBe("verification-flow-not-ready")
        const cli = callFailed(early.left)
        expect(cli.kind).toBe("verification-flow-not-ready")
        expect(cli.message).toContain("wait for the peer to respond")
      }
      const raw409 = yield* rawPost(`/control/matrix/verifications/${flow.flowId}/confirm`, { match: true })
      expect(raw409.status).toBe(409)
      expect(raw409.body).toEqual({
        ok: false,
        error: { kind: "verification-flow-not-ready", message: expect.stringContaining(flow.flowId) }
      })

      const accepted = yield* c.verification.accept({ path: { flowId: flow.flowId } })
      expect(accepted.verification.flowId).toBe(flow.flowId)
      expect(req.acceptCalls).toBe(1)

      const missing = yield* Effect.either(c.verification.accept({ path: { flowId: FlowId.make("mvr_missing") } }))
      expect(Either.isLeft(missing) && missing.left._tag).toBe("VerificationFlowNotFound")
      expect((yield* rawPost("/control/matrix/verifications/mvr_missing/cancel", {})).status).toBe(404)

      const cancelled = yield* c.verification.cancel({ path: { flowId: flow.flowId } })
      expect(cancelled.verification.state).toBe("cancelled")
      const gone = yield* rawPost(`/control/matrix/verifications/${flow.flowId}/accept`, {})
      expect(gone.status).toBe(410)
      expect(gone.body.error.kind).toBe("verification-cancelled")
      const goneTyped = yield* Effect.either(
        c.verification.confirm({ path: { flowId: flow.flowId }, payload: { match: false } })
      )
      expect(Either.isLeft(goneTyped) && goneTyped.left._tag).toBe("VerificationFlowTerminal")

      const bad = yield* rawPost("/control/matrix/verify", { userId: "alice" })
      expect(bad.status).toBe(422)
      expect(bad.body.error.kind).toBe("invalid-user-id")
      const noDevice = yield* Effect.either(c.verification.verify({ payload: { userId: ALICE, deviceId: "NOPE" } }))
      expect(Either.isLeft(noDevice) && noDevice.left._tag).toBe("VerificationTargetNotFound")
      const started = yield* rawPost("/control/matrix/verifications", { userId: ALICE, deviceId: "ALICEDEV" })
      expect(started.status).toBe(201)
      expect(started.body.verification).toMatchObject({ userId: ALICE, deviceId: "ALICEDEV" })
      expect(client.requested).toHaveLength(1)

      const devices = yield* c.verification.devices()
      expect(devices.devices).toEqual([{
        userId: BOT,
        deviceId: "BOTDEV",
        displayName: "Carapace Matrix",
        verified: true
      }])

      // every action through the API left a `matrix_verification_action` audit line, failures too
      const audit = fs.readFileSync(path.join(dir, "audit.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
      const actions = audit.filter((l) => l.event === "matrix_verification_action").map((l) => l.data)
      const of = (flowId: string) =>
        actions.filter((d) => d.flow_id === flowId).map((d) => [d.action, d.outcome, d.error_kind, d.matches])
      expect(of(flow.flowId)).toEqual([
        ["confirm", "err", "verification-flow-not-ready", true],
        ["confirm", "err", "verification-flow-not-ready", true],
        ["accept", "ok", undefined, undefined],
        ["cancel", "ok", undefined, undefined],
        ["accept", "err", "verification-cancelled", undefined],
        ["confirm", "err", "verification-cancelled", false]
      ])
      expect(of("mvr_missing").map((a) => a.slice(0, 3))).toEqual([["accept", "err", "verification-flow-not-found"], [
        "cancel",
        "err",
        "verification-flow-not-found"
      ]])
      const starts = actions.filter((d) => d.action === "start")
      expect(starts.map((d) => d.outcome)).toEqual(["err", "err", "ok"])
      expect(starts[2].flow_id).toBe(started.body.verification.flowId)
      expect(actions.every((d) => d.actor === "127.0.0.1" && d.remote_ip === "127.0.0.1")).toBe(true)
    }))
})

describe("verification API without a Matrix runtime", () => {
  layer(serverWith(GatewayVerificationUnavailable))("no registry", (it) => {
    it.effect("every verification endpoint answers 503 matrix-runtime-unavailable", () =>
      Effect.gen(function*() {
        const c = yield* api
        const r = yield* Effect.either(c.verification.list())
        expect(Either.isLeft(r) && r.left._tag).toBe("ServiceUnavailable")
        expect(Either.isLeft(r) && (r.left as { kind: string }).kind).toBe("matrix-runtime-unavailable")
        const a = yield* rawPost("/control/matrix/verifications/mvr_x/accept", {})
        expect(a.status).toBe(503)
        expect(a.body.error.kind).toBe("matrix-runtime-unavailable")
      }))
  })

  layer(serverWith(withRegistry(VerificationLive)))("registry without a client", (it) => {
    it.effect("actions answer 503 not-connected until the runtime attaches its client", () =>
      Effect.gen(function*() {
        const d = yield* rawPost("/control/matrix/verify", { userId: ALICE, deviceId: "X" })
        expect(d.status).toBe(503)
        expect(d.body.error.kind).toBe("not-connected")
      }))
  })
})
