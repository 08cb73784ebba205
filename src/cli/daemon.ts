import { Effect, Schema } from "effect"
import JSON5 from "json5"
import * as fs from "node:fs"
import * as path from "node:path"
import { resolveStateDirPath } from "../layers/StateDirLive.js"

/** `cara` found no config file to run on; the message says where it looked and how to create one. */
export class ConfigMissingError extends Schema.TaggedError<ConfigMissingError>()("ConfigMissingError", {
  kind: Schema.Literal("config-missing"),
  message: Schema.String
}) {}

/** Where the daemon looks for its config, in order (the same rule as `discoverConfigPath`). */
export const configCandidates = (env: NodeJS.ProcessEnv): ReadonlyArray<string> => {
  const explicit = env["CARAPACE_CONFIG_PATH"]
  if (explicit !== undefined && explicit.trim() !== "") return [path.resolve(explicit)]
  const root = resolveStateDirPath(env)
  return [path.join(root, "carapace.json5"), path.join(root, "carapace.json")]
}

/** `cara` with no subcommand: refuses without a config file (naming where it looked), else runs the daemon. */
export const startDaemon = () =>
  Effect.gen(function*() {
    const candidates = configCandidates(process.env)
    if (!candidates.some(isEntry)) {
      return yield* new ConfigMissingError({
        kind: "config-missing",
        message: `no config file: looked for ${candidates.join(" and ")}. Create one with \`cara setup\` ` +
          "(or point CARAPACE_CONFIG_PATH / CARAPACE_STATE_DIR at an existing one), then run `cara` again."
      })
    }
    const file = candidates.find(isEntry)
    if (file !== undefined && !channelEnabled(file)) {
      yield* Effect.logInfo(
        `no channel is enabled in ${file} (no matrix section with enabled: true): the gateway runs with its control API only. ` +
          "`cara setup` writes a Matrix configuration."
      )
    }
    const { daemon } = yield* Effect.promise(() => import("../programs/daemon.js"))
    return yield* daemon
  })

// lstat: a FIFO or a dangling link is "there", and refused by the loader with its own message
const isEntry = (p: string) => {
  try {
    fs.lstatSync(p)
    return true
  } catch {
    return false
  }
}

/** Whether the config file enables a channel; `true` when it cannot tell (the loader then says what is wrong). */
export const channelEnabled = (file: string): boolean => {
  try {
    if (!fs.statSync(file).isFile()) return true
    const raw = JSON5.parse(fs.readFileSync(file, "utf8")) as { matrix?: { enabled?: unknown } | null }
    return typeof raw === "object" && raw !== null && typeof raw.matrix === "object" && raw.matrix !== null &&
      raw.matrix.enabled !== false
  } catch {
    return true
  }
}
