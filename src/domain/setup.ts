// What `cara setup` writes: the config text (commented, secrets only as `${VAR}` references) and the
// `export` lines the operator still needs. Pure, so the written file is unit-tested against the loader.

export type SetupProvider = "anthropic" | "openai" | "local"

export interface SetupAnswers {
  readonly homeserverUrl: string
  /** How the URL was found, for the comment beside it. */
  readonly homeserverSource: "given" | "discovered"
  readonly userId: string
  readonly allowUsers: ReadonlyArray<string>
  readonly allowServers: ReadonlyArray<string>
  readonly provider: SetupProvider
  readonly model: string
}

export const DEFAULT_MODELS: Readonly<Record<SetupProvider, string>> = {
  anthropic: "claude-sonnet-4-6",
  openai: "gpt-4o-mini",
  local: "echo"
}

const KEY_ENV = { anthropic: "ANTHROPIC_API_KEY", openai: "OPENAI_API_KEY" } as const

const list = (xs: ReadonlyArray<string>) => `[${xs.map((x) => JSON.stringify(x)).join(", ")}]`

export const renderSetupConfig = (a: SetupAnswers, writtenAt: string): string => {
  const provider = a.provider === "local"
    ? `  // local:echo is cara's built-in test model: it repeats each message. For real answers set
  // agents.default.model to anthropic:<model> or openai:<model> and add that provider's apiKey.
`
    : `  ${a.provider}: {
    // read from the environment when the daemon starts; never written here in plain
    apiKey: "\${${KEY_ENV[a.provider]}}",
  },
`
  return `// carapace.json5, written by \`cara setup\` on ${writtenAt}. Every key is described in docs/channels.md.
// Secrets are \${VAR} references: export them (see the lines \`cara setup\` printed) where cara runs.
{
  gateway: {
    // the control API listens on loopback only; \`cara status\`, \`cara verify\` etc. send this token
    bind: "loopback",
    port: 18789,
    auth: { mode: "token", token: "\${CARAPACE_GATEWAY_TOKEN}" },
  },
  matrix: {
    enabled: true,
    // ${
    a.homeserverSource === "discovered"
      ? `found from ${a.userId} through .well-known/matrix/client`
      : "as given to cara setup"
  }
    homeserverUrl: ${JSON.stringify(a.homeserverUrl)},
    userId: ${JSON.stringify(a.userId)},
    // first login only: the daemon then writes a sealed access token here and removes the password
    password: "\${MATRIX_PASSWORD}",
    encrypted: true,
    autoJoin: {
      // fail-closed: only these users (full MXIDs) and servers may invite cara, and only they get answers
      allowUsers: ${list(a.allowUsers)},
      allowServerNames: ${list(a.allowServers)},
    },
  },
${provider}  agents: {
    default: { model: ${JSON.stringify(`${a.provider}:${a.model}`)} },
  },
}
`
}

/** The variables the written config (and the daemon) needs, with how to set each. */
export const neededVariables = (a: SetupAnswers): ReadonlyArray<{ readonly name: string; readonly line: string }> => [
  {
    name: "CARAPACE_CONFIG_PASSWORD",
    line:
      `export CARAPACE_CONFIG_PASSWORD="$(openssl rand -hex 32)"   # seals secrets cara writes back; keep a copy in your password manager`
  },
  { name: "CARAPACE_GATEWAY_TOKEN", line: `export CARAPACE_GATEWAY_TOKEN="$(openssl rand -hex 32)"` },
  { name: "MATRIX_PASSWORD", line: `export MATRIX_PASSWORD='<the password of ${a.userId}>'   # first start only` },
  ...(a.provider === "local"
    ? []
    : [{ name: KEY_ENV[a.provider], line: `export ${KEY_ENV[a.provider]}='<your ${a.provider} API key>'` }])
]

/** `export` lines for the needed variables that `env` does not have yet. */
export const exportLines = (
  a: SetupAnswers,
  env: Readonly<Record<string, string | undefined>>
): ReadonlyArray<string> => neededVariables(a).filter((v) => (env[v.name] ?? "").trim() === "").map((v) => v.line)

/** A comma- or space-separated list from a flag or an answer. */
export const splitList = (s: string): ReadonlyArray<string> =>
  s.split(/[\s,]+/).map((x) => x.trim()).filter((x) => x !== "")
