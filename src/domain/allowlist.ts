/**
 * The `matrix.autoJoin` allowlist (reference §1.6), pure. It admits invites AND message senders AND
 * verification requests: one definition, so the three can never disagree.
 */

export interface Allowlist {
  readonly allowUsers: ReadonlyArray<string>
  readonly allowServerNames: ReadonlyArray<string>
}

/**
 * The server name of an MXID: the part after the first `:`, without a trailing `:<digits>` port.
 * `undefined` when the string is not `@local:server`.
 */
export const serverNameOf = (mxid: string): string | undefined => {
  if (!mxid.startsWith("@")) return undefined
  const colon = mxid.indexOf(":")
  if (colon < 2) return undefined
  const server = mxid.slice(colon + 1).replace(/:\d+$/, "")
  return server === "" ? undefined : server
}

/**
 * Exact MXID match, or a label-anchored suffix match of the server name (`example.com` admits
 * `chat.example.com`, never `evil-example.com`). Case-sensitive, no normalisation. Empty lists admit
 * nobody (fail closed); the two lists are a union.
 */
export const allowsUser = (list: Allowlist, mxid: string): boolean => {
  if (list.allowUsers.includes(mxid)) return true
  const server = serverNameOf(mxid)
  if (server === undefined) return false
  return list.allowServerNames.some((s) => s !== "" && (server === s || server.endsWith(`.${s}`)))
}

/** Trims entries and drops empties (the config resolver's rule), keeping order, without duplicates. */
export const normalizeAllowlist = (list: Allowlist): Allowlist => {
  const clean = (xs: ReadonlyArray<string>) => [...new Set(xs.map((x) => x.trim()).filter((x) => x !== ""))]
  return { allowUsers: clean(list.allowUsers), allowServerNames: clean(list.allowServerNames) }
}
