// The Matrix runtime in one scope: the store and authentication, then the layer graph of the running
// client (ledger, client + transport, outbound, inbound, the event handling), then the features in the
// order the start-up sequence needs. Fails with a MatrixError (terminal) or runs until interrupted.
import { Context, Deferred, Effect, Layer, Option, Ref } from "effect"
import * as fs from "node:fs"
import { allowsUser, normalizeAllowlist } from "../../domain/allowlist.js"
import {
  MATRIX_CHANNEL_ID as CHANNEL_ID,
  MatrixError,
  type MatrixErrorKind,
  recoveryFailure
} from "../../domain/matrix.js"
import { describeSdkError as describe } from "../../domain/sendError.js"
import { ChannelStatus } from "../../services/ChannelStatus.js"
import { ConfigSecrets } from "../../services/ConfigSecrets.js"
import { Inbound, InboundHooks } from "../../services/Inbound.js"
import { CurrentMatrixSession, type MatrixSession, MatrixSettings } from "../../services/MatrixSync.js"
import type { OutboundShape } from "../../services/Outbound.js"
import { Outbound } from "../../services/Outbound.js"
import { RecoveryKey } from "../../services/RecoveryKey.js"
import { StateDir } from "../../services/StateDir.js"
import { StorePassphrase } from "../../services/StorePassphrase.js"
import { Verification } from "../../services/Verification.js"
// By design the runtime is built on these layers: it composes them into the graph of its running client.
import { CRYPTO_FILE, CryptoStoreLive } from "../CryptoStoreLive.js"
import { InboundLive, LedgerLive } from "../InboundLive.js"
import { OutboundLive } from "../OutboundLive.js"
import { authenticate, type Credentials, MatrixCredentials } from "./auth.js"
import { BackfillLive } from "./backfill.js"
import { MatrixClient, MatrixClientLive } from "./client.js"
import { registerDlq } from "./dlq.js"
import { MatrixEventsLive } from "./events.js"
import { survey, SyncHealthState, SyncHealthStateLive, watchdog, watchSync } from "./health.js"
import { watchInvites } from "./invites.js"
import { redirectSdkConsole } from "./logging.js"
import { makeResume } from "./resume.js"
import { Milestones, MilestonesLive } from "./startup.js"
import { watchTimeline } from "./timeline.js"

/** What the runtime publishes to MatrixSync (the session for the API, the send path for `send-test`). */
export interface RuntimeRefs {
  readonly outbound: Ref.Ref<Option.Option<OutboundShape>>
  readonly session: Ref.Ref<Option.Option<MatrixSession>>
}

const STORE_OPEN_KINDS: ReadonlySet<string> = new Set([
  "encrypted-store-passphrase-mismatch",
  "missing-store-secret",
  "encrypted-state-io",
  "interrupted-rekey",
  "store-key-derivation",
  "installation-id",
  "installation-id-missing",
  "crypto-store-corrupt",
  "state-store-corrupt"
])

const storeOpenFailure = (e: { kind: string; message: string }) =>
  new MatrixError({
    kind: STORE_OPEN_KINDS.has(e.kind) ? e.kind as MatrixErrorKind : "client-build",
    message: e.message
  })

/**
 * The store (before any network I/O: a wrong passphrase must not mint a device) and the credentials. A
 * token whose device lost its store: the new-device login (or the refusal) is settled before the store
 * files exist, so a failed attempt cannot leave an empty store that the old device id would be reused with.
 */
const openStoreAndAuthenticate = (env: NodeJS.ProcessEnv) =>
  Effect.gen(function*() {
    const m = yield* MatrixSettings
    const secrets = yield* ConfigSecrets
    const stateDir = yield* StateDir
    const passphrase = yield* StorePassphrase
    const storeLost = m.encrypted && !fs.existsSync(stateDir.resolve(CRYPTO_FILE))
    const secret = m.encrypted
      ? { encrypted: true as const, passphrase: yield* passphrase.resolve.pipe(Effect.mapError(storeOpenFailure)) }
      : { encrypted: false as const }
    const tokenConfigured = m.accessToken !== undefined && m.accessToken !== null
    const early = storeLost && tokenConfigured
      ? Option.some(yield* authenticate(m, secrets, env, true))
      : Option.none<Credentials>()
    const store = yield* Layer.build(CryptoStoreLive({ secret })).pipe(Effect.mapError(storeOpenFailure))
    const creds = Option.isSome(early) ? early.value : yield* authenticate(m, secrets, env)
    return { store, creds }
  })

/** The running client's services, built in this order: ledger, client (+ transport), outbound, inbound, events. */
const clientGraph = (
  creds: Credentials,
  resume: Deferred.Deferred<(eventId: string, roomId: string) => Effect.Effect<void>>
) => {
  const hooks = Layer.effect(
    InboundHooks,
    Effect.map(SyncHealthState, (h) => ({
      reachable: h.reachable,
      resume: (eventId: string, roomId: string) => Effect.flatMap(Deferred.await(resume), (f) => f(eventId, roomId))
    }))
  )
  const session = Layer.succeedContext(
    Context.make(CurrentMatrixSession, { userId: creds.userId, deviceId: creds.deviceId }).pipe(
      Context.add(MatrixCredentials, creds)
    )
  )
  return BackfillLive.pipe(
    Layer.provideMerge(MatrixEventsLive),
    Layer.provideMerge(InboundLive),
    Layer.provideMerge(hooks),
    Layer.provideMerge(SyncHealthStateLive),
    Layer.provideMerge(OutboundLive),
    Layer.provideMerge(MatrixClientLive),
    Layer.provideMerge(LedgerLive),
    Layer.provideMerge(MilestonesLive),
    Layer.provideMerge(session)
  )
}

