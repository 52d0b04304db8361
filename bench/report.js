#!/usr/bin/env node
// Builds the side-by-side table from the JSON files written by bench/run, prints it (Markdown), and with
// --append FILE inserts it at the end of FILE's "## Side by side with the legacy JS plugin" section (creating the
// section at the end of the file if it is missing).
//
// Usage: node bench/report.js --dir DIR [--append BENCHMARKS.md] [--date D] [--machine M] [--commit C]
// Input files in DIR (each optional; a missing or unreadable file makes its rows "not available"):
//   trustline.json  ilp-bridge trustline (format of bench/legacy_trustline.js: {results:[{in_flight,...}]})
//   legacy.json     legacy JS plugin trustline (bench/legacy_trustline.js)
//   legacy_pg_server.json, legacy_pg_both.json  the same with the server plugin's store, or both stores, in
//                   PostgreSQL as ILP Kit kept it (bench/legacy_trustline.js --pg-stores server|both)
//   pg_commit.json  {synchronous_commit, fsync, p50_ms, p99_ms, ...}: that PostgreSQL's commit latency
//                   (bench/pg_commit_probe.js)
//   bridge.json     bridge mode: ILPv4 through the bridge to a trustline peer (benches/harness_bridge.rs)
//   settle.json     {connections, accepted_per_s, p50_ms, p99_ms, ...}
//   idle.json       {idle_peers, per_peer_kib, ...}
//   legacy_idle.json  the same for the legacy plugin (bench/legacy_idle_peers.js)
//   startup.json    {finished_transfers, startup_s, ...}
//   *.note          one line explaining why a file is missing (shown under the table)
'use strict'
const fs = require('fs')
const path = require('path')

const SECTION = '## Side by side with the legacy JS plugin'

function args (argv) {
  const o = { dir: null, append: null, date: new Date().toISOString(), machine: '?', commit: '?', duration: null }
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i]; const v = argv[++i]
    if (k === '--dir') o.dir = v
    else if (k === '--append') o.append = v
    else if (k === '--date') o.date = v
    else if (k === '--machine') o.machine = v
    else if (k === '--commit') o.commit = v
    else if (k === '--duration') o.duration = v
    else { console.error('unknown argument ' + k); process.exit(2) }
  }
  if (!o.dir) { console.error('--dir is required'); process.exit(2) }
  return o
}

const o = args(process.argv)
const read = (name) => {
  try { return JSON.parse(fs.readFileSync(path.join(o.dir, name), 'utf8').trim().split('\n').pop()) } catch (e) { return null }
}
const note = (name) => {
  try { return fs.readFileSync(path.join(o.dir, name + '.note'), 'utf8').trim() } catch (e) { return null }
}

const bridge = read('trustline.json')
const legacy = read('legacy.json')
const settle = read('settle.json')
const idle = read('idle.json')
const startup = read('startup.json')
const legacyIdle = read('legacy_idle.json')

const at = (doc, n) => doc && Array.isArray(doc.results) ? doc.results.find((r) => r.in_flight === n) || null : null
const num = (x) => typeof x === 'number' && isFinite(x) ? x : null
const fmt = (x, unit) => {
  if (x === null) return 'not available'
  const digits = x >= 100 ? 0 : x >= 10 ? 1 : x >= 1 ? 2 : 3
  const s = x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
  return unit ? s + ' ' + unit : s
}
// ratio = how many times better ilp-bridge is: throughput bridge/legacy, latency and memory legacy/bridge.
const ratio = (b, l, higherBetter) => {
  if (b === null || l === null || b === 0 || l === 0) return '—'
  const r = higherBetter ? b / l : l / b
  return (r >= 10 ? r.toFixed(0) : r.toFixed(1)) + '×'
}
// target check: ✅ met, ❌ missed, blank when not measured.
const check = (x, target, op) => x === null ? '' : ((op === '>=' ? x >= target : x < target) ? ' ✅' : ' ❌')
const checkLe = (x, target) => x === null ? '' : (x <= target ? ' ✅' : ' ❌')

