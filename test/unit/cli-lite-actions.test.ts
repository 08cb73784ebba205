// The acting commands without Effect (src/cli/liteActions.ts): their chunks never reach Effect; their error tables
// are the API's (classes, kinds, statuses per endpoint); their shapes accept what the schemas encode, and what they
// print for such an answer is what the typed commands print for it decoded; an answer is read as the typed client
// reads it, or not at all.
import * as HttpApi from "@effect/platform/HttpApi"
import { Arbitrary, Either, FastCheck, Schema } from "effect"
import * as fs from "node:fs"
import { describe, expect, it } from "vitest"
import { LITE_API_ERRORS, LITE_ENDPOINT_ERRORS, readAnswer } from "../../src/cli/liteActions.js"
import {
  conforms,
  DlqPurgeShape,
  DlqReplayShape,
  DlqShowShape,
  VerificationResultShape
} from "../../src/cli/liteShapes.js"
import { dlqPurgeText, dlqReplayText, dlqShowText, flowActionText } from "../../src/cli/render.js"
import * as Api from "../../src/domain/api.js"
import * as V from "../../src/domain/verification.js"
import { BUNDLE_GRAPH, EFFECT_INPUT, readBundleGraph, staticClosure } from "../support/bundleGraph.js"

describe("the bundle", () => {
  it.skipIf(!fs.existsSync(BUNDLE_GRAPH))("keeps liteActions.ts in small chunks that never import Effect", () => {
    const { bytes, inputs } = staticClosure(readBundleGraph(), "dist/src/cli/liteActions.js")
    expect(inputs.filter((i) => EFFECT_INPUT.test(i))).toEqual([])
    expect(inputs).toContain("dist/src/cli/render.js")
    expect(bytes).toBeLessThan(80 * 1024)
  })
})

describe("the error tables are the API's", () => {
  it("each class: its tag and its kinds", () => {
    const lenient: ReadonlyArray<[keyof typeof LITE_API_ERRORS, { literals: ReadonlyArray<string> }]> = [
      ["BadRequest", Api.BadRequestKind],
      ["Unauthorized", Api.UnauthorizedKind],
      ["Forbidden", Api.ForbiddenKind],
      ["NotFound", Api.NotFoundKind],
      ["UnsupportedMediaType", Api.UnsupportedMediaTypeKind],
      ["TooManyRequests", Api.TooManyRequestsKind],
      ["BadGateway", Api.BadGatewayKind],
      ["ServiceUnavailable", Api.ServiceUnavailableKind]
    ]
    for (const [name, kinds] of lenient) {
      expect(LITE_API_ERRORS[name].kinds, name).toEqual(kinds.literals)
      expect(LITE_API_ERRORS[name].strict, name).toBe(false)
      expect(LITE_API_ERRORS[name].tag, name).toBe(name)
    }
    const strict = [
      V.VerificationFlowNotFound,
      V.VerificationTargetNotFound,
      V.VerificationFlowNotReady,
      V.VerificationFlowTerminal,
      V.InvalidVerificationUser,
      V.VerificationFailed,
      V.VerificationTimeout
    ]
    for (const cls of strict) {
      const kinds = (cls.fields.kind as unknown as { literals: ReadonlyArray<string> }).literals
      const Make = cls as unknown as new(p: { kind: string; message: string }) => { readonly _tag: string }
      const tag = new Make({ kind: kinds[0]!, message: "" })._tag
      const mine: { kinds: ReadonlyArray<string>; strict: boolean } =
        LITE_API_ERRORS[tag as keyof typeof LITE_API_ERRORS]
      expect(mine, tag).toBeDefined()
      expect(mine.kinds, tag).toEqual(kinds)
      expect(mine.strict, tag).toBe(true)
    }
  })

  it("each endpoint: the statuses its errors have", () => {
    const statuses = new Map<string, Array<number>>()
    HttpApi.reflect(Api.CaraApi, {
      onGroup: () => undefined,
      onEndpoint: ({ endpoint, errors, group }) => {
        statuses.set(`${group.identifier}.${endpoint.name}`, [...errors.keys()].sort())
      }
    })
    const keys = (t: object) => Object.keys(t).map(Number).sort()
    expect(statuses.get("dlq.show")).toEqual(keys(LITE_ENDPOINT_ERRORS.dlqShow))
    expect(statuses.get("dlq.replay")).toEqual(keys(LITE_ENDPOINT_ERRORS.dlqReplay))
    expect(statuses.get("dlq.purge")).toEqual(keys(LITE_ENDPOINT_ERRORS.dlqPurge))
    expect(statuses.get("verification.accept")).toEqual(keys(LITE_ENDPOINT_ERRORS.flowAction))
    expect(statuses.get("verification.cancel")).toEqual(keys(LITE_ENDPOINT_ERRORS.flowAction))
    expect(statuses.get("verification.verify")).toEqual(keys(LITE_ENDPOINT_ERRORS.verify))
  })
})

