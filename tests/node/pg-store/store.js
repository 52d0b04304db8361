// A legacy plugin store (`_store`: get/put/del returning promises) kept in PostgreSQL the way ILP Kit kept it:
// Sequelize 3 defined one model per ledger, so each ledger has the table "plugin_store_<ledgerPrefix>s"
// (model name pluralised, prefix verbatim) with `key` TEXT primary key, `value` TEXT and the timestamps
// "createdAt"/"updatedAt" Sequelize adds; every put is an upsert on `key`, a del deletes the row
// (docs/ilp-kit.md §5). Used by tests/node/scripts/legacy_peer.js when PG_URL is set, and by
// bench/legacy_trustline.js for the legacy-in-PostgreSQL rows of bench/run.
'use strict'
const { Pool } = require('pg')

// Sequelize 3's default pool (lib/dialects/abstract/connection-manager.js: max 5, min 0, idle 10 s); ILP Kit's
// database set-up (api/src/lib/db.js) passed no pool option, so up to this many store calls of one process ran at
// the same time, each on its own connection.
const SEQUELIZE3_POOL_MAX_CONNECTIONS = 5
// Sequelize 3 closed a pooled connection after this long unused (pg's Pool has the same default).
const SEQUELIZE3_POOL_IDLE_MS = 10000

const quote = (name) => '"' + name.replace(/"/g, '""') + '"'

class SequelizeStore {
  // `poolMaxConnections`: 1 (the default) runs the calls one after the other, in the order made, on one connection,
  // so a test reads back exactly the last value written; the benchmark passes SEQUELIZE3_POOL_MAX_CONNECTIONS to
  // run the store as ILP Kit did, where concurrent calls may reach the database in any order.
  constructor (url, prefix, { poolMaxConnections = 1 } = {}) {
    this.table = quote('plugin_store_' + prefix + 's')
    this.pool = new Pool({ connectionString: url, max: poolMaxConnections, idleTimeoutMillis: SEQUELIZE3_POOL_IDLE_MS })
    // Sequelize's sync() created the table before the plugin's first call; here the first call waits for it.
    this.ready = this.pool.query(
      'CREATE TABLE IF NOT EXISTS ' + this.table + ' (' +
      '"key" TEXT, "value" TEXT, ' +
      '"createdAt" TIMESTAMP WITH TIME ZONE NOT NULL, "updatedAt" TIMESTAMP WITH TIME ZONE NOT NULL, ' +
      'PRIMARY KEY ("key"))')
  }

  async get (key) {
    await this.ready
    const r = await this.pool.query('SELECT "value" FROM ' + this.table + ' WHERE "key" = $1', [key])
    return r.rows.length ? r.rows[0].value : undefined
  }

  async put (key, value) {
    await this.ready
    const now = new Date()
    await this.pool.query(
      'INSERT INTO ' + this.table + ' ("key", "value", "createdAt", "updatedAt") VALUES ($1, $2, $3, $3) ' +
      'ON CONFLICT ("key") DO UPDATE SET "value" = EXCLUDED."value", "updatedAt" = EXCLUDED."updatedAt"',
      [key, String(value), now])
    return null
  }

  async del (key) {
    await this.ready
    await this.pool.query('DELETE FROM ' + this.table + ' WHERE "key" = $1', [key])
    return null
  }

  async close () {
    await this.ready.catch(() => {})
    await this.pool.end()
  }
}

module.exports = SequelizeStore
module.exports.SEQUELIZE3_POOL_MAX_CONNECTIONS = SEQUELIZE3_POOL_MAX_CONNECTIONS
