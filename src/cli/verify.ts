import { Console, Effect, Option } from "effect"
import { type CheckResult, runVerify, summarize } from "../programs/verify.js"

/** `cara verify`: PASS/FAIL lines as they are known (or one JSON document at the end); exit 0 only on pass. */
export const verify = (
  { json, matrixTo, port, wait }: {
    readonly matrixTo: Option.Option<string>
    readonly port: Option.Option<number>
    readonly wait: number
    readonly json: boolean
  }
) =>
  Effect.gen(function*() {
    const checks: ReadonlyArray<CheckResult> = yield* runVerify({
      port,
      matrixTo,
      waitSeconds: Math.max(0, wait),
      emit: (line) => (json ? Effect.void : Console.log(line))
    })
    const summary = summarize(checks)
    yield* Console.log(
      json ? JSON.stringify({ ok: summary.ok, checks, summary: summary.text }, null, 2) : `\n${summary.text}`
    )
    if (!summary.ok) process.exitCode = 1
  })