const answers = <A, I>(schema: Schema.Schema<A, I>, n = 60): Array<{ raw: unknown; decoded: A }> =>
  FastCheck.sample(Arbitrary.make(schema), n).flatMap((a) => {
    const raw = JSON.parse(JSON.stringify(Schema.encodeSync(schema)(a))) as unknown
    const decoded = Schema.decodeUnknownEither(schema)(raw)
    return Either.isRight(decoded) ? [{ raw, decoded: decoded.right }] : []
  })

const attempt = (f: () => string): string => {
  try {
    return f()
  } catch (e) {
    return `throws ${(e as Error).name}`
  }
}

describe("the shapes and the texts", () => {
  it("every generated answer conforms, and prints as the decoded one does", () => {
    for (const json of [false, true]) {
      for (const { decoded, raw } of answers(Api.DlqShow)) {
        expect(conforms(DlqShowShape, raw)).toBe(true)
        const r = raw as typeof decoded
        expect(attempt(() => dlqShowText(r.record, json))).toBe(attempt(() => dlqShowText(decoded.record, json)))
      }
      for (const { decoded, raw } of answers(Api.DlqReplayResult)) {
        expect(conforms(DlqReplayShape, raw)).toBe(true)
        expect(dlqReplayText((raw as typeof decoded).report, json)).toBe(dlqReplayText(decoded.report, json))
      }
      for (const { decoded, raw } of answers(Api.DlqPurgeResult)) {
        expect(conforms(DlqPurgeShape, raw)).toBe(true)
        expect(dlqPurgeText((raw as typeof decoded).purged, json)).toBe(dlqPurgeText(decoded.purged, json))
      }
      for (const { decoded, raw } of answers(Api.VerificationResult)) {
        expect(conforms(VerificationResultShape, raw)).toBe(true)
        for (const action of ["accept", "cancel", "verify"] as const) {
          expect(attempt(() => flowActionText(action, (raw as typeof decoded).verification, json))).toBe(
            attempt(() => flowActionText(action, decoded.verification, json))
          )
        }
      }
    }
    expect(conforms(DlqPurgeShape, { ok: true, purged: 1, more: 1 })).toBe(false)
    expect(conforms(DlqReplayShape, { ok: true, report: { replayed: 1 } })).toBe(false)
  })
})

describe("an answer is read as the typed client reads it, or not at all", () => {
  const body = (kind: string, message = "m") => ({ ok: false, error: { kind, message } })
  const json = (status: number, b: unknown) => ({ t: "json", status, body: b }) as const
  it("success, known errors, unknown kinds, unknown statuses, transport", () => {
    const flow = LITE_ENDPOINT_ERRORS.flowAction
    expect(readAnswer(json(200, { ok: true, purged: 3 }), 200, DlqPurgeShape, LITE_ENDPOINT_ERRORS.dlqPurge)).toEqual({
      ok: { ok: true, purged: 3 }
    })
    // the verify endpoint answers 201: a 200 is not its success
    expect(readAnswer(json(200, { ok: true, purged: 3 }), 201, DlqPurgeShape, {})).toBeUndefined()
    expect(readAnswer(json(409, body("verification-flow-not-ready", "x\u001b")), 200, DlqPurgeShape, flow)).toEqual({
      failed: { kind: "verification-flow-not-ready", message: "409 VerificationFlowNotReady: x" }
    })
    // a strict class refuses a kind outside its own; a lenient one takes its first
    expect(readAnswer(json(404, body("not-found")), 200, DlqPurgeShape, flow)).toBeUndefined()
    expect(readAnswer(json(503, body("newer")), 200, DlqPurgeShape, flow)).toEqual({
      failed: { kind: "matrix-runtime-unavailable", message: "503 ServiceUnavailable: m" }
    })
    expect(readAnswer(json(500, body("internal")), 200, DlqPurgeShape, flow)).toBeUndefined()
    expect(readAnswer(json(404, { ok: false }), 200, DlqPurgeShape, flow)).toBeUndefined()
    expect(readAnswer({ t: "refused" }, 200, DlqPurgeShape, flow)).toEqual({
      failed: { kind: "gateway-unreachable", message: "ECONNREFUSED" }
    })
    expect(readAnswer({ t: "doubt" }, 200, DlqPurgeShape, flow)).toBeUndefined()
  })
})
