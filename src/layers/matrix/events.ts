// From SDK events to the inbound pipeline: the event record, the room facts, the sender-device check, and
// the one place an event is decrypted, held (undecryptable) or offered.
import { Context, Effect, Layer, Option, Ref } from "effect"
import * as sdk from "matrix-js-sdk"
import { EventShieldReason } from "matrix-js-sdk/lib/crypto-api/index.js"
import { ATTACHMENT_MSGTYPES, type RoomFacts } from "../../domain/inboundGate.js"
import { decodeEventIds, decodeRoomEvent, type InboundEvent } from "../../domain/matrix.js"
import { editOf } from "../../domain/relations.js"
import { ChannelStatus } from "../../services/ChannelStatus.js"
import { Inbound } from "../../services/Inbound.js"
import { CurrentMatrixSession, MatrixSettings } from "../../services/MatrixSync.js"
import { MatrixClient } from "./client.js"
import { checkEdit } from "./edits.js"
import { speakerLabelOf } from "./members.js"
import { MatrixRelations, MatrixRelationsLive } from "./relations.js"

export const roomFacts = (room: sdk.Room, me: string): RoomFacts => {
  const member = room.currentState.getMember(me)
  const joinTs = member?.membership === sdk.KnownMembership.Join ? member.events.member?.getTs() : undefined
  return {
    memberCount: room.getInvitedAndJoinedMemberCount(),
    encrypted: room.hasEncryptionStateEvent(),
    botJoinedAt: joinTs,
    botDisplayName: member?.name
  }
}

/**
 * The inbound record of an SDK event: `undefined` for anything but a room message (or an undecryptable one),
 * `"malformed"` when its event, room, sender or thread id is not a Matrix id (dropped and counted).
 */
export const toInbound = (ev: sdk.MatrixEvent): InboundEvent | "malformed" | undefined => {
  const encryptedUnreadable = ev.getType() === sdk.EventType.RoomMessageEncrypted
  if (ev.getType() !== sdk.EventType.RoomMessage && !encryptedUnreadable) return undefined
  const relation = ev.getRelation() ??
    (ev.getWireContent()["m.relates_to"] as { rel_type?: string; event_id?: string } | undefined)
  // an edit's text and mentions are its `m.new_content` (the outer body is the "* " fallback); in an
  // encrypted event the relation is in the clear part only
  const raw = ev.getContent() as Record<string, unknown>
  const content = (editOf({ ...raw, "m.relates_to": relation })?.newContent ?? raw) as Record<string, unknown>
  const mentions = content["m.mentions"] as { user_ids?: unknown } | undefined
  const threadId = relation?.rel_type === "m.thread" ? relation.event_id : undefined
  const ids = decodeEventIds({
    eventId: ev.getId(),
    roomId: ev.getRoomId(),
    sender: ev.getSender(),
    ...(threadId === undefined ? {} : { threadId })
  })
  if (Option.isNone(ids)) return "malformed"
  return {
    ...ids.value,
    ts: ev.getTs(),
    ...(typeof content["msgtype"] === "string" ? { msgtype: content["msgtype"] } : {}),
    body: typeof content["body"] === "string" ? content["body"] : "",
    ...(relation?.rel_type === undefined ? {} : { relType: relation.rel_type }),
    ...(Array.isArray(mentions?.user_ids)
      ? { mentionedUserIds: mentions.user_ids.filter((u): u is string => typeof u === "string") }
      : {}),
    encrypted: ev.isEncrypted(),
    ...(ATTACHMENT_MSGTYPES.has(content["msgtype"]) ? { attachment: content } : {}),
    ...(ev.isRedacted() ? { redacted: true } : {})
  }
}

/** Shields that mean the sending device is not (known to be) cross-signed by its owner. */
const UNSIGNED_SHIELDS: ReadonlySet<EventShieldReason> = new Set([
  EventShieldReason.UNSIGNED_DEVICE,
  EventShieldReason.UNKNOWN_DEVICE,
  EventShieldReason.AUTHENTICITY_NOT_GUARANTEED,
  EventShieldReason.MISMATCHED_SENDER_KEY
])

/**
 * Whether the device that sent this decrypted event is cross-signed by its owner, from the crypto library's
 * verdict on the event (its Megolm session ties it to one device). A device the library does not know yet is
 * looked up once (the sender's device list may lag behind a brand-new session) before it counts as unsigned;
 * anything that cannot be established is `false` (the check fails closed).
 */
const senderCrossSigned = (client: sdk.MatrixClient, ev: sdk.MatrixEvent): Effect.Effect<boolean> =>
  Effect.promise(async () => {
    const crypto = client.getCrypto()
    if (crypto === undefined || !ev.isEncrypted() || ev.isDecryptionFailure()) return false
    const judge = async () => {
      const info = await crypto.getEncryptionInfoForEvent(ev)
      return info === null ? undefined : info.shieldReason === null || !UNSIGNED_SHIELDS.has(info.shieldReason)
    }
    try {
      if ((await judge()) === true) return true
      const sender = ev.getSender()
      if (sender !== undefined) await crypto.getUserDeviceInfo([sender], true)
      return (await judge()) === true
    } catch {
      return false
    }
  })

