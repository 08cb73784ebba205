import * as fs from "node:fs"
import { SqliteFile } from "../src/layers/durable-idb/sqliteFile.js"
import { openDurableIdb } from "../src/layers/durable-idb/durableIdb.js"
const src = "/tmp/h-store/new50k/sessions/matrix/matrix-sdk-crypto.sqlite3"
const dst = "/tmp/h-store/phase/crypto.sqlite3"
fs.rmSync("/tmp/h-store/phase", { recursive: true, force: true })
fs.mkdirSync("/tmp/h-store/phase", { mode: 0o700 })
fs.copyFileSync(src, dst)
fs.chmodSync(dst, 0o600)
const pass = "bench passphrase"
let scanMs = 0, visitMs = 0
const orig = SqliteFile.prototype.scanKeys
SqliteFile.prototype.scanKeys = function(scan, visit) {
  const t = performance.now()
  let v = 0
  orig.call(this, scan, (k, ix) => { const a = performance.now(); visit(k, ix); v += performance.now() - a })
  scanMs += performance.now() - t - v
  visitMs += v
}
// the crypto file's role name as CryptoStoreLive uses it
const role = process.env["ROLE"] ?? "crypto"
for (let i = 0; i < 3; i++) {
  scanMs = 0; visitMs = 0
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  const f = await SqliteFile.open(dst, role, { encrypted: true, passphrase: pass })
  const t1 = performance.now()
  const idb = await openDurableIdb([f], () => f)
  const t2 = performance.now()
  const c = process.cpuUsage(c0)
  console.log(JSON.stringify({ openFile: Math.round(t1 - t0), idb: Math.round(t2 - t1), cpu: Math.round((c.user + c.system) / 1000), rebuilt: f.stats.indexKeysRebuilt, scanMs: Math.round(scanMs), visitMs: Math.round(visitMs) }))
  idb.detach()
  f.close()
}
