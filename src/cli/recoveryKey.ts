import * as Prompt from "@effect/cli/Prompt"
import { Effect, Layer, Option, Redacted } from "effect"
import * as fs from "node:fs"
import { MAX_KEY_BYTES, recoveryError } from "../domain/recoveryKey.js"
import { ChannelStatusLive } from "../layers/ChannelStatusLive.js"
import { ConfigSecretsLive } from "../layers/ConfigSecretsLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { StorePassphraseLive } from "../layers/StorePassphraseLive.js"

// CLI-only by design: the key never crosses the control API. The daemon need not run for show; restore
// and rotate take the maintenance lock, so they refuse while it runs.
const MaintenanceLive = Layer.mergeAll(StorePassphraseLive, ChannelStatusLive).pipe(
  Layer.provideMerge(ConfigSecretsLive),
  Layer.provideMerge(StateDirLive)
)

const load = Effect.promise(() => import("../programs/recoveryKey.js"))

/** Reads at most cap+1 bytes from a descriptor, so an oversize input is refused without reading it all. */
const readCappedFd = (fd: number): Uint8Array => {
  const buf = Buffer.alloc(MAX_KEY_BYTES + 1)
  let n = 0
  for (;;) {
    let r: number
    try {
      r = fs.readSync(fd, buf, n, buf.length - n, null)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue
      throw e
    }
    if (r === 0 || n + r >= buf.length) {
      n += r
      break
    }
    n += r
  }
  return buf.subarray(0, n)
}

/** `cara matrix recovery-key show`. */
export const show = ({ allowNonTerminal }: { readonly allowNonTerminal: boolean }) =>
  Effect.gen(function*() {
    const { showKey } = yield* load
    const key = yield* showKey({ allowNonTerminal, stdoutIsTty: process.stdout.isTTY === true })
    yield* Effect.sync(() => process.stdout.write(`${Redacted.value(key)}\n`))
  }).pipe(Effect.provide(MaintenanceLive))

/** `cara matrix recovery-key restore`. */
export const restore = ({ keyFile, stdin }: { readonly keyFile: Option.Option<string>; readonly stdin: boolean }) =>
  Effect.gen(function*() {
    const { parseKeyInput, renderRestore, restoreKey } = yield* load
    if (stdin && Option.isSome(keyFile)) {
      return yield* recoveryError("recovery-key-invalid", "--stdin conflicts with --key-file; give one of them.")
    }
    const fromFd = (open: () => number, close: boolean, what: string) =>
      Effect.try({
        try: () => {
          const fd = open()
          try {
            return readCappedFd(fd)
          } finally {
            if (close) fs.closeSync(fd)
          }
        },
        catch: (e) =>
          recoveryError(
            "recovery-key-invalid",
            `reading the recovery key from ${what} failed (${(e as NodeJS.ErrnoException).code ?? String(e)}).`
          )
      }).pipe(Effect.flatMap(parseKeyInput))
    const readKey = Option.isSome(keyFile)
      ? fromFd(() => fs.openSync(keyFile.value, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), true, keyFile.value)
      : stdin || process.stdin.isTTY !== true
      ? fromFd(() => 0, false, "standard input")
      : Prompt.hidden({ message: "Matrix recovery key: " }).pipe(
        Effect.flatMap((r) => parseKeyInput(Redacted.value(r))),
        Effect.catchTag(
          "QuitException",
          () => Effect.fail(recoveryError("recovery-key-refused", "Matrix recovery-key restore aborted by operator"))
        )
      )
    const result = yield* restoreKey(readKey)
    yield* Effect.sync(() => process.stdout.write(`${renderRestore(result)}\n`))
  }).pipe(Effect.provide(MaintenanceLive))

/** `cara matrix recovery-key rotate`. */
export const rotate = ({ yes }: { readonly yes: boolean }) =>
  Effect.gen(function*() {
    if (!yes) {
      if (process.stdin.isTTY !== true || process.stdout.isTTY !== true) {
        return yield* recoveryError(
          "recovery-key-refused",
          "matrix recovery-key rotate refused: not a TTY. Re-run with --yes to confirm rotation in non-interactive contexts. Rotation abandons the prior recovery key and any backup it secured."
        )
      }
      yield* Effect.sync(() =>
        process.stdout.write(
          "This replaces the Matrix recovery key and the server-side key backup; the previous key stops working.\nSave the new key with `cara matrix recovery-key show` afterwards.\n"
        )
      )
      const answer = yield* Prompt.text({ message: "Type 'rotate' to confirm: " }).pipe(Effect.orElseSucceed(() => ""))
      if (answer.trim() !== "rotate") {
        return yield* recoveryError("recovery-key-refused", "matrix recovery-key rotate aborted by operator")
      }
    }
    const { renderRotate, rotateKey } = yield* load
    const result = yield* rotateKey
    yield* Effect.sync(() => process.stdout.write(`${renderRotate(result)}\n`))
    // matrix-js-sdk leaves timers behind after stopClient; the client's scope is closed and every write is
    // durable, so end the one-shot process instead of waiting for them
    yield* Effect.sync(() => setImmediate(() => process.exit(0)))
  }).pipe(Effect.provide(MaintenanceLive))
