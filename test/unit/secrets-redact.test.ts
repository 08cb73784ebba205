// Issue 16 point 7: one registry of configured secret values that every sink passes its text through —
// the logger, the three audit writers, the CLI's error renderer — and the config load that fills it.
import { beforeEach, describe, expect, it } from "@effect/vitest"
import { Cause, Effect, HashMap, Logger, LogLevel, Option, Redacted } from "effect"
import { Console } from "node:console"
import * as fs from "node:fs"
import * as path from "node:path"
import { reportFailure } from "../../src/cli/failure.js"
import { formatLogLine, installStderrRedaction, stderrLogger } from "../../src/cli/logging.js"
import {
  auditLine,
  clearSecretsForTests,
  MIN_SECRET_LENGTH,
  REDACTED,
  redactSecrets,
  registeredSecretCount,
  registerSecret
} from "../../src/domain/redact.js"
import { makeAudit } from "../../src/layers/AuditLive.js"
import { loadConfigSnapshot } from "../../src/layers/ConfigSecretsLive.js"
import { fileAudit } from "../../src/layers/RecoveryKeyLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { appendAudit } from "../../src/programs/rekeyStore.js"
import { StateDir } from "../../src/services/StateDir.js"
import { tmpDir } from "../support/tmp.js"

// A recovery key in the canonical shape (12 groups of base58, the last of three).
const RECOVERY_KEY = "EsTc 1Fq3 w5Nb 8mUa 2Wxr PdLh 9kYj Ztgv 4CnB 7HsQ M6eR fAp"

const tempDir = () => tmpDir("cara-redact-")

/** Captures what `body` writes to stderr (the logger's and the failure renderer's only output). */
const captureStderr = async (body: () => Promise<unknown>): Promise<string> => {
  const original = process.stderr.write.bind(process.stderr)
  let out = ""
  process.stderr.write = ((chunk: string | Uint8Array) => {
    out += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8")
    return true
  }) as typeof process.stderr.write
  try {
    await body()
  } finally {
    process.stderr.write = original
  }
  return out
}

beforeEach(() => clearSecretsForTests())

describe("the secret registry", () => {
  it("redacts a registered value, its URL-encoded, form-encoded and JSON-escaped forms", () => {
    const secret = "s3cr3t/with space&\"quote\""
    registerSecret(Redacted.make(secret))
    const text = [
      `plain ${secret} end`,
      `url https://x.example/?k=${encodeURIComponent(secret)}`,
      `form ${new URLSearchParams({ k: secret }).toString()}`,
      `json ${JSON.stringify({ k: secret })}`
    ].join("\n")
    const out = redactSecrets(text)
    expect(out).not.toContain("s3cr3t")
    expect(out.match(/\[REDACTED\]/g)).toHaveLength(4)
    expect(out).toContain("plain [REDACTED] end")
  })

  it("replaces a secret that contains another registered one whole, and ignores blank and short values", () => {
    registerSecret("abcdef")
    registerSecret("abcdef-and-more")
    registerSecret("short")
    registerSecret("   ")
    expect(registeredSecretCount()).toBe(2)
    expect(MIN_SECRET_LENGTH).toBe(6)
    expect(redactSecrets("x abcdef-and-more y abcdef z short")).toBe(`x ${REDACTED} y ${REDACTED} z short`)
  })

  it("redacts anything shaped like a Matrix recovery key, registered or not", () => {
    expect(redactSecrets(`key: ${RECOVERY_KEY}.`)).toBe(`key: ${REDACTED}.`)
    // Spread over lines as a pasted key would be.
    expect(redactSecrets(RECOVERY_KEY.replace(/ /g, "\n"))).toBe(REDACTED)
  })
})

describe("every log line passes the redactor", () => {
  it("message, annotations and cause, also the recovery key that the old redactor never saw", async () => {
    registerSecret("gateway-token-0123456789")
    const out = await captureStderr(() =>
      Effect.runPromise(
        Effect.logWarning(`login failed for token gateway-token-0123456789 and key ${RECOVERY_KEY}`).pipe(
          Effect.annotateLogs({ url: "https://hs.example/?access_token=gateway-token-0123456789" }),
          Effect.zipRight(Effect.logError("boom", Cause.fail(new Error("provider said gateway-token-0123456789")))),
          Effect.provide(Logger.replace(Logger.defaultLogger, stderrLogger))
        )
      )
    )
    expect(out).toContain("login failed for token [REDACTED] and key [REDACTED]")
    expect(out).toContain("url=https://hs.example/?access_token=[REDACTED]")
    expect(out).toContain("provider said [REDACTED]")
    expect(out).not.toContain("gateway-token-0123456789")
    expect(out).not.toContain("EsTc 1Fq3")
  })

  it("formatLogLine is the redacting formatter the logger uses", () => {
    registerSecret("matrix-password-xyz")
    const line = formatLogLine({
      annotations: HashMap.empty(),
      cause: Cause.empty,
      date: new Date(0),
      logLevel: LogLevel.Info,
      message: ["hello", "matrix-password-xyz"]
    })
    expect(line).toBe("1970-01-01T00:00:00.000Z INFO  hello [REDACTED]")
  })
})

