// Issue 16, point 1, against the real Synapse: a crypto store that is present but empty, one byte or not a
// database makes the real daemon exit non-zero with `crypto-store-corrupt` before it touches the network:
// the file stays byte for byte as it was, no new device or key reaches the homeserver, and once the store
// is restored the bot is the same device again and answers an encrypted DM.
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { expect, it } from "vitest"
import { runCli } from "../support/cli.js"
import { eventually } from "../support/eventually.js"
import type { Human } from "../support/human.js"
import { describeSynapse } from "../support/synapse/index.js"
import type { Bot } from "./matrix-support.js"
import { useMatrixWorld } from "./matrix-world.js"

const until = <A>(what: string, check: () => Promise<A | undefined>, timeoutMs = 30_000): Promise<A> =>
  eventually(what, check, { timeoutMs, intervalMs: 200 })

describeSynapse("state files: a damaged crypto store is refused, never re-created", (hs) => {
  const world = useMatrixWorld(hs)

  /** The bot account's devices and their identity keys as the homeserver publishes them (keys/query). */
  const publishedKeys = async (alice: Human, bot: Bot): Promise<Record<string, unknown>> => {
    const res = await fetch(`${hs.baseUrl}/_matrix/client/v3/keys/query`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice.accessToken}`, "content-type": "application/json" },
      body: JSON.stringify({ device_keys: { [bot.user.userId]: [] } })
    })
    const body = (await res.json()) as { device_keys?: Record<string, Record<string, unknown>> }
    return body.device_keys?.[bot.user.userId] ?? {}
  }

  it(
    "0 bytes, 1 byte, garbage: the daemon exits with crypto-store-corrupt, the file is unchanged and nothing is uploaded; restored, it is the same device",
    async () => {
      const alice = await world.human()
      const bot = await world.bot({ allowUsers: [alice.userId] })
      await bot.start()
      const deviceId = /Matrix client synced .*deviceId=(\S+)/.exec(bot.output())?.[1]
      expect(deviceId).toBeDefined()
      const before = await until("the bot's device keys on the homeserver", async () => {
        const keys = await publishedKeys(alice, bot)
        return keys[deviceId!] !== undefined ? keys : undefined
      })
      expect((await bot.stop("SIGTERM")).code).toBe(0)

      const matrixDir = path.join(bot.dir, "matrix")
      const file = path.join(matrixDir, "matrix-sdk-crypto.sqlite3")
      const original = fs.readFileSync(file)
      const listing = () => fs.readdirSync(matrixDir).sort()
      const filesBefore = listing()

      for (
        const [name, bytes] of [["0 bytes", Buffer.alloc(0)], ["1 byte", Buffer.from([0x53])], [
          "garbage",
          crypto.randomBytes(16 * 1024)
        ]] as const
      ) {
        fs.writeFileSync(file, bytes)
        const r = runCli([], bot.cliEnv())
        expect(r.status, `${name}: ${r.stderr}`).toBe(1)
        expect(r.stderr).toContain("[crypto-store-corrupt]")
        expect(r.stderr).toContain(file)
        expect(r.stderr).toContain("left untouched")
        expect(r.stderr).toContain("cara matrix recovery-key restore")
        // refused before the gateway, the login or the Matrix client: nothing reached the homeserver
        expect(r.stdout + r.stderr).not.toMatch(
          /ready: gateway listening|Matrix client synced|logging in|Matrix runtime/
        )
        expect(fs.readFileSync(file).equals(bytes), name).toBe(true)
        expect(listing(), name).toEqual(filesBefore)
        expect(await publishedKeys(alice, bot), name).toEqual(before)
      }

      // `cara doctor` says the same
      fs.writeFileSync(file, Buffer.alloc(0))
      const doctor = runCli(["doctor", "--offline"], bot.cliEnv())
      expect(doctor.status).toBe(2)
      expect(doctor.stdout).toMatch(
        /ERROR stores: The Matrix crypto store .* it is empty \(0 bytes\).*\[crypto-store-corrupt\]/
      )
      expect(fs.statSync(file).size).toBe(0)

      // the operator restores the file from the backup: the same device, and it still decrypts and answers
      fs.writeFileSync(file, original)
      await bot.start()
      expect(/Matrix client synced .*deviceId=(\S+)/.exec(bot.output())?.[1]).toBe(deviceId)
      expect(bot.output()).not.toContain("logging in as a new device")
      const roomId = await world.dm(alice, bot)
      const sent = await alice.sendText(roomId, "are you still you?")
      await world.replyTo(alice, bot, roomId, sent)
      expect(Object.keys(await publishedKeys(alice, bot))).toEqual(Object.keys(before))
    },
    240_000
  )
})
