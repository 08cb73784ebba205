// `cara verify`: the set-up checked end to end against the running daemon (reference §10.1), one check at a
// time; the first failure stops the run. The CLI prints the lines (src/cli/verify.ts).
import { Duration, Effect, Either, Layer, Option } from "effect"
import { describeClientError, gatewayClient, resolveTarget, terminalSafe } from "../cli/client.js"
import type { ChannelInfo, MatrixChannelExtra } from "../domain/channel.js"
import type { CaraConfig } from "../domain/config.js"
import { REMEDIATION, remediationFor } from "../domain/remediation.js"
import { ConfigSecretsLive } from "../layers/ConfigSecretsLive.js"
import { StateDirLive } from "../layers/StateDirLive.js"
import { StorePassphraseLive } from "../layers/StorePassphraseLive.js"
import { StorePassphrase } from "../services/StorePassphrase.js"

export type CheckStatus = "PASS" | "FAIL" | "SKIP"

export interface CheckResult {
  readonly status: CheckStatus
  readonly name: string
  readonly detail: string
  readonly nextStep?: string
}

/** The next step when the table has none for a kind (or the message already said it). */
const DEFAULT_NEXT = "inspect the daemon log (and GET /control/channels) for the cause, fix it and restart the daemon"
const RERUN = "rerun `cara verify --outcome matrix`"

/** The table's advice for `kind` (src/domain/remediation.ts), unless `said` carries it already. */
const nextFor = (kind: string | undefined, said: string, rerun = false): string => {
  const advice = remediationFor(kind, said)
  if (advice === undefined) {
    return kind !== undefined && Object.hasOwn(REMEDIATION, kind)
      ? `do what the message says, then ${RERUN}`
      : DEFAULT_NEXT
  }
  return rerun ? `${advice}, then ${RERUN}` : advice
}

export const renderCheck = (c: CheckResult): string =>
  `[${c.status}] ${c.name}: ${c.detail}` + (c.nextStep !== undefined ? `\n      next step: ${c.nextStep}` : "")

/** The docs section on this command (a heading in docs/channels.md; a unit test keeps the anchor alive). */
export const HELP_ANCHOR = "checking-the-set-up-cara-verify"
export const HELP_PATH = `Next help path: docs/channels.md#${HELP_ANCHOR}`

/**
 * The encrypted store check (reference §10.1 check 2): resolves the store key in this process, as the daemon
 * does (it may create `installation_id`); it does not open the store, so a wrong key shows in the runtime check.
 */
export const storeCheck: Effect.Effect<CheckResult> = Effect.flatMap(StorePassphrase, (sp) => sp.resolve).pipe(
  Effect.provide(StorePassphraseLive.pipe(Layer.provideMerge(ConfigSecretsLive), Layer.provideMerge(StateDirLive))),
  Effect.match({
    onFailure: (e): CheckResult => {
      const kind = (e as { kind?: unknown }).kind
      const k = typeof kind === "string" ? kind : undefined
      return {
        status: "FAIL",
        name: "Matrix encrypted store",
        detail: `${terminalSafe(e.message)}${k === undefined ? "" : ` [${k}]`}`,
        nextStep: nextFor(k, e.message, true)
      }
    },
    onSuccess: (key): CheckResult => ({
      status: "PASS",
      name: "Matrix encrypted store",
      detail: Option.isSome(key)
        ? "encrypted Matrix store secret is available"
        : "matrix.encrypted=false; only unencrypted rooms are supported"
    })
  })
)

/**
 * The start-up check from the channel's metadata: undefined while the daemon's start-up sequence (cross-signing
 * bootstrap, then removing `matrix.password` from the config) still runs, so `cara verify` does not pass early.
 */
export const startUpCheck = (encrypted: boolean, extra: MatrixChannelExtra | undefined): CheckResult | undefined => {
  const name = "Matrix start-up"
  if (!encrypted) return { status: "PASS", name, detail: "matrix.encrypted=false; no cross-signing to bootstrap" }
  switch (extra?.crossSigning) {
    case "pending":
      return undefined
    case "bootstrapped":
    case "verified":
      return { status: "PASS", name, detail: `start-up sequence finished; cross-signing ${extra.crossSigning}` }
    case "not-bootstrapped":
      return {
        status: "FAIL",
        name,
        detail: "cross-signing is not bootstrapped",
        nextStep: REMEDIATION["cross-signing-bootstrap-failed"]
      }
    case "unknown":
      return { status: "PASS", name, detail: "start-up sequence finished; cross-signing state unknown" }
    case undefined:
      return {
        status: "SKIP",
        name,
        detail: "the daemon does not report its start-up state",
        nextStep: "upgrade the daemon to the version of this CLI"
      }
  }
}

