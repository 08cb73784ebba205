// Shared set-up for the StorePassphrase and rekey-store tests: a state dir with a Matrix config, and the
// StorePassphrase service over it with an explicit environment.
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ConfigSecretsWith } from "../../src/layers/ConfigSecretsLive.js"
import { StateDirAt } from "../../src/layers/StateDirLive.js"
import { StorePassphraseWith } from "../../src/layers/StorePassphraseLive.js"
import { StorePassphrase } from "../../src/services/StorePassphrase.js"

export const PASSWORD = "correct horse battery staple"

/** A Matrix section that passes validation; `extra` is spliced into `matrix: { ... }`. */
export const matrixConfig = (extra = "") =>
  `{
  // test config
  matrix: {
    homeserverUrl: "http://127.0.0.1:8008",
    userId: "@bot:example.org",
    accessToken: "\${MATRIX_ACCESS_TOKEN}",
    deviceId: "BOTDEVICE",
    ${extra}
  },
}
`

export const BASE_ENV = {
  MATRIX_ACCESS_TOKEN: "syt_test_token",
  CARAPACE_GATEWAY_TOKEN: "rekey-test-gateway-token-0123456789"
}

export const tempRoot = (config: string | null = matrixConfig()): string => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "cara-rekey-"))
  if (config !== null) fs.writeFileSync(path.join(root, "carapace.json5"), config)
  return root
}

export type Env = Readonly<Record<string, string | undefined>>

/** StorePassphrase (+ ConfigSecrets, StateDir) over `root`, reading the config and password from `env`. */
export const spLayer = (root: string, env: Env) => {
  const full = { ...BASE_ENV, ...env, CARAPACE_STATE_DIR: root }
  return StorePassphraseWith({ env: full }).pipe(
    Layer.provideMerge(ConfigSecretsWith({ env: full, failOnErrors: false })),
    Layer.provideMerge(StateDirAt(root))
  )
}

/** What the daemon would get from `StorePassphrase.resolve` right now. */
export const daemonResolve = (root: string, env: Env) =>
  Effect.runPromise(
    Effect.flatMap(StorePassphrase, (sp) => sp.resolveDetailed).pipe(Effect.provide(spLayer(root, env)), Effect.either)
  )
