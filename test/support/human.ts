// "The human": an Element-like Matrix client for the integration tests, built on matrix-js-sdk 43 with its own
// Rust crypto. Each Human logs in as a NEW device and keeps its crypto in an in-memory Rust store
// (initRustCrypto({ useIndexedDB: false })): no IndexedDB at all, so two humans (or a human and the daemon with
// its fake-indexeddb) in one process can never share a database.
//
// Promise-based on purpose: it stands in for a person, and tests drive it step by step.
import { encryptAttachment, type IEncryptedFile } from "matrix-encrypt-attachment"
import * as sdk from "matrix-js-sdk"
import {
  CryptoEvent,
  type ShowSasCallbacks,
  VerificationPhase,
  type VerificationRequest,
  VerificationRequestEvent,
  type Verifier,
  VerifierEvent
} from "matrix-js-sdk/lib/crypto-api/index.js"
import type { Logger } from "matrix-js-sdk/lib/logger.js"
import { eventually, type NotYet } from "./eventually.js"

// ---------------------------------------------------------------------------------------------------------
// Console: matrix-js-sdk's module-level loggers (IndexedDBStore, sync, timeline sets ...) write straight to
// console.log/debug/info/warn and ignore the per-client logger. Those lines are dropped into a ring buffer when
// the immediate caller is SDK (or crypto-wasm) code; console.error and everything that is not SDK output pass.

const SDK_FRAME = /[\\/]node_modules[\\/](?:matrix-js-sdk|@matrix-org[\\/]matrix-sdk-crypto-wasm|loglevel)[\\/]/
const sdkConsoleLines: Array<string> = []
const RING = 400
let consoleFilterInstalled = false

const fmt = (args: ReadonlyArray<unknown>): string =>
  args
    .map((a) => {
      if (a instanceof Error) return a.stack ?? a.message
      if (typeof a === "string") return a
      try {
        return JSON.stringify(a)
      } catch {
        return String(a)
      }
    })
    .join(" ")

const remember = (ring: Array<string>, line: string) => {
  ring.push(line)
  if (ring.length > RING) ring.splice(0, ring.length - RING)
}

const installConsoleFilter = () => {
  if (consoleFilterInstalled) return
  consoleFilterInstalled = true
  for (const level of ["log", "debug", "info", "warn", "trace"] as const) {
    const original = console[level].bind(console)
    console[level] = (...args: Array<unknown>) => {
      // frame 0 is "Error", frame 1 this wrapper, frame 2 whoever called console.*
      const caller = (new Error().stack ?? "").split("\n")[2] ?? ""
      if (SDK_FRAME.test(caller)) {
        remember(sdkConsoleLines, `${level.toUpperCase()} ${fmt(args)}`)
        return
      }
      original(...args)
    }
  }
}

/** The last SDK lines that the console filter swallowed in this process (for diagnosing a failure). */
export const sdkConsoleTail = (lines = 50): string => sdkConsoleLines.slice(-lines).join("\n")

/** A per-client logger (Rust crypto logs go here too): kept in memory, errors also go to stderr. */
const makeLogger = (name: string, ring: Array<string>, prefix = ""): Logger => {
  const at = (level: string) => (...args: Array<unknown>) => remember(ring, `${level} ${prefix}${fmt(args)}`)
  return {
    trace: at("TRACE"),
    debug: at("DEBUG"),
    info: at("INFO"),
    warn: at("WARN"),
    error: (...args: Array<unknown>) => {
      remember(ring, `ERROR ${prefix}${fmt(args)}`)
      process.stderr.write(`[human ${name}] ERROR ${prefix}${fmt(args)}\n`)
    },
    getChild: (namespace: string) => makeLogger(name, ring, `${prefix}${namespace} `)
  }
}

// ---------------------------------------------------------------------------------------------------------
// small helpers

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e))

/** Polls `probe` until it returns a value that is not undefined/null/false, or fails after `timeoutMs`. */
const poll = <A>(what: string, timeoutMs: number, probe: () => Promise<A | NotYet> | A | NotYet): Promise<A> =>
  eventually(what, probe, { timeoutMs, intervalMs: 50 })

