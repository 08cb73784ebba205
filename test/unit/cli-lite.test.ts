// The start of the read-only gateway commands without Effect (src/cli/lite.ts): its bundle chunks never reach
// Effect; its shapes accept exactly what the schemas encode, and what it prints for such an answer is what the
// typed client's commands print for the decoded answer; its reading of the target agrees with `resolveTarget`
// wherever it answers; its copies of the loader's and the API's constants are the originals.
import { Arbitrary, Effect, Either, FastCheck, Option, Redacted, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { resolveTarget } from "../../src/cli/client.js"
import { LITE_ERRORS, mayRedact } from "../../src/cli/lite.js"
import {
  ChannelsShape,
  conforms,
  ControlStatusShape,
  DeviceListShape,
  DlqListShape,
  ErrorBodyShape,
  HealthShape,
  type Shape,
  VerificationListShape
} from "../../src/cli/liteShapes.js"
import { LITE_VAR, liteStateRoot, liteTarget } from "../../src/cli/liteTarget.js"
import {
  devicesText,
  dlqListText,
  flowsText,
  renderStatusView,
  renderStatusViewJson,
  type StatusView
} from "../../src/cli/render.js"
import { renderStatus, renderStatusJson } from "../../src/cli/status.js"
import {
  Channels,
  ControlStatus,
  DeviceList,
  DlqList,
  Health,
  ServiceUnavailableKind,
  UnauthorizedKind,
  VerificationList
} from "../../src/domain/api.js"
import { VAR } from "../../src/domain/configValidation.js"
import { resolveStateDirPath } from "../../src/layers/StateDirLive.js"
import { BUNDLE_GRAPH, EFFECT_INPUT, readBundleGraph, staticClosure } from "../support/bundleGraph.js"

// ---------------------------------------------------------------------------------------------------------
// The bundle

describe("the bundle", () => {
  it.skipIf(!fs.existsSync(BUNDLE_GRAPH))("keeps the lite start in small chunks that never import Effect", () => {
    const graph = readBundleGraph()
    // what lite.ts loads before it answers: static imports (json5, an external package, is loaded on demand)
    const { bytes, inputs } = staticClosure(graph, "dist/src/cli/lite.js")
    expect(inputs.filter((i) => EFFECT_INPUT.test(i))).toEqual([])
    expect(inputs).toContain("dist/src/cli/render.js")
    expect(bytes).toBeLessThan(64 * 1024)
    // and bin.js reaches it without Effect too: its static imports and the argument reading
    const bin = graph["bin.js"]!
    for (const i of bin.imports.filter((i) => i.kind !== "dynamic-import" && graph[i.path])) {
      expect(graph[i.path]!.inputs.filter((x) => EFFECT_INPUT.test(x))).toEqual([])
    }
  })
})

// ---------------------------------------------------------------------------------------------------------
// The shapes against the schemas

/** Answers as the daemon sends them: generated values of the schema, encoded, through JSON. */
const answers = <A, I>(schema: Schema.Schema<A, I>, n = 60): Array<{ raw: unknown; decoded: A }> =>
  FastCheck.sample(Arbitrary.make(schema), n).flatMap((a) => {
    const raw = JSON.parse(JSON.stringify(Schema.encodeSync(schema)(a))) as unknown
    const decoded = Schema.decodeUnknownEither(schema)(raw)
    // NaN and infinities do not survive JSON: the typed client refuses those answers too
    return Either.isRight(decoded) ? [{ raw, decoded: decoded.right }] : []
  })

const SHAPES: ReadonlyArray<[string, Schema.Schema<any, any>, Shape]> = [
  ["Health", Health, HealthShape],
  ["ControlStatus", ControlStatus, ControlStatusShape],
  ["Channels", Channels, ChannelsShape],
  ["DlqList", DlqList, DlqListShape],
  ["VerificationList", VerificationList, VerificationListShape],
  ["DeviceList", DeviceList, DeviceListShape]
]

describe("the shapes accept what the schemas encode, and nothing else of it", () => {
  it("every generated answer conforms", () => {
    for (const [name, schema, shape] of SHAPES) {
      const got = answers(schema)
      expect(got.length, name).toBeGreaterThan(10)
      for (const { raw } of got) expect(conforms(shape, raw), `${name} ${JSON.stringify(raw)}`).toBe(true)
    }
  })

  it("an extra field, a missing required one, a reordered one, a wrong type do not", () => {
    const health = { status: "ok", version: "1", uptimeSeconds: 3 }
    expect(conforms(HealthShape, health)).toBe(true)
    expect(conforms(HealthShape, { ...health, extra: 1 })).toBe(false)
    expect(conforms(HealthShape, { status: "ok", version: "1" })).toBe(false)
    expect(conforms(HealthShape, { version: "1", status: "ok", uptimeSeconds: 3 })).toBe(false)
    expect(conforms(HealthShape, { ...health, uptimeSeconds: -1 })).toBe(false)
    expect(conforms(HealthShape, { ...health, uptimeSeconds: 1.5 })).toBe(false)
    expect(conforms(HealthShape, { ...health, status: "down" })).toBe(false)
    expect(conforms(ErrorBodyShape, { ok: false, error: { kind: "x", message: "m", reason: "r" } })).toBe(true)
    expect(conforms(ErrorBodyShape, { ok: false, error: { kind: "x" } })).toBe(false)
  })
})

/** The text, or that rendering throws (both starts then leave it to the full path's failure report). */
let rendered = 0
const attempt = (f: () => string): string => {
  try {
    const text = f()
    rendered++
    return text
  } catch (e) {
    return `throws ${(e as Error).name}`
  }
}

describe("what the lite start prints for an answer is what the typed client's commands print for it decoded", () => {
  it("dlq list, verifications, devices", () => {
    rendered = 0
    for (const json of [false, true]) {
      for (const { decoded, raw } of answers(DlqList)) {
        expect(attempt(() => dlqListText(raw as typeof decoded, json))).toBe(attempt(() => dlqListText(decoded, json)))
      }
      for (const { decoded, raw } of answers(VerificationList)) {
        expect(attempt(() => flowsText((raw as typeof decoded).verifications, json))).toBe(
          attempt(() => flowsText(decoded.verifications, json))
        )
      }
      for (const { decoded, raw } of answers(DeviceList)) {
        expect(attempt(() => devicesText((raw as typeof decoded).devices, json))).toBe(
          attempt(() => devicesText(decoded.devices, json))
        )
      }
    }
    // most answers render (a generated timestamp can be out of Date's range: both starts then refuse alike)
    expect(rendered).toBeGreaterThan(200)
  })

  it("status, with and without the control answers", () => {
    rendered = 0
    const healths = answers(Health, 20)
    const statuses = answers(ControlStatus, 20)
    const channels = answers(Channels, 20)
    const now = 1767322800000
    for (let i = 0; i < 20; i++) {
      const h = healths[i % healths.length]!
      const s = statuses[i % statuses.length]!
      const c = channels[i % channels.length]!
      const full = i % 3 !== 0
      const report = {
        address: "127.0.0.1:18789",
        health: h.decoded,
        controlStatus: full ? Option.some(s.decoded) : Option.none(),
        channels: full ? Option.some(c.decoded) : Option.none(),
        controlProblem: full ? Option.none() : Option.some({ kind: "unauthorized", message: "401 Unauthorized: no" }),
        authOff: false
      }
      const view = {
        address: "127.0.0.1:18789",
        health: h.raw as StatusView["health"],
        ...(full
          ? { controlStatus: s.raw as StatusView["controlStatus"], channels: c.raw as StatusView["channels"] }
          : { controlProblem: { kind: "unauthorized", message: "401 Unauthorized: no" } }),
        authOff: false
      } as StatusView
      expect(attempt(() => renderStatusView(view, now))).toBe(attempt(() => renderStatus(report, now)))
      expect(attempt(() => renderStatusViewJson(view))).toBe(attempt(() => renderStatusJson(report)))
    }
    expect(rendered).toBeGreaterThan(20)
  })
})

describe("the lite start's copies are the originals", () => {
  it("the ${VAR} pattern, the error kinds, the state directory", () => {
    expect(LITE_VAR.source).toBe(VAR.source)
    expect(LITE_VAR.flags).toBe(VAR.flags)
    expect(LITE_ERRORS[401].kinds).toEqual(UnauthorizedKind.literals)
    expect(LITE_ERRORS[503].kinds).toEqual(ServiceUnavailableKind.literals)
    for (
      const env of [
        {},
        { CARAPACE_STATE_DIR: "/srv/cara" },
        { CARAPACE_STATE_DIR: "rel/dir" },
        { CARAPACE_STATE_DIR: "  " },
        { XDG_CONFIG_HOME: "/x/config" },
        { XDG_CONFIG_HOME: "relative" }
      ]
    ) {
      expect(liteStateRoot(env), JSON.stringify(env)).toBe(resolveStateDirPath(env))
    }
  })

  it("a stderr text the redactor could change is left to the full path", () => {
    expect(mayRedact("cara: ECONNREFUSED", ["short", "s3cret-value"])).toBe(false)
    expect(mayRedact("cara: s3cret-value leaked", ["s3cret-value"])).toBe(true)
    expect(mayRedact("a%20b%2Fc-long", ["a b/c-long"])).toBe(true)
    expect(mayRedact(`key ${"Ab12 ".repeat(11)}Ab1`, [])).toBe(true)
  })
})

// ---------------------------------------------------------------------------------------------------------
// The target

const saved = { ...process.env }
afterEach(() => {
  for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k]
  Object.assign(process.env, saved)
})

