import { DatabaseSync } from "node:sqlite"
import * as crypto from "node:crypto"
import * as v8 from "node:v8"
const db = new DatabaseSync("/tmp/h-store/phase/crypto.sqlite3", { readOnly: true })
const key = crypto.randomBytes(32)
const ko = crypto.createSecretKey(key)
const t = (name: string, f: () => number) => { const c0 = process.cpuUsage(); const a = performance.now(); const n = f(); const c = process.cpuUsage(c0); console.log(name, n, Math.round(performance.now() - a), "ms wall", Math.round((c.user + c.system) / 1000), "ms cpu") }
const st = db.prepare("SELECT id, ix FROM ixs")
t("iterate", () => { let n = 0; for (const r of st.iterate() as any) n += r.ix.length; return n })
const rows = st.all() as Array<{ id: Uint8Array; ix: Uint8Array }>
t("all", () => (st.all() as any[]).length)
st.setReturnArrays?.(true)
t("all arrays", () => (st.all() as any[]).length)
// encrypt sample payloads like ix
const plains = rows.map((r) => Buffer.from(r.ix.subarray(29)))
const sealed = plains.map((p) => { const iv = crypto.randomBytes(12); const c = crypto.createCipheriv("aes-256-gcm", ko, iv); const b = Buffer.concat([c.update(p), c.final()]); return Buffer.concat([iv, c.getAuthTag(), b]) })
t("gcm open", () => { let n = 0; for (const s of sealed) { const d = crypto.createDecipheriv("aes-256-gcm", ko, s.subarray(0, 12)); d.setAuthTag(s.subarray(12, 28)); n += d.update(s.subarray(28)).length; d.final() } return n })
const ser = rows.map((r, i) => v8.serialize(["abcdefghijkl", "x".repeat(88), [0, 0, ["y".repeat(43), 1, "z".repeat(43)]]]))
t("v8 deser", () => { let n = 0; for (const s of ser) n += (v8.deserialize(s) as any[]).length; return n })
t("hmac", () => { let n = 0; for (const s of ser) n += crypto.createHmac("sha256", ko).update(s).digest().length; return n })
