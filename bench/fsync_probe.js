// Measures this disk's fdatasync latency the way a write-ahead log meets it: append a small record, then
// fdatasync, N times in a row, in the benchmark's data folder. Prints one JSON line with the percentiles.
//
//   node bench/fsync_probe.js --dir DIR [--count 400] [--bytes 150]
//
// bench/run prints it next to the durable rows: every durable change waits for at least one such sync, so
// its p50/p99 bound what the trustline and settle rows can show on this machine.
'use strict'
const fs = require('fs')
const path = require('path')

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf('--' + name)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
}
const dir = opt('dir', null)
const count = Number(opt('count', '400'))
const bytes = Number(opt('bytes', '150'))
if (!dir || !Number.isInteger(count) || count < 10 || !Number.isInteger(bytes) || bytes < 1) {
  process.stderr.write('usage: node bench/fsync_probe.js --dir DIR [--count N>=10] [--bytes N>=1]\n')
  process.exit(2)
}

const file = path.join(dir, 'fsync-probe-' + process.pid)
const record = Buffer.alloc(bytes, 0x78)
const fd = fs.openSync(file, 'a')
const ms = []
try {
  for (let i = 0; i < count; i++) {
    fs.writeSync(fd, record)
    const t = process.hrtime.bigint()
    fs.fdatasyncSync(fd)
    ms.push(Number(process.hrtime.bigint() - t) / 1e6)
  }
} finally {
  fs.closeSync(fd)
  fs.unlinkSync(file)
}
ms.sort((a, b) => a - b)
const pct = (p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]
process.stdout.write(JSON.stringify({
  what: 'fdatasync after a ' + bytes + '-byte append',
  count,
  p50_ms: pct(0.5),
  p90_ms: pct(0.9),
  p99_ms: pct(0.99),
  max_ms: ms[ms.length - 1]
}) + '\n')