const rows = []
// Targets (issue 19): ratios to limits measured in the same run where the disk sets the limit, plus the software
// cost per transfer, which no disk excuses. The one-at-a-time durable bound is three synced writes in sequence.
const fsyncBefore = read('fsync_before.json')
const fsyncP50 = num(fsyncBefore && fsyncBefore.p50_ms)
const durableBound = fsyncP50 ? 1000 / (3 * fsyncP50) : null
const TARGET = {
  durableOneShare: 0.8, fifty: 40000, fiftyP99: 5, ramOne: 10000, ramOneP99: 0.3,
  cpuRamOne: 60, cpuFifty: 35, settle: 40000, settleP99: 3, idleKiB: 20
}
const label = (n) => n === 1 ? 'one at a time' : n + ' in flight'
{
  const b = at(bridge, 1); const l = at(legacy, 1)
  const bRate = num(b && b.transfers_per_s); const lRate = num(l && l.transfers_per_s)
  const share = bRate !== null && durableBound ? bRate / durableBound : null
  rows.push(['trustline transfers/s, one at a time, durable', fmt(bRate), fmt(lRate), ratio(bRate, lRate, true),
    durableBound === null ? 'bound not measured'
      : '≥ 80 % of 1/(3 × fsync p50) = ' + fmt(durableBound) + (share === null ? '' : ' (' + Math.round(100 * share) + ' %)') +
        check(share, TARGET.durableOneShare, '>=')])
  rows.push(['trustline p50 latency, one at a time, durable', fmt(num(b && b.p50_ms), 'ms'), fmt(num(l && l.p50_ms), 'ms'),
    ratio(num(b && b.p50_ms), num(l && l.p50_ms), false), ''])
  rows.push(['trustline p99 latency, one at a time, durable', fmt(num(b && b.p99_ms), 'ms'), fmt(num(l && l.p99_ms), 'ms'),
    ratio(num(b && b.p99_ms), num(l && l.p99_ms), false), ''])
}
{
  const b = at(bridge, 50); const l = at(legacy, 50)
  const bRate = num(b && b.transfers_per_s); const lRate = num(l && l.transfers_per_s)
  const bP99 = num(b && b.p99_ms); const lP99 = num(l && l.p99_ms)
  rows.push(['trustline transfers/s, 50 in flight, durable', fmt(bRate), fmt(lRate), ratio(bRate, lRate, true),
    '≥ 40,000' + check(bRate, TARGET.fifty, '>=')])
  rows.push(['trustline p50 latency, 50 in flight, durable', fmt(num(b && b.p50_ms), 'ms'), fmt(num(l && l.p50_ms), 'ms'),
    ratio(num(b && b.p50_ms), num(l && l.p50_ms), false), ''])
  rows.push(['trustline p99 latency, 50 in flight, durable', fmt(bP99, 'ms'), fmt(lP99, 'ms'), ratio(bP99, lP99, false),
    '< 5 ms' + check(bP99, TARGET.fiftyP99, '<')])
  const cpu = num(b && b.cpu_us_per_op)
  rows.push(['process CPU per transfer, 50 in flight, durable', fmt(cpu, 'µs'), '—', '—', '≤ 35 µs' + checkLe(cpu, TARGET.cpuFifty)])
}
// The 50-in-flight row against stores that already hold a long history.
{
  const h = read('trustline_history.json')
  const r = at(h, 50); const empty = at(bridge, 50)
  const hRate = num(r && r.transfers_per_s); const eRate = num(empty && empty.transfers_per_s)
  const n = h && h.finished_transfers_in_store ? h.finished_transfers_in_store : 10000000
  const share = hRate !== null && eRate ? hRate / eRate : null
  rows.push(['trustline transfers/s, 50 in flight, durable, ' + n.toLocaleString('en-US') + ' finished transfers in each store',
    fmt(hRate), '—', '—',
    eRate === null ? '' : '≥ 0.9 × the empty store\'s ' + fmt(eRate) + (share === null ? '' : ' (' + share.toFixed(2) + '×)') +
      check(share, 0.9, '>=') + ', p99 ' + fmt(num(r && r.p99_ms), 'ms')])
}
// The same benchmark with the stores in RAM: the software cost without the disk. The legacy plugin keeps its
// store in memory too, so these rows compare like with like and get a ratio.
const ram = read('trustline_ram.json')
for (const n of [1, 50]) {
  const r = at(ram, n); const l = at(legacy, n)
  const rRate = num(r && r.transfers_per_s); const lRate = num(l && l.transfers_per_s)
  const rP99 = num(r && r.p99_ms)
  rows.push(['trustline transfers/s, ' + label(n) + ', stores in RAM (fsync free; legacy: in-memory store)',
    fmt(rRate), fmt(lRate), ratio(rRate, lRate, true),
    n === 1 ? '≥ 10,000' + check(rRate, TARGET.ramOne, '>=') + ', p99 ' + fmt(rP99, 'ms') + ' (< 0.3 ms' + check(rP99, TARGET.ramOneP99, '<') + ')'
      : 'p99 ' + fmt(rP99, 'ms')])
  if (n === 1) {
    const cpu = num(r && r.cpu_us_per_op)
    rows.push(['process CPU per transfer, one at a time, stores in RAM', fmt(cpu, 'µs'), '—', '—', '≤ 60 µs' + checkLe(cpu, TARGET.cpuRamOne)])
  }
}