describe("everything else on stderr passes it too", () => {
  it("a library's console.error (which bypasses the logger) is redacted once the CLI installed the filter", async () => {
    registerSecret("syt_sdk_quoted_token")
    const out = await captureStderr(async () => {
      const before = process.stderr.write
      installStderrRedaction()
      try {
        // A console of its own: vitest replaces the global one, the daemon's is Node's, bound to stderr like this.
        new Console({ stdout: process.stderr, stderr: process.stderr }).error(
          "GET https://hs.example/_matrix?access_token=syt_sdk_quoted_token failed"
        )
        process.stderr.write(Buffer.from("raw bytes syt_sdk_quoted_token\n"))
      } finally {
        process.stderr.write = before
      }
    })
    expect(out).toBe("GET https://hs.example/_matrix?access_token=[REDACTED] failed\nraw bytes [REDACTED]\n")
  })
})

describe("every audit writer passes the redactor", () => {
  it("DLQ, rekey-store and recovery-key audit lines never carry a registered secret", async () => {
    registerSecret("sk-ant-api03-echoed-key")
    const dir = tempDir()
    const data = { reason: "provider said: invalid key sk-ant-api03-echoed-key", count: 1 }
    await Effect.runPromise(
      Effect.gen(function*() {
        const sd = yield* StateDir
        yield* makeAudit(sd).append("dlq_event", data)
        yield* appendAudit(sd, "rekey_event", data)
        yield* fileAudit(sd)("recovery_event", { ...data, key: RECOVERY_KEY })
      }).pipe(Effect.provide(StateDirAt(dir)))
    )
    const text = fs.readFileSync(path.join(dir, "audit.jsonl"), "utf8")
    const lines = text.trim().split("\n").map((l) => JSON.parse(l) as { event: string; data: Record<string, unknown> })
    expect(lines.map((l) => l.event)).toEqual(["dlq_event", "rekey_event", "recovery_event"])
    for (const l of lines) expect(l.data["reason"]).toBe("provider said: invalid key [REDACTED]")
    expect(lines[2]!.data["key"]).toBe(REDACTED)
    expect(text).not.toContain("echoed-key")
  })

  it("auditLine keeps the one-JSON-line format", () => {
    expect(auditLine("e", { a: 1 }, new Date(0))).toBe(`{"ts":"1970-01-01T00:00:00.000Z","event":"e","data":{"a":1}}\n`)
  })
})

describe("the config load fills the registry", () => {
  it("plain, ${VAR} (whole or part), env-fallback and password values are all redacted afterwards", async () => {
    const dir = tempDir()
    fs.writeFileSync(
      path.join(dir, "carapace.json5"),
      `{
        gateway: { auth: { mode: "token", token: "plain-gateway-token-1" } },
        matrix: { enabled: false, accessToken: "syt_\${TOKEN_TAIL}", deviceId: "D" },
        openai: { apiKey: "\${OPENAI_KEY_VAR}" },
      }`,
      { mode: 0o600 }
    )
    const env = {
      CARAPACE_STATE_DIR: dir,
      TOKEN_TAIL: "tail-of-the-token",
      OPENAI_KEY_VAR: "sk-openai-from-var",
      ANTHROPIC_API_KEY: "sk-ant-from-env-fallback",
      MATRIX_PASSWORD: "matrix-password-env",
      CARAPACE_CONFIG_PASSWORD: "config-password-1"
    }
    const snap = await Effect.runPromise(loadConfigSnapshot(env).pipe(Effect.provide(StateDirAt(dir))))
    expect(Option.isSome(snap.path)).toBe(true)
    const all = [
      "plain-gateway-token-1",
      "syt_tail-of-the-token",
      "tail-of-the-token",
      "sk-openai-from-var",
      "sk-ant-from-env-fallback",
      "matrix-password-env",
      "config-password-1"
    ]
    const out = redactSecrets(all.join(" | "))
    for (const s of all) expect(out).not.toContain(s)
    // The part substituted into a secret field is caught on its own, too.
    expect(redactSecrets("suffix tail-of-the-token")).toBe(`suffix ${REDACTED}`)
  })

  it("the CLI's failure renderer redacts what it prints", async () => {
    registerSecret("cli-visible-secret")
    const out = await captureStderr(() =>
      Effect.runPromise(reportFailure(Cause.die(new Error("library error quoting cli-visible-secret"))))
    )
    expect(out).toContain("cara: unexpected failure")
    expect(out).toContain("quoting [REDACTED]")
    expect(out).not.toContain("cli-visible-secret")
  })
})
