/**
 * @effect/cli 0.77 prints a command three levels down with its parent's name twice in the root's COMMANDS
 * list ("matrix matrix dlq list"); this puts each path back to how it is typed. Only help text passes here.
 */
export const dedupeHelpPaths = (text: string): string => text.replace(/^(\s*- )((?:[a-z][\w-]* )+)\2/gm, "$1$2")
