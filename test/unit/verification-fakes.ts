// Small stand-ins for the matrix-js-sdk objects the verification registry touches: a request, its SAS
// verifier and a client. They behave like the Rust-backed SDK in the ways that matter here (phase changes
// emit `change`, a verifier appears on start, mismatch cancels with m.mismatched_sas, cancel sends m.user).
import { ClientEvent, type MatrixClient, SyncState } from "matrix-js-sdk"
import {
  CryptoEvent,
  type ShowSasCallbacks,
  VerificationPhase,
  type VerificationRequest,
  VerificationRequestEvent,
  VerifierEvent
} from "matrix-js-sdk/lib/crypto-api/index.js"
import { EventEmitter } from "node:events"

export const EMOJI: Array<[string, string]> = [
  ["🐶", "Dog"],
  ["🐱", "Cat"],
  ["🦁", "Lion"],
  ["🐎", "Horse"],
  ["🦄", "Unicorn"],
  ["🐷", "Pig"],
  ["🐘", "Elephant"]
]

export class FakeVerifier extends EventEmitter {
  hasBeenCancelled = false
  verifyCalls = 0
  confirmed = false
  confirmCalls = 0
  /** When set, the SAS confirm runs this instead of succeeding at once (a send that fails or hangs). */
  confirmWith: (() => Promise<void>) | undefined
  mismatched = false
  private callbacks: ShowSasCallbacks | null = null
  private settle: { resolve: () => void; reject: (e: Error) => void } | undefined

  constructor(readonly request: FakeRequest) {
    super()
  }

  get userId() {
    return this.request.otherUserId
  }

  verify(): Promise<void> {
    this.verifyCalls++
    return new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject }
    })
  }

  /** The keys were exchanged: the SAS is shown. */
  showSas(): void {
    this.callbacks = {
      sas: { emoji: EMOJI, decimal: [1234, 5678, 910] },
      confirm: async () => {
        this.confirmCalls++
        if (this.confirmWith !== undefined) await this.confirmWith()
        this.confirmed = true
      },
      mismatch: () => {
        this.mismatched = true
        this.request.cancelWith("m.mismatched_sas")
      },
      cancel: () => this.request.cancelWith("m.user")
    }
    this.emit(VerifierEvent.ShowSas, this.callbacks)
  }

  getShowSasCallbacks() {
    return this.callbacks
  }

  getReciprocateQrCodeCallbacks() {
    return null
  }

  cancel() {
    this.request.cancelWith("m.user")
  }

  finish(ok: boolean) {
    if (ok) this.settle?.resolve()
    else this.settle?.reject(new Error("cancelled"))
  }
}

export class FakeRequest extends EventEmitter {
  phase: VerificationPhase = VerificationPhase.Requested
  verifier: FakeVerifier | undefined
  cancellationCode: string | null = null
  acceptCalls = 0
  cancelCalls = 0
  startCalls = 0

  constructor(
    readonly otherUserId: string,
    readonly transactionId: string | undefined,
    readonly opts: { readonly deviceId?: string; readonly roomId?: string; readonly initiatedByMe?: boolean } = {}
  ) {
    super()
  }

  get otherDeviceId() {
    return this.opts.deviceId
  }
  get roomId() {
    return this.opts.roomId
  }
  get initiatedByMe() {
    return this.opts.initiatedByMe ?? false
  }
  get methods(): Array<string> {
    throw new Error("not implemented") // like the Rust backend
  }
  otherPartySupportsMethod(m: string) {
    return m === "m.sas.v1"
  }

  private set(phase: VerificationPhase) {
    this.phase = phase
    this.emit(VerificationRequestEvent.Change)
  }

  /** Called right after the bot's ready went out (a fast peer answers it with its start). */
  onReady: (() => void) | undefined

  async accept() {
    this.acceptCalls++
    this.set(VerificationPhase.Ready)
    this.onReady?.()
  }

  /**
   * Like the SDK: it yields (a device lookup) before the Rust start. Starting SAS in a flow the peer already
   * started opens a second SAS in it, which the Rust crypto ends with an m.user cancel (issue 17.5).
   */
  async startVerification(_method: string) {
    this.startCalls++
    await new Promise((r) => setTimeout(r, 1))
    if (this.phase === VerificationPhase.Started) {
      this.cancelWith("m.user")
      throw new Error("Still no verifier after startSas() call")
    }
    const v = new FakeVerifier(this)
    this.verifier = v
    this.startedByBot = true
    this.set(VerificationPhase.Started)
    return v
  }

  /** The bot's start went out (not the peer's). */
  startedByBot = false

  /** The peer sent (another) m.key.verification.start: the SDK swaps in a new verifier (glare). */
  peerStart(): FakeVerifier {
    const old = this.verifier
    const v = new FakeVerifier(this)
    this.verifier = v
    old?.finish(false)
    this.set(VerificationPhase.Started)
    return v
  }

  /** How the crypto handles a peer's start event: ignored before ready (like Rust), glare after a start. */
  receivePeerStart() {
    if (this.phase === VerificationPhase.Ready || this.phase === VerificationPhase.Started) this.peerStart()
  }

  peerReady() {
    this.set(VerificationPhase.Ready)
  }

  async cancel(_params?: unknown) {
    this.cancelCalls++
    this.cancelWith("m.user") // the SDK ignores the given code
  }