// The same two rows with the runtime on one worker thread (the node's `worker_threads = 1`).
for (const [file, where] of [['trustline_1w.json', 'durable'], ['trustline_ram_1w.json', 'stores in RAM']]) {
  const doc = read(file)
  for (const n of [1, 50]) {
    const r = at(doc, n)
    rows.push(['trustline transfers/s, ' + label(n) + ', ' + where + ', worker_threads = 1', fmt(num(r && r.transfers_per_s)),
      '—', '—', 'p99 ' + fmt(num(r && r.p99_ms), 'ms') + ', CPU per transfer ' + fmt(num(r && r.cpu_us_per_op), 'µs')])
  }
}

// Bridge mode: ILPv4 Prepares from a modern connector through the bridge to a trustline peer. Beside the direct
// trustline row, the difference is the translation and the modern side's own log.
const bridged = read('bridge.json')
for (const n of [1, 50]) {
  const r = at(bridged, n); const t = at(bridge, n)
  const rRate = num(r && r.transfers_per_s); const tRate = num(t && t.transfers_per_s)
  const label = n === 1 ? 'one at a time' : n + ' in flight'
  rows.push(['bridge mode (ILPv4 over BTP/2.0 → BTP/1.0 peer) transfers/s, ' + label, fmt(rRate), 'n/a (no bridge)', '—',
    'direct trustline row: ' + fmt(tRate) + (rRate !== null && tRate ? ' (' + Math.round(100 * rRate / tRate) + ' %)' : '') +
    ', p99 ' + fmt(num(r && r.p99_ms), 'ms')])
}

// The legacy plugin with its store in PostgreSQL, as ILP Kit ran it: durable (synchronous_commit on), so compared
// with ilp-bridge's durable trustline rows.
const legacyPg = { server: read('legacy_pg_server.json'), both: read('legacy_pg_both.json') }
const PG_LABEL = {
  server: 'legacy: server plugin\'s store in PostgreSQL (ILP Kit\'s set-up), client\'s in memory',
  both: 'legacy: both stores in PostgreSQL'
}
for (const stores of ['server', 'both']) {
  for (const n of [1, 50]) {
    const b = at(bridge, n); const l = at(legacyPg[stores], n)
    const bRate = num(b && b.transfers_per_s); const lRate = num(l && l.transfers_per_s)
    const bP99 = num(b && b.p99_ms); const lP99 = num(l && l.p99_ms)
    const label = (n === 1 ? 'one at a time' : n + ' in flight') + ', durable (' + PG_LABEL[stores] + ')'
    rows.push(['trustline transfers/s, ' + label, fmt(bRate), fmt(lRate), ratio(bRate, lRate, true),
      l ? 'legacy p50 ' + fmt(num(l.p50_ms), 'ms') : ''])
    rows.push(['trustline p99 latency, ' + label, fmt(bP99, 'ms'), fmt(lP99, 'ms'), ratio(bP99, lP99, false), ''])
  }
}
const pgCommit = read('pg_commit.json')
rows.push(['(context) PostgreSQL commit of a single-row upsert' +
  (pgCommit ? ' (synchronous_commit ' + pgCommit.synchronous_commit + ', fsync ' + pgCommit.fsync + ')' : '') +
  ', the legacy rows\' store, p50 / p99', '—',
  pgCommit ? fmt(num(pgCommit.p50_ms), 'ms') + ' / ' + fmt(num(pgCommit.p99_ms), 'ms') : 'not available', '—', ''])

for (const [name, when] of [['fsync_before', 'before'], ['fsync_after', 'after']]) {
  const f = read(name + '.json')
  rows.push(['(context) disk fdatasync of a 150-byte append, ' + when + ' the durable rows, p50 / p99',
    f ? fmt(num(f.p50_ms), 'ms') + ' / ' + fmt(num(f.p99_ms), 'ms') : 'not available', '—', '—', ''])
}

const sRate = num(settle && settle.accepted_per_s); const sP99 = num(settle && settle.p99_ms)
const conns = settle && settle.connections ? settle.connections : 32
rows.push(['settle requests accepted/s, ' + conns + ' connections', fmt(sRate), 'n/a (no engine)', '—',
  '≥ 40,000' + check(sRate, TARGET.settle, '>=')])
