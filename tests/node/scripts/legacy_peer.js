// Driver for the REAL legacy ilp-plugin-payment-channel-framework, used by the Rust interop tests
// (tests/interop_*.rs). It runs one plugin and speaks JSON lines:
//   stdin:  {"id": n, "cmd": "<name>", ...args}
//   stdout: {"id": n, "ok": true, "result": ...} | {"id": n, "ok": false, "error": {name, message}}
//           {"event": "<legacy event name>", ...}            (every plugin event)
//           {"ready": true, "port": <listener port or null>} (once the plugin is constructed)
// Parameters (environment):
//   LEGACY_DIR      node_modules folder of the legacy version to load (required)
//   MODE            "server" (listener) or "client" (server URL)
//   PORT            listener port (server)            SERVER_URL  btp+ws or btp+wss URL (client)
//   TLS_CERT, TLS_KEY, TLS_CA   server: PEM file paths for a wss listener (a wss client trusts the CA given in
//                   NODE_EXTRA_CA_CERTS)
//   SECRET          incomingSecret (server)           PREFIX      ledger prefix (server; optional for client)
//   MAX_BALANCE     maxBalance (stateful)             STATEFUL    "1" for a stateful plugin (in-memory _store)
//   CLAIM_SECRET    if set: a payment-channel module mirroring ilp-bridge's claim-test module (HMAC claims)
//   AUTO_FULFILL    "1": fulfill every incoming prepare whose condition is in the "preimages" map
//                   (see the "preimage" command)
//   PG_URL          stateful: keep the store in PostgreSQL as ILP Kit did (tests/node/pg-store/store.js), in the
//                   table "plugin_store_<PG_TABLE_PREFIX or PREFIX>s"; without it the store is in memory
//   STORE_FILE      stateful, without PG_URL: keep the store in this JSON file (written whole and renamed into
//                   place on every change, so a killed process loses nothing it acknowledged), for peers that
//                   must keep their books across their own restarts
//   FIXED_PREIMAGE  with AUTO_FULFILL: also fulfill every prepare whose condition is SHA-256 of this preimage
//                   (base64url)
'use strict'
const path = require('path')
const crypto = require('crypto')
const readline = require('readline')

const dir = process.env.LEGACY_DIR
if (!dir) { console.error('LEGACY_DIR not set'); process.exit(2) }
const req = (m) => require(path.join(dir, m))
const PluginModule = req('ilp-plugin-payment-channel-framework')
const ilpPacket = req('ilp-packet')
const pkgVersion = req('ilp-plugin-payment-channel-framework/package.json').version

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const b64u = (b) => Buffer.from(b).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')
const fromB64 = (s) => Buffer.from(s, 'base64')

class ObjStore {
  constructor () { this.s = {} }
  get (k) { return Promise.resolve(this.s[k]) }
  put (k, v) { this.s[k] = v; return Promise.resolve(null) }
  del (k) { delete this.s[k]; return Promise.resolve(null) }
}

class FileStore extends ObjStore {
  constructor (file) {
    super()
    this.file = file
    const fs = require('fs')
    if (fs.existsSync(file)) this.s = JSON.parse(fs.readFileSync(file, 'utf8'))
  }
  save () {
    const fs = require('fs')
    fs.writeFileSync(this.file + '.tmp', JSON.stringify(this.s))
    fs.renameSync(this.file + '.tmp', this.file)
  }
  put (k, v) { this.s[k] = v; this.save(); return Promise.resolve(null) }
  del (k) { delete this.s[k]; this.save(); return Promise.resolve(null) }
}

