// A real matrix-js-sdk client on the Rust crypto backend, in memory, for tests of code that reaches into the
// SDK: its HTTP calls fail at once, so no homeserver is needed.
import { createClient, type MatrixClient } from "matrix-js-sdk"

const silent = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  getChild: () => silent
}

export const rustClient = async (): Promise<MatrixClient> => {
  const client = createClient({
    baseUrl: "http://127.0.0.1:9",
    userId: "@bot:example.org",
    deviceId: "BOTDEV",
    accessToken: "not-a-token",
    logger: silent,
    fetchFn: () => Promise.reject(new Error("offline"))
  })
  await client.initRustCrypto({ useIndexedDB: false })
  return client
}
