// The SDK's logger: its debug chatter reaches the log only when debug lines are on (CARA_LOG_LEVEL=debug);
// otherwise it is dropped before it is formatted. Errors are always logged.
import { Effect, Logger, LogLevel } from "effect"
import { describe, expect, it } from "vitest"
import { makeSdkLogger } from "../../src/layers/matrix/logging.js"

const logged = async (min: LogLevel.LogLevel) => {
  const lines: Array<string> = []
  const capture = Logger.make(({ logLevel, message }) => {
    lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
  })
  const runtime = await Effect.runPromise(
    Effect.runtime<never>().pipe(
      Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
      Logger.withMinimumLogLevel(min)
    )
  )
  const log = makeSdkLogger(runtime).getChild("sync")
  let formatted = 0
  const arg = { toJSON: () => (formatted++, "x") }
  log.debug("a debug line", arg)
  log.warn("a warning")
  log.error("an error")
  await new Promise((r) => setTimeout(r, 20))
  return { lines, formatted }
}

describe("the SDK logger", () => {
  it("drops debug chatter unformatted at info level and keeps errors", async () => {
    const { formatted, lines } = await logged(LogLevel.Info)
    expect(formatted).toBe(0)
    expect(lines).toEqual(["ERROR matrix-sdk sync an error"])
  })

  it("passes everything on at debug level", async () => {
    const { formatted, lines } = await logged(LogLevel.Debug)
    expect(formatted).toBe(1)
    expect(lines).toEqual([
      "DEBUG matrix-sdk sync a debug line \"x\"",
      "DEBUG matrix-sdk sync a warning",
      "ERROR matrix-sdk sync an error"
    ])
  })
})
