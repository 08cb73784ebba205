import { Cause, HashMap, Logger, LogLevel } from "effect"

/** One line per log entry on stderr: `time LEVEL message key=value ...`; stdout stays for command output. */
export const stderrLogger = Logger.make(({ annotations, cause, date, logLevel, message }) => {
  const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
  let line = `${date.toISOString()} ${logLevel.label.padEnd(5)} ${text}`
  for (const [key, value] of HashMap.toEntries(annotations)) line += ` ${key}=${String(value)}`
  if (!Cause.isEmpty(cause)) line += `\n${Cause.pretty(cause)}`
  process.stderr.write(line + "\n")
})

export const LoggingLive = Logger.replace(Logger.defaultLogger, stderrLogger)
export const logLevelFromEnv = (): LogLevel.LogLevel =>
  process.env["CARA_LOG_LEVEL"] === "debug" ? LogLevel.Debug : LogLevel.Info