export interface ReceivedMessage {
  readonly eventId: string
  readonly roomId: string
  readonly sender: string
  /** content.body of the decrypted event */
  readonly body: string
  /** the decrypted (clear) content */
  readonly content: Record<string, unknown>
  /** true when it travelled as m.room.encrypted */
  readonly encrypted: boolean
}

export interface DeviceStatus {
  readonly verified: boolean
  readonly crossSigningVerified: boolean
  readonly localVerified: boolean
  readonly signedByOwner: boolean
}

export interface SasEmoji {
  readonly symbol: string
  readonly description: string
}

export interface SasValues {
  readonly emoji: ReadonlyArray<SasEmoji>
  readonly decimals: readonly [number, number, number]
}

export type VerificationPhaseName = "unsent" | "requested" | "ready" | "started" | "cancelled" | "done"

const phaseName = (p: VerificationPhase): VerificationPhaseName => {
  switch (p) {
    case VerificationPhase.Unsent:
      return "unsent"
    case VerificationPhase.Requested:
      return "requested"
    case VerificationPhase.Ready:
      return "ready"
    case VerificationPhase.Started:
      return "started"
    case VerificationPhase.Cancelled:
      return "cancelled"
    case VerificationPhase.Done:
      return "done"
  }
}

// ---------------------------------------------------------------------------------------------------------
// Verification: one request (to-device or in-room) seen from this human's side.

export class HumanVerification {
  private verifier: Verifier | undefined
  private sas: ShowSasCallbacks | undefined
  private readonly sasWaiters = new Set<() => void>()
  private readonly onChange = () => this.refresh()

  constructor(readonly request: VerificationRequest, private readonly owner: string) {
    request.on(VerificationRequestEvent.Change, this.onChange)
    this.refresh()
  }

  get phase(): VerificationPhaseName {
    return phaseName(this.request.phase)
  }
  get otherUserId(): string {
    return this.request.otherUserId
  }
  get otherDeviceId(): string | undefined {
    return this.request.otherDeviceId
  }
  get roomId(): string | undefined {
    return this.request.roomId
  }
  get transactionId(): string | undefined {
    return this.request.transactionId
  }
  get initiatedByMe(): boolean {
    return this.request.initiatedByMe
  }
  get cancellationCode(): string | null {
    return this.request.cancellationCode
  }
  get cancellingUserId(): string | undefined {
    return this.request.cancellingUserId
  }

  // Called on every request change. The SDK may swap the verifier (SAS glare: both sides sent .start), so the
  // current one is re-read each time; a replaced verifier's verify() rejection is expected and swallowed.
  private refresh() {
    const current = this.request.verifier
    if (current !== undefined && current !== this.verifier) this.attach(current)
    if (this.request.phase === VerificationPhase.Cancelled || this.request.phase === VerificationPhase.Done) {
      this.request.off(VerificationRequestEvent.Change, this.onChange)
      this.wakeSasWaiters()
    }
  }

  private attach(verifier: Verifier) {
    this.verifier = verifier
    this.sas = undefined
    const onShow = (sas: ShowSasCallbacks) => {
      if (this.verifier !== verifier) return
      this.sas = sas
      this.wakeSasWaiters()
    }
    verifier.on(VerifierEvent.ShowSas, onShow)
    const already = verifier.getShowSasCallbacks()
    if (already) onShow(already)
    // Element accepts the other side's .start by itself once the request is ready: so does the human.
    if (!verifier.hasBeenCancelled) {
      verifier.verify().catch(() => {
        // cancellation surfaces through the request phase (waitForDone rejects with the code)
      })
    }
  }

  private wakeSasWaiters() {
    for (const w of this.sasWaiters) w()
  }

  /** Sends m.key.verification.ready. */
  async accept(): Promise<void> {
    await this.request.accept()
  }

  /** Resolves when the phase is `want` (or later in the flow); rejects when it was cancelled instead. */
  async waitForPhase(want: VerificationPhaseName, timeoutMs = 20_000): Promise<void> {
    const order: ReadonlyArray<VerificationPhaseName> = ["unsent", "requested", "ready", "started", "done"]
    await poll(`${this.owner}: verification phase ${want} (now ${this.phase})`, timeoutMs, () => {
      if (this.phase === want) return true
      if (this.phase === "cancelled") {
        throw new Error(
          `${this.owner}: verification was cancelled (${this.cancellationCode} by ${this.cancellingUserId}) ` +
            `while waiting for phase ${want}`
        )
      }
      return order.indexOf(this.phase) > order.indexOf(want)
    })
  }

