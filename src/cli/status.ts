import { Console, Effect, Either, Fiber, Option, Schema } from "effect"
import { type Channels, type ControlStatus, type Health } from "../domain/api.js"
import { ChannelInfo } from "../domain/channel.js"
import { describeClientError, gatewayClient, type GatewayTarget, resolveTarget } from "./client.js"
import {
  renderStatusView,
  renderStatusViewJson,
  type StatusView,
  TOKEN_MISSING_PROBLEM,
  unreachableText
} from "./render.js"

export { AUTH_OFF_WARNING, formatUptime } from "./render.js"

export interface StatusReport {
  readonly address: string
  readonly health: Health
  readonly controlStatus: Option.Option<ControlStatus>
  readonly channels: Option.Option<Channels>
  /** Why the authenticated part is missing (no token, refused, ...). */
  readonly controlProblem: Option.Option<{ readonly kind?: string; readonly message: string }>
  /** The config says `gateway.auth.mode: "none"`: the control API answers any local process. */
  readonly authOff?: boolean
}

/** The report as the shared renderers (render.ts) take it. */
const view = (r: StatusReport): StatusView => ({
  address: r.address,
  health: r.health,
  ...(Option.isSome(r.controlStatus) ? { controlStatus: r.controlStatus.value } : {}),
  ...(Option.isSome(r.channels) ? { channels: r.channels.value } : {}),
  ...(Option.isSome(r.controlProblem) ? { controlProblem: r.controlProblem.value } : {}),
  ...(r.authOff !== undefined ? { authOff: r.authOff } : {})
})

/** The human rendering: the gateway block, then one block per channel with Matrix metadata (§11 names). */
export const renderStatus = (r: StatusReport, now: number = Date.now()): string => renderStatusView(view(r), now)

/** The JSON rendering, with the channels in their wire form (as the daemon sent them). */
export const renderStatusJson = (r: StatusReport): string => {
  const v = view(r)
  return renderStatusViewJson(
    v.channels === undefined
      ? v
      : {
        ...v,
        channels: {
          ...v.channels,
          channels: v.channels.channels.map((c) => Schema.encodeSync(ChannelInfo)(c))
        } as StatusView["channels"] & object
      }
  )
}

/**
 * Fetches the report; `Left` carries the stderr text when the gateway is not reachable. With a credential (or
 * auth off) the control calls go out together with the health check: one round trip instead of two; their
 * answers are used only when the health check succeeded, as before.
 */
export const fetchStatus = (target: GatewayTarget) =>
  Effect.gen(function*() {
    const address = `${target.host}:${target.port}`
    const client = yield* gatewayClient(target)
    const authOff = Option.exists(target.config, (c) => c.gateway.auth?.mode === "none")
    const askControl = Option.isSome(target.token) || authOff
    const control = yield* Effect.forkScoped(
      askControl
        ? Effect.all([client.control.status(), client.control.channels()], { concurrency: 2 }).pipe(
          Effect.timeout("30 seconds"),
          Effect.either,
          Effect.map(Option.some)
        )
        : Effect.succeed(Option.none())
    )
    const health = yield* client.health.health().pipe(Effect.timeout("5 seconds"), Effect.either)
    if (Either.isLeft(health)) {
      // the control calls are interrupted with the scope: an unreachable gateway is reported at once
      return Either.left(unreachableText(address, describeClientError(health.left).message))
    }
    const both = yield* Fiber.join(control)
    if (Option.isNone(both)) {
      return Either.right(
        {
          address,
          health: health.right,
          controlStatus: Option.none(),
          channels: Option.none(),
          controlProblem: Option.some(TOKEN_MISSING_PROBLEM),
          authOff
        } satisfies StatusReport
      )
    }
    const answers = both.value
    return Either.right(
      {
        address,
        health: health.right,
        controlStatus: Either.isRight(answers) ? Option.some(answers.right[0]) : Option.none(),
        channels: Either.isRight(answers) ? Option.some(answers.right[1]) : Option.none(),
        controlProblem: Either.isLeft(answers) ? Option.some(describeClientError(answers.left)) : Option.none(),
        authOff
      } satisfies StatusReport
    )
  }).pipe(Effect.scoped)

/** `cara status [--json]`. */
export const status = (
  { host, json, port }: {
    readonly host: Option.Option<string>
    readonly port: Option.Option<number>
    readonly json: boolean
  }
) =>
  Effect.gen(function*() {
    const target = yield* resolveTarget({ host, port })
    const report = yield* fetchStatus(target)
    if (Either.isLeft(report)) {
      process.stderr.write(report.left)
      process.exitCode = 1
      return
    }
    yield* Console.log(json ? renderStatusJson(report.right) : renderStatus(report.right))
  })
