// `matrix.homeserverUrl` omitted (issue 21.3): the daemon finds the homeserver from the bot's user id, as `cara
// setup` does. This file runs its own Synapse whose server name is its address (127.0.0.1:<port>), so that the
// user ids' server names lead to it; it publishes no .well-known, so discovery takes the server name itself.
import { afterAll, beforeAll, expect, it } from "vitest"
import { describeSynapse, type SharedSynapse, startSynapse, type SynapseServer } from "../support/synapse/index.js"
import { useMatrixWorld } from "./matrix-world.js"

describeSynapse("homeserver discovery in the daemon", () => {
  let server: SynapseServer | undefined
  beforeAll(async () => {
    server = await startSynapse({ serverNameIsAddress: true })
  }, 120_000)
  afterAll(async () => {
    await server?.stop()
  })
  const own = (): SynapseServer => {
    if (server === undefined) throw new Error("the discovery Synapse starts in beforeAll")
    return server
  }
  const hs: SharedSynapse = {
    get baseUrl() {
      return own().baseUrl
    },
    get serverName() {
      return own().serverName
    },
    get synapseVersion() {
      return own().synapseVersion
    },
    registerUser: (localpart, password, options) => own().registerUser(localpart, password, options)
  }
  const world = useMatrixWorld(hs)

  it("with matrix.homeserverUrl omitted, the daemon discovers the homeserver and answers an encrypted DM", async () => {
    const alice = await world.human()
    expect(alice.userId.endsWith(`:${new URL(hs.baseUrl).host}`)).toBe(true)
    const bot = await world.bot({ allowUsers: [alice.userId], omitHomeserverUrl: true })
    expect(bot.config()).not.toContain("homeserverUrl")
    await bot.start()
    const roomId = await world.dm(alice, bot)
    const question = await alice.sendText(roomId, "found me?")
    const reply = await world.replyTo(alice, bot, roomId, question)
    expect(reply.encrypted).toBe(true)
    expect(reply.body.length).toBeGreaterThan(0)
    expect(bot.output()).toContain(`matrix.homeserverUrl is not set; discovered ${hs.baseUrl.replace(/\/$/, "")}`)
  }, 180_000)
})
