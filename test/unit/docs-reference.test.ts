// What the docs name must exist in the code: config keys (against the config Schema), config snippets
// (decoded by the real loader), endpoints (against the HttpApi definition), WS events, error kinds (against
// the string literals of src/), doctor checks, environment variables and the systemd unit.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, type SchemaAST } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { CaraApi } from "../../src/domain/api.js"
import { CaraConfig, defaultAgent, Matrix } from "../../src/domain/config.js"
import { loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { WS_EVENTS } from "../../src/layers/WebSocketLive.js"
import { DOCTOR_CHECKS } from "../../src/programs/doctor.js"
import { codeIn, type Doc, inlineSpans, readDoc, readDocs, tables } from "../support/docs.js"
import { tmpDir } from "../support/tmp.js"

const docs = readDocs()
const allSpans = docs.flatMap((d) => inlineSpans(d).map((span) => ({ file: d.file, span })))

const sourceFiles = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(path.join(dir, e.name)) : e.name.endsWith(".ts") ? [path.join(dir, e.name)] : []
  )
const source = sourceFiles("src").map((f) => fs.readFileSync(f, "utf8")).join("\n")
/** Every string literal of src/ (the kind vocabulary is a set of such literals). */
const sourceLiterals = new Set([...source.matchAll(/"([a-z][a-z0-9-]*)"/g)].map((m) => m[1]!))

// ---------------------------------------------------------------------------------------------------------
// Config keys

/** Whether a dot path (segments like `<roomId>` stand for any record key) exists in the config Schema. */
const resolves = (ast: SchemaAST.AST, segments: ReadonlyArray<string>): boolean => {
  if (segments.length === 0) return true
  const [seg, ...rest] = segments as [string, ...Array<string>]
  switch (ast._tag) {
    case "TypeLiteral": {
      const prop = ast.propertySignatures.find((p) => p.name === seg)
      if (prop !== undefined) return resolves(prop.type, rest)
      return ast.indexSignatures.some((s) => resolves(s.type, rest))
    }
    case "Union":
      return ast.types.some((t) => resolves(t, segments))
    case "Transformation":
      return resolves(ast.to, segments) || resolves(ast.from, segments)
    case "Refinement":
      return resolves(ast.from, segments)
    case "Suspend":
      return resolves(ast.f(), segments)
    default:
      return false
  }
}

const SECTIONS = /^(gateway|matrix|anthropic|openai|agents)\./
const isEventName = (s: string) => /^(channel|matrix\.verification)\.[a-z.]+$/.test(s)

describe("docs: config", () => {
  const keys = allSpans
    .map(({ file, span }) => ({ file, key: span.split(/[\s=:]/)[0]! }))
    .filter(({ key }) => SECTIONS.test(key) && !isEventName(key) && /^[\w.<>-]+$/.test(key))

  it("every config key named in the docs exists in the config Schema", () => {
    expect(keys.length).toBeGreaterThan(40)
    const unknown = keys.filter(({ key }) => !resolves(CaraConfig.ast, key.split(".")))
    expect(unknown).toEqual([])
    // Control: a misspelt key is caught.
    expect(resolves(CaraConfig.ast, ["matrix", "autoJoin", "allowUser"])).toBe(false)
    expect(resolves(CaraConfig.ast, ["matrix", "rooms", "<roomId>", "agent"])).toBe(true)
  })

  it("every config key of the Matrix section is documented in docs/channels.md", () => {
    const documented = new Set(inlineSpans(readDoc("docs/channels.md")))
    const missing: Array<string> = []
    let seen = 0
    const walk = (ast: SchemaAST.AST, prefix: string, depth: number) => {
      if (ast._tag === "Transformation") return walk(ast.to, prefix, depth)
      if (ast._tag === "Union") return ast.types.forEach((t) => walk(t, prefix, depth))
      if (ast._tag !== "TypeLiteral") return
      for (const p of ast.propertySignatures) {
        const key = `${prefix}.${String(p.name)}`
        seen++
        const leaf = !["autoJoin", "rooms", "inboundDlq", "outbound", "inboundBudget"].includes(String(p.name)) ||
          depth > 0
        if (leaf && !documented.has(key)) missing.push(key)
        if (!leaf) walk(p.type, key, depth + 1)
      }
    }
    walk(Matrix.ast, "matrix", 0)
    // Control: the walk saw the section (a broken walk would report nothing missing).
    expect(seen).toBeGreaterThanOrEqual(15)
    expect(missing.filter((k) => !k.startsWith("matrix.rooms"))).toEqual([])
  })

  const json5Blocks = docs.flatMap((d) => d.blocks.filter((b) => b.lang === "json5"))

  it.effect("every json5 config snippet loads without errors or unknown keys, and agents.default is the default agent", () =>
    Effect.gen(function*() {
      expect(json5Blocks.length).toBeGreaterThanOrEqual(2)
      for (const block of json5Blocks) {
        const dir = tmpDir("cara-docs-")
        fs.writeFileSync(path.join(dir, "carapace.json5"), block.text, { mode: 0o600 })
        const env = {
          CARAPACE_STATE_DIR: dir,
          CARAPACE_CONFIG_PASSWORD: "docs-test-password",
          CARAPACE_GATEWAY_TOKEN: "t".repeat(64),
          MATRIX_PASSWORD: "docs-test-matrix-password",
          ANTHROPIC_API_KEY: "sk-ant-docs",
          OPENAI_API_KEY: "sk-docs"
        }
        const snap = yield* loadConfigSnapshot(env).pipe(Effect.provide(StateDirAt(dir)))
        const where = `${block.file}: ${block.text.slice(0, 60)}`
        expect(snap.findings.filter((f) => f.severity === "error"), where).toEqual([])
        expect(snap.findings.filter((f) => /unknown/i.test(f.message)), where).toEqual([])
        expect(Option.map(defaultAgent(snap.config), (a) => a.model), where).toEqual(
          Option.some("anthropic:claude-sonnet-4-6")
        )
        expect(snap.config.matrix?.enabled, where).toBe(true)
      }
    }))
})

