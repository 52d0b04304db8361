#!/usr/bin/env node
// Legacy side of the issue 7 trustline benchmark: two real `ilp-plugin-payment-channel-framework` 1.3.5 plugins
// (stateful, in-memory store, BTP/1.0 over one loopback websocket). The client sends conditional transfers, the
// server fulfills each one in its `incoming_prepare` handler; a transfer counts as done when the client has the
// Response to its Prepare and has processed the Fulfill (its Response to the Fulfill is written right after).
// Closed loop: N workers each keep one transfer in flight. Prints one JSON object on stdout.
//
// Usage: node --unhandled-rejections=warn bench/legacy_trustline.js [--in-flight 1,50] [--duration-ms 10000]
//          [--warmup-ms 1000] [--processes 2|1] [--modules DIR]
//          [--pg-url URL --pg-stores server|both [--pg-pool-connections N] [--pg-store-module FILE]]
// --processes 2 (default) runs the server plugin in a child process, so each side has its own event loop (the
// legacy plugin is single-threaded; this is the most favourable set-up for it on a 2-core machine).
// --pg-url keeps stores in that PostgreSQL database the way ILP Kit kept them (tests/node/pg-store/store.js:
// one Sequelize 3 style table "plugin_store_<prefix>s" per plugin, an upsert per put, one query per store call,
// a pool of Sequelize 3's default 5 connections per process): `server` for the server plugin only (ILP Kit's
// connector side, which held the store), `both` for both plugins (each its own table). Without it both stores
// are in memory.
'use strict'
const path = require('path')
const net = require('net')
const crypto = require('crypto')
const { fork } = require('child_process')

function parseArgs (argv) {
  const o = { inFlight: [1, 50], durationMs: 10000, warmupMs: 1000, processes: 2, role: 'main', port: 0,
    modules: path.join(__dirname, '..', 'tests', 'node', 'legacy-1.3.5', 'node_modules'),
    pgUrl: null, pgStores: 'none', pgPoolConnections: null,
    pgStoreModule: path.join(__dirname, '..', 'tests', 'node', 'pg-store', 'store.js') }
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]; const v = argv[i + 1]
    if (a === '--in-flight') { o.inFlight = v.split(',').map(Number); i++ }
    else if (a === '--duration-ms') { o.durationMs = +v; i++ }
    else if (a === '--warmup-ms') { o.warmupMs = +v; i++ }
    else if (a === '--processes') { o.processes = +v; i++ }
    else if (a === '--modules') { o.modules = path.resolve(v); i++ }
    else if (a === '--role') { o.role = v; i++ }
    else if (a === '--port') { o.port = +v; i++ }
    else if (a === '--pg-url') { o.pgUrl = v; i++ }
    else if (a === '--pg-stores') { o.pgStores = v; i++ }
    else if (a === '--pg-pool-connections') { o.pgPoolConnections = +v; i++ }
    else if (a === '--pg-store-module') { o.pgStoreModule = path.resolve(v); i++ }
    else { console.error('unknown argument ' + a); process.exit(2) }
  }
  if (!o.inFlight.every((n) => Number.isInteger(n) && n > 0)) { console.error('bad --in-flight'); process.exit(2) }
  if (!['none', 'server', 'both'].includes(o.pgStores)) { console.error('bad --pg-stores'); process.exit(2) }
  if ((o.pgStores === 'none') !== (o.pgUrl === null)) {
    console.error('--pg-url and --pg-stores server|both go together'); process.exit(2)
  }
  if (o.pgPoolConnections !== null && !(Number.isInteger(o.pgPoolConnections) && o.pgPoolConnections > 0)) {
    console.error('bad --pg-pool-connections'); process.exit(2)
  }
  return o
}

const opts = parseArgs(process.argv)
const Plugin = require(path.join(opts.modules, 'ilp-plugin-payment-channel-framework'))
const ilpPacket = require(path.join(opts.modules, 'ilp-packet'))

const SECRET = 'bench-secret'
const PREFIX = 'bench.legacy.'
// The client plugin's table when its store is in PostgreSQL too: ILP Kit had one table per ledger, and the two
// plugins here share one database, so the client side's ledger gets a prefix of its own.
const CLIENT_TABLE_PREFIX = 'bench.legacy.client.'
const SequelizeStore = opts.pgUrl === null ? null : require(opts.pgStoreModule)
const pgPoolConnections = SequelizeStore === null ? null
  : (opts.pgPoolConnections || SequelizeStore.SEQUELIZE3_POOL_MAX_CONNECTIONS)