// The claim-test module of ilp-bridge (channel-modules/src/claim_test.rs), in JavaScript.
const SIGNING_DOMAIN = 'ilp-bridge claim-test v1\n'
function claimModule (secret) {
  const sign = (total) => crypto.createHmac('sha256', secret).update(SIGNING_DOMAIN + total).digest('hex')
  return {
    pluginName: 'claimtest',
    constructor (ctx, opts) { ctx.state.best = '0' },
    getAccount (ctx) { return ctx.plugin._prefix + 'server' },
    getPeerAccount (ctx) { return ctx.plugin._prefix + 'client' },
    getInfo (ctx) { return Object.assign({}, ctx.plugin._opts.info, { prefix: ctx.plugin._opts.prefix }) },
    getAuthToken (ctx) { return ctx.plugin._opts.incomingSecret || '' },
    connect (ctx) { return Promise.resolve() },
    disconnect (ctx) { return Promise.resolve() },
    handleIncomingPrepare (ctx, transfer) { return Promise.resolve() },
    createOutgoingClaim (ctx, total) {
      const claim = { amount: String(total), signature: sign(String(total)) }
      out({ event: 'outgoing_claim', claim })
      return claim
    },
    handleIncomingClaim (ctx, claim) {
      let ok = false
      if (claim && typeof claim === 'object' && typeof claim.amount === 'string') {
        ok = crypto.timingSafeEqual(Buffer.from(sign(claim.amount)), Buffer.from(String(claim.signature)))
      }
      out({ event: 'incoming_claim', claim: claim === undefined ? null : claim, valid: ok })
      if (!ok) throw new Error('invalid claim')
    }
  }
}

const stateful = process.env.STATEFUL === '1'
const opts = {}
if (process.env.MODE === 'server') {
  opts.listener = { port: +process.env.PORT }
  // TLS (file paths; legacy needs all three or never listens).
  if (process.env.TLS_CERT) {
    Object.assign(opts.listener, { cert: process.env.TLS_CERT, key: process.env.TLS_KEY, ca: process.env.TLS_CA })
  }
  opts.incomingSecret = process.env.SECRET
  opts.prefix = process.env.PREFIX
  opts.info = { currencyCode: process.env.CURRENCY || 'USD', currencyScale: +(process.env.SCALE || 9), connectors: [] }
} else {
  opts.server = process.env.SERVER_URL
  if (process.env.PREFIX) opts.prefix = process.env.PREFIX
  if (process.env.CLAIM_SECRET) {
    opts.info = { currencyCode: process.env.CURRENCY || 'USD', currencyScale: +(process.env.SCALE || 9), connectors: [] }
  }
}
if (stateful) {
  opts.maxBalance = process.env.MAX_BALANCE || '1000000'
  opts._store = process.env.PG_URL
    ? new (require('../pg-store/store.js'))(process.env.PG_URL, process.env.PG_TABLE_PREFIX || process.env.PREFIX)
    : process.env.STORE_FILE ? new FileStore(process.env.STORE_FILE) : new ObjStore()
}
const Plugin = process.env.CLAIM_SECRET
  ? PluginModule.makePaymentChannelPlugin(claimModule(process.env.CLAIM_SECRET))
  : PluginModule
const plugin = new Plugin(opts)

const preimages = {} // condition (b64url) -> fulfillment (b64url)
const events = ['connect', 'disconnect', 'incoming_prepare', 'outgoing_prepare', 'incoming_fulfill',
  'outgoing_fulfill', 'incoming_reject', 'outgoing_reject', 'incoming_cancel', 'outgoing_cancel',
  'incoming_request', 'outgoing_response']
for (const name of events) {
  plugin.on(name, (...args) => {
    out({ event: name, args: JSON.parse(JSON.stringify(args, (k, v) => (v instanceof Date ? v.toISOString() : v))) })
    if (name === 'incoming_prepare' && process.env.AUTO_FULFILL === '1') {
      const t = args[0]
      const f = preimages[t.executionCondition] ||
        (process.env.FIXED_PREIMAGE && t.executionCondition === b64u(crypto.createHash('sha256').update(fromB64(process.env.FIXED_PREIMAGE)).digest())
          ? process.env.FIXED_PREIMAGE
          : undefined)
      if (f) {
        plugin.fulfillCondition(t.id, f).then(
          () => out({ event: 'auto_fulfilled', id: t.id }),
          (e) => out({ event: 'auto_fulfill_failed', id: t.id, error: e.message }))
      }
    }
  })
}
plugin.registerRequestHandler(async (msg) => {
  if (msg.custom && msg.custom.fail) throw new Error('handler failed')
  return { to: msg.from, from: msg.to, ledger: msg.ledger, custom: { echo: msg.custom || null } }
})