interface Case {
  readonly name: string
  readonly config?: string
  readonly env?: Record<string, string>
  readonly flags?: { host?: string; port?: number }
  readonly status?: boolean
  readonly dirMode?: number
  readonly fileMode?: number
  /** `false`: the lite reading must leave it to the full loader */
  readonly answers: boolean
}

const CASES: ReadonlyArray<Case> = [
  { name: "no config", answers: true },
  { name: "no config, a token in the env", env: { CARAPACE_GATEWAY_TOKEN: " tok-env-123 " }, answers: true },
  {
    name: "token by ${VAR}",
    config: `{gateway:{auth:{mode:"token",token:"\${T}"}}}`,
    env: { T: "tok-var-1" },
    answers: true
  },
  { name: "token by a missing ${VAR}", config: `{gateway:{auth:{token:"\${T}"}}}`, answers: true },
  { name: "an escaped $${VAR}", config: `{gateway:{auth:{token:"$\${T}x"}}}`, env: { T: "no" }, answers: true },
  { name: "a plain token", config: `{gateway:{port:18789,auth:{token:"plain-token-123"}}}`, answers: true },
  { name: "the password", config: `{gateway:{auth:{mode:"password",password:"pw-123456"}}}`, answers: true },
  { name: "an empty token, then the password", config: `{gateway:{auth:{token:" ",password:"pw-9"}}}`, answers: true },
  { name: "a token that is not a string", config: `{gateway:{auth:{token:5}}}`, answers: true },
  {
    name: "the env over the config",
    config: `{gateway:{auth:{token:"cfg-123456"}}}`,
    env: { CARAPACE_GATEWAY_TOKEN: "env-123456" },
    answers: true
  },
  { name: "another section the schema refuses", config: `{matrix:5,gateway:{auth:{token:"t-123456"}}}`, answers: true },
  { name: "a gateway the schema refuses", config: `{gateway:"x"}`, answers: true },
  { name: "a port other than the default", config: `{gateway:{port:0}}`, answers: false },
  { name: "that port with --port", config: `{gateway:{port:0}}`, flags: { port: 4567 }, answers: true },
  { name: "a port by ${VAR}", config: `{gateway:{port:"\${P}"}}`, env: { P: "1" }, answers: false },
  { name: "a sealed token", config: `{gateway:{auth:{token:"enc:v2:aaaa:bbbb:cccc"}}}`, answers: false },
  {
    name: "a sealed token, the env's wins",
    config: `{gateway:{auth:{token:"enc:v2:aaaa:bbbb:cccc"}}}`,
    env: { CARAPACE_GATEWAY_TOKEN: "env-123456" },
    answers: true
  },
  { name: "$include", config: `{$include:"other.json5"}`, answers: false },
  { name: "auth off, for status", config: `{gateway:{auth:{mode:"none"}}}`, status: true, answers: false },
  { name: "auth off, for another command", config: `{gateway:{auth:{mode:"none"}}}`, answers: true },
  { name: "a syntax error", config: `{gateway:`, answers: false },
  { name: "not an object", config: `[1]`, answers: false },
  { name: "a world-writable config", config: `{}`, fileMode: 0o666, answers: false },
  { name: "a state directory to repair", dirMode: 0o755, answers: false },
  {
    name: "localhost with a token",
    flags: { host: "localhost" },
    env: { CARAPACE_GATEWAY_TOKEN: "env-123456" },
    answers: false
  },
  {
    name: "a remote host with a token",
    flags: { host: "10.1.2.3" },
    env: { CARAPACE_GATEWAY_TOKEN: "env-123456" },
    answers: false
  },
  { name: "a remote host without a token", flags: { host: "10.1.2.3" }, answers: true },
  {
    name: "[::1] with a token",
    flags: { host: "[::1]" },
    env: { CARAPACE_GATEWAY_TOKEN: "env-123456" },
    answers: true
  },
  { name: "debug logging", env: { CARA_LOG_LEVEL: "debug" }, answers: false }
]

