// The periodic device refresh asks only about the allowlisted users no sync would announce: those who share
// no joined room with the bot. An idle bot whose people all share a room with it sends no /keys/query at all.
import type { MatrixClient } from "matrix-js-sdk"
import { describe, expect, it } from "vitest"
import { unannouncedUsers } from "../../src/layers/verification/attach.js"

const room = (mine: string, members: Record<string, string>) => ({
  getMyMembership: () => mine,
  getMember: (u: string) => (u in members ? { membership: members[u] } : null)
})
const client = (rooms: ReadonlyArray<ReturnType<typeof room>>) =>
  ({ getRooms: () => rooms }) as unknown as Pick<MatrixClient, "getRooms">

describe("unannouncedUsers", () => {
  it("leaves out users joined to a room the bot is joined to, keeps the rest in order", () => {
    const c = client([room("join", { "@a:x": "join", "@b:x": "invite" }), room("join", { "@c:x": "leave" })])
    expect(unannouncedUsers(c, ["@a:x", "@b:x", "@c:x", "@d:x"])).toEqual(["@b:x", "@c:x", "@d:x"])
  })

  it("a room the bot is only invited to, or has left, does not count", () => {
    const c = client([room("invite", { "@a:x": "join" }), room("leave", { "@b:x": "join" })])
    expect(unannouncedUsers(c, ["@a:x", "@b:x"])).toEqual(["@a:x", "@b:x"])
  })

  it("no rooms: everyone is refreshed; no users: nothing", () => {
    expect(unannouncedUsers(client([]), ["@a:x"])).toEqual(["@a:x"])
    expect(unannouncedUsers(client([room("join", { "@a:x": "join" })]), [])).toEqual([])
  })
})