/** After the first sync: cross-signing, the password, pending invites, held and interrupted events. */
const afterFirstSync = (creds: Credentials, joinPending: Effect.Effect<void>) =>
  Effect.gen(function*() {
    const m = yield* MatrixSettings
    const { client } = yield* MatrixClient
    const milestones = yield* Milestones
    const status = yield* ChannelStatus
    const secrets = yield* ConfigSecrets
    const recovery = yield* RecoveryKey
    const inbound = yield* Inbound
    const resume = yield* makeResume
    // cross-signing needs our own identity known, so after the first sync; before the password is dropped.
    // After a restart the first sync is served from the saved sync data, before the homeserver answered
    // anything: the recovery-key start-up waits for a sync from the server (account data current; a
    // homeserver that is down delays it instead of failing it). Messages are answered meanwhile.
    let crossSigning: "unknown" | "bootstrapped" | "verified" = "unknown"
    if (m.encrypted) {
      yield* milestones.serverSync
      crossSigning = yield* recovery.afterFirstSync(client).pipe(Effect.mapError(recoveryFailure))
    }
    if (creds.mode === "password") {
      yield* secrets.removeMatrixPassword().pipe(
        Effect.mapError((e) =>
          new MatrixError({
            kind: "token-persistence",
            message: `failed to remove matrix.password after login: ${e.message}`
          })
        )
      )
    }
    // the start-up sequence is over (`cara verify` waits for this, issue 17.6)
    if (m.encrypted) yield* status.updateMatrix((x) => ({ ...x, crossSigning }))
    yield* joinPending
    yield* resume.resumeHeld
    yield* resume.resumeUnfinished
    // answers whose send keeps failing are retried from now on (also those the resume above could not fetch)
    yield* inbound.replies.start
  })

/** The features on the running client, in the order of the start-up sequence; runs until the terminal error. */
const runFeatures = (
  env: NodeJS.ProcessEnv,
  creds: Credentials,
  refs: RuntimeRefs,
  resumeHook: Deferred.Deferred<(eventId: string, roomId: string) => Effect.Effect<void>>
) =>
  Effect.gen(function*() {
    const m = yield* MatrixSettings
    const { client, freshStore } = yield* MatrixClient
    const milestones = yield* Milestones
    const status = yield* ChannelStatus
    const verification = yield* Verification
    const replayDlq = yield* registerDlq
    yield* Deferred.succeed(resumeHook, (yield* makeResume).resumeEvent)
    yield* Ref.set(refs.outbound, Option.some(yield* Outbound))
    yield* Effect.addFinalizer(() => Ref.set(refs.outbound, Option.none()))
    yield* watchTimeline
    const joinPending = yield* watchInvites
    yield* watchSync(replayDlq)
    yield* milestones.watch(client)
    // SAS verification flows (issue 10): the registry listens to this client for the life of the runtime
    if (m.encrypted) {
      const allowlist = normalizeAllowlist(m.autoJoin)
      yield* verification.attach({
        client,
        botUserId: creds.userId,
        isAllowed: (u) => allowsUser(allowlist, u),
        trackUsers: allowlist.allowUsers
      })
    }
    yield* status.setState(CHANNEL_ID, "connected")
    yield* Effect.tryPromise({
      try: () => client.startClient({ initialSyncLimit: 20 }),
      catch: (e) =>
        new MatrixError({ kind: "startup-failed", message: `Matrix runtime startup failed: ${describe(e)}` })
    })
    yield* milestones.firstSync
    yield* Effect.logInfo("Matrix client synced").pipe(
      Effect.annotateLogs({ userId: creds.userId, deviceId: creds.deviceId, freshStore })
    )
    yield* watchdog(env)
    yield* afterFirstSync(creds, joinPending)
    yield* survey
    yield* Effect.logInfo("Matrix start-up finished (pending replies retried, sync watched)")
    return yield* milestones.terminal
  })

export const runMatrix = (env: NodeJS.ProcessEnv, refs: RuntimeRefs) =>
  Effect.gen(function*() {
    const m = yield* MatrixSettings
    const status = yield* ChannelStatus
    yield* redirectSdkConsole
    // recovery-key artifacts are repaired (or refused) before anything is opened (reference §5.2 step 2)
    if (m.encrypted) yield* (yield* RecoveryKey).repair.pipe(Effect.mapError(recoveryFailure))
    const { creds, store } = yield* openStoreAndAuthenticate(env)
    yield* Ref.set(refs.session, Option.some({ userId: creds.userId, deviceId: creds.deviceId }))
    yield* status.updateMatrix((x) => ({ ...x, userId: creds.userId, deviceId: creds.deviceId }))
    const resumeHook = yield* Deferred.make<(eventId: string, roomId: string) => Effect.Effect<void>>()
    const running = yield* Layer.build(clientGraph(creds, resumeHook)).pipe(Effect.provide(store))
    return yield* runFeatures(env, creds, refs, resumeHook).pipe(Effect.provide(running), Effect.provide(store))
  })
