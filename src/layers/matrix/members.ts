// The speaker label of a message (issue 20.5): display names of the room's members from the SDK's room
// state, labelled by the pure rules of src/domain/speakers.ts.
import * as sdk from "matrix-js-sdk"
import { fallbackLabel, type Member, speakerLabels } from "../../domain/speakers.js"

/** The `displayname` of a member event as sent (the SDK's `rawDisplayName` already drops bidi overrides). */
const displayNameOf = (member: sdk.RoomMember | null | undefined): string | undefined => {
  const name = (member?.events.member?.getContent() as { displayname?: unknown } | undefined)?.displayname
  return typeof name === "string" ? name : undefined
}

const MEMBERSHIPS: ReadonlySet<string> = new Set([sdk.KnownMembership.Join, sdk.KnownMembership.Invite])

/**
 * What the prompt calls the sender of `ev`: the sender's display name as of the message (the SDK sets
 * `ev.sender` from the timeline's state at the event), compared with the names of the room's joined and
 * invited members (the bot included), with the MXID added where the name alone could mislead.
 */
export const speakerLabelOf = (room: sdk.Room, ev: sdk.MatrixEvent, senderId: string): string => {
  const senderName = ev.sender?.userId === senderId
    ? displayNameOf(ev.sender)
    : displayNameOf(room.currentState.getMember(senderId))
  const members: Array<Member> = [{ userId: senderId, displayName: senderName }]
  for (const m of room.currentState.getMembers()) {
    if (m.userId === senderId || !MEMBERSHIPS.has(m.membership ?? "")) continue
    members.push({ userId: m.userId, displayName: displayNameOf(m) })
  }
  return speakerLabels(members).get(senderId)?.label ?? fallbackLabel(senderId, senderName)
}
