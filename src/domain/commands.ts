// ---------------------------------------------------------------------------------------------------------
// Chat commands: `/help`, `/model`, `/new` (pure parsing and replies)
//
// A command is the whole message: `/name` alone or followed by whitespace, case-insensitive, optionally after
// a mention of the bot (`cara: /new`, `@cara:example.org /new`, as group rooms need). Anything else that
// starts with a slash (`/etc/hosts is…`, an unknown `/shrug`) is an ordinary message for the model.

export type Command =
  | { readonly _tag: "Help" }
  | { readonly _tag: "Model" }
  /** Resets the conversation where it is sent: the room's main timeline, or the thread. */
  | { readonly _tag: "New" }

export interface CommandInfo {
  readonly name: string
  readonly summary: string
}

export const COMMANDS: ReadonlyArray<CommandInfo> = [
  { name: "/help", summary: "lists these commands" },
  { name: "/model", summary: "shows the model that answers here" },
  { name: "/new", summary: "starts a new conversation (in a thread: only that thread's)" }
]

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/**
 * Strips one leading mention of the bot: its MXID, its localpart or display name followed by `:` or `,`,
 * or a Matrix pill's plain-text form (the display name followed by `:`).
 */
const stripMention = (text: string, botUserId: string | undefined, botNames: ReadonlyArray<string>): string => {
  const ids = botUserId === undefined ? [] : [botUserId]
  const localpart = botUserId?.replace(/^@/, "").split(":")[0]
  const names = [...botNames, ...(localpart === undefined ? [] : [localpart])].filter((n) => n.trim() !== "")
  for (const id of ids) {
    const m = new RegExp(`^${escapeRegExp(id)}[:,]?\\s+`, "i").exec(text)
    if (m) return text.slice(m[0].length)
  }
  for (const name of names) {
    const m = new RegExp(`^@?${escapeRegExp(name.trim())}[:,]\\s*`, "i").exec(text)
    if (m) return text.slice(m[0].length)
  }
  return text
}

/** `text` without a leading mention of the bot (what a command is parsed from). */
export const withoutMention = (
  text: string,
  bot: { readonly userId?: string | undefined; readonly names?: ReadonlyArray<string> } = {}
): string => stripMention(text.trim(), bot.userId, bot.names ?? []).trim()

/** The command in `text`, or undefined when it is an ordinary message. */
export const parseCommand = (
  text: string,
  bot: { readonly userId?: string | undefined; readonly names?: ReadonlyArray<string> } = {}
): Command | undefined => {
  const body = withoutMention(text, bot)
  const m = /^\/(help|model|new)(?:\s|$)/i.exec(body)
  if (m === null) return undefined
  switch (m[1]!.toLowerCase()) {
    case "help":
      return { _tag: "Help" }
    case "model":
      return { _tag: "Model" }
    default:
      return { _tag: "New" }
  }
}

/** The answer to `/help` (Markdown). */
export const helpReply = (): string =>
  ["I answer messages here. Commands:", "", ...COMMANDS.map((c) => `- \`${c.name}\`: ${c.summary}`)].join("\n")

/** The answer to `/model`: `model` is the `provider:model` string in use here, `agent` its agent's name. */
export const modelReply = (model: string | undefined, agent: string | undefined): string =>
  model === undefined
    ? "No model is configured here yet: the operator needs to set agents.defaults.model."
    : `This ${agent === undefined || agent === "default" ? "room uses" : `room's agent "${agent}" uses`} \`${model}\`.`

/** The answer to `/new`, where it was sent. */
export const newReply = (inThread: boolean): string =>
  inThread
    ? "🆕 Started a new conversation in this thread. Earlier messages in the thread are forgotten."
    : "🆕 Started a new conversation. Earlier messages in this room are forgotten."
