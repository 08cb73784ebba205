import * as ValidationError from "@effect/cli/ValidationError"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { redactSecrets } from "../domain/redact.js"
import { failureText } from "./render.js"

interface Described {
  readonly message: string
  readonly kind?: string
  readonly details?: ReadonlyArray<string>
}

interface Finding {
  readonly severity: string
  readonly path: string
  readonly message: string
}

const findingsOf = (error: object): ReadonlyArray<string> | undefined => {
  const findings = (error as { findings?: unknown }).findings
  if (!Array.isArray(findings)) return undefined
  return (findings as ReadonlyArray<Finding>).filter((f) => f.severity === "error").map((f) =>
    `  ${f.severity} ${f.path}: ${f.message}`
  )
}

// Turns the platform's listen failures into a sentence an operator can act on.
const describeServe = (error: { readonly cause?: unknown }): Described | undefined => {
  const cause = error.cause as NodeJS.ErrnoException & { address?: string; port?: number } | undefined
  if (cause?.code === "EADDRINUSE") {
    return {
      kind: "gateway-bind",
      message:
        `Port ${cause.port} on ${cause.address} is already in use. Stop the other process (another cara daemon?) or set gateway.port to a free port.`
    }
  }
  if (cause?.code === "EACCES" || cause?.code === "EADDRNOTAVAIL") {
    return {
      kind: "gateway-bind",
      message:
        `Cannot listen on ${cause.address}:${cause.port} (${cause.code}). Choose another gateway.bind address or gateway.port.`
    }
  }
  return undefined
}

const describe = (error: unknown): Described | undefined => {
  if (typeof error !== "object" || error === null) return undefined
  const tagged = error as { readonly _tag?: string; readonly message?: unknown; readonly kind?: unknown }
  if (tagged._tag === "ServeError") return describeServe(error as { cause?: unknown })
  if (typeof tagged.message === "string" && tagged.message !== "" && tagged._tag !== undefined) {
    // A config error lists its findings one per line rather than in one long sentence.
    const details = findingsOf(error)
    return {
      message: details !== undefined
        ? `startup aborted: the configuration has ${details.length} error(s):`
        : tagged.message,
      ...(typeof tagged.kind === "string" ? { kind: tagged.kind } : {}),
      ...(details !== undefined ? { details } : {})
    }
  }
  return undefined
}

/**
 * Prints why the command failed, once, on stderr: the operator-facing message (and its kind) for
 * known errors, the full cause for anything unexpected. Interruption (SIGTERM/SIGINT) is not a failure.
 * Everything printed passes the secret redactor: an error may quote a library's text, and a library may
 * quote a token.
 */
export const reportFailure = (cause: Cause.Cause<unknown>) =>
  Effect.sync(() => {
    if (Cause.isInterruptedOnly(cause)) return
    // @effect/cli has already printed its own usage errors (with help); don't repeat them.
    const failure = Cause.failureOption(cause)
    if (Option.isSome(failure) && ValidationError.isValidationError(failure.value)) return
    const described = Option.isSome(failure) ? describe(failure.value) : undefined
    if (described !== undefined) {
      process.stderr.write(redactSecrets(failureText(described.message, described.kind, described.details)))
    } else {
      process.stderr.write(redactSecrets(`cara: unexpected failure\n${Cause.pretty(cause)}\n`))
    }
  })