  cancelWith(code: string) {
    this.cancellationCode = code
    this.verifier?.finish(false)
    this.verifier = undefined // like the SDK: undefined outside phase Started
    this.set(VerificationPhase.Cancelled)
  }

  done() {
    this.verifier?.finish(true)
    this.verifier = undefined
    this.set(VerificationPhase.Done)
  }
}

export interface FakeDevice {
  readonly deviceId: string
  readonly displayName?: string
  readonly verified?: boolean
}

/** A to-device event as the SDK hands it to ClientEvent.ToDeviceEvent listeners. */
export interface RawToDevice {
  readonly sender: string
  readonly type: string
  readonly content: Record<string, unknown>
}

const asMatrixEvent = (raw: RawToDevice) => ({
  getType: () => raw.type,
  getSender: () => raw.sender,
  getContent: () => raw.content
})

export class FakeClient extends EventEmitter {
  readonly requested: Array<FakeRequest> = []
  /** Peer requests the "machine" accepted, by transaction id. */
  readonly incoming = new Map<string, FakeRequest>()
  /** Every to-device event given to processSyncChanges, in order (the re-fed ones included). */
  readonly processed: Array<RawToDevice> = []
  devices = new Map<string, Array<FakeDevice>>()
  /** Devices the server has but the "machine" learns only on a device-list refresh. */
  serverOnlyDevices = new Map<string, Array<FakeDevice>>()
  refreshes = 0
  /** To-device messages the bot sent to itself; each ends the fake's "long-poll" with one completed sync. */
  readonly nudges: Array<string> = []
  /** The sync count at each bot-initiated request. */
  readonly syncsAtRequest: Array<number> = []
  syncs = 0

  completeSync() {
    this.syncs++
    this.emit(ClientEvent.Sync, SyncState.Syncing, SyncState.Syncing)
  }

  getDeviceId() {
    return "BOTDEV"
  }

  async sendToDevice(type: string, contentMap: Map<string, Map<string, object>>) {
    if (contentMap.get(this.userId)?.has("BOTDEV") === true) this.nudges.push(type)
    setTimeout(() => this.completeSync(), 1)
    return {}
  }

  constructor(readonly userId: string) {
    super()
  }

  receive(req: FakeRequest) {
    this.emit(CryptoEvent.VerificationRequestReceived, req)
  }

  /**
   * One sync's to-device events, as the SDK handles them: through the crypto's processSyncChanges (looked up
   * on the crypto object at call time, as the SDK does), then each event to ToDeviceEvent listeners.
   */
  async syncToDevice(events: ReadonlyArray<RawToDevice>) {
    const crypto = this.crypto as unknown as {
      processSyncChanges: (c: { toDeviceEvents: Array<RawToDevice> }) => Promise<Array<RawToDevice>>
    }
    const received = await crypto.processSyncChanges({ toDeviceEvents: [...events] })
    for (const raw of received) this.emit(ClientEvent.ToDeviceEvent, asMatrixEvent(raw))
    this.completeSync()
  }

  /** The machine's handling: a request from an unknown device is dropped; a start moves its request on. */
  private readonly handleToDevice = (raw: RawToDevice) => {
    this.processed.push(raw)
    const txn = String(raw.content["transaction_id"])
    if (raw.type === "m.key.verification.request") {
      const from = String(raw.content["from_device"])
      if (!(this.devices.get(raw.sender) ?? []).some((d) => d.deviceId === from)) return
      const req = new FakeRequest(raw.sender, txn, { deviceId: from })
      this.incoming.set(txn, req)
      this.receive(req)
    } else if (raw.type === "m.key.verification.start") {
      this.incoming.get(txn)?.receivePeerStart()
    }
  }

  getRooms() {
    return []
  }

  getCrypto() {
    return this.crypto
  }

  readonly crypto = {
    processSyncChanges: async (changes: { toDeviceEvents: Array<RawToDevice> }) => {
      // the Rust machine's processing is asynchronous too
      await new Promise((r) => setTimeout(r, 0))
      for (const raw of changes.toDeviceEvents) this.handleToDevice(raw)
      return changes.toDeviceEvents
    },
    getUserDeviceInfo: async (users: Array<string>) =>
      new Map(
        users.map((
          u
        ) => [
          u,
          new Map(
            (this.devices.get(u) ?? []).map((d) => [d.deviceId, { deviceId: d.deviceId, displayName: d.displayName }])
          )
        ])
      ),
    getDeviceVerificationStatus: async (u: string, d: string) => {
      const dev = (this.devices.get(u) ?? []).find((x) => x.deviceId === d)
      return dev === undefined ? null : { isVerified: () => dev.verified === true }
    },
    markAllTrackedUsersAsDirty: async () => {
      this.refreshes++
      for (const [u, extra] of this.serverOnlyDevices) this.devices.set(u, [...(this.devices.get(u) ?? []), ...extra])
      this.serverOnlyDevices.clear()
    },
    requestDeviceVerification: async (u: string, d: string) => {
      this.syncsAtRequest.push(this.syncs)
      const r = new FakeRequest(u, `txn-bot-${this.requested.length}`, { deviceId: d, initiatedByMe: true })
      r.phase = VerificationPhase.Requested
      this.requested.push(r)
      return r
    }
  }

  asClient(): MatrixClient {
    return this as unknown as MatrixClient
  }
}

export const asRequest = (r: FakeRequest) => r as unknown as VerificationRequest
