// A raw BTP/1.0 client for byte-level differential tests (tests/interop_legacy.rs): it dials a BTP server (the
// real legacy plugin or ilp-bridge), authenticates exactly as the legacy client does, then sends frames given as
// hex on stdin and prints the server's reply bytes, so the same bytes can be sent to both servers and the
// replies compared.
// Environment:
//   LEGACY_DIR  node_modules folder holding `ws` and `btp-packet` (required)
//   URL         ws://host:port (required)      SECRET  auth_token (the server's incomingSecret)
// stdin:  one frame per line, as hex (its request ID is bytes 1..5)
// stdout: {"ready":true}                                 authenticated
//         {"reply":"<hex>"|null,"sent":"<hex>"}           the Response/Error with the frame's request ID, or null
//                                                        when none came within REPLY_WAIT_MS
//         {"error":"..."}                                 auth failed or the socket closed
// Frames the server sends on its own (e.g. an R00 Reject) are ignored.
'use strict'
const path = require('path')
const readline = require('readline')

const dir = process.env.LEGACY_DIR
if (!dir) { console.error('LEGACY_DIR not set'); process.exit(2) }
const WebSocket = require(path.join(dir, 'ws'))
const btpPacket = require(path.join(dir, 'btp-packet'))

const REPLY_WAIT_MS = +(process.env.REPLY_WAIT_MS || 1500)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const waiting = new Map() // request id -> resolve

const ws = new WebSocket(process.env.URL)
ws.on('error', (e) => { out({ error: e.message }); process.exit(1) })
ws.on('close', () => { out({ error: 'closed' }); process.exit(1) })
ws.on('message', (data) => {
  const buf = Buffer.from(data)
  if (buf.length < 5) return
  const type = buf[0]
  const rid = buf.readUInt32BE(1)
  if ((type === btpPacket.TYPE_RESPONSE || type === btpPacket.TYPE_ERROR) && waiting.has(rid)) {
    const resolve = waiting.get(rid)
    waiting.delete(rid)
    resolve(buf.toString('hex'))
  }
})

function send (hex) {
  const buf = Buffer.from(hex, 'hex')
  const rid = buf.readUInt32BE(1)
  return new Promise((resolve) => {
    const timer = setTimeout(() => { waiting.delete(rid); resolve(null) }, REPLY_WAIT_MS)
    waiting.set(rid, (reply) => { clearTimeout(timer); resolve(reply) })
    ws.send(buf, { binary: true })
  })
}

ws.on('open', async () => {
  const auth = btpPacket.serializeMessage(0x7e57a017, [
    { protocolName: 'auth', contentType: btpPacket.MIME_APPLICATION_OCTET_STREAM, data: Buffer.alloc(0) },
    { protocolName: 'auth_username', contentType: btpPacket.MIME_TEXT_PLAIN_UTF8, data: Buffer.from('') },
    { protocolName: 'auth_token', contentType: btpPacket.MIME_TEXT_PLAIN_UTF8, data: Buffer.from(process.env.SECRET || '') }
  ])
  const reply = await send(Buffer.from(auth).toString('hex'))
  if (!reply || parseInt(reply.slice(0, 2), 16) !== btpPacket.TYPE_RESPONSE) {
    out({ error: 'auth failed: ' + reply })
    process.exit(1)
  }
  out({ ready: true })
  // One frame at a time, in order.
  let chain = Promise.resolve()
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    const hex = line.trim()
    if (!hex) return
    chain = chain.then(async () => out({ sent: hex, reply: await send(hex) }))
  })
  rl.on('close', () => { chain.then(() => process.exit(0)) })
})
