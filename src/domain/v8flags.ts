// The Node/V8 settings the daemon runs with, and when bin.ts must re-exec itself to apply them.
//
// V8 sizes its heap when the process starts, so these cannot be set from inside a running process: the
// daemon replaces itself once (process.execve: same pid, same stdio, no child to supervise) with the flags
// added. Only the daemon does this (`cara` with no subcommand); CLI commands are short-lived and start once.
//
// The defaults suit a small, long-running process whose live heap is far below V8's defaults (measured in
// docs/benchmarks.md, "Profiles"):
//   --max-semi-space-size=2  the young generation holds at most 2 × 2 MB instead of growing to 2 × 16 MB;
//                            scavenges get more frequent but each is short (the daemon's allocation rate is low)
//   MALLOC_ARENA_MAX=2       glibc keeps two malloc arenas instead of 8 per core for Node's and V8's threads,
//                            whose half-empty arenas are RSS that never shrinks
// Overrides: CARA_NODE_FLAGS replaces the flag list ("" or "none" turns the re-exec off); a flag already set in
// NODE_OPTIONS or on the command line wins over ours (the operator's choice), as does MALLOC_ARENA_MAX from the
// environment.
// Not a default: --optimize-for-size (V8 favours a small heap over speed) took idle RSS with 20 rooms from ~186
// to ~168 MB, but on an idle machine the backlog cost 113–133 ms CPU per event with it against 77–89 ms without
// (docs/benchmarks.md, Profiles); an operator short of memory can add it with CARA_NODE_FLAGS.

export const DEFAULT_DAEMON_FLAGS: ReadonlyArray<string> = ["--max-semi-space-size=2"]
export const DEFAULT_DAEMON_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2" }

/** Set in the re-exec'd process (to what was added, for diagnostics): it must not re-exec again. */
export const APPLIED_MARKER = "CARA_NODE_FLAGS_APPLIED"

export interface ProcessShape {
  /** process.argv: [node, script, ...args] */
  readonly argv: ReadonlyArray<string>
  readonly execArgv: ReadonlyArray<string>
  readonly env: Readonly<Record<string, string | undefined>>
}

export interface Reexec {
  /** argv for process.execve, starting with the node binary's own argv[0] */
  readonly args: ReadonlyArray<string>
  readonly env: Record<string, string>
  /** the flags and environment added, for the daemon's start-up log */
  readonly added: ReadonlyArray<string>
}

/** `--max-semi-space-size=2` → `--max-semi-space-size`; V8 accepts `_` for `-`, so both spell one flag. */
const flagName = (flag: string): string => flag.split("=")[0]!.replace(/_/g, "-")

const splitFlags = (text: string | undefined): Array<string> => (text ?? "").split(/\s+/).filter((f) => f !== "")

/** The flag list to apply: CARA_NODE_FLAGS when set, else the defaults. */
export const requestedFlags = (env: ProcessShape["env"]): ReadonlyArray<string> => {
  const raw = env["CARA_NODE_FLAGS"]
  if (raw === undefined) return DEFAULT_DAEMON_FLAGS
  return raw.trim() === "none" ? [] : splitFlags(raw)
}

/**
 * What bin.ts should exec for the daemon, or undefined to run in this process: not the daemon, already
 * re-exec'd, or nothing to add (every flag and variable already set by the operator).
 */
export const daemonReexec = (p: ProcessShape): Reexec | undefined => {
  if (p.argv.length !== 2) return undefined
  if (p.env[APPLIED_MARKER] !== undefined) return undefined
  const requested = requestedFlags(p.env)
  if (requested.length === 0) return undefined
  const present = new Set([...p.execArgv, ...splitFlags(p.env["NODE_OPTIONS"])].map(flagName))
  const flags = requested.filter((f) => !present.has(flagName(f)))
  const extraEnv = Object.entries(DEFAULT_DAEMON_ENV).filter(([k]) => p.env[k] === undefined)
  if (flags.length === 0 && extraEnv.length === 0) return undefined
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(p.env)) if (v !== undefined) env[k] = v
  for (const [k, v] of extraEnv) env[k] = v
  const added = [...flags, ...extraEnv.map(([k, v]) => `${k}=${v}`)]
  env[APPLIED_MARKER] = added.join(" ")
  return { args: [p.argv[0]!, ...p.execArgv, ...flags, ...p.argv.slice(1)], env, added }
}
