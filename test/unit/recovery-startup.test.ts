// Start-up decisions of the recovery-key subsystem that the Synapse tests cannot reach case by case: the
// cross-signing step for every observed state, the keyring that answers secret-storage key requests, and
// the restore-failure reasons.
import { describe, expect, it } from "@effect/vitest"
import { encodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/recovery-key.js"
import { calculateKeyCheck, type SecretStorageKeyDescription } from "matrix-js-sdk/lib/secret-storage.js"
import { nextCrossSigningStep } from "../../src/domain/recoveryMachine.js"
import { makeKeyring, restoreReasonOf } from "../../src/layers/RecoveryKeyLive.js"

const freshKey = () => {
  const raw = new Uint8Array(new ArrayBuffer(32))
  globalThis.crypto.getRandomValues(raw)
  return { raw, encoded: encodeRecoveryKey(raw)! }
}

const keyInfo = async (raw: Uint8Array<ArrayBuffer>): Promise<SecretStorageKeyDescription> => {
  const { iv, mac } = await calculateKeyCheck(raw)
  return { algorithm: "m.secret_storage.v1.aes-hmac-sha2", name: "", passphrase: undefined as never, iv, mac }
}

describe("cross-signing step at start-up", () => {
  const bools = [false, true] as const
  const states = bools.flatMap((onServer) =>
    bools.flatMap((master) =>
      bools.flatMap((selfSigning) =>
        bools.flatMap((userSigning) =>
          bools.map((ready) => ({ onServer, cached: { master, selfSigning, userSigning }, ready }))
        )
      )
    )
  )

  it("never bootstraps (a new identity) over an identity on the server whose private keys this device lacks", () => {
    for (const s of states) {
      const step = nextCrossSigningStep(s)
      if (s.onServer && !(s.cached.master && s.cached.selfSigning)) {
        expect(step, JSON.stringify(s)).toBe("IdentityUnavailable")
      } else expect(step, JSON.stringify(s)).not.toBe("IdentityUnavailable")
    }
  })

  it("skips the SDK bootstrap only when the identity is on the server, fully cached and ready (restarts)", () => {
    for (const s of states) {
      const all = s.onServer && s.cached.master && s.cached.selfSigning && s.cached.userSigning && s.ready
      expect(nextCrossSigningStep(s) === "SignDeviceOnly", JSON.stringify(s)).toBe(all)
    }
  })

  it("bootstraps on a first start (nothing on the server) whatever the local cache says", () => {
    for (const s of states.filter((x) => !x.onServer)) expect(nextCrossSigningStep(s)).toBe("Bootstrap")
  })
})

describe("keyring", () => {
  it("offers the held key for the secret-storage key id it opens, and nothing for a key it does not", async () => {
    const mine = freshKey()
    const other = freshKey()
    const keyring = makeKeyring()
    keyring.add(` ${mine.encoded}\n`)
    const infoMine = await keyInfo(mine.raw)
    const infoOther = await keyInfo(other.raw)
    expect(await keyring.matches(mine.encoded, infoMine)).toBe(true)
    expect(await keyring.matches(mine.encoded, infoOther)).toBe(false)
    expect(await keyring.matches("not a key", infoMine)).toBe(false)

    const answer = await keyring.callbacks.getSecretStorageKey!(
      { keys: { old: infoOther, current: infoMine } },
      "m.cross_signing.master"
    )
    expect(answer?.[0]).toBe("current")
    expect(Buffer.from(answer![1]).equals(Buffer.from(mine.raw))).toBe(true)
    expect(await keyring.callbacks.getSecretStorageKey!({ keys: { old: infoOther } }, "m.cross_signing.master"))
      .toBeNull()
  })

  it("a key description without a MAC is never matched", async () => {
    const mine = freshKey()
    const { iv } = await calculateKeyCheck(mine.raw)
    expect(await makeKeyring().matches(mine.encoded, { algorithm: "m.secret_storage.v1.aes-hmac-sha2", iv } as never))
      .toBe(false)
  })
})

describe("restore failure reasons", () => {
  it("map SDK failures to the wire reasons without passing their text on", () => {
    expect(restoreReasonOf(Object.assign(new Error("x"), { httpStatus: 401 }))).toBe("auth-state")
    expect(restoreReasonOf(Object.assign(new Error("fetch failed"), { name: "ConnectionError" }))).toBe(
      "transport-error"
    )
    expect(restoreReasonOf(new Error("getSecretStorageKey callback returned falsey"))).toBe("wrong-key")
    expect(restoreReasonOf(new Error("An object failed to be decrypted while unpickling"))).toBe("unpickling-failed")
    expect(restoreReasonOf(new Error("failed to unpickle the account"))).toBe("unpickling-failed")
    expect(restoreReasonOf(new Error("invalid JSON in account data"))).toBe("account-data-invalid")
    expect(restoreReasonOf(new Error("something else"))).toBe("sdk-internal")
  })
})
