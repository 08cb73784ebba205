// SDK logging: the per-client logger and the module-level console output both go to the Effect logger at
// debug level; errors stay errors.
import { Effect, FiberRef, LogLevel, Runtime } from "effect"
import type { Logger as SdkLogger } from "matrix-js-sdk/lib/logger.js"

const SDK_FRAME = /[\\/]node_modules[\\/](?:matrix-js-sdk|@matrix-org[\\/]matrix-sdk-crypto-wasm|loglevel)[\\/]/

const stringify = (a: unknown): string => {
  try {
    return JSON.stringify(a)
  } catch {
    return String(a)
  }
}

const fmt = (args: ReadonlyArray<unknown>): string =>
  args
    .map((a) => (a instanceof Error ? a.message : typeof a === "string" ? a : stringify(a)))
    .join(" ")
    .slice(0, 2000)

/**
 * Whether debug lines reach the log at all (`CARA_LOG_LEVEL`): when not, the SDK's chatter is dropped before it
 * is formatted and handed to a fiber (~3.5 % of a backlog's CPU in the profile, for lines nobody sees).
 */
const debugEnabled = (runtime: Runtime.Runtime<never>): boolean =>
  LogLevel.lessThanEqual(Runtime.runSync(runtime)(FiberRef.get(FiberRef.currentMinimumLogLevel)), LogLevel.Debug)

const ignore = () => {}

export const makeSdkLogger = (runtime: Runtime.Runtime<never>, prefix = ""): SdkLogger => {
  const debug = debugEnabled(runtime)
    ? (...args: Array<unknown>) => Runtime.runFork(runtime)(Effect.logDebug(`matrix-sdk ${prefix}${fmt(args)}`))
    : ignore
  return {
    trace: debug,
    debug,
    info: debug,
    warn: debug,
    error: (...args: Array<unknown>) => Runtime.runFork(runtime)(Effect.logError(`matrix-sdk ${prefix}${fmt(args)}`)),
    getChild: (namespace: string) => makeSdkLogger(runtime, `${prefix}${namespace} `)
  }
}

/** For the short-lived probe clients (whoami, login, key query, logout): they log nothing. */
export const quietLogger: SdkLogger = {
  trace: () => {},
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  getChild: () => quietLogger
}

/**
 * Redirects matrix-js-sdk's module-level console output (it ignores the per-client logger) into the Effect
 * logger at debug level while the scope is open. Only calls whose immediate caller is SDK code are taken;
 * `console.error` is left alone so no error is hidden.
 */
export const redirectSdkConsole = Effect.flatMap(Effect.runtime<never>(), (runtime) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const originals = new Map<string, (...args: Array<unknown>) => void>()
      const debug = debugEnabled(runtime)
      for (const level of ["log", "debug", "info", "warn", "trace"] as const) {
        const original = console[level]
        originals.set(level, original)
        console[level] = (...args: Array<unknown>) => {
          const caller = (new Error().stack ?? "").split("\n")[2] ?? ""
          if (!SDK_FRAME.test(caller)) original.apply(console, args)
          else if (debug) Runtime.runFork(runtime)(Effect.logDebug(`matrix-sdk ${fmt(args)}`))
        }
      }
      return originals
    }),
    (originals) =>
      Effect.sync(() => {
        for (const [level, fn] of originals) (console as unknown as Record<string, unknown>)[level] = fn
      })
  ))
