// What an operator does next, by error kind: ONE table, stated once per kind. The CLI appends an entry to
// an error it prints (`cara status`, `cara verify`, `cara matrix …`, failures), and leaves it out when the
// message it shows already carries that advice, so no sentence is read twice.
import type {
  BadGatewayKind,
  BadRequestKind,
  ForbiddenKind,
  NotFoundKind,
  ServiceUnavailableKind,
  TooManyRequestsKind,
  UnauthorizedKind,
  UnsupportedMediaTypeKind
} from "./api.js"
import type {
  InvalidVerificationUser,
  VerificationFailed,
  VerificationFlowNotFound,
  VerificationFlowNotReady,
  VerificationFlowTerminal,
  VerificationTargetNotFound,
  VerificationTimeout
} from "./verification.js"

/** Every kind an answer of the control API can carry (src/domain/api.ts). */
export type ApiErrorKind =
  | typeof BadRequestKind.Type
  | typeof UnauthorizedKind.Type
  | typeof ForbiddenKind.Type
  | typeof NotFoundKind.Type
  | typeof UnsupportedMediaTypeKind.Type
  | typeof TooManyRequestsKind.Type
  | typeof BadGatewayKind.Type
  | typeof ServiceUnavailableKind.Type
  | (
    | VerificationFlowNotFound
    | VerificationFlowNotReady
    | VerificationFlowTerminal
    | VerificationTargetNotFound
    | InvalidVerificationUser
    | VerificationFailed
    | VerificationTimeout
  )["kind"]

/** The Matrix channel's `lastErrorKind` values (reference §12.2). */
export type ChannelErrorKind =
  | "startup-failed"
  | "interrupted-rekey"
  | "encrypted-store-passphrase-mismatch"
  | "missing-store-secret"
  | "store-key-derivation"
  | "installation-id"
  | "client-build"
  | "encrypted-state-io"
  | "clock"
  | "auth"
  | "auth-probe"
  | "auth-token-revoked"
  | "auth-session-user-mismatch"
  | "auth-session-device-mismatch"
  | "auth-session-missing-device-id"
  | "token-persistence"
  | "recovery-key-restore-failed"
  | "cross-signing-bootstrap-failed"
  | "sync-failed"
  | "sync-loop-give-up"
  | "not-connected"

/** Kinds the CLI itself gives (the gateway could not be asked, or the config is not there). */
export type CliErrorKind =
  | "gateway-unreachable"
  | "gateway-timeout"
  | "gateway-bad-response"
  | "gateway-token-missing"
  | "gateway-plaintext-remote"
  | "config-invalid"
  | "config-missing"

export type RemediationKind = ApiErrorKind | ChannelErrorKind | CliErrorKind

const RESTART = "then restart the daemon"

