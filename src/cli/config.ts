import { Console, Effect, Option } from "effect"
import { redactSecrets } from "../domain/redact.js"
import type { ConfigEnv } from "../layers/ConfigSecretsLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { checkConfig, renderCheck } from "../programs/configCheck.js"
import { getConfig, setConfig, showConfig } from "../programs/configEdit.js"
import { ConfigRekeyError, refuse, rekeyConfig } from "../programs/configRekey.js"

/** `cara config check [--json]`: exit 1 without a second error dump: the findings are the message. */
export const check = ({ json }: { readonly json: boolean }) =>
  Effect.gen(function*() {
    const report = yield* checkConfig({ ...process.env })
    yield* Console.log(redactSecrets(renderCheck(report, json)))
    if (!report.ok) process.exitCode = 1
  }).pipe(Effect.provide(StateDirLive))

/** Reads a line from the terminal without echoing it. */
const promptHidden = (question: string) =>
  Effect.async<string, ConfigRekeyError>((resume) => {
    const stdin = process.stdin
    let buf = ""
    const finish = () => {
      stdin.off("data", onData)
      if (stdin.isTTY) stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write("\n")
    }
    const onData = (chunk: Buffer | string) => {
      for (const ch of chunk.toString()) {
        if (ch === "\r" || ch === "\n") {
          finish()
          return resume(Effect.succeed(buf))
        }
        if (ch === "\u0003" || ch === "\u0004") {
          finish()
          return resume(Effect.fail(refuse("config-rekey-new-password", "cancelled; nothing was changed")))
        }
        if (ch === "\u007f" || ch === "\b") buf = buf.slice(0, -1)
        else buf += ch
      }
    }
    process.stderr.write(question)
    stdin.setRawMode(true)
    stdin.resume()
    stdin.on("data", onData)
    return Effect.sync(finish)
  })

/** The new password: from `--new-password-env NAME`, else a no-echo prompt (twice), else a refusal. */
export const newPasswordSource = (
  env: ConfigEnv,
  fromEnv: Option.Option<string>,
  isTTY: boolean
): Effect.Effect<string, ConfigRekeyError> =>
  Option.match(fromEnv, {
    onSome: (name) => {
      const v = env[name] ?? ""
      return v === ""
        ? Effect.fail(
          refuse("config-rekey-new-password", `${name} is not set or empty; export the new password in it and retry`)
        )
        : Effect.succeed(v)
    },
    onNone: () =>
      isTTY
        ? Effect.gen(function*() {
          const a = yield* promptHidden("New config password: ")
          const b = yield* promptHidden("Repeat the new config password: ")
          if (a !== b) {
            return yield* refuse("config-rekey-new-password", "the two passwords differ; nothing was changed")
          }
          return a
        })
        : Effect.fail(
          refuse(
            "config-rekey-new-password",
            "no terminal to read the new password from; pass --new-password-env NAME with the new password in that environment variable"
          )
        )
  })

/** `cara config rekey [--new-password-env NAME]`. */
export const rekey = ({ newPasswordEnv }: { readonly newPasswordEnv: Option.Option<string> }) =>
  Effect.gen(function*() {
    const env = { ...process.env }
    const result = yield* rekeyConfig({
      env,
      newPassword: newPasswordSource(env, newPasswordEnv, process.stdin.isTTY === true)
    })
    if (result.resealed.length === 0) {
      yield* Console.log(`No enc:v2 values in ${result.file}; nothing to re-seal.`)
      return
    }
    yield* Console.log(
      `Re-sealed ${result.resealed.length} value(s) in ${result.file}: ${result.resealed.join(", ")}.\n` +
        "Set CARAPACE_CONFIG_PASSWORD to the new password everywhere cara runs (the daemon's service environment and your shells) before the next start."
    )
  }).pipe(Effect.provide(StateDirLive))

/** `cara config show [--json]`: the effective config (defaults filled in), secrets masked. */
export const show = ({ json }: { readonly json: boolean }) =>
  Effect.gen(function*() {
    const shown = yield* showConfig({ ...process.env })
    const file = Option.getOrNull(shown.path)
    const text = json
      ? JSON.stringify({ path: file, errors: shown.errors, config: shown.config }, null, 2)
      : [
        file === null
          ? `// No config file at ${shown.targetPath}; defaults apply (create one with \`cara setup\`).`
          : `// ${file}`,
        ...(shown.errors > 0 ? [`// ${shown.errors} error(s): run \`cara config check\``] : []),
        JSON.stringify(shown.config, null, 2)
      ].join("\n")
    // the redactor is the second line of defence: a secret is masked before it gets here
    yield* Console.log(redactSecrets(text))
  }).pipe(Effect.provide(StateDirLive))

/** `cara config get <path> [--json]`: one value (text as is, anything else as JSON). */
export const get = ({ json, path }: { readonly json: boolean; readonly path: string }) =>
  Effect.gen(function*() {
    const value = yield* getConfig({ ...process.env }, path)
    const text = json
      ? JSON.stringify({ path, value })
      : typeof value === "string"
      ? value
      : JSON.stringify(value, null, 2)
    yield* Console.log(redactSecrets(text))
  }).pipe(Effect.provide(StateDirLive))

/** `cara config set <path> <value>`. */
export const set = ({ path, value }: { readonly path: string; readonly value: string }) =>
  Effect.gen(function*() {
    const r = yield* setConfig({ ...process.env }, path, value)
    yield* Console.log(
      `Set ${r.path}${
        r.sealed ? " (sealed with CARAPACE_CONFIG_PASSWORD)" : ""
      } in ${r.file}. A running daemon reads it at its next start.`
    )
  }).pipe(Effect.provide(StateDirLive))