const serverStore = () => opts.pgUrl === null ? new MemStore()
  : new SequelizeStore(opts.pgUrl, PREFIX, { poolMaxConnections: pgPoolConnections })
const clientStore = () => opts.pgStores !== 'both' ? new MemStore()
  : new SequelizeStore(opts.pgUrl, CLIENT_TABLE_PREFIX, { poolMaxConnections: pgPoolConnections })
// Large enough that a 10 s run at any plausible rate never hits the balance limit (amount 1 per transfer).
const MAX_BALANCE = '1000000000000000000'
const TRANSFER_EXPIRY_MS = 30000

const b64u = (b) => b.toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')
const FULFILLMENT_BYTES = crypto.createHash('sha256').update('ilp-bridge benchmark preimage').digest()
const FULFILLMENT = b64u(FULFILLMENT_BYTES)
const CONDITION = b64u(crypto.createHash('sha256').update(FULFILLMENT_BYTES).digest())

class MemStore {
  constructor () { this.m = new Map() }
  get (k) { return Promise.resolve(this.m.get(k)) }
  put (k, v) { this.m.set(k, v); return Promise.resolve(null) }
  del (k) { this.m.delete(k); return Promise.resolve(null) }
}

function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)) })
  })
}

async function startServer (port) {
  const server = new Plugin({
    listener: { port }, prefix: PREFIX, info: { currencyCode: 'USD', currencyScale: 9, connectors: [] },
    incomingSecret: SECRET, maxBalance: MAX_BALANCE, _store: serverStore()
  })
  let fulfillErrors = 0
  server.on('incoming_prepare', (t) => {
    server.fulfillCondition(t.id, FULFILLMENT).catch(() => { fulfillErrors++ })
  })
  // The listener starts asynchronously inside the constructor; wait until it accepts connections.
  for (let i = 0; i < 500; i++) {
    if (server._listener && server._listener.server && server._listener.server.listening) break
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  await server.connect()
  return { server, fulfillErrors: () => fulfillErrors }
}

function percentile (sorted, p) {
  if (sorted.length === 0) return null
  const idx = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)
  return sorted[Math.max(0, idx)]
}

async function runLoad (client, inFlight, warmupMs, durationMs) {
  const pending = new Map() // transfer id -> { acked, fulfilled, resolve }
  const onFulfill = (t) => {
    const p = pending.get(t.id)
    if (p) { p.fulfilled = true; if (p.acked) p.resolve() }
  }
  client.on('outgoing_fulfill', onFulfill)
  const to = client.getPeerAccount()
  const ilp = b64u(ilpPacket.serializeIlpPayment({ account: to + '.bob', amount: '1', data: '' }))

  const one = () => {
    const id = crypto.randomUUID()
    return new Promise((resolve, reject) => {
      const entry = { acked: false, fulfilled: false, resolve }
      pending.set(id, entry)
      client.sendTransfer({
        id, to, amount: '1', executionCondition: CONDITION, ilp,
        expiresAt: new Date(Date.now() + TRANSFER_EXPIRY_MS).toISOString()
      }).then(() => { entry.acked = true; if (entry.fulfilled) resolve() }, reject)
    }).finally(() => { pending.delete(id) })
  }

  const latenciesUs = []
  let completed = 0; let errors = 0
  const t0 = Date.now()
  const measureFrom = t0 + warmupMs
  const stopAt = measureFrom + durationMs
  const worker = async () => {
    while (true) {
      const start = process.hrtime.bigint()
      const startWall = Date.now()
      if (startWall >= stopAt) return
      try {
        await one()
        if (startWall >= measureFrom) {
          latenciesUs.push(Number(process.hrtime.bigint() - start) / 1000)
          completed++
        }
      } catch (e) {
        if (startWall >= measureFrom) errors++
      }
    }
  }
  // Wait until the warm-up ends to take the reference time for the rate.
  let refNs = null
  const refTimer = setTimeout(() => { refNs = process.hrtime.bigint() }, warmupMs)
  await Promise.all(Array.from({ length: inFlight }, worker))
  clearTimeout(refTimer)
  const endNs = process.hrtime.bigint()
  client.removeListener('outgoing_fulfill', onFulfill)
  // Rate: transfers started after the warm-up and completed, over the time from the warm-up end to the last
  // completion.
  const elapsedS = refNs === null ? durationMs / 1000 : Number(endNs - refNs) / 1e9
  latenciesUs.sort((a, b) => a - b)
  const r3 = (x) => x === null ? null : Math.round(x * 1000) / 1000
  return {
    in_flight: inFlight,
    duration_s: r3(elapsedS),
    completed,
    errors,
    transfers_per_s: r3(completed / elapsedS),
    p50_ms: latenciesUs.length ? r3(percentile(latenciesUs, 50) / 1000) : null,
    p99_ms: latenciesUs.length ? r3(percentile(latenciesUs, 99) / 1000) : null,
    max_ms: r3(latenciesUs.length ? latenciesUs[latenciesUs.length - 1] / 1000 : null)
  }
}