describe("the lite reading of the target agrees with resolveTarget wherever it answers", () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cara-lite-"))
      fs.chmodSync(dir, c.dirMode ?? 0o700)
      if (c.config !== undefined) {
        const file = path.join(dir, "carapace.json5")
        fs.writeFileSync(file, c.config, { mode: 0o600 })
        if (c.fileMode !== undefined) fs.chmodSync(file, c.fileMode)
      }
      const env = { PATH: process.env["PATH"] ?? "", HOME: os.homedir(), CARAPACE_STATE_DIR: dir, ...c.env }
      const flags = { json: false, ...c.flags }
      const lite = await liteTarget(flags, env, c.status === true)
      expect(lite !== undefined, c.name).toBe(c.answers)
      if (lite === undefined) return
      process.env["CARAPACE_STATE_DIR"] = dir
      const full = await Effect.runPromise(
        resolveTarget({ host: Option.fromNullable(c.flags?.host), port: Option.fromNullable(c.flags?.port) }, env)
      )
      expect(lite.host).toBe(full.host)
      expect(lite.port).toBe(full.port)
      expect(lite.token).toBe(Option.getOrUndefined(Option.map(full.token, Redacted.value)))
      expect(Option.exists(full.config, (cfg) => cfg.gateway.auth?.mode === "none") && c.status === true).toBe(false)
    })
  }
})
