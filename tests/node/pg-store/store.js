// A legacy plugin store (`_store`: get/put/del returning promises) kept in PostgreSQL the way ILP Kit kept it:
// Sequelize 3 defined one model per ledger, so each ledger has the table "plugin_store_<ledgerPrefix>s"
// (model name pluralised, prefix verbatim) with `key` TEXT primary key, `value` TEXT and the timestamps
// "createdAt"/"updatedAt" Sequelize adds; every put is an upsert on `key`, a del deletes the row
// (docs/ilp-kit.md §5). Used by tests/node/scripts/legacy_peer.js when PG_URL is set.
'use strict'
const { Client } = require('pg')

const quote = (name) => '"' + name.replace(/"/g, '""') + '"'

class SequelizeStore {
  constructor (url, prefix) {
    this.table = quote('plugin_store_' + prefix + 's')
    this.client = new Client({ connectionString: url })
    // Sequelize's sync() created the table before the plugin's first call; here the first call waits for it.
    this.ready = this.client.connect().then(() => this.client.query(
      'CREATE TABLE IF NOT EXISTS ' + this.table + ' (' +
      '"key" TEXT, "value" TEXT, ' +
      '"createdAt" TIMESTAMP WITH TIME ZONE NOT NULL, "updatedAt" TIMESTAMP WITH TIME ZONE NOT NULL, ' +
      'PRIMARY KEY ("key"))'))
  }

  async get (key) {
    await this.ready
    const r = await this.client.query('SELECT "value" FROM ' + this.table + ' WHERE "key" = $1', [key])
    return r.rows.length ? r.rows[0].value : undefined
  }

  async put (key, value) {
    await this.ready
    const now = new Date()
    await this.client.query(
      'INSERT INTO ' + this.table + ' ("key", "value", "createdAt", "updatedAt") VALUES ($1, $2, $3, $3) ' +
      'ON CONFLICT ("key") DO UPDATE SET "value" = EXCLUDED."value", "updatedAt" = EXCLUDED."updatedAt"',
      [key, String(value), now])
    return null
  }

  async del (key) {
    await this.ready
    await this.client.query('DELETE FROM ' + this.table + ' WHERE "key" = $1', [key])
    return null
  }

  async close () {
    await this.ready.catch(() => {})
    await this.client.end()
  }
}

module.exports = SequelizeStore