/** The closing lines and the exit verdict (reference §10.1). */
export const summarize = (checks: ReadonlyArray<CheckResult>): { readonly text: string; readonly ok: boolean } => {
  const failed = checks.some((c) => c.status === "FAIL")
  const passed = checks.some((c) => c.status === "PASS")
  const skipped = checks.some((c) => c.status === "SKIP")
  if (failed) {
    return {
      ok: false,
      text: `${HELP_PATH}\n${
        passed ? "outcome verification failed" : "outcome verification incomplete (no checks passed)"
      }`
    }
  }
  return {
    ok: true,
    text: skipped ? "Outcome verification passed with skipped checks." : "Outcome verification passed."
  }
}

const sanitizeRoom = (room: string) => terminalSafe(room).slice(0, 120)

export interface VerifyOptions {
  readonly port: Option.Option<number>
  readonly matrixTo: Option.Option<string>
  /** How long to wait for the matrix channel to become connected. */
  readonly waitSeconds: number
  /** Prints one line as soon as it is known (checks take up to `waitSeconds`). */
  readonly emit: (line: string) => Effect.Effect<void>
}

type Api = Effect.Effect.Success<ReturnType<typeof gatewayClient>>
type MatrixConfig = NonNullable<CaraConfig["matrix"]>

const refused = (name: string, e: unknown): CheckResult => {
  const d = describeClientError(e)
  const auth = d.kind === "unauthorized" || d.kind === "token-in-query"
  return {
    status: "FAIL",
    name,
    detail: `control API refused the request: ${d.message}${d.kind !== undefined ? ` [${d.kind}]` : ""}`,
    nextStep: auth ? REMEDIATION.unauthorized : DEFAULT_NEXT
  }
}

const channelError = (name: string, m: ChannelInfo): CheckResult => {
  const kind = m.extra?.lastErrorKind
  return {
    status: "FAIL",
    name,
    detail: `matrix channel status \`error\`: ${terminalSafe(m.lastError ?? "unknown error")}${
      kind !== undefined ? ` [${terminalSafe(kind)}]` : ""
    }`,
    nextStep: nextFor(kind, m.lastError ?? "")
  }
}

/** 1. The Matrix configuration, in this process, from the same config file the daemon reads. */
const configCheck = (
  config: Option.Option<CaraConfig>
): { readonly check: CheckResult; readonly matrix?: MatrixConfig } => {
  const name = "Matrix configuration"
  const matrix = Option.flatMap(config, (c) => Option.fromNullable(c.matrix))
  if (Option.isNone(matrix)) {
    return {
      check: {
        status: "FAIL",
        name,
        detail: "matrix config is missing",
        nextStep: `add a matrix section (see \`cara config check\`) and ${RERUN}`
      }
    }
  }
  if (!matrix.value.enabled) {
    return {
      check: { status: "FAIL", name, detail: "matrix.enabled is false", nextStep: `enable matrix.enabled and ${RERUN}` }
    }
  }
  if (matrix.value.userId === undefined) {
    return {
      check: {
        status: "FAIL",
        name,
        detail: "matrix.userId is not set",
        nextStep: `fix matrix config (\`cara config check\`) and ${RERUN}`
      }
    }
  }
  return {
    check: { status: "PASS", name, detail: `Matrix user ${terminalSafe(matrix.value.userId)} is configured` },
    matrix: matrix.value
  }
}

/** 3. The gateway answers /health. */
const reachability = (client: Api, port: number) =>
  client.health.health().pipe(
    Effect.timeout("2 seconds"),
    Effect.either,
    Effect.map((health): CheckResult =>
      Either.isLeft(health)
        ? {
          status: "FAIL",
          name: "Gateway reachability",
          detail: `gateway not reachable at 127.0.0.1:${port} (${describeClientError(health.left).message})`,
          nextStep: `start the daemon (\`cara\`, gateway.port ${port}) and retry`
        }
        : { status: "PASS", name: "Gateway reachability", detail: `service is reachable at 127.0.0.1:${port}` }
    )
  )

const matrixChannel = (client: Api) =>
  client.control.channels().pipe(
    Effect.timeout("10 seconds"),
    Effect.map((r) => r.channels.find((c) => c.id === "matrix")),
    Effect.either
  )

/** 4. The Matrix runtime registration: polled until the channel is connected; fails fast on `error`. */
const registration = (client: Api, waitSeconds: number) =>
  Effect.gen(function*() {
    const name = "Matrix runtime registration"
    let last = "matrix channel not registered"
    const deadline = Date.now() + waitSeconds * 1000
    for (;;) {
      const channel = yield* matrixChannel(client)
      if (Either.isLeft(channel)) return refused(name, channel.left)
      const m = channel.right
      if (m?.status === "connected") {
        return { status: "PASS", name, detail: "matrix channel is connected" } satisfies CheckResult
      }
      if (m?.status === "error") {
        return channelError(name, m)
      }
      if (m !== undefined) last = `matrix channel status \`${m.status}\``
      if (Date.now() >= deadline) {
        return {
          status: "FAIL",
          name,
          detail: `matrix channel did not become connected within ${waitSeconds} seconds; last observation: ${last}`,
          nextStep: "check matrix.enabled and the daemon log, then rerun"
        } satisfies CheckResult
      }
      yield* Effect.sleep(Duration.seconds(1))
    }
  })