rows.push(['settle request p99, ' + conns + ' connections', fmt(sP99, 'ms'), 'n/a', '—', '< 3 ms' + check(sP99, TARGET.settleP99, '<')])

const perPeer = num(idle && idle.per_peer_kib)
const legacyPerPeer = num(legacyIdle && legacyIdle.per_peer_kib)
rows.push(['memory per idle peer (' + ((idle && idle.idle_peers) || 1000).toLocaleString('en-US') + ' peers)',
  fmt(perPeer, 'KiB'), legacyPerPeer === null ? 'not measured' : fmt(legacyPerPeer, 'KiB'),
  ratio(perPeer, legacyPerPeer, false), '≤ 20 KiB' + checkLe(perPeer, TARGET.idleKiB)])
const st = num(startup && startup.startup_s)
const stN = startup && startup.finished_transfers ? startup.finished_transfers : 1000000
rows.push(['start-up with ' + stN.toLocaleString('en-US') + ' finished transfers', fmt(st, 's'),
  'n/a (keeps no history index)', '—', '< 1 s' + check(st, 1, '<')])

const header = ['metric', 'ilp-bridge', 'legacy 1.3.5', 'ratio', 'target']
const lines = []
lines.push('### Run of ' + o.date)
lines.push('')
lines.push('Machine: ' + o.machine + '. Commit: `' + o.commit + '`.' + (o.duration ? ' Load points: ' + o.duration + '.' : ''))
if (bridge && bridge.implementation) lines.push('ilp-bridge side: ' + bridge.implementation + (bridge.store ? ', ' + bridge.store : '') + '.')
if (legacy && legacy.implementation) lines.push('Legacy side: ' + legacy.implementation + ', ' + legacy.store + ' store, ' + legacy.processes + ' process(es).')
const pgDoc = legacyPg.server || legacyPg.both
if (pgDoc && pgDoc.postgres) {
  const p = pgDoc.postgres
  lines.push('Legacy store in PostgreSQL: PostgreSQL ' + p.server_version + ', synchronous_commit ' + p.synchronous_commit +
    ', fsync ' + p.fsync + ' (' + p.wal_sync_method + '); ' + p.store + '; a pool of ' + p.pool_connections_per_process +
    ' connections per process (Sequelize 3\'s default).')
}
lines.push('')
lines.push('| ' + header.join(' | ') + ' |')
lines.push('|' + header.map(() => '--').join('|') + '|')
for (const r of rows) lines.push('| ' + r.join(' | ') + ' |')
const notes = []
for (const f of ['fsync_before', 'trustline', 'trustline_ram', 'trustline_1w', 'trustline_ram_1w', 'bridge', 'fsync_after', 'legacy', 'pg_commit',
  'legacy_pg_server', 'legacy_pg_both', 'settle', 'idle', 'legacy_idle', 'startup']) {
  const n = note(f)
  if (n) notes.push('- ' + f + ': ' + n)
}
const errs = []
for (const [name, doc] of [['ilp-bridge', bridge], ['ilp-bridge (stores in RAM)', ram], ['legacy', legacy],
  ['legacy (server store in PostgreSQL)', legacyPg.server], ['legacy (both stores in PostgreSQL)', legacyPg.both]]) {
  if (doc && Array.isArray(doc.results)) {
    for (const r of doc.results) if (r.errors) errs.push('- ' + name + ' at ' + r.in_flight + ' in flight: ' + r.errors + ' failed transfers')
  }
}
if (notes.length || errs.length) {
  lines.push('')
  lines.push(...notes, ...errs)
}
const table = lines.join('\n') + '\n'
process.stdout.write(table)

if (o.append) {
  let text = ''
  try { text = fs.readFileSync(o.append, 'utf8') } catch (e) { text = '# Benchmarks\n' }
  const start = text.indexOf('\n' + SECTION + '\n')
  if (start < 0) {
    text = text.replace(/\n*$/, '\n\n') + SECTION + '\n\n' + table
  } else {
    const bodyStart = start + 1 + SECTION.length + 1
    const next = text.indexOf('\n## ', bodyStart)
    const end = next < 0 ? text.length : next + 1
    const before = text.slice(0, end).replace(/\n*$/, '\n\n')
    const after = text.slice(end)
    text = before + table + (after ? '\n' + after : '')
  }
  fs.writeFileSync(o.append, text)
}
