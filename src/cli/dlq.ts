import { Console, Effect, Option, Schema } from "effect"
import * as readline from "node:readline"
import { gatewayCall, GatewayClient } from "./client.js"
import { dlqListText, dlqPurgeText, dlqReplayText, dlqShowText, REVEAL_NOT_TERMINAL } from "./render.js"

/** A `cara matrix dlq` command refused before its call (a failed call is a GatewayCallError). */
export class DlqCliError extends Schema.TaggedError<DlqCliError>()("DlqCliError", {
  kind: Schema.Literal("invalid-arguments", "dlq-reveal-not-terminal", "dlq-purge-not-confirmed"),
  message: Schema.String
}) {}

interface Target {
  readonly host: Option.Option<string>
  readonly port: Option.Option<number>
  readonly json: boolean
}

export { renderDetail, renderList } from "./render.js"

/** `<id>` xor `--all`, the same rule the API applies. */
const selection = (id: Option.Option<string>, all: boolean) =>
  Option.isSome(id) && !all
    ? Effect.succeed({ id: id.value } as { id?: string; all?: boolean })
    : Option.isNone(id) && all
    ? Effect.succeed({ all: true } as { id?: string; all?: boolean })
    : Effect.fail(
      new DlqCliError({ kind: "invalid-arguments", message: "give either a record id or --all (not both)" })
    )

/** `cara matrix dlq list`. */
export const list = ({ host, json, port }: Target) =>
  Effect.gen(function*() {
    const { api } = yield* GatewayClient
    const r = yield* api.dlq.list().pipe(gatewayCall)
    yield* Console.log(dlqListText(r, json))
  }).pipe(Effect.provide(GatewayClient.at({ host, port })))

/** `cara matrix dlq show <id> [--reveal]`. */
export const show = ({ host, id, json, port, reveal }: Target & { readonly id: string; readonly reveal: boolean }) =>
  Effect.gen(function*() {
    // A message body is user content: it goes to a person at a terminal, never into a pipe or a log file.
    if (reveal && process.stdout.isTTY !== true) {
      return yield* new DlqCliError(REVEAL_NOT_TERMINAL)
    }
    const { api } = yield* GatewayClient
    const r = yield* api.dlq.show({ path: { id }, urlParams: { reveal: reveal ? "true" : "false" } }).pipe(gatewayCall)
    yield* Console.log(dlqShowText(r.record, json))
  }).pipe(Effect.provide(GatewayClient.at({ host, port })))

/** `cara matrix dlq replay <id> | --all`. */
export const replay = (
  { all, host, id, json, port }: Target & { readonly id: Option.Option<string>; readonly all: boolean }
) =>
  Effect.gen(function*() {
    const payload = yield* selection(id, all)
    const { api } = yield* GatewayClient
    const r = yield* api.dlq.replay({ payload }).pipe(gatewayCall)
    yield* Console.log(dlqReplayText(r.report, json))
    if (r.report.failed > 0) process.exitCode = 1
  }).pipe(Effect.provide(GatewayClient.at({ host, port })))

/** Reads one line from stdin after printing `prompt` on stderr. */
const askLine = (prompt: string) =>
  Effect.async<string>((resume) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: false })
    process.stderr.write(prompt)
    let answered = false
    rl.once("line", (line) => {
      answered = true
      rl.close()
      resume(Effect.succeed(line.trim()))
    })
    rl.once("close", () => {
      if (!answered) resume(Effect.succeed(""))
    })
    return Effect.sync(() => rl.close())
  })

/** `cara matrix dlq purge <id> | --all [--yes]`. */
export const purge = (
  { all, host, id, json, port, yes }: Target & {
    readonly id: Option.Option<string>
    readonly all: boolean
    readonly yes: boolean
  }
) =>
  Effect.gen(function*() {
    const payload = yield* selection(id, all)
    if (!yes) {
      const expected = payload.all === true ? "purge all" : `purge ${payload.id}`
      const typed = yield* askLine(
        `This deletes ${
          payload.all === true ? "EVERY record" : `record ${payload.id}`
        } from the inbound DLQ; those messages will never be answered.\nType "${expected}" to confirm: `
      )
      if (typed !== expected) {
        return yield* new DlqCliError({
          kind: "dlq-purge-not-confirmed",
          message: `not confirmed (expected "${expected}"); nothing was purged. Use --yes in scripts.`
        })
      }
    }
    const { api } = yield* GatewayClient
    const r = yield* api.dlq.purge({ payload }).pipe(gatewayCall)
    yield* Console.log(dlqPurgeText(r.purged, json))
  }).pipe(Effect.provide(GatewayClient.at({ host, port })))