/**
 * 5. The start-up sequence: `connected` comes before the first sync, the cross-signing bootstrap and the
 * removal of matrix.password from the config; the set-up is not verified until those are done.
 */
const startUp = (client: Api, encrypted: boolean, options: VerifyOptions) =>
  Effect.gen(function*() {
    const name = "Matrix start-up"
    let announced = false
    const deadline = Date.now() + options.waitSeconds * 1000
    for (;;) {
      const channel = yield* matrixChannel(client)
      if (Either.isLeft(channel)) return refused(name, channel.left)
      if (channel.right?.status === "error") return channelError(name, channel.right)
      const check = startUpCheck(encrypted, channel.right?.extra)
      if (check !== undefined) return check
      if (Date.now() >= deadline) {
        return {
          status: "FAIL",
          name,
          detail:
            `the start-up sequence did not finish within ${options.waitSeconds} seconds (cross-signing still pending)`,
          nextStep:
            "check that the homeserver is reachable and read the daemon log; a first start bootstraps cross-signing with matrix.password. Then rerun"
        } satisfies CheckResult
      }
      if (!announced) yield* options.emit("first-start: bootstrapping cross-signing…")
      announced = true
      yield* Effect.sleep(Duration.millis(500))
    }
  })

/** 6. The verification API (SAS flows are run through it). */
const verificationApi = (client: Api) =>
  client.verification.list().pipe(
    Effect.timeout("10 seconds"),
    Effect.either,
    Effect.map((flows): CheckResult =>
      Either.isLeft(flows)
        ? refused("Matrix verification API", flows.left)
        : { status: "PASS", name: "Matrix verification API", detail: "daemon verification endpoint is reachable" }
    )
  )

/** 7. The send path: a probe message to `--matrix-to`, skipped without one. */
const sendPath = (client: Api, options: VerifyOptions) =>
  Effect.gen(function*() {
    const name = "Matrix send path"
    if (Option.isNone(options.matrixTo)) {
      return {
        status: "SKIP",
        name,
        detail: "Matrix room id not provided; send-path test skipped",
        nextStep: "rerun with `--matrix-to <room_id>` to verify end-to-end Matrix delivery"
      } satisfies CheckResult
    }
    const room = options.matrixTo.value
    yield* options.emit(`Sending verification ping to Matrix room ${sanitizeRoom(room)}...`)
    const sent = yield* client.matrix.sendTest({ payload: { roomId: room, text: "Carapace Matrix verification ping" } })
      .pipe(
        Effect.timeout("60 seconds"),
        Effect.either
      )
    const nextStep = "confirm the room id, bot membership, encryption support, and homeserver connectivity"
    if (Either.isLeft(sent)) {
      const d = describeClientError(sent.left)
      return {
        status: "FAIL",
        name,
        detail: `${d.message}${d.kind !== undefined ? ` [${d.kind}]` : ""}`,
        nextStep
      } satisfies CheckResult
    }
    const d = sent.right.delivery
    return d.outcome === "sent"
      ? {
        status: "PASS",
        name,
        detail: `test message delivery succeeded (${terminalSafe(d.messageId)})`
      } satisfies CheckResult
      : {
        status: "FAIL",
        name,
        detail: `${terminalSafe(d.error)}${d.kind !== undefined ? ` [${d.kind}]` : ""}`,
        nextStep
      } satisfies CheckResult
  })

/** Runs the checks in order; the first failure stops the run. Returns the results (all emitted already). */
export const runVerify = (options: VerifyOptions) =>
  Effect.gen(function*() {
    // Reference: `cara verify` always targets the local gateway.
    const target = yield* resolveTarget({ host: Option.some("127.0.0.1"), port: options.port })
    const checks: Array<CheckResult> = []
    /** Records and prints one result; `true` when the run goes on. */
    const record = (c: CheckResult) =>
      Effect.as(options.emit(renderCheck(c)), checks.push(c) > 0 && c.status !== "FAIL")

    yield* options.emit(
      [
        "",
        "Outcome verification summary",
        "----------------------------",
        "Outcome: matrix",
        `Gateway port: ${target.port}`,
        ""
      ].join("\n")
    )
    const config = configCheck(target.config)
    if (!(yield* record(config.check)) || config.matrix === undefined) return checks
    // 2. The encrypted store's key, resolved in this process.
    if (!(yield* record(yield* storeCheck))) return checks
    const client = yield* gatewayClient(target)
    if (!(yield* record(yield* reachability(client, target.port)))) return checks
    if (Option.isNone(target.token)) {
      yield* record({
        status: "FAIL",
        name: "Matrix runtime registration",
        detail: "no gateway credential to read channel status",
        nextStep: "export CARAPACE_GATEWAY_TOKEN with the daemon's gateway.auth.token and rerun"
      })
      return checks
    }
    if (!(yield* record(yield* registration(client, options.waitSeconds)))) return checks
    if (!(yield* record(yield* startUp(client, config.matrix.encrypted, options)))) return checks
    if (!(yield* record(yield* verificationApi(client)))) return checks
    yield* record(yield* sendPath(client, options))
    return checks
  })
