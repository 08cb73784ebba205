// `cara config check`: the config's findings as the daemon would see them (also the last step of `cara setup`).
import { Effect, Option, Schema } from "effect"
import { ConfigFinding, hasErrors } from "../domain/config.js"
import { type ConfigEnv, loadConfigSnapshot } from "../layers/ConfigSecretsLive.js"

export interface CheckReport {
  readonly path: Option.Option<string>
  readonly findings: ReadonlyArray<ConfigFinding>
  readonly ok: boolean
}

export const checkConfig = (env: ConfigEnv) =>
  Effect.map(
    loadConfigSnapshot(env),
    (s): CheckReport => ({ path: s.path, findings: s.findings, ok: !hasErrors(s.findings) })
  )

export const renderCheck = (r: CheckReport, json: boolean): string => {
  if (json) {
    return JSON.stringify(
      {
        path: Option.getOrNull(r.path),
        ok: r.ok,
        errors: r.findings.filter((f) => f.severity === "error").length,
        warnings: r.findings.filter((f) => f.severity === "warning").length,
        findings: r.findings.map((f) => Schema.encodeSync(ConfigFinding)(f))
      },
      null,
      2
    )
  }
  const lines = [
    Option.match(r.path, { onNone: () => "No config file found; defaults apply.", onSome: (p) => `Config file: ${p}` })
  ]
  for (const f of r.findings) lines.push(`${f.severity === "error" ? "error  " : "warning"} ${f.path}: ${f.message}`)
  const errors = r.findings.filter((f) => f.severity === "error").length
  const warnings = r.findings.length - errors
  lines.push(
    errors === 0
      ? `OK (${warnings} warning(s))`
      : `${errors} error(s), ${warnings} warning(s): the daemon will not start`
  )
  return lines.join("\n")
}