  /** Starts SAS (m.key.verification.start); the request must be ready. */
  async startSas(): Promise<void> {
    const verifier = await this.request.startVerification("m.sas.v1")
    if (verifier !== this.verifier) this.attach(verifier)
  }

  /**
   * Like a fast client (or an impatient person): sends m.key.verification.start in the same tick the peer's
   * ready is processed, without waiting for the peer to start. Call before the peer can be ready.
   */
  startSasOnReady(): void {
    let fired = false
    const onChange = () => {
      if (fired || this.request.phase !== VerificationPhase.Ready) return
      fired = true
      this.request.off(VerificationRequestEvent.Change, onChange)
      this.startSas().catch((e) => {
        this.startOnReadyError = errorText(e)
      })
    }
    this.request.on(VerificationRequestEvent.Change, onChange)
    onChange()
  }

  /** Why the start sent by startSasOnReady failed, if it did. */
  startOnReadyError: string | undefined

  /** The SAS once both sides have exchanged keys: 7 emoji and 3 numbers. */
  async waitForSas(timeoutMs = 20_000): Promise<SasValues> {
    const sas = await new Promise<ShowSasCallbacks>((resolve, reject) => {
      const check = () => {
        if (this.sas) {
          cleanup()
          resolve(this.sas)
        } else if (this.request.phase === VerificationPhase.Cancelled) {
          cleanup()
          reject(new Error(`${this.owner}: verification cancelled (${this.cancellationCode}) before the SAS was shown`))
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`${this.owner}: timed out after ${timeoutMs} ms waiting for the SAS (phase ${this.phase})`))
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        this.sasWaiters.delete(check)
      }
      this.sasWaiters.add(check)
      check()
    })
    const emoji = sas.sas.emoji
    const decimal = sas.sas.decimal
    if (emoji === undefined || decimal === undefined) {
      throw new Error(`${this.owner}: the SAS lacks emoji or decimals (negotiated methods differ)`)
    }
    return { emoji: emoji.map(([symbol, description]) => ({ symbol, description })), decimals: [...decimal] }
  }

  private currentSas(): ShowSasCallbacks {
    if (!this.sas) throw new Error(`${this.owner}: no SAS is shown yet: call waitForSas() first`)
    return this.sas
  }

  /** "They match": sends m.key.verification.mac. */
  async confirm(): Promise<void> {
    await this.currentSas().confirm()
  }

  /** "They don't match": cancels with m.mismatched_sas. */
  mismatch(): void {
    this.currentSas().mismatch()
  }

  /** Cancels the whole request (the peer sees m.user). */
  async cancel(): Promise<void> {
    await this.request.cancel()
  }

  /** Resolves at phase done; rejects with the cancellation code when the flow was cancelled. */
  async waitForDone(timeoutMs = 20_000): Promise<void> {
    await this.waitForPhase("done", timeoutMs)
  }

  /** Resolves with the cancellation code once the flow is cancelled. */
  async waitForCancel(timeoutMs = 20_000): Promise<{ code: string | null; by: string | undefined }> {
    await poll(`${this.owner}: verification cancelled (now ${this.phase})`, timeoutMs, () => this.phase === "cancelled")
    return { code: this.cancellationCode, by: this.cancellingUserId }
  }
}

// ---------------------------------------------------------------------------------------------------------

export interface HumanLoginOptions {
  /** shown in the device list */
  readonly deviceName?: string
}

/**
 * Holds back this human's encrypted to-device messages (the Megolm room-key shares) while `holding`:
 * the SDK is told they were sent, so a message goes out whose key the recipients get only on `release()`.
 * That is how a test makes the bot see an undecryptable event whose key arrives late.
 */
class ToDeviceGate {
  holding = false
  private readonly held: Array<() => Promise<unknown>> = []

  readonly fetchFn = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url
    if (this.holding && (init.method ?? "GET") === "PUT" && url.includes("/sendToDevice/m.room.encrypted/")) {
      this.held.push(() => fetch(input, init))
      return new Response("{}", { status: 200, headers: { "content-type": "application/json" } })
    }
    return fetch(input, init)
  }

  get heldCount(): number {
    return this.held.length
  }

  async release(): Promise<void> {
    this.holding = false
    for (const send of this.held.splice(0)) await send()
  }
}