// What the PostgreSQL rows ran against, read from the server itself (so the output states it, not assumes it).
async function pgSettings (poolConnections) {
  const pgPaths = [path.dirname(opts.pgStoreModule), path.join(__dirname, '..', 'tests', 'node', 'pg-store')]
  const { Client } = require(require.resolve('pg', { paths: pgPaths }))
  const c = new Client({ connectionString: opts.pgUrl })
  await c.connect()
  try {
    const show = async (name) => (await c.query('SHOW ' + name)).rows[0][name]
    return {
      server_version: await show('server_version'),
      synchronous_commit: await show('synchronous_commit'),
      fsync: await show('fsync'),
      wal_sync_method: await show('wal_sync_method'),
      tables: opts.pgStores === 'both'
        ? ['plugin_store_' + PREFIX + 's', 'plugin_store_' + CLIENT_TABLE_PREFIX + 's']
        : ['plugin_store_' + PREFIX + 's'],
      pool_connections_per_process: poolConnections,
      store: 'Sequelize 3 style table (key, value, "createdAt", "updatedAt"), INSERT ... ON CONFLICT upsert per put, one query per store call'
    }
  } finally {
    await c.end()
  }
}

async function mainRole () {
  const port = await freePort()
  let child = null
  let serverHandle = null
  const cleanup = () => { if (child && child.exitCode === null) child.kill('SIGKILL') }
  process.on('exit', cleanup)
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130) })

  if (opts.processes === 2) {
    const pgArgs = opts.pgUrl === null ? []
      : ['--pg-url', opts.pgUrl, '--pg-stores', opts.pgStores, '--pg-pool-connections', String(pgPoolConnections),
          '--pg-store-module', opts.pgStoreModule]
    child = fork(__filename, ['--role', 'server', '--port', String(port), '--modules', opts.modules, ...pgArgs],
      { execArgv: ['--unhandled-rejections=warn'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    await new Promise((resolve, reject) => {
      child.once('message', (m) => m === 'ready' ? resolve() : reject(new Error('server: ' + m)))
      child.once('exit', (code) => reject(new Error('server exited with ' + code)))
    })
  } else {
    serverHandle = await startServer(port)
  }

  const client = new Plugin({ server: 'btp+ws://:' + SECRET + '@127.0.0.1:' + port, maxBalance: MAX_BALANCE,
    _store: clientStore() })
  await client.connect()

  const results = []
  for (const n of opts.inFlight) {
    results.push(await runLoad(client, n, opts.warmupMs, opts.durationMs))
  }
  const out = {
    implementation: 'legacy ilp-plugin-payment-channel-framework 1.3.5 (node ' + process.version + ')',
    store: opts.pgStores === 'none' ? 'in-memory'
      : opts.pgStores === 'server' ? 'server plugin in PostgreSQL, client in-memory' : 'both plugins in PostgreSQL',
    processes: opts.processes,
    transport: 'BTP/1.0, one loopback websocket',
    workload: 'prepare -> fulfill -> response, closed loop, amount 1',
    results
  }
  if (opts.pgUrl !== null) out.postgres = await pgSettings(pgPoolConnections)
  if (serverHandle && serverHandle.fulfillErrors() > 0) out.server_fulfill_errors = serverHandle.fulfillErrors()
  process.stdout.write(JSON.stringify(out) + '\n')
  try { await client.disconnect() } catch (e) {}
  cleanup()
  process.exit(0)
}

async function serverRole () {
  await startServer(opts.port)
  process.send('ready')
  // Exit when the parent goes away (its IPC channel closes).
  process.on('disconnect', () => process.exit(0))
}

(opts.role === 'server' ? serverRole() : mainRole()).catch((e) => {
  console.error('legacy benchmark failed:', e && e.stack ? e.stack : e)
  if (process.send) { try { process.send(String(e)) } catch (_) {} }
  process.exit(1)
})