export interface MatrixEventsShape {
  /** Offers a (decrypted or plain) event to the inbound pipeline, with the room's facts. */
  readonly offer: (ev: sdk.MatrixEvent, room: sdk.Room) => Effect.Effect<void>
  /** Decrypts when needed; an undecryptable event is held until its key arrives, any other offered. */
  readonly handle: (ev: sdk.MatrixEvent, room: sdk.Room) => Effect.Effect<void, unknown>
  /** The held undecryptable events of this run (the ledger keeps them across restarts). */
  readonly utd: {
    readonly has: (eventId: string) => Effect.Effect<boolean>
    readonly hold: (eventId: string) => Effect.Effect<void>
    /** Forgets one in this run's register; true when it was held. */
    readonly release: (eventId: string) => Effect.Effect<boolean>
    readonly count: Effect.Effect<number>
    /** Publishes the count in the channel status. */
    readonly publish: Effect.Effect<void>
  }
}

export class MatrixEvents extends Context.Tag("cara/matrix/Events")<MatrixEvents, MatrixEventsShape>() {}

const makeEvents = Effect.gen(function*() {
  const m = yield* MatrixSettings
  const { client } = yield* MatrixClient
  const me = (yield* CurrentMatrixSession).userId
  const inbound = yield* Inbound
  const status = yield* ChannelStatus
  const relations = yield* MatrixRelations
  const held = yield* Ref.make<ReadonlySet<string>>(new Set())
  const utd: MatrixEventsShape["utd"] = {
    has: (id) => Effect.map(Ref.get(held), (s) => s.has(id)),
    hold: (id) => Ref.update(held, (s) => new Set(s).add(id)),
    release: (id) =>
      Ref.modify(held, (s) => {
        if (!s.has(id)) return [false, s]
        const next = new Set(s)
        next.delete(id)
        return [true, next]
      }),
    count: Effect.map(Ref.get(held), (s) => s.size),
    publish: Effect.flatMap(
      Ref.get(held),
      (s) => status.updateMatrix((x) => ({ ...x, undecryptableEventCount: s.size }))
    )
  }

  const offer = (ev: sdk.MatrixEvent, room: sdk.Room) =>
    Effect.gen(function*() {
      // reactions (feedback) and redactions, decrypted like messages (issue 20 §3, §4)
      if (relations.accepts(ev)) return yield* relations.handle(ev, room)
      const inboundEvent = toInbound(ev)
      if (inboundEvent === undefined) return
      if (inboundEvent === "malformed") {
        yield* status.updateMatrix((x) => ({ ...x, unsupportedInboundCount: x.unsupportedInboundCount + 1 }))
        return yield* Effect.logWarning("Matrix event dropped: its event, room, sender or thread id is malformed")
      }
      const labelled = { ...inboundEvent, senderLabel: speakerLabelOf(room, ev, inboundEvent.sender) }
      const checked = m.requireCrossSignedSenders && inboundEvent.encrypted && inboundEvent.sender !== me
        ? { ...labelled, senderDeviceCrossSigned: yield* senderCrossSigned(client, ev) }
        : labelled
      yield* inbound.offer(yield* checkEdit(client, room, ev, checked), roomFacts(room, me))
    })

  const handle = (ev: sdk.MatrixEvent, room: sdk.Room) =>
    Effect.gen(function*() {
      if (m.encrypted && (ev.isBeingDecrypted() || ev.shouldAttemptDecryption())) {
        yield* Effect.tryPromise({ try: () => client.decryptEventIfNeeded(ev), catch: (e) => e })
      }
      // an event whose ids do not decode is not held: offer drops and counts it
      const ids = decodeRoomEvent({ eventId: ev.getId(), roomId: room.roomId })
      if (m.encrypted && ev.isDecryptionFailure() && Option.isSome(ids)) {
        const id = ids.value.eventId
        // held until its key arrives (MatrixEventEvent.Decrypted, timeline.ts), also across restarts
        yield* utd.hold(id)
        yield* inbound.utd.add(id, ids.value.roomId).pipe(Effect.zipRight(utd.publish))
        yield* Effect.logInfo("Matrix event not decryptable yet; held until its key arrives").pipe(
          Effect.annotateLogs({ eventId: id, roomId: room.roomId, reason: String(ev.decryptionFailureReason) })
        )
        return
      }
      yield* offer(ev, room)
    })

  return { offer, handle, utd } satisfies MatrixEventsShape
})

export const MatrixEventsLive = Layer.effect(MatrixEvents, makeEvents).pipe(Layer.provide(MatrixRelationsLive))