/** The one table. Exhaustive: a new kind does not compile until it says what to do. */
export const REMEDIATION: { readonly [K in RemediationKind]: string } = {
  // the Matrix channel (GET /control/channels lastErrorKind)
  "startup-failed": "inspect the daemon log for the startup error, fix it and restart the daemon",
  "interrupted-rekey":
    "stop the daemon, then re-run `cara matrix rekey-store --new` (idempotent); do not delete the marker or pending files",
  "encrypted-store-passphrase-mismatch":
    "set the CARAPACE_CONFIG_PASSWORD (or MATRIX_STORE_PASSPHRASE) the store was created with, or finish an interrupted rekey, then restart",
  "missing-store-secret":
    "set CARAPACE_CONFIG_PASSWORD (or matrix.storePassphrase / MATRIX_STORE_PASSPHRASE) in the daemon environment and restart",
  "store-key-derivation":
    "check CARAPACE_CONFIG_PASSWORD and the installation_id file in the state directory, then restart",
  "installation-id": "make the state directory writable (or restore installation_id) and restart",
  "client-build": "check ownership and permissions of the Matrix state directory and store, then restart",
  "encrypted-state-io": "check ownership, permissions and free space of the Matrix state directory, then restart",
  "clock": "fix the system clock (enable NTP) and restart",
  "auth": `check matrix.password / matrix.accessToken, ${RESTART}`,
  "auth-probe": "transient homeserver problem: wait a few seconds and rerun",
  "auth-token-revoked":
    "mint a new access token (or fix the password), update matrix.accessToken and matrix.deviceId, then restart",
  "auth-session-user-mismatch": "the access token belongs to another user: check matrix.userId or rotate the token",
  "auth-session-device-mismatch": "the access token belongs to another device: check matrix.deviceId",
  "auth-session-missing-device-id": "the homeserver did not report a device id: log in with the password again",
  "token-persistence":
    "set CARAPACE_CONFIG_PASSWORD in the daemon environment so the access token can be sealed, then restart",
  "recovery-key-restore-failed":
    "verify the recovery key in Element, run `cara matrix recovery-key restore`, then restart",
  "cross-signing-bootstrap-failed": "provide matrix.password once so cross-signing can bootstrap, then restart",
  "sync-failed": "check homeserver reachability (DNS, network, TLS) from this host",
  "sync-loop-give-up":
    "investigate homeserver reachability and account state; the daemon keeps retrying and recovers by itself",
  "not-connected": "the Matrix runtime is still connecting or stopped: check the daemon log and rerun",
  // 400
  "invalid-request": "the request does not match this daemon's API: use a cara CLI of the daemon's version",
  "invalid-json": "send a JSON object with Content-Type: application/json",
  "invalid-room-id": "give a room id of the form !opaque:server (copy it from the room's settings)",
  "invalid-string": "remove control characters from the text and retry",
  "invalid-length": "shorten the text and retry",
  "body-too-large": "send a smaller request body",
  "websocket-handshake-invalid": "connect with a standard WebSocket client (RFC 6455)",
  "websocket-upgrade-required": "connect to /ws with a WebSocket upgrade",
  // 401, 403, 415, 429
  "unauthorized": "set CARAPACE_GATEWAY_TOKEN to the daemon's gateway.auth.token (gateway auth credentials) and rerun",
  "token-in-query": "send the token in the Authorization header, never in the URL; then rotate it (it may be in a log)",
  "non-local-client": "call the control API from this host (or through an ssh tunnel to 127.0.0.1)",
  "csrf-origin-mismatch": "call the control API without a browser Origin header (the cara CLI, curl)",
  "host-not-allowed": "use 127.0.0.1 or localhost as the host of the control API",
  "non-canonical-path": "use the path exactly as documented (no dot segments, no encoded slashes)",
  "unsupported-media-type": "send the body with Content-Type: application/json",
  "rate-limited": "wait for the time the answer names (Retry-After) and retry",
  // 404
  "not-found": "check the path against docs/cli.md and this daemon's version",
  "dlq-record-not-found":
    "the record id may be a typo or already replayed or purged; run `cara matrix dlq list` and copy the id exactly",
  // 502
  "send-failed": "transient homeserver problem: wait a few seconds and rerun",
  "send-terminal": "the homeserver refused the message: check the room, the bot's membership and its power level",
  "room-not-found": "invite the bot to the room (or check the room id), then rerun",
  "unsupported-room": "the room's encryption is not supported: use an unencrypted or a Megolm-encrypted room",
  "command-queue-full": "the runtime is busy: wait a few seconds and rerun",
  "dlq-dispatch-failure":
    "the agent failed again: read the daemon log for the cause, then `cara matrix dlq replay` again",
  // 503
  "matrix-runtime-unavailable":
    "start the daemon with matrix.enabled (or wait for it to connect); `cara status` shows the channel",
  "dlq-crypto":
    "the DLQ key is not available: set CARAPACE_CONFIG_PASSWORD (or the store passphrase) the daemon runs with, then restart",
  "dlq-io": "check ownership, permissions and free space of the state directory, then restart",
  "dlq-serialization": "a DLQ record could not be written: read the daemon log, then rerun",
  "dlq-cap-saturation": "the DLQ is full: replay (`cara matrix dlq replay --all`) or purge records",
  // verification (reference §6.6)
  "verification-flow-not-found":
    "the flow id may be a typo or already pruned; run `cara matrix verifications` and copy the flow id exactly.",
  "verification-flow-not-ready":
    "the flow hasn't advanced far enough yet: wait for the peer to respond (and for the `sas` field to appear in `cara matrix verifications`), then retry.",
  "verification-cancelled":
    "the flow is in a terminal state (cancelled / done / mismatched); start a new flow with `cara matrix verify <user>` or from the other client.",
  "verification-timeout":
    "the SDK request timed out; the action may have landed anyway. Run `cara matrix verifications` to see the current state.",
  "device-not-found":
    "list the user's devices in their client (or `cara matrix devices` for the bot's own) and copy the device id",
  "user-identity-not-found":
    "the user has no cross-signing identity yet: let them sign in to a client that sets one up, then retry",
  "invalid-user-id": "give a Matrix user id of the form @name:server",
  "verification": "read the daemon log for the SDK's error, then retry or start a new flow",
  // the CLI's own
  "gateway-unreachable": "Is the daemon running? Start it with: cara",
  "gateway-timeout": "the daemon is busy or stuck: check its log, then rerun",
  "gateway-bad-response": "the daemon answered in a form this CLI does not know: run the CLI of the daemon's version",
  "gateway-token-missing": "export CARAPACE_GATEWAY_TOKEN (or set gateway.auth.token) to see channel status",
  "gateway-plaintext-remote": "tunnel to localhost (ssh -L 18789:127.0.0.1:18789 host) and use --host 127.0.0.1",
  "config-invalid": "run `cara config check` and fix each path it lists",
  "config-missing": "create the config with `cara setup`"
}

const isRemediationKind = (kind: string): kind is RemediationKind => Object.hasOwn(REMEDIATION, kind)

const normalize = (s: string) => s.toLowerCase().replace(/[`'".,;:()\s]+/g, " ").trim()

/**
 * The advice for `kind`, unless `alreadySaid` (the message the operator reads with it) carries it already.
 * Unknown kinds (a newer daemon) have none.
 */
export const remediationFor = (kind: string | undefined, alreadySaid = ""): string | undefined => {
  if (kind === undefined || !isRemediationKind(kind)) return undefined
  const advice = REMEDIATION[kind]
  return normalize(alreadySaid).includes(normalize(advice)) ? undefined : advice
}
