// restoreAtStartup over a fake client: a store that holds every key is not restored (but the key on disk is
// still MAC-checked against the homeserver's key description), secret storage is read from the homeserver rather than the client's cached sync, and an
// unreachable homeserver is a transient failure (retried by the daemon), not a missing configuration.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Option } from "effect"
import type { MatrixClient } from "matrix-js-sdk"
import { encodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/recovery-key.js"
import { calculateKeyCheck } from "matrix-js-sdk/lib/secret-storage.js"
import type { RecoveryKeyError } from "../../src/domain/recoveryKey.js"
import {
  isTransientRestoreFailure,
  makeKeyring,
  type RecoveryFiles,
  restoreAtStartup
} from "../../src/layers/RecoveryKeyLive.js"
import type { ChannelStatusShape } from "../../src/services/ChannelStatus.js"
import type { ConfigSecretsShape } from "../../src/services/ConfigSecrets.js"

const raw = new Uint8Array(32).fill(7)
const key = encodeRecoveryKey(raw)!

interface Fake {
  readonly requests: Array<string>
  readonly client: MatrixClient
}

/** A client whose crypto holds (or not) every key and whose homeserver answers `server` per account data type. */
const fakeClient = (
  opts: { complete: boolean; server: (type: string) => Promise<unknown>; cachedDefaultKey?: string | null }
): Fake => {
  const requests: Array<string> = []
  const crypto = {
    getCrossSigningStatus: async () => ({
      privateKeysCachedLocally: {
        masterKey: opts.complete,
        selfSigningKey: opts.complete,
        userSigningKey: opts.complete
      },
      privateKeysInSecretStorage: true
    }),
    getSessionBackupPrivateKey: async () => (opts.complete ? new Uint8Array(32) : null),
    bootstrapCrossSigning: async () => undefined,
    getKeyBackupInfo: async () => null,
    checkKeyBackupAndEnable: async () => null,
    loadSessionBackupPrivateKeyFromSecretStorage: async () => undefined
  }
  const client = {
    getSafeUserId: () => "@bot:example.org",
    getCrypto: () => crypto,
    http: {
      authedRequest: async (_method: string, path: string) => {
        requests.push(path)
        const type = decodeURIComponent(path.split("/").pop() ?? "")
        return opts.server(type)
      }
    },
    // the cached sync's view: must not be what the restore relies on
    secretStorage: {
      getDefaultKeyId: async () => opts.cachedDefaultKey ?? null,
      getKey: async () => null
    }
  } as unknown as MatrixClient
  return { requests, client }
}

const files: RecoveryFiles = {
  root: "/nonexistent",
  read: () => Effect.succeed(Option.some(`${key}\n`)),
  exists: () => Effect.succeed(true),
  write: () => Effect.void,
  create: () => Effect.void,
  promote: () => Effect.void,
  remove: () => Effect.succeed(false)
}

const ctx = (client: MatrixClient, audited: Array<string>) => ({
  client,
  keyring: makeKeyring(),
  secrets: {} as ConfigSecretsShape,
  status: {} as ChannelStatusShape,
  audit: (event: string) => Effect.sync(() => void audited.push(event)),
  files
})

const notFound = () =>
  Promise.reject(Object.assign(new Error("not found"), { errcode: "M_NOT_FOUND", httpStatus: 404 }))

describe("recovery-key restore at start-up", () => {
  const withInfo = (info: unknown) => async (type: string) => {
    if (type === "m.secret_storage.default_key") return { key: "KEYID" }
    if (type === "m.secret_storage.key.KEYID") return info
    return notFound()
  }

  it.effect("a store that already holds every key is not restored, but the key is still MAC-checked against the homeserver", () =>
    Effect.gen(function*() {
      const info = {
        algorithm: "m.secret_storage.v1.aes-hmac-sha2",
        ...(yield* Effect.promise(() => calculateKeyCheck(raw)))
      }
      const fake = fakeClient({ complete: true, server: withInfo(info) })
      const audited: Array<string> = []
      const r = yield* restoreAtStartup(ctx(fake.client, audited), { skipWhenStoreComplete: true })
      expect(r).toBe(true)
      expect(fake.requests.map((p) => decodeURIComponent(p.split("/").pop() ?? ""))).toEqual([
        "m.secret_storage.default_key",
        "m.secret_storage.key.KEYID"
      ])
      expect(audited).toEqual([]) // skipped: no restore happened
    }))

  it.effect("a complete store does not excuse a wrong key on disk: wrong-key, naming the restore command", () =>
    Effect.gen(function*() {
      // the homeserver's key description belongs to another key (the SDK's own key check computes it)
      const other = yield* Effect.promise(() => calculateKeyCheck(new Uint8Array(32).fill(9)))
      const fake = fakeClient({
        complete: true,
        server: withInfo({ algorithm: "m.secret_storage.v1.aes-hmac-sha2", ...other })
      })
      const e = yield* Effect.flip(restoreAtStartup(ctx(fake.client, []), { skipWhenStoreComplete: true }))
      expect(e.kind).toBe("recovery-key-restore-failed")
      expect(e.reason).toBe("wrong-key")
      expect(e.message).toContain("cara matrix recovery-key restore")
      expect(isTransientRestoreFailure(e as RecoveryKeyError)).toBe(false)
    }))

  it.effect("garbage in recovery_key (not a recovery key at all) is wrong-key too", () =>
    Effect.gen(function*() {
      const info = {
        algorithm: "m.secret_storage.v1.aes-hmac-sha2",
        ...(yield* Effect.promise(() => calculateKeyCheck(raw)))
      }
      const fake = fakeClient({ complete: true, server: withInfo(info) })
      const garbage: RecoveryFiles = { ...files, read: () => Effect.succeed(Option.some("not a key at all\n")) }
      const e = yield* Effect.flip(
        restoreAtStartup({ ...ctx(fake.client, []), files: garbage }, { skipWhenStoreComplete: true })
      )
      expect(e.reason).toBe("wrong-key")
    }))

  it.effect("a rotation's check (no skip) still proves the key against the homeserver", () =>
    Effect.gen(function*() {
      const fake = fakeClient({ complete: true, server: notFound })
      const exit = yield* Effect.exit(restoreAtStartup(ctx(fake.client, [])))
      expect(Exit.isFailure(exit)).toBe(true)
      expect(fake.requests.length).toBeGreaterThan(0)
    }))

  it.effect("secret storage is read from the homeserver, not from the cached sync", () =>
    Effect.gen(function*() {
      const info = {
        algorithm: "m.secret_storage.v1.aes-hmac-sha2",
        ...(yield* Effect.promise(() => calculateKeyCheck(raw)))
      }
      const server = async (type: string) => {
        if (type === "m.secret_storage.default_key") return { key: "KEYID" }
        if (type === "m.secret_storage.key.KEYID") return info
        return notFound()
      }
      // the cached sync knows no secret storage at all (a kill during the first start)
      const fake = fakeClient({ complete: false, server, cachedDefaultKey: null })
      const audited: Array<string> = []
      const r = yield* restoreAtStartup(ctx(fake.client, audited), { skipWhenStoreComplete: true })
      expect(r).toBe(true)
      expect(fake.requests.map((p) => decodeURIComponent(p.split("/").pop() ?? ""))).toEqual([
        "m.secret_storage.default_key",
        "m.secret_storage.key.KEYID"
      ])
      expect(audited).toEqual(["matrix_recovery_key_restored_at_startup"])
    }))

  it.effect("no secret storage on the homeserver is server-not-configured, and not retried", () =>
    Effect.gen(function*() {
      const fake = fakeClient({ complete: false, server: notFound })
      const e = yield* Effect.flip(restoreAtStartup(ctx(fake.client, []), { skipWhenStoreComplete: true }))
      expect(e.reason).toBe("server-not-configured")
      expect(isTransientRestoreFailure(e as RecoveryKeyError)).toBe(false)
    }))

  it.effect("an unreachable homeserver is a transient failure", () =>
    Effect.gen(function*() {
      const down = () => Promise.reject(Object.assign(new Error("fetch failed"), { name: "ConnectionError" }))
      const fake = fakeClient({ complete: false, server: down })
      const e = yield* Effect.flip(restoreAtStartup(ctx(fake.client, []), { skipWhenStoreComplete: true }))
      expect(e.kind).toBe("recovery-key-restore-failed")
      expect(e.reason).toBe("transport-error")
      expect(isTransientRestoreFailure(e as RecoveryKeyError)).toBe(true)
    }))
})
