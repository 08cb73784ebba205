import { Context, type Effect } from "effect"

/**
 * Counters, gauges and histograms the daemon's parts update; the registry is rendered as Prometheus text
 * on `GET /metrics`. Names are the reference's (§13.3) where one exists; `carapace_gateway_*` are ours.
 * Labels must never carry secrets or user content (room ids and user ids included).
 */
export const METRICS = {
  carapace_matrix_inbound_dispatch_failures_total: {
    type: "counter",
    help: "Inbound dispatch failures by stage (dispatch, dlq_append)."
  },
  carapace_matrix_inbound_dlq_lost_event_ids_total: {
    type: "counter",
    help: "Inbound events lost because the DLQ could not record them."
  },
  carapace_matrix_sync_failures_total: {
    type: "counter",
    help: "Failed /sync cycles by class (transient, permanent)."
  },
  carapace_matrix_unsupported_inbound_total: {
    type: "counter",
    help: "Inbound events dropped as unsupported by kind (encrypted_room, msgtype, oversize)."
  },
  carapace_matrix_inbound_refused_total: {
    type: "counter",
    help:
      "Inbound messages not answered by reason (budget_room, budget_sender, unencrypted_in_encrypted_room, not_cross_signed)."
  },
  carapace_matrix_inbound_budget_notices_total: {
    type: "counter",
    help: "Notices sent for the first budget refusal of a window."
  },
  carapace_matrix_pending_verifications: { type: "gauge", help: "Verification flows currently held by the daemon." },
  carapace_matrix_dlq_records: {
    type: "gauge",
    help: "Records in the inbound DLQ at the last sample (-1: sampling failed)."
  },
  carapace_matrix_outbound_send_duration_seconds: {
    type: "histogram",
    help: "Duration of outbound Matrix sends.",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
  },
  carapace_matrix_sync_cycle_seconds: {
    type: "histogram",
    help: "Duration of one /sync cycle, long-poll wait included (a watchdog expiry counts as 120 s; backoff excluded).",
    buckets: [1, 5, 10, 30, 60, 120, 300]
  },
  carapace_matrix_last_successful_sync_age_seconds: {
    type: "gauge",
    help: "Seconds since the homeserver last answered a /sync (absent before the first one)."
  },
  carapace_matrix_verification_rate_limit_drops_total: {
    type: "counter",
    help: "Verification WebSocket events dropped by the per-peer rate limit."
  },
  carapace_matrix_outbound_pending_replies: {
    type: "gauge",
    help: "Replies whose send failed and that are not sent yet (retried)."
  },
  carapace_matrix_outbound_pending_oldest_age_seconds: {
    type: "gauge",
    help: "Seconds since the oldest pending reply first failed (0 when none)."
  },
  carapace_matrix_joined_rooms: {
    type: "gauge",
    help: "Joined Matrix rooms by encryption (encrypted, unencrypted, unsupported)."
  },
  carapace_matrix_undecryptable_events: { type: "gauge", help: "Events the daemon could not decrypt, since start." },
  carapace_channel_up: { type: "gauge", help: "1 when the channel is connected, else 0." },
  carapace_gateway_auth_failures_total: { type: "counter", help: "Refused control requests by reason." },
  carapace_gateway_rate_limited_total: { type: "counter", help: "Control requests refused by the per-IP rate limit." },
  carapace_gateway_ws_connections: { type: "gauge", help: "Open WebSocket connections." },
  carapace_build_info: { type: "gauge", help: "Always 1; the version label is the running cara version." }
} as const

export type MetricName = keyof typeof METRICS
export type Labels = Readonly<Record<string, string>>

export interface MetricsShape {
  readonly increment: (name: MetricName, labels?: Labels, by?: number) => Effect.Effect<void>
  readonly set: (name: MetricName, value: number, labels?: Labels) => Effect.Effect<void>
  readonly observe: (name: MetricName, value: number, labels?: Labels) => Effect.Effect<void>
  /** The Prometheus text exposition (format 0.0.4) of every metric, values derived from live state included. */
  readonly render: Effect.Effect<string>
}

export class Metrics extends Context.Tag("cara/Metrics")<Metrics, MetricsShape>() {}
