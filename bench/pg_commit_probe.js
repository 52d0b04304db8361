#!/usr/bin/env node
// Measures the commit latency of the benchmark's PostgreSQL the way the legacy plugin's store meets it: N
// single-row upserts in a row, each its own transaction (autocommit), on one connection, into a table shaped like
// ILP Kit's plugin store. With synchronous_commit on (the default, checked and printed), each commit waits for the
// WAL flush, so the p50 bounds what the legacy-in-PostgreSQL rows of bench/run can show on this machine, as the
// fsync probe bounds ilp-bridge's durable rows. Prints one JSON line.
//
//   node bench/pg_commit_probe.js --url postgres://... [--count 200] [--pg-modules DIR]
'use strict'
const path = require('path')

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf('--' + name)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
}
const url = opt('url', null)
const count = Number(opt('count', '200'))
const pgModules = path.resolve(opt('pg-modules', path.join(__dirname, '..', 'tests', 'node', 'pg-store', 'node_modules')))
if (!url || !Number.isInteger(count) || count < 10) {
  process.stderr.write('usage: node bench/pg_commit_probe.js --url URL [--count N>=10] [--pg-modules DIR]\n')
  process.exit(2)
}
const { Client } = require(path.join(pgModules, 'pg'))

// Not a plugin's table: the rows' own tables start empty.
const TABLE = '"plugin_store_bench.commit-probe.s"'

async function main () {
  const c = new Client({ connectionString: url })
  await c.connect()
  try {
    const show = async (name) => (await c.query('SHOW ' + name)).rows[0][name]
    const settings = {
      server_version: await show('server_version'),
      synchronous_commit: await show('synchronous_commit'),
      fsync: await show('fsync'),
      wal_sync_method: await show('wal_sync_method')
    }
    await c.query('CREATE TABLE IF NOT EXISTS ' + TABLE + ' ("key" TEXT, "value" TEXT, ' +
      '"createdAt" TIMESTAMP WITH TIME ZONE NOT NULL, "updatedAt" TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY ("key"))')
    const upsert = 'INSERT INTO ' + TABLE + ' ("key", "value", "createdAt", "updatedAt") VALUES ($1, $2, $3, $3) ' +
      'ON CONFLICT ("key") DO UPDATE SET "value" = EXCLUDED."value", "updatedAt" = EXCLUDED."updatedAt"'
    const ms = []
    for (let i = 0; i < count; i++) {
      // Half new rows, half updates of one row, like the plugin's transfer records and balance keys.
      const key = i % 2 === 0 ? ':tl:transfer:' + i : ':tl:balance:if'
      const t = process.hrtime.bigint()
      await c.query(upsert, [key, String(i), new Date()])
      ms.push(Number(process.hrtime.bigint() - t) / 1e6)
    }
    await c.query('DROP TABLE ' + TABLE)
    ms.sort((a, b) => a - b)
    const pct = (p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]
    process.stdout.write(JSON.stringify({
      what: 'single-row upsert, one transaction each, one connection',
      count,
      ...settings,
      p50_ms: pct(0.5),
      p90_ms: pct(0.9),
      p99_ms: pct(0.99),
      max_ms: ms[ms.length - 1]
    }) + '\n')
  } finally {
    await c.end()
  }
}

main().catch((e) => {
  process.stderr.write('pg commit probe failed: ' + (e && e.stack ? e.stack : e) + '\n')
  process.exit(1)
})
