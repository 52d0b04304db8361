#!/usr/bin/env node
// Legacy side of the issue 7 "memory per connected idle peer" row. The legacy plugin serves exactly one peer per
// plugin instance, so a legacy node with N peers is N stateful server plugins (each its own listener, in-memory
// store). A child process holds the N server plugins; this process dials each one with a legacy client plugin
// and waits until every one has authenticated and fetched its info. The figure is the child's
// (VmRSS after − VmRSS before) / N, read from /proc/<pid>/status, after a full GC on both readings.
// Prints one JSON object: {idle_peers, rss_before_kib, rss_after_kib, per_peer_kib}.
//
// Usage: node --unhandled-rejections=warn bench/legacy_idle_peers.js [--peers 1000] [--modules DIR]
'use strict'
const path = require('path')
const fs = require('fs')
const net = require('net')
const { fork } = require('child_process')

const o = { peers: 1000, role: 'main',
  modules: path.join(__dirname, '..', 'tests', 'node', 'legacy-1.3.5', 'node_modules') }
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i]; const v = process.argv[i + 1]
  if (k === '--peers') o.peers = +v
  else if (k === '--modules') o.modules = path.resolve(v)
  else if (k === '--role') o.role = v
  else { console.error('unknown argument ' + k); process.exit(2) }
}
const Plugin = require(path.join(o.modules, 'ilp-plugin-payment-channel-framework'))
const SECRET = 'bench-secret'
const PEER_SETTLE_MS = 1000

class MemStore {
  constructor () { this.m = new Map() }
  get (k) { return Promise.resolve(this.m.get(k)) }
  put (k, v) { this.m.set(k, v); return Promise.resolve(null) }
  del (k) { this.m.delete(k); return Promise.resolve(null) }
}

const rssKib = (pid) => {
  const line = fs.readFileSync('/proc/' + pid + '/status', 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'))
  return parseInt(line.split(/\s+/)[1], 10)
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
// n distinct free ports: all probes stay open until every port is known, so none is handed out twice.
const freePorts = async (n) => {
  const probes = []
  for (let i = 0; i < n; i++) {
    probes.push(await new Promise((resolve, reject) => {
      const s = net.createServer()
      s.once('error', reject)
      s.listen(0, '127.0.0.1', () => resolve(s))
    }))
  }
  const ports = probes.map((s) => s.address().port)
  await Promise.all(probes.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

async function serverRole () {
  const plugins = []
  const ask = (m) => new Promise((resolve) => { process.once('message', resolve); process.send(m) })
  // Ports are picked up front so the baseline includes nothing but the loaded modules.
  const ports = await freePorts(o.peers)
  global.gc()
  await ask({ baseline: true })
  for (const port of ports) {
    plugins.push(new Plugin({
      listener: { port }, prefix: 'bench.legacy.p' + port + '.',
      info: { currencyCode: 'USD', currencyScale: 9, connectors: [] },
      incomingSecret: SECRET, maxBalance: '1000000', _store: new MemStore()
    }))
  }
  for (const p of plugins) {
    while (!(p._listener.server && p._listener.server.listening)) await sleep(5)
    await p.connect()
  }
  console.error('[legacy-idle] server plugins ready', process.uptime())
  await ask({ ports })
  global.gc()
  await ask({ measure: true })
  process.on('disconnect', () => process.exit(0))
}

async function mainRole () {
  const child = fork(__filename, ['--role', 'server', '--peers', String(o.peers), '--modules', o.modules],
    { execArgv: ['--unhandled-rejections=warn', '--expose-gc'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const kill = () => { if (child.exitCode === null) child.kill('SIGKILL') }
  process.on('exit', kill)
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { kill(); process.exit(130) })
  child.once('exit', (code) => { if (code) { console.error('server child exited with ' + code); process.exit(1) } })
  const next = () => new Promise((resolve) => child.once('message', resolve))

  await next() // baseline reached
  await sleep(PEER_SETTLE_MS)
  const before = rssKib(child.pid)
  child.send('go')
  const { ports } = await next()
  const clients = []
  const CONNECT_BATCH = 250
  for (let i = 0; i < ports.length; i += CONNECT_BATCH) {
    await Promise.all(ports.slice(i, i + CONNECT_BATCH).map(async (port) => {
      const c = new Plugin({ server: 'btp+ws://:' + SECRET + '@127.0.0.1:' + port })
      await c.connect() // dials, authenticates and fetches info
      clients.push(c)
    }))
  }
  child.send('go')
  console.error('[legacy-idle] clients connected', process.uptime())
  await next() // measured after GC in the child
  await sleep(PEER_SETTLE_MS)
  const after = rssKib(child.pid)
  const out = { implementation: 'legacy ilp-plugin-payment-channel-framework 1.3.5 (node ' + process.version + ')',
    idle_peers: o.peers, rss_before_kib: before, rss_after_kib: after,
    per_peer_kib: Math.round(((after - before) / o.peers) * 10) / 10 }
  process.stdout.write(JSON.stringify(out) + '\n')
  kill()
  process.exit(0)
}

(o.role === 'server' ? serverRole() : mainRole()).catch((e) => {
  console.error('legacy idle-peer benchmark failed:', e && e.stack ? e.stack : e)
  process.exit(1)
})
