// Drives the REAL legacy BTP RPC layer (ilp-plugin-payment-channel-framework src/model/rpc.js with its
// src/lib/client.js and src/lib/listener.js) for btp/tests/transport_legacy.rs: the auth handshake and plain
// request/response, without the plugin's ledger logic on top.
// Environment:
//   LEGACY_DIR  node_modules folder holding the legacy plugin (required)
//   MODE        "client": dial SERVER_URL, authenticate, send one Message, print the reply, exit
//               "server": listen on PORT (0 = any), accept sockets with incomingSecret SECRET (legacy default
//                         authCheck: empty username), answer every Message with an `echo` entry
//   SERVER_URL  btp+ws URL (client)      PORT, SECRET (server)
// Output (stdout, one JSON object per line):
//   {"ready":true,"port":N}                       server listening
//   {"authenticated":true}                         a socket authenticated (server)
//   {"reply":"<hex of protocolData entries>"}      client: the reply to its Message
//   {"request":"<hex of the first entry's data>"}  server: a Message it answered
//   {"sent":"<hex>"}                               server: reply to its own Message (on stdin line "send <hex>")
//   {"error":"..."}                                any failure
'use strict'
const path = require('path')
const readline = require('readline')

const dir = process.env.LEGACY_DIR
if (!dir) { console.error('LEGACY_DIR not set'); process.exit(2) }
const base = path.join(dir, 'ilp-plugin-payment-channel-framework')
const BtpRpc = require(path.join(base, 'src/model/rpc.js'))
const BtpClient = require(path.join(base, 'src/lib/client.js'))
const BtpListener = require(path.join(base, 'src/lib/listener.js'))
const btpPacket = require(path.join(dir, 'btp-packet'))

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const debug = () => {}
const entriesHex = (pd) => Buffer.concat((pd || []).map((p) => Buffer.concat([
  Buffer.from(p.protocolName), Buffer.from([p.contentType]), Buffer.from(p.data)]))).toString('hex')

const handlers = {
  [btpPacket.TYPE_PREPARE]: async () => [],
  [btpPacket.TYPE_FULFILL]: async () => [],
  [btpPacket.TYPE_REJECT]: async () => [],
  [btpPacket.TYPE_MESSAGE]: async ({ data }) => {
    const first = data.protocolData[0]
    out({ request: first ? Buffer.from(first.data).toString('hex') : '' })
    return [{ protocolName: 'echo', contentType: btpPacket.MIME_APPLICATION_OCTET_STREAM, data: first ? first.data : Buffer.alloc(0) }]
  }
}

async function client () {
  const rpc = new BtpRpc({ plugin: {}, handlers, debug })
  const btpClient = new BtpClient({ server: process.env.SERVER_URL, plugin: rpc })
  await btpClient.connect()
  const reply = await rpc.message([{ protocolName: 'test', contentType: btpPacket.MIME_APPLICATION_OCTET_STREAM, data: Buffer.from('legacy says hi') }])
  out({ reply: entriesHex(reply.protocolData) })
  rpc.disconnect()
  process.exit(0)
}

async function server () {
  const secret = process.env.SECRET
  const rpc = new BtpRpc({
    plugin: {},
    handlers,
    debug,
    authCheck: (username, token) => username === '' && token === secret
  })
  rpc.on('authenticated', () => out({ authenticated: true }))
  const listener = new BtpListener({ plugin: rpc, port: +(process.env.PORT || 0) })
  await listener.listen()
  out({ ready: true, port: listener.server.address().port })
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', async (line) => {
    const [cmd, hex] = line.trim().split(' ')
    if (cmd !== 'send') return
    try {
      const reply = await rpc.message([{ protocolName: 'test', contentType: 0, data: Buffer.from(hex || '', 'hex') }])
      out({ sent: entriesHex(reply.protocolData) })
    } catch (e) {
      out({ error: e.message })
    }
  })
  rl.on('close', () => process.exit(0))
}

(process.env.MODE === 'server' ? server() : client()).catch((e) => { out({ error: String(e && e.message) }); process.exit(1) })