const commands = {
  version: async () => pkgVersion,
  connect: async () => { await plugin.connect(); return true },
  disconnect: async () => { await plugin.disconnect(); return true },
  getInfo: async () => plugin.getInfo(),
  getAccount: async () => plugin.getAccount(),
  getPeerAccount: async () => plugin.getPeerAccount(),
  getBalance: async () => plugin.getBalance(),
  getPeerBalance: async () => plugin.getPeerBalance(),
  getLimit: async () => plugin.getLimit(),
  // The TransferLog's limit setters (stored as the :tl:maximum / :tl:minimum overrides) and getters.
  setMaximum: async ({ value }) => { await plugin._transfers.setMaximum(value); return true },
  setMinimum: async ({ value }) => { await plugin._transfers.setMinimum(value); return true },
  getMaximum: async () => String(await plugin._transfers.getMaximum()),
  getMinimum: async () => String(await plugin._transfers.getMinimum()),
  preimage: async ({ fulfillment }) => {
    const c = b64u(crypto.createHash('sha256').update(fromB64(fulfillment)).digest())
    preimages[c] = fulfillment
    return c
  },
  sendTransfer: async ({ transfer }) => {
    const t = Object.assign({ to: plugin.getPeerAccount() }, transfer)
    await plugin.sendTransfer(t)
    return true
  },
  fulfillCondition: async ({ transferId, fulfillment }) => { await plugin.fulfillCondition(transferId, fulfillment); return true },
  rejectIncomingTransfer: async ({ transferId, reason }) => {
    const r = pkgVersion.startsWith('1.1.')
      ? { code: reason.code, name: reason.name, triggeredBy: reason.triggered_by, forwardedBy: reason.forwarded_by || [], triggeredAt: new Date(), data: JSON.stringify(reason.additional_info) }
      : Object.assign({}, reason, { triggered_at: new Date() })
    await plugin.rejectIncomingTransfer(transferId, r)
    return true
  },
  sendRequest: async ({ message }) => {
    const m = Object.assign({ to: plugin.getPeerAccount(), from: plugin.getAccount(), ledger: plugin.getInfo().prefix }, message)
    return plugin.sendRequest(m)
  },
  payment: async ({ account, amount }) => b64u(ilpPacket.serializeIlpPayment({ account, amount: String(amount), data: '' })),
  parseIlp: async ({ ilp }) => ilpPacket.deserializeIlpPacket(fromB64(ilp)),
  // ILQP quote request packets (ILP v1 types 2, 4, 6) as base64url: kind "liquidity", "bySource" or
  // "byDestination"; the fields as ilp-packet takes them.
  ilqp: async ({ kind, request }) => {
    const serialize = {
      liquidity: ilpPacket.serializeIlqpLiquidityRequest,
      bySource: ilpPacket.serializeIlqpBySourceRequest,
      byDestination: ilpPacket.serializeIlqpByDestinationRequest
    }[kind]
    if (!serialize) throw new Error('unknown ILQP kind ' + kind)
    return b64u(serialize(request))
  },
  exit: async () => { setTimeout(() => process.exit(0), 50); return true }
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  let msg
  try { msg = JSON.parse(line) } catch (e) { out({ ok: false, error: { name: 'SyntaxError', message: e.message } }); return }
  const fn = commands[msg.cmd]
  if (!fn) { out({ id: msg.id, ok: false, error: { name: 'Error', message: 'unknown command ' + msg.cmd } }); return }
  try {
    const result = await fn(msg)
    out({ id: msg.id, ok: true, result: result === undefined ? null : result })
  } catch (e) {
    out({ id: msg.id, ok: false, error: { name: e.name, message: e.message } })
  }
})
rl.on('close', () => process.exit(0))
out({ ready: true, version: pkgVersion, port: opts.listener ? opts.listener.port : null })
