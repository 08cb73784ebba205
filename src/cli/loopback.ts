import * as net from "node:net"

/** A literal loopback address: 127.0.0.0/8 or ::1 (bracketed or not). Names other than `localhost` never are. */
export const isLoopbackLiteral = (host: string): boolean => {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host
  if (net.isIPv4(bare)) return bare.split(".")[0] === "127"
  return net.isIPv6(bare) && (bare === "::1" || /^(0{1,4}:){7}0{0,3}1$/.test(bare) || bare === "0:0:0:0:0:0:0:1")
}
