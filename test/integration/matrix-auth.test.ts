// Authentication failures of the Matrix runtime (issue 7 point 1, reference §5.2/§12): each is a typed kind
// in /control/channels while the gateway itself stays up, and none of them leaks the token.
import * as fs from "node:fs"
import { expect, it } from "vitest"
import { describeSynapse } from "../support/synapse/index.js"
import type { Bot } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

const login = async (baseUrl: string, userId: string, password: string) => {
  const res = await fetch(`${baseUrl}/_matrix/client/v3/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password })
  })
  expect(res.status).toBe(200)
  const body = (await res.json()) as { access_token: string; device_id: string }
  return { accessToken: body.access_token, deviceId: body.device_id }
}

/** Deletes a device (which revokes its access token), authorising with the account password (UIA). */
const deleteDevice = async (baseUrl: string, userId: string, password: string, deviceId: string) => {
  const { accessToken } = await login(baseUrl, userId, password)
  const url = `${baseUrl}/_matrix/client/v3/devices/${encodeURIComponent(deviceId)}`
  const headers = { authorization: `Bearer ${accessToken}`, "content-type": "application/json" }
  const first = await fetch(url, { method: "DELETE", headers, body: "{}" })
  const session = ((await first.json()) as { session?: string }).session
  const second = await fetch(url, {
    method: "DELETE",
    headers,
    body: JSON.stringify({
      auth: { type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password, session }
    })
  })
  expect(second.status).toBe(200)
}

const channel = async (bot: Bot) => {
  const status = await bot.status()
  return {
    status: status?.["status"],
    kind: (status?.["extra"] as Record<string, unknown> | undefined)?.["lastErrorKind"],
    lastError: String(status?.["lastError"])
  }
}

describeSynapse("Matrix: authentication failures are typed and leave the gateway up (real daemon)", (hs) => {
  const world = useMatrixWorld(hs)

  const stopped = /Matrix runtime stopped/

  it(
    "a token revoked while running, and again at the next start, gives auth-token-revoked; /health stays up, /health/ready is 503",
    async () => {
      const bot = await world.bot()
      await bot.start()
      const deviceId = /Matrix client synced .*deviceId=(\S+)/.exec(bot.output())![1]!
      // steady state: the start-up sequence (cross-signing, recovery key) is done
      await bot.waitForLog(/Matrix recovery key created/, 60_000)
      await deleteDevice(hs.baseUrl, bot.user.userId, bot.user.password, deviceId)

      await bot.waitForLog(stopped, 60_000)
      const running = await channel(bot)
      expect(running.status).toBe("error")
      expect(running.kind).toBe("auth-token-revoked")
      expect(running.lastError).toContain("mint a new token")
      expect((await fetch(`${bot.running!.baseUrl}/health`)).status).toBe(200)
      expect((await fetch(`${bot.running!.baseUrl}/health/ready`)).status).toBe(503)

      // at the next start the restored token fails /whoami: the same kind, before any sync
      expect((await bot.stop("SIGTERM")).code).toBe(0)
      await bot.start({}, stopped)
      expect(await channel(bot)).toMatchObject({ status: "error", kind: "auth-token-revoked" })
      expect(bot.output()).not.toMatch(/--> GET \S+\/sync/)
      // the token never appears in the output, sealed or not
      const sealed = /accessToken:\s*"(enc:v2:[^"]+)"/.exec(bot.config())![1]!
      expect(bot.output()).not.toContain(sealed)
    },
    240_000
  )

  it(
    "a token of another user gives auth-session-user-mismatch; a wrong device id gives auth-session-device-mismatch",
    async () => {
      const other = await hs.registerUser()
      const otherSession = await login(hs.baseUrl, other.userId, other.password)
      const bot = await world.bot({
        matrixExtra: `accessToken: "\${MATRIX_ACCESS_TOKEN}", deviceId: ${JSON.stringify(otherSession.deviceId)},`,
        env: { MATRIX_ACCESS_TOKEN: otherSession.accessToken }
      })
      await bot.start({}, stopped)
      const mismatch = await channel(bot)
      expect(mismatch).toMatchObject({ status: "error", kind: "auth-session-user-mismatch" })
      expect(mismatch.lastError).toContain(other.userId)
      expect(bot.output()).not.toContain(otherSession.accessToken)
      await bot.stop("SIGKILL")

      const own = await login(hs.baseUrl, bot.user.userId, bot.user.password)
      const wrongDevice = await world.bot({
        matrixExtra: `accessToken: "\${MATRIX_ACCESS_TOKEN}", deviceId: "NOTMYDEVICE",`,
        env: { MATRIX_ACCESS_TOKEN: own.accessToken }
      })
      // makeBot registered a fresh account: point the config at the token's owner instead
      fs.writeFileSync(wrongDevice.configPath, wrongDevice.config().replace(wrongDevice.user.userId, bot.user.userId))
      await wrongDevice.start({}, stopped)
      expect(await channel(wrongDevice)).toMatchObject({ status: "error", kind: "auth-session-device-mismatch" })
    },
    240_000
  )

  it(
    "a password login without CARAPACE_CONFIG_PASSWORD is refused with token-persistence before contacting the server",
    async () => {
      const bot = await world.bot({
        env: { CARAPACE_CONFIG_PASSWORD: "", MATRIX_STORE_PASSPHRASE: "a store passphrase for this test only" }
      })
      await bot.start({}, stopped)
      const state = await channel(bot)
      expect(state).toMatchObject({ status: "error", kind: "token-persistence" })
      expect(state.lastError).toContain("CARAPACE_CONFIG_PASSWORD")
      expect(bot.output()).not.toMatch(/--> POST \S+\/login/)
      expect(bot.config()).toContain("password: \"${MATRIX_PASSWORD}\"")
    },
    120_000
  )
})
