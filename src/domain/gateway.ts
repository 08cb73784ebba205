export const DEFAULT_GATEWAY_PORT = 18789

/**
 * Maps `gateway.bind` to a listen address: `loopback` (default) → 127.0.0.1, `lan` → 0.0.0.0, otherwise
 * the value must be an IP address literal.
 */
export const bindToHost = (bind: string): string | undefined => {
  if (bind === "loopback") return "127.0.0.1"
  if (bind === "lan") return "0.0.0.0"
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(bind) && bind.split(".").every((o) => Number(o) <= 255)) return bind
  if (/^[0-9a-f:]+$/i.test(bind) && bind.includes(":")) return bind
  return undefined
}
