import * as Cause from "effect/Cause"
import * as HashMap from "effect/HashMap"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { redactSecrets } from "../domain/redact.js"

/**
 * One line per log entry on stderr: `time LEVEL message key=value ...`; stdout stays for command output.
 * The whole line (message, annotations, cause) goes through the secret redactor last, so no call site has
 * to remember to: a configured secret or a recovery key never reaches the log, whoever logged it.
 */
export const formatLogLine = (
  { annotations, cause, date, logLevel, message }: Pick<
    Logger.Logger.Options<unknown>,
    "annotations" | "cause" | "date" | "logLevel" | "message"
  >
): string => {
  const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
  let line = `${date.toISOString()} ${logLevel.label.padEnd(5)} ${text}`
  for (const [key, value] of HashMap.toEntries(annotations)) line += ` ${key}=${String(value)}`
  if (!Cause.isEmpty(cause)) line += `\n${Cause.pretty(cause)}`
  return redactSecrets(line)
}

export const stderrLogger = Logger.make((options) => {
  process.stderr.write(formatLogLine(options) + "\n")
})

export const LoggingLive = Logger.replace(Logger.defaultLogger, stderrLogger)
export const logLevelFromEnv = (): LogLevel.LogLevel =>
  process.env["CARA_LOG_LEVEL"] === "debug" ? LogLevel.Debug : LogLevel.Info

/**
 * Passes everything written to stderr through the secret redactor, not only the logger's lines: libraries
 * write there directly (matrix-js-sdk's `console.error`, Node's warnings), and their text may quote a URL
 * or a request. stdout is left alone: it carries what a command was asked to print (a recovery key to a
 * terminal, for one).
 */
export const installStderrRedaction = (stream: NodeJS.WriteStream = process.stderr): void => {
  const write = stream.write.bind(stream) as (chunk: string, ...rest: Array<unknown>) => boolean
  stream.write = ((chunk: string | Uint8Array, ...rest: Array<unknown>) => {
    const text = typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8")
    // A Buffer's encoding argument no longer applies to the decoded text; a callback still does.
    const tail = typeof chunk === "string" ? rest : rest.filter((r) => typeof r === "function")
    return write(redactSecrets(text), ...tail)
  }) as typeof stream.write
}
