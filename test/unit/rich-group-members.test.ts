// The speaker label of a message from the SDK's room state (src/layers/matrix/members.ts).
import { describe, expect, it } from "@effect/vitest"
import type * as sdk from "matrix-js-sdk"
import { speakerLabelOf } from "../../src/layers/matrix/members.js"

const member = (userId: string, displayname: string | undefined, membership = "join") => ({
  userId,
  membership,
  events: { member: { getContent: () => (displayname === undefined ? {} : { displayname }) } }
})

type FakeMember = ReturnType<typeof member>

const room = (members: ReadonlyArray<FakeMember>) =>
  ({
    currentState: {
      getMembers: () => members,
      getMember: (id: string) => members.find((m) => m.userId === id) ?? null
    }
  }) as unknown as sdk.Room

const event = (sender: FakeMember | null) => ({ sender }) as unknown as sdk.MatrixEvent

describe("speakerLabelOf", () => {
  const alice = member("@alice:hs", "Alice")
  const bob = member("@bob:hs", "Bob")
  const bot = member("@cara:hs", "cara")

  it("names the sender by display name when it is unambiguous", () => {
    expect(speakerLabelOf(room([alice, bob, bot]), event(alice), "@alice:hs")).toBe("Alice")
  })

  it("uses the name as of the message (the event's sender), compared with the others' names now", () => {
    const then = member("@bob:hs", "Alice")
    expect(speakerLabelOf(room([alice, bob, bot]), event(then), "@bob:hs")).toBe("Alice (@bob:hs)")
    expect(speakerLabelOf(room([alice, bob, bot]), event(member("@bob:hs", "Bobby")), "@bob:hs")).toBe("Bobby")
  })

  it("adds the MXID for a name equal to another member's MXID, a look-alike, an invited member's name or none", () => {
    const mallory = member("@mallory:hs", "@alice:hs")
    expect(speakerLabelOf(room([alice, mallory, bot]), event(mallory), "@mallory:hs")).toBe("@alice:hs (@mallory:hs)")
    const eve = member("@eve:hs", "Вob") // Cyrillic В
    expect(speakerLabelOf(room([alice, bob, eve]), event(eve), "@eve:hs")).toBe("Вob (@eve:hs)")
    const invited = member("@zed:hs", "Zed", "invite")
    const zed2 = member("@z2:hs", "zed")
    expect(speakerLabelOf(room([alice, invited, zed2]), event(zed2), "@z2:hs")).toBe("zed (@z2:hs)")
    // a bidi override (the SDK's rawDisplayName would have dropped it): the raw name is checked
    const flipped = member("@flip:hs", "\u202eecilA")
    expect(speakerLabelOf(room([alice, flipped]), event(flipped), "@flip:hs")).toBe("ecilA (@flip:hs)")
    const nameless = member("@anon:hs", undefined)
    expect(speakerLabelOf(room([alice, nameless]), event(nameless), "@anon:hs")).toBe("@anon:hs")
  })

  it("ignores members who left, and falls back to the room state without an event sender", () => {
    const gone = member("@old:hs", "Alice", "leave")
    expect(speakerLabelOf(room([alice, gone, bot]), event(null), "@alice:hs")).toBe("Alice")
    expect(speakerLabelOf(room([bot]), event(null), "@stranger:hs")).toBe("@stranger:hs")
  })
})