/** Password login as a new device; returns the raw session. */
const passwordLogin = async (baseUrl: string, userId: string, password: string, deviceName: string) => {
  const res = await fetch(`${baseUrl}/_matrix/client/v3/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: userId },
      password,
      initial_device_display_name: deviceName
    })
  })
  const body = (await res.json()) as Record<string, unknown>
  if (!res.ok) {
    throw new Error(`login of ${userId} failed: ${res.status} ${String(body["errcode"])} ${String(body["error"])}`)
  }
  return {
    userId: String(body["user_id"]),
    deviceId: String(body["device_id"]),
    accessToken: String(body["access_token"])
  }
}

// ---------------------------------------------------------------------------------------------------------
// Attachments as Element sends them in encrypted rooms: the bytes are encrypted (AES-256-CTR, v2) before the
// upload, uploaded as application/octet-stream without a file name, and the event carries the `file` object
// (key, IV, SHA-256, mxc URL). Module-level so a unit test can run them against a fake client.

/** The two client calls an attachment needs (matrix-js-sdk's MatrixClient, or a fake in unit tests). */
export interface AttachmentSender {
  readonly uploadContent: (
    file: Blob,
    opts: { type: string; includeFilename: boolean }
  ) => Promise<{ content_uri: string }>
  readonly sendEvent: (roomId: string, type: string, content: Record<string, unknown>) => Promise<{ event_id: string }>
}

export interface AttachmentOptions {
  /** The file name (shown by clients, and `filename` when there is a caption). */
  readonly name: string
  readonly mimetype: string
  /** A caption: sent as `body`, with the name in `filename` (spec v1.10 media captions). */
  readonly caption?: string
  /** Extra `info` fields (`w`, `h`, ...). */
  readonly info?: Readonly<Record<string, unknown>>
}

/** Encrypts `bytes` for upload: the ciphertext and the `EncryptedFile` (without its url yet). */
export const encryptForUpload = async (bytes: Uint8Array): Promise<{ data: Uint8Array; info: IEncryptedFile }> => {
  const copy = new Uint8Array(bytes)
  const { data, info } = await encryptAttachment(copy.buffer)
  return { data: new Uint8Array(data), info }
}

/** Uploads `bytes` encrypted and sends the `m.image` / `m.file` event; resolves with its id and content. */
export const sendEncryptedAttachment = async (
  client: AttachmentSender,
  roomId: string,
  msgtype: "m.image" | "m.file",
  bytes: Uint8Array,
  options: AttachmentOptions
): Promise<{ eventId: string; content: Record<string, unknown>; uploaded: Uint8Array }> => {
  const { data, info } = await encryptForUpload(bytes)
  const { content_uri } = await client.uploadContent(new Blob([new Uint8Array(data)]), {
    type: "application/octet-stream",
    includeFilename: false
  })
  const content: Record<string, unknown> = {
    msgtype,
    body: options.caption ?? options.name,
    ...(options.caption === undefined ? {} : { filename: options.name }),
    info: { mimetype: options.mimetype, size: bytes.length, ...options.info },
    file: { ...info, url: content_uri }
  }
  const { event_id } = await client.sendEvent(roomId, "m.room.message", content)
  return { eventId: event_id, content, uploaded: data }
}

export class Human {
  private readonly verificationHandlers = new Set<(v: HumanVerification) => void>()
  private readonly received: Array<HumanVerification> = []
  private stopped = false
  /** Holds back room-key shares on demand (see ToDeviceGate). */
  toDevice: ToDeviceGate = new ToDeviceGate()

  private constructor(
    readonly client: sdk.MatrixClient,
    readonly baseUrl: string,
    readonly userId: string,
    readonly deviceId: string,
    readonly accessToken: string,
    private readonly password: string,
    private readonly logRing: Array<string>
  ) {
    // Runs inside the SDK's sync processing: must never throw (a throw there breaks the crypto sync step).
    client.on(CryptoEvent.VerificationRequestReceived, (request) => {
      try {
        if (request.initiatedByMe) return // our own in-room request echoes back here
        const v = new HumanVerification(request, this.userId)
        this.received.push(v)
        for (const h of this.verificationHandlers) {
          try {
            h(v)
          } catch (e) {
            process.stderr.write(`[human ${this.userId}] verification handler threw: ${errorText(e)}\n`)
          }
        }
      } catch (e) {
        process.stderr.write(`[human ${this.userId}] could not wrap a verification request: ${errorText(e)}\n`)
      }
    })
  }

  /** Logs in as a new device and initialises Rust crypto (in memory). Call start() to sync. */
  static async login(
    baseUrl: string,
    userId: string,
    password: string,
    options: HumanLoginOptions = {}
  ): Promise<Human> {
    installConsoleFilter()
    const session = await passwordLogin(baseUrl, userId, password, options.deviceName ?? "cara test human")
    const ring: Array<string> = []
    const secretKeys = new Map<string, Uint8Array<ArrayBuffer>>()
    const gate = new ToDeviceGate()
    const client = sdk.createClient({
      baseUrl,
      fetchFn: gate.fetchFn,
      userId: session.userId,
      deviceId: session.deviceId,
      accessToken: session.accessToken,
      verificationMethods: ["m.sas.v1"],
      logger: makeLogger(session.userId, ring),
      cryptoCallbacks: {
        // secret storage keys this human created (bootstrap) stay in memory for its lifetime
        getSecretStorageKey: async ({ keys }) => {
          for (const [id, key] of secretKeys) if (keys[id]) return [id, key]
          return null
        },
        cacheSecretStorageKey: (id, _info, key) => {
          secretKeys.set(id, key)
        }
      }
    })
    await client.initRustCrypto({ useIndexedDB: false })
    const human = new Human(client, baseUrl, session.userId, session.deviceId, session.accessToken, password, ring)
    human.toDevice = gate
    return human
  }

  /** Starts syncing and resolves once the first sync is processed (PREPARED). */
  async start(timeoutMs = 30_000): Promise<void> {
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.client.off(sdk.ClientEvent.Sync, onSync)
        reject(new Error(`${this.userId}: first sync not done within ${timeoutMs} ms\n${this.logTail(20)}`))
      }, timeoutMs)
      const onSync = (state: sdk.SyncState) => {
        if (state === sdk.SyncState.Prepared || state === sdk.SyncState.Syncing) {
          clearTimeout(timer)
          this.client.off(sdk.ClientEvent.Sync, onSync)
          resolve()
        }
      }
      this.client.on(sdk.ClientEvent.Sync, onSync)
    })
    await this.client.startClient({ initialSyncLimit: 20 })
    await ready
  }

  private crypto() {
    const c = this.client.getCrypto()
    if (!c) throw new Error(`${this.userId}: crypto is not initialised`)
    return c
  }

  /** The last lines of this client's own log (SDK + Rust crypto). */
  logTail(lines = 40): string {
    return this.logRing.slice(-lines).join("\n")
  }

  // ------------------------------------------------------------------------------------------------- rooms

  /** Like Element's "start DM": trusted_private_chat, encrypted from the first event, marked in m.direct. */
  async createEncryptedDm(otherUserId: string): Promise<string> {
    const { room_id } = await this.client.createRoom({
      is_direct: true,
      invite: [otherUserId],
      preset: sdk.Preset.TrustedPrivateChat,
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }]
    })
    const direct = (this.client.getAccountData(sdk.EventType.Direct)?.getContent() ?? {}) as Record<
      string,
      Array<string>
    >
    await this.client.setAccountData(sdk.EventType.Direct, {
      ...direct,
      [otherUserId]: [...(direct[otherUserId] ?? []), room_id]
    })
    return room_id
  }

  /** A private encrypted group room with these invitees. */
  async createEncryptedRoom(invitees: ReadonlyArray<string>, name?: string): Promise<string> {
    const { room_id } = await this.client.createRoom({
      preset: sdk.Preset.PrivateChat,
      invite: [...invitees],
      ...(name === undefined ? {} : { name }),
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }]
    })
    return room_id
  }

  async invite(roomId: string, userId: string): Promise<void> {
    await this.client.invite(roomId, userId)
  }

  /** Waits until the invite has reached this client's sync, then joins. */
  async joinRoom(roomId: string, timeoutMs = 20_000): Promise<void> {
    await poll(`${this.userId}: invite to ${roomId}`, timeoutMs, () => {
      const m = this.client.getRoom(roomId)?.getMyMembership()
      return m === sdk.KnownMembership.Invite || m === sdk.KnownMembership.Join
    })
    await this.client.joinRoom(roomId)
    await this.waitForMembership(roomId, this.userId, "join", timeoutMs)
  }

  /** Waits until this client's view of the room shows `userId` with that membership. */
  async waitForMembership(
    roomId: string,
    userId: string,
    membership: "join" | "invite" | "leave" | "ban",
    timeoutMs = 20_000
  ) {
    await poll(
      `${this.userId}: ${userId} membership ${membership} in ${roomId}`,
      timeoutMs,
      () => this.client.getRoom(roomId)?.getMember(userId)?.membership === membership
    )
  }

  // ------------------------------------------------------------------------------------------------- messages

  /** Sends an m.text (encrypted when the room is); resolves with the event id once the server accepted it. */
  async sendText(roomId: string, body: string): Promise<string> {
    const { event_id } = await this.client.sendEvent(roomId, sdk.EventType.RoomMessage, {
      msgtype: sdk.MsgType.Text,
      body
    })
    return event_id
  }

  /** The event as the server stores it (wire form, not decrypted), fetched with this client's token. */
  async fetchRawEvent(
    roomId: string,
    eventId: string
  ): Promise<{ type: string; content: Record<string, unknown>; sender: string }> {
    const ev = await this.client.fetchRoomEvent(roomId, eventId)
    return { type: String(ev.type), content: (ev.content ?? {}) as Record<string, unknown>, sender: String(ev.sender) }
  }

  /**
   * The first m.room.message in the room (already in the timeline or still to come) that decrypted and matches
   * `predicate`. Messages that fail to decrypt are waited on: the SDK retries them when their key arrives.
   */
  waitForMessage(
    roomId: string,
    predicate: (m: ReceivedMessage) => boolean,
    timeoutMs = 20_000
  ): Promise<ReceivedMessage> {
    const failures = new Map<string, string>()
    return new Promise<ReceivedMessage>((resolve, reject) => {
      let done = false
      const consider = (ev: sdk.MatrixEvent) => {
        try {
          if (done || ev.getRoomId() !== roomId) return
          if (ev.isBeingDecrypted()) return // Decrypted fires later
          if (ev.isDecryptionFailure()) {
            failures.set(ev.getId() ?? "?", String(ev.decryptionFailureReason))
            return
          }
          if (ev.getType() !== sdk.EventType.RoomMessage) return
          const eventId = ev.getId()
          if (eventId === undefined || ev.status !== null) return // local echo: wait for the server's copy
          const content = ev.getContent() as Record<string, unknown>
          const msg: ReceivedMessage = {
            eventId,
            roomId,
            sender: ev.getSender() ?? "",
            body: typeof content["body"] === "string" ? content["body"] : "",
            content,
            encrypted: ev.isEncrypted()
          }
          failures.delete(eventId)
          if (!predicate(msg)) return
          finish()
          resolve(msg)
        } catch (e) {
          finish()
          reject(e instanceof Error ? e : new Error(String(e)))
        }
      }
      const onTimeline = (ev: sdk.MatrixEvent) => consider(ev)
      const onDecrypted = (ev: sdk.MatrixEvent) => consider(ev)
      const timer = setTimeout(() => {
        finish()
        const utd = failures.size === 0
          ? ""
          : ` (undecryptable so far: ${[...failures].map(([id, r]) => `${id}: ${r}`).join(", ")})`
        reject(new Error(`${this.userId}: no matching message in ${roomId} within ${timeoutMs} ms${utd}`))
      }, timeoutMs)
      const finish = () => {
        done = true
        clearTimeout(timer)
        this.client.off(sdk.RoomEvent.Timeline, onTimeline)
        this.client.off(sdk.MatrixEventEvent.Decrypted, onDecrypted)
      }
      this.client.on(sdk.RoomEvent.Timeline, onTimeline)
      this.client.on(sdk.MatrixEventEvent.Decrypted, onDecrypted)
      for (const ev of this.client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []) consider(ev)
    })
  }

  // ------------------------------------------------------------------------------------------------- rich messages

  private attachmentSender(): AttachmentSender {
    return {
      uploadContent: (file, opts) => this.client.uploadContent(file, opts),
      sendEvent: (roomId, type, content) =>
        this.client.sendEvent(roomId, type as keyof sdk.TimelineEvents, content as never)
    }
  }

  /** Sends an encrypted `m.image` (Element's way: encrypted upload, `file` object); resolves with the event id. */
  async sendEncryptedImage(roomId: string, bytes: Uint8Array, options: AttachmentOptions): Promise<string> {
    return (await sendEncryptedAttachment(this.attachmentSender(), roomId, "m.image", bytes, options)).eventId
  }

  /** Sends an encrypted `m.file`; resolves with the event id. */
  async sendEncryptedFile(roomId: string, bytes: Uint8Array, options: AttachmentOptions): Promise<string> {
    return (await sendEncryptedAttachment(this.attachmentSender(), roomId, "m.file", bytes, options)).eventId
  }

  /** Edits one of this human's messages (`m.replace` with `m.new_content` and the `* ` fallback). */
  async editText(roomId: string, eventId: string, newBody: string): Promise<string> {
    const { event_id } = await this.client.sendEvent(roomId, sdk.EventType.RoomMessage, {
      msgtype: sdk.MsgType.Text,
      body: `* ${newBody}`,
      "m.new_content": { msgtype: sdk.MsgType.Text, body: newBody },
      "m.relates_to": { rel_type: sdk.RelationType.Replace, event_id: eventId }
    } as never)
    return event_id
  }

  /** Reacts to an event with `key` (an emoji); resolves with the reaction's event id. */
  async react(roomId: string, eventId: string, key: string): Promise<string> {
    const { event_id } = await this.client.sendEvent(roomId, sdk.EventType.Reaction, {
      "m.relates_to": { rel_type: sdk.RelationType.Annotation, event_id: eventId, key }
    })
    return event_id
  }

  /** Redacts an event (a message, or a reaction to take it back). */
  async redact(roomId: string, eventId: string, reason?: string): Promise<string> {
    const { event_id } = await this.client.redactEvent(
      roomId,
      eventId,
      undefined,
      reason === undefined ? undefined : { reason }
    )
    return event_id
  }

  /**
   * The first event of `type` in the room (in the timeline or still to come, decrypted) whose clear content
   * matches `predicate`: for reactions (`m.reaction`), edits and redactions, which waitForMessage does not see.
   */
  waitForRoomEvent(
    roomId: string,
    type: string,
    predicate: (
      ev: { eventId: string; sender: string; content: Record<string, unknown>; redacts: string | undefined }
    ) => boolean,
    timeoutMs = 20_000
  ): Promise<{ eventId: string; sender: string; content: Record<string, unknown>; redacts: string | undefined }> {
    return poll(`${this.userId}: a ${type} event in ${roomId}`, timeoutMs, () => {
      const room = this.client.getRoom(roomId)
      for (const ev of room?.getLiveTimeline().getEvents() ?? []) {
        if (ev.getType() !== type || ev.isBeingDecrypted() || ev.isDecryptionFailure() || ev.status !== null) continue
        const eventId = ev.getId()
        if (eventId === undefined) continue
        const content = ev.getContent() as Record<string, unknown>
        const redacts = ev.event.redacts ?? (typeof content["redacts"] === "string" ? content["redacts"] : undefined)
        const found = { eventId, sender: ev.getSender() ?? "", content, redacts }
        if (predicate(found)) return found
      }
      return undefined
    })
  }

  /** The latest edit (`m.replace`) of `eventId` whose new body matches `predicate`; resolves with that body. */
  async waitForEdit(
    roomId: string,
    eventId: string,
    predicate: (newBody: string) => boolean,
    timeoutMs = 20_000
  ): Promise<string> {
    const ev = await this.waitForRoomEvent(roomId, sdk.EventType.RoomMessage, ({ content }) => {
      const rel = content["m.relates_to"] as { rel_type?: unknown; event_id?: unknown } | undefined
      const next = content["m.new_content"] as { body?: unknown } | undefined
      return rel?.rel_type === "m.replace" && rel.event_id === eventId && typeof next?.body === "string" &&
        predicate(next.body)
    }, timeoutMs)
    return String((ev.content["m.new_content"] as { body: string }).body)
  }

  // ------------------------------------------------------------------------------------------------- devices

  /**
   * Waits until this client knows the device (Rust crypto tracks only users it shares an encrypted room with;
   * verification of an unknown device fails).
   */
  async waitForDevice(userId: string, deviceId: string, timeoutMs = 20_000): Promise<void> {
    await poll(`${this.userId}: device ${userId}/${deviceId} known`, timeoutMs, async () => {
      const map = await this.crypto().getUserDeviceInfo([userId], true)
      return map.get(userId)?.has(deviceId) === true
    })
  }

  /** null when the device is unknown to this client. */
  async getDeviceVerificationStatus(userId: string, deviceId: string): Promise<DeviceStatus | null> {
    const s = await this.crypto().getDeviceVerificationStatus(userId, deviceId)
    if (s === null) return null
    return {
      verified: s.isVerified(),
      crossSigningVerified: s.crossSigningVerified,
      localVerified: s.localVerified,
      signedByOwner: s.signedByOwner
    }
  }

  /** Trust is recorded a moment after the flow ends: poll until the device shows as verified. */
  async waitForDeviceVerified(userId: string, deviceId: string, timeoutMs = 10_000): Promise<DeviceStatus> {
    return poll(`${this.userId}: ${userId}/${deviceId} verified`, timeoutMs, async () => {
      const s = await this.getDeviceVerificationStatus(userId, deviceId)
      return s?.verified === true ? s : undefined
    })
  }

  /** True once this client sees `userId`'s cross-signing identity as verified by us. */
  async isUserCrossSigningVerified(userId: string): Promise<boolean> {
    return (await this.crypto().getUserVerificationStatus(userId)).isCrossSigningVerified()
  }

  /** Creates (or completes) this account's cross-signing keys; answers a UIA challenge with the password. */
  async bootstrapCrossSigning(): Promise<void> {
    await this.crypto().bootstrapCrossSigning({
      authUploadDeviceSigningKeys: async (makeRequest) => {
        try {
          // current Synapse accepts the first upload without UIA (MSC3967)
          await makeRequest(null)
        } catch (e) {
          const err = e as { httpStatus?: number; data?: { flows?: unknown; session?: string } }
          if (err.httpStatus !== 401 || err.data?.flows === undefined) throw e
          await makeRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: this.userId },
            password: this.password,
            ...(err.data.session === undefined ? {} : { session: err.data.session })
          })
        }
      }
    })
  }

  /** Waits until this client can see `userId`'s cross-signing identity (needed before requestVerificationDM). */
  async waitForCrossSigningIdentity(userId: string, timeoutMs = 20_000): Promise<void> {
    await poll(
      `${this.userId}: cross-signing identity of ${userId}`,
      timeoutMs,
      () => this.crypto().userHasCrossSigningKeys(userId, true)
    )
  }

  // ------------------------------------------------------------------------------------------------- verification

  /** To-device verification of one device (the device must be known: see waitForDevice). */
  async requestDeviceVerification(userId: string, deviceId: string): Promise<HumanVerification> {
    return new HumanVerification(await this.crypto().requestDeviceVerification(userId, deviceId), this.userId)
  }

  /** In-room user verification in a DM (both users need cross-signing identities). */
  async requestVerificationDM(userId: string, roomId: string): Promise<HumanVerification> {
    return new HumanVerification(await this.crypto().requestVerificationDM(userId, roomId), this.userId)
  }

  /** Calls `handler` for each incoming request; returns the unsubscribe function. */
  onVerificationRequest(handler: (v: HumanVerification) => void): () => void {
    this.verificationHandlers.add(handler)
    return () => this.verificationHandlers.delete(handler)
  }

  /** The next incoming request (or an earlier one nobody took yet) from `fromUserId` if given. */
  async nextVerificationRequest(timeoutMs = 20_000, fromUserId?: string): Promise<HumanVerification> {
    const take = () => {
      const i = this.received.findIndex((v) => fromUserId === undefined || v.otherUserId === fromUserId)
      return i < 0 ? undefined : this.received.splice(i, 1)[0]
    }
    return poll(`${this.userId}: an incoming verification request`, timeoutMs, take)
  }

  // ------------------------------------------------------------------------------------------------- stop

  /** Stops syncing and crypto, and drops every listener. The device stays on the server. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.verificationHandlers.clear()
    this.client.stopClient()
    this.client.removeAllListeners()
  }
}