// ---------------------------------------------------------------------------------------------------------
// Endpoints and events

const apiEndpoints = (): Array<string> => {
  const out: Array<string> = []
  for (
    const group of Object.values(CaraApi.groups) as Array<
      { endpoints: Record<string, { method: string; path: string }> }
    >
  ) {
    for (const e of Object.values(group.endpoints)) out.push(`${e.method} ${e.path}`)
  }
  return out
}

const docEndpoints = (doc: Doc) =>
  [...doc.text.matchAll(/\b(GET|POST|PUT|PATCH|DELETE) (\/[\w/:.-]*[\w])/g)].map((m) => `${m[1]} ${m[2]}`)

describe("docs: control API", () => {
  const api = new Set(apiEndpoints())
  // `GET /ws` is an upgrade route outside the HttpApi (src/layers/WebSocketLive.ts).
  const wsRoute = /router\.get\(\s*"\/ws"/.test(source)

  it("every endpoint the docs name is in the HttpApi definition", () => {
    expect(wsRoute).toBe(true)
    const named = docs.flatMap((d) => docEndpoints(d).map((e) => ({ file: d.file, e })))
    expect(named.length).toBeGreaterThan(20)
    expect(named.filter(({ e }) => !api.has(e) && e !== "GET /ws")).toEqual([])
  })

  it("every endpoint of the HttpApi is documented in docs/protocol/http.md", () => {
    const documented = new Set(docEndpoints(readDoc("docs/protocol/http.md")))
    expect([...api].filter((e) => !documented.has(e))).toEqual([])
  })

  it("WS events: every event named in the docs is one the daemon sends, and each is documented", () => {
    const named = allSpans.map(({ span }) => span).filter(isEventName)
    expect(named.filter((e) => !(WS_EVENTS as ReadonlyArray<string>).includes(e))).toEqual([])
    const ws = new Set(inlineSpans(readDoc("docs/protocol/websocket.md")))
    for (const e of WS_EVENTS) expect(ws, `event ${e} is not documented`).toContain(e)
  })
})

// ---------------------------------------------------------------------------------------------------------
// Error kinds

describe("docs: error kinds", () => {
  const kinds = docs.flatMap((d) => [
    ...tables(d).flatMap((t) => {
      const col = t.header.findIndex((h) => h.toLowerCase() === "kind")
      return col < 0 ? [] : t.rows.flatMap((r) => codeIn(r[col] ?? "").map((k) => ({ file: d.file, k })))
    }),
    ...d.blocks.flatMap((b) => [...b.text.matchAll(/"kind":\s*"([^"]+)"/g)].map((m) => ({ file: d.file, k: m[1]! })))
  ])

  it("every error kind in the docs is a kind literal of the code", () => {
    expect(kinds.length).toBeGreaterThan(40)
    expect(kinds.filter(({ k }) => !sourceLiterals.has(k))).toEqual([])
    // Control: an invented kind is not among the literals.
    expect(sourceLiterals.has("no-such-error-kind")).toBe(false)
  })

  it("every Matrix runtime kind (lastErrorKind) that reaches an operator at startup is documented in docs/channels.md", () => {
    const channels = new Set(
      tables(readDoc("docs/channels.md")).flatMap((t) => t.rows.flatMap((r) => codeIn(r[0] ?? "")))
    )
    for (
      const k of [
        "missing-store-secret",
        "encrypted-store-passphrase-mismatch",
        "interrupted-rekey",
        "invalid-user-id",
        "missing-credentials",
        "auth-token-revoked",
        "sync-failed",
        "cross-signing-bootstrap-failed",
        "recovery-key-promotion-refused"
      ]
    ) expect(channels, k).toContain(k)
  })
})

// ---------------------------------------------------------------------------------------------------------
// Doctor, environment, deployment

describe("docs: doctor, environment, deployment", () => {
  it("the README lists every doctor check, in order", () => {
    const readme = readDoc("README.md")
    const section = readme.prose.slice(
      readme.prose.indexOf("## `cara doctor`"),
      readme.prose.indexOf("## Run it as a service")
    )
    const named = [...section.matchAll(/`([a-z-]+)`/g)].map((m) => m[1]!).filter((c) =>
      (DOCTOR_CHECKS as ReadonlyArray<string>).includes(c)
    )
    expect(named).toEqual([...DOCTOR_CHECKS])
  })

  it("every metric the docs name is registered by the code", () => {
    const named = new Set(docs.flatMap((d) => [...d.text.matchAll(/\b(carapace_[a-z_]+)\b/g)].map((m) => m[1]!)))
    expect(named.size).toBeGreaterThan(5)
    expect([...named].filter((m) => !source.includes(`"${m}"`))).toEqual([])
  })

  it("every environment variable the docs name is read by the code", () => {
    const vars = new Set(
      docs.flatMap((d) =>
        [...d.text.matchAll(/\b((?:CARAPACE|MATRIX|CARA|ANTHROPIC|OPENAI)_[A-Z_]+)\b/g)].map((m) => m[1]!)
      )
    )
    // The demo's own variables are read by scripts/demo.ts, not by src/.
    const demo = fs.readFileSync("scripts/demo.ts", "utf8")
    const unread = [...vars].filter((v) =>
      !source.includes(`"${v}"`) && !demo.includes(`"${v}"`) && v !== "CARA_SKIP_SYNAPSE"
    )
    expect(unread).toEqual([])
    expect(vars.size).toBeGreaterThan(10)
  })

  it("the systemd unit runs the package's bin with an EnvironmentFile, restarts on failure and is hardened", () => {
    const unit = fs.readFileSync("docs/deploy/cara.service", "utf8")
    const sections = new Map<string, Map<string, string>>()
    let current = ""
    for (const line of unit.split("\n").map((l) => l.trim())) {
      if (line === "" || line.startsWith("#")) continue
      const header = /^\[(\w+)\]$/.exec(line)
      if (header !== null) {
        current = header[1]!
        sections.set(current, new Map())
        continue
      }
      const eq = line.indexOf("=")
      expect(eq, `bad line: ${line}`).toBeGreaterThan(0)
      sections.get(current)!.set(line.slice(0, eq), line.slice(eq + 1))
    }
    expect([...sections.keys()]).toEqual(["Unit", "Service", "Install"])
    const service = sections.get("Service")!
    const bin = (JSON.parse(fs.readFileSync("package.json", "utf8")) as { bin: { cara: string } }).bin.cara
    expect(service.get("ExecStart")).toMatch(new RegExp(`node_modules/\\.bin/node \\S+/${bin.replace(/\./g, "\\.")}$`))
    expect(service.get("EnvironmentFile")).toBeDefined()
    expect(service.get("Restart")).toBe("on-failure")
    expect(service.get("KillSignal")).toBe("SIGTERM")
    expect(service.get("NoNewPrivileges")).toBe("yes")
    expect(service.get("UMask")).toBe("0077")
    // Start limits belong to [Unit]; in [Service] systemd ignores them.
    expect(service.has("StartLimitBurst")).toBe(false)
    expect(sections.get("Unit")!.get("StartLimitBurst")).toBeDefined()
    expect(sections.get("Install")!.get("WantedBy")).toBe("default.target")
    // The seed's `systemctl --user stop carapace` must reach this unit.
    expect(sections.get("Install")!.get("Alias")).toBe("carapace.service")
  })
})
