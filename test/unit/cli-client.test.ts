import { Effect, Either, Option, Redacted } from "effect"
import { describe, expect, it } from "vitest"
import { describeClientError, gatewayClient, isLoopbackLiteral, isLoopbackTarget } from "../../src/cli/client.js"
import { NotFound, ServiceUnavailable } from "../../src/domain/api.js"
import { VerificationFlowNotReady } from "../../src/domain/verification.js"

const never = () => Promise.reject(new Error("a name other than localhost must not be resolved"))

describe("the CLI sends the bearer only to loopback (#16.8)", () => {
  it("literal loopback addresses are 127.0.0.0/8 and ::1 only", () => {
    for (const host of ["127.0.0.1", "127.255.1.9", "::1", "[::1]", "0:0:0:0:0:0:0:1"]) {
      expect(isLoopbackLiteral(host), host).toBe(true)
    }
    for (
      const host of [
        "128.0.0.1",
        "10.0.0.1",
        "0.0.0.0",
        "127.1",
        "127.0.0.1.nip.io",
        "127.attacker.example",
        "::2",
        "::ffff:8.8.8.8",
        "localhost",
        ""
      ]
    ) {
      expect(isLoopbackLiteral(host), host).toBe(false)
    }
  })

  it("a name is never loopback, whatever it resolves to; localhost is, when every address it resolves to is", async () => {
    const run = (host: string, resolve: (n: string) => Promise<ReadonlyArray<string>>) =>
      Effect.runPromise(isLoopbackTarget(host, resolve))
    expect(await run("127.attacker.example", never)).toBe(false)
    expect(await run("127.0.0.1.attacker.example", never)).toBe(false)
    expect(await run("127.0.0.1", never)).toBe(true)
    expect(await run("[::1]", never)).toBe(true)
    expect(await run("localhost", async () => ["127.0.0.1", "::1"])).toBe(true)
    // a hosts file that points localhost away, partly or wholly, or a lookup that fails
    expect(await run("localhost", async () => ["127.0.0.1", "192.0.2.7"])).toBe(false)
    expect(await run("localhost", async () => ["192.0.2.7"])).toBe(false)
    expect(await run("localhost", async () => [])).toBe(false)
    expect(await run("localhost", () => Promise.reject(new Error("ENOTFOUND")))).toBe(false)
    // the real resolver on this machine
    expect(await Effect.runPromise(isLoopbackTarget("localhost"))).toBe(true)
  })

  it("the client refuses to carry a token to 127.attacker.example, and builds for 127.0.0.1", async () => {
    const target = (host: string) => ({
      host,
      port: 18789,
      token: Option.some(Redacted.make("t0k3n-never-sent")),
      config: Option.none()
    })
    const refused = await Effect.runPromise(Effect.either(Effect.scoped(gatewayClient(target("127.attacker.example")))))
    expect(Either.isLeft(refused) && refused.left.kind).toBe("gateway-plaintext-remote")
    const local = await Effect.runPromise(Effect.either(Effect.scoped(gatewayClient(target("127.0.0.1")))))
    expect(Either.isRight(local)).toBe(true)
  })
})

describe("the CLI writes an API error as its status and class (#17.7)", () => {
  it("409 VerificationFlowNotReady, 404 NotFound, 503 ServiceUnavailable; the kind stays apart", () => {
    const early = describeClientError(
      new VerificationFlowNotReady({ kind: "verification-flow-not-ready", message: "flow f1 has no SAS yet" })
    )
    expect(early).toEqual({
      kind: "verification-flow-not-ready",
      message: "409 VerificationFlowNotReady: flow f1 has no SAS yet"
    })
    expect(describeClientError(new NotFound({ kind: "dlq-record-not-found", message: "no record r1" })).message).toBe(
      "404 NotFound: no record r1"
    )
    expect(
      describeClientError(
        new ServiceUnavailable({ kind: "matrix-runtime-unavailable", message: "Matrix is not running" })
      ).message
    )
      .toBe("503 ServiceUnavailable: Matrix is not running")
  })
})
