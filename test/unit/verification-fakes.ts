// Small stand-ins for the matrix-js-sdk objects the verification registry touches: a request, its SAS
// verifier and a client. They behave like the Rust-backed SDK in the ways that matter here (phase changes
// emit `change`, a verifier appears on start, mismatch cancels with m.mismatched_sas, cancel sends m.user).
import { EventEmitter } from "node:events"
import { ClientEvent, type MatrixClient, SyncState } from "matrix-js-sdk"
import {
  CryptoEvent,
  type ShowSasCallbacks,
  type VerificationRequest,
  VerificationPhase,
  VerificationRequestEvent,
  VerifierEvent
} from "matrix-js-sdk/lib/crypto-api/index.js"

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

  async accept() {
    this.acceptCalls++
    this.set(VerificationPhase.Ready)
  }

  async startVerification(_method: string) {
    this.startCalls++
    const v = new FakeVerifier(this)
    this.verifier = v
    this.set(VerificationPhase.Started)
    return v
  }

  /** The peer sent (another) m.key.verification.start: the SDK swaps in a new verifier (glare). */
  peerStart(): FakeVerifier {
    const old = this.verifier
    const v = new FakeVerifier(this)
    this.verifier = v
    old?.finish(false)
    this.set(VerificationPhase.Started)
    return v
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

export class FakeClient extends EventEmitter {
  readonly requested: Array<FakeRequest> = []
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

  getRooms() {
    return []
  }

  getCrypto() {
    return {
      getUserDeviceInfo: async (users: Array<string>) =>
        new Map(users.map((u) => [u, new Map((this.devices.get(u) ?? []).map((d) => [d.deviceId, { deviceId: d.deviceId, displayName: d.displayName }]))])),
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
  }

  asClient(): MatrixClient {
    return this as unknown as MatrixClient
  }
}

export const asRequest = (r: FakeRequest) => r as unknown as VerificationRequest
