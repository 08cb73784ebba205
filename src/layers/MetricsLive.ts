import { Effect, Layer } from "effect"
import { ChannelStatus } from "../services/ChannelStatus.js"
import { type Labels, type MetricName, METRICS, Metrics, type MetricsShape } from "../services/Metrics.js"
import { version } from "../version.js"

interface Histogram {
  readonly counts: Array<number>
  sum: number
  count: number
}

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, "\\\"")

const labelKey = (labels: Labels): string =>
  Object.keys(labels).sort().map((k) => `${k}="${escapeLabel(labels[k]!)}"`).join(",")

const withLabels = (name: string, key: string) => (key === "" ? name : `${name}{${key}}`)

const formatValue = (v: number) =>
  Number.isNaN(v) ? "NaN" : v === Infinity ? "+Inf" : v === -Infinity ? "-Inf" : String(v)

/** An in-memory registry; Matrix gauges are read from ChannelStatus at scrape time so they never go stale. */
export const MetricsLive = Layer.effect(
  Metrics,
  Effect.gen(function*() {
    const channels = yield* ChannelStatus
    const scalars = new Map<MetricName, Map<string, number>>()
    const histograms = new Map<MetricName, Map<string, Histogram>>()

    const scalar = (name: MetricName) => {
      let m = scalars.get(name)
      if (m === undefined) scalars.set(name, m = new Map())
      return m
    }

    const increment: MetricsShape["increment"] = (name, labels = {}, by = 1) =>
      Effect.sync(() => {
        const m = scalar(name)
        const key = labelKey(labels)
        m.set(key, (m.get(key) ?? 0) + by)
      })

    const set: MetricsShape["set"] = (name, value, labels = {}) =>
      Effect.sync(() => void scalar(name).set(labelKey(labels), value))

    const observe: MetricsShape["observe"] = (name, value, labels = {}) =>
      Effect.sync(() => {
        const def = METRICS[name]
        if (!("buckets" in def)) return
        let m = histograms.get(name)
        if (m === undefined) histograms.set(name, m = new Map())
        const key = labelKey(labels)
        let h = m.get(key)
        if (h === undefined) m.set(key, h = { counts: def.buckets.map(() => 0), sum: 0, count: 0 })
        def.buckets.forEach((b, i) => {
          if (value <= b) h.counts[i]! += 1
        })
        h.sum += value
        h.count += 1
      })

    const render = Effect.gen(function*() {
      const all = yield* channels.get
      // Live-state values override whatever was set by hand: the registry is the source of truth.
      const derived = new Map<MetricName, Map<string, number>>()
      const put = (name: MetricName, value: number, labels: Labels = {}) => {
        let m = derived.get(name)
        if (m === undefined) derived.set(name, m = new Map())
        m.set(labelKey(labels), value)
      }
      put("carapace_build_info", 1, { version })
      for (const c of all) {
        put("carapace_channel_up", c.status === "connected" ? 1 : 0, { channel: c.id })
        if (c.id === "matrix" && c.extra !== undefined) {
          const x = c.extra
          put("carapace_matrix_pending_verifications", x.pendingVerificationCount)
          put("carapace_matrix_joined_rooms", x.encryptedRoomCount - x.unsupportedRoomCount, {
            encryption: "encrypted"
          })
          put("carapace_matrix_joined_rooms", x.unencryptedRoomCount, { encryption: "unencrypted" })
          put("carapace_matrix_joined_rooms", x.unsupportedRoomCount, { encryption: "unsupported" })
          put("carapace_matrix_undecryptable_events", x.undecryptableEventCount)
          put("carapace_matrix_unsupported_inbound_total", x.peerDropEncryptedRoomTotal, { kind: "encrypted_room" })
          put("carapace_matrix_unsupported_inbound_total", x.peerDropUnsupportedMsgtypeTotal, { kind: "msgtype" })
          put("carapace_matrix_unsupported_inbound_total", x.peerDropBodyTooLargeTotal, { kind: "oversize" })
          put("carapace_matrix_inbound_refused_total", x.inboundBudgetRefusedRoomTotal, { reason: "budget_room" })
          put("carapace_matrix_inbound_refused_total", x.inboundBudgetRefusedSenderTotal, { reason: "budget_sender" })
          put("carapace_matrix_inbound_refused_total", x.peerDropUnencryptedInEncryptedRoomTotal, {
            reason: "unencrypted_in_encrypted_room"
          })
          put("carapace_matrix_inbound_refused_total", x.peerDropNotCrossSignedTotal, { reason: "not_cross_signed" })
          put("carapace_matrix_inbound_refused_total", x.inboundRedactedTotal, { reason: "redacted" })
          put("carapace_matrix_inbound_budget_notices_total", x.inboundBudgetNoticeTotal)
          if (x.inboundDlqRecordCount !== undefined) put("carapace_matrix_dlq_records", x.inboundDlqRecordCount)
          const now = Date.now()
          if (x.lastSuccessfulSyncAt !== null) {
            put("carapace_matrix_last_successful_sync_age_seconds", Math.max(0, (now - x.lastSuccessfulSyncAt) / 1000))
          }
          put("carapace_matrix_outbound_pending_replies", x.outboundPendingCount ?? 0)
          put(
            "carapace_matrix_outbound_pending_oldest_age_seconds",
            x.outboundPendingOldestAt === undefined ? 0 : Math.max(0, (now - x.outboundPendingOldestAt) / 1000)
          )
        }
      }

      const lines: Array<string> = []
      for (const name of Object.keys(METRICS) as Array<MetricName>) {
        const def = METRICS[name]
        lines.push(`# HELP ${name} ${def.help}`, `# TYPE ${name} ${def.type}`)
        if ("buckets" in def) {
          for (const [key, h] of histograms.get(name) ?? new Map<string, Histogram>()) {
            const sep = key === "" ? "" : ","
            def.buckets.forEach((b, i) => lines.push(`${name}_bucket{${key}${sep}le="${b}"} ${h.counts[i]}`))
            lines.push(`${name}_bucket{${key}${sep}le="+Inf"} ${h.count}`)
            lines.push(`${withLabels(`${name}_sum`, key)} ${formatValue(h.sum)}`)
            lines.push(`${withLabels(`${name}_count`, key)} ${h.count}`)
          }
          continue
        }
        const values = new Map([...(scalars.get(name) ?? []), ...(derived.get(name) ?? [])])
        // An unlabelled counter is exported as 0 before its first event, so rate() works from the start.
        if (values.size === 0 && def.type === "counter") values.set("", 0)
        for (const [key, v] of values) lines.push(`${withLabels(name, key)} ${formatValue(v)}`)
      }
      return lines.join("\n") + "\n"
    })

    return { increment, set, observe, render } satisfies MetricsShape
  })
)
