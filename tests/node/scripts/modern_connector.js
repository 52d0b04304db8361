// A REAL modern connector for the bridge-mode tests: the JS ilp-connector 23 (ILPv4, IL-DCP, CCP) with two
// ilp-plugin-btp 1.5 accounts (BTP/2.0):
//   bridge  the account of ilp-bridge: a BTP listener (BRIDGE_PORT) ilp-bridge dials, or a BTP client dialing
//           ilp-bridge (BRIDGE_URL); relation BRIDGE_RELATION (child | peer | parent)
//   alice   a local user: a BTP listener this script's own alice client dials; alice fulfils the Prepares whose
//           preimage the test registered ("preimage"), and sends the payments the test asks for ("pay")
// It speaks JSON lines:
//   stdin:  {"id": n, "cmd": "<name>", ...args}
//   stdout: {"id": n, "ok": true, "result": ...} | {"id": n, "ok": false, "error": {name, message}}
//           {"event": "alice_prepare", destination, amount}  (every Prepare that reaches alice)
//           {"ready": true, address}                         (once the connector and alice are up)
// Environment:
//   CONNECTOR_DIR   node_modules folder of tests/node/connector (required)
//   ADDRESS         the connector's ILP address (default test.conn)
//   BRIDGE_PORT | BRIDGE_URL, BRIDGE_SECRET, BRIDGE_RELATION (default child)
//   ALICE_PORT      alice's listener port
//   ROUTES          JSON array of static routes [{targetPrefix, peerId}]
'use strict'
const path = require('path')
const crypto = require('crypto')
const readline = require('readline')

const dir = process.env.CONNECTOR_DIR
if (!dir) { console.error('CONNECTOR_DIR not set'); process.exit(2) }
const req = (m) => require(path.join(dir, m))
const { createApp } = req('ilp-connector')
const BtpPlugin = req('ilp-plugin-btp')
const IlpPacket = req('ilp-packet')

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const address = process.env.ADDRESS || 'test.conn'
const relation = process.env.BRIDGE_RELATION || 'child'
const alicePort = +process.env.ALICE_PORT
const bridgeOptions = process.env.BRIDGE_URL
  ? { server: process.env.BRIDGE_URL }
  : { listener: { port: +process.env.BRIDGE_PORT, secret: process.env.BRIDGE_SECRET } }

const preimages = {} // condition (hex) -> fulfillment (Buffer)

async function main () {
  const app = createApp({
    ilpAddress: address,
    backend: 'one-to-one',
    spread: 0,
    store: 'memory',
    routes: JSON.parse(process.env.ROUTES || '[]'),
    routeBroadcastInterval: 1000,
    accounts: {
      bridge: Object.assign({ relation, assetCode: 'USD', assetScale: 6, plugin: 'ilp-plugin-btp', options: bridgeOptions },
        relation === 'peer' ? { sendRoutes: true, receiveRoutes: true } : {}),
      alice: { relation: 'child', assetCode: 'USD', assetScale: 6, plugin: 'ilp-plugin-btp', options: { listener: { port: alicePort, secret: 'alice' } } }
    }
  })
  // app.listen() waits (up to 10 s) for every account to connect: alice dials while it waits.
  const listening = app.listen()
  const alice = new BtpPlugin({ server: 'btp+ws://:alice@127.0.0.1:' + alicePort })
  alice.registerDataHandler(async (data) => {
    const p = IlpPacket.deserializeIlpPrepare(data)
    out({ event: 'alice_prepare', destination: p.destination, amount: p.amount })
    const f = preimages[p.executionCondition.toString('hex')]
    if (f) return IlpPacket.serializeIlpFulfill({ fulfillment: f, data: Buffer.from('alice') })
    return IlpPacket.serializeIlpReject({ code: 'F06', triggeredBy: address + '.alice', message: 'no preimage', data: Buffer.alloc(0) })
  })
  await alice.connect()
  await listening

  const commands = {
    preimage: async ({ fulfillment }) => {
      const f = Buffer.from(fulfillment, 'hex')
      preimages[crypto.createHash('sha256').update(f).digest('hex')] = f
      return true
    },
    // alice pays: a Prepare of `amount` to `destination`, conditioned on sha256(fulfillment).
    pay: async ({ destination, amount, fulfillment, expiresInMs }) => {
      const condition = crypto.createHash('sha256').update(Buffer.from(fulfillment, 'hex')).digest()
      const res = await alice.sendData(IlpPacket.serializeIlpPrepare({
        amount: String(amount),
        executionCondition: condition,
        expiresAt: new Date(Date.now() + (expiresInMs || 20000)),
        destination,
        data: Buffer.from('from alice')
      }))
      const p = IlpPacket.deserializeIlpPacket(res)
      if (p.typeString === 'ilp_fulfill') return { type: 'fulfill', fulfillment: p.data.fulfillment.toString('hex') }
      return { type: 'reject', code: p.data.code, triggeredBy: p.data.triggeredBy, message: p.data.message }
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
  out({ ready: true, address })
}

main().catch((e) => { console.error('FAILED', e); process.exit(1) })
