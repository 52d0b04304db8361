//! `ilp-bridge migrate-ilp-kit` against a real ILP Kit store: a real PostgreSQL (tests/pg_common) whose plugin
//! store tables are written by the real legacy plugin, 1.3.5 for one ledger and 1.1.3 for the other, through a
//! store that behaves as ILP Kit's Sequelize 3 store (tests/node/pg-store/store.js), after real payments both
//! ways, limit changes and a transfer left prepared. The CLI binary itself is run: a database that is down, a dry
//! run, the migration, a rerun, a refused non-empty data folder, a table with rows the importer does not know and
//! one with a row it cannot import. Then `ilp-bridge run --config <generated>` takes the ledgers over: the same
//! legacy peers, started again with unchanged options, see the same balance and limit and pay each other both
//! ways through it.

mod legacy_common;
mod migrate_common;
mod pg_common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ilp_bridge::config::node::NodeConfig;
use ilp_bridge::store::Db;
use legacy_common::{available, b64u, free_port, JsPeer, TestResult, R};
use migrate_common::{assert_has, cli, migrate};
use pg_common::PgServer;
use serde_json::{json, Value};

const A: &str = "g.kit.a.";
const B: &str = "g.kit.b.";

/// One ILP Kit ledger: its prefix, the legacy version ILP Kit ran it with, its listener and limits.
struct Ledger {
    prefix: &'static str,
    version: &'static str,
    port: u16,
    secret: &'static str,
    max_balance: &'static str,
}

impl Ledger {
    fn url(&self) -> String {
        format!("btp+ws://:{}@127.0.0.1:{}", self.secret, self.port)
    }

    fn table(&self) -> String {
        format!("\"plugin_store_{}s\"", self.prefix)
    }

    /// The `CONNECTOR_LEDGERS` entry ILP Kit had for it.
    fn entry(&self) -> Value {
        json!({"currency": "USD", "plugin": "ilp-plugin-payment-channel-framework", "store": true,
            "options": {"listener": {"port": self.port}, "incomingSecret": self.secret,
                "maxBalance": self.max_balance,
                "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []}}})
    }

    /// ILP Kit's side: the legacy plugin as a stateful server whose store is the Postgres table.
    async fn kit(&self, pg_url: &str) -> R<JsPeer> {
        JsPeer::server(
            self.version,
            self.port,
            self.secret,
            self.prefix,
            self.max_balance,
            &[("PG_URL", pg_url.to_owned()), ("AUTO_FULFILL", "1".into())],
        )
        .await
    }

    /// The peer that talked to ILP Kit: a legacy client, always started with these same options.
    async fn peer(&self) -> R<JsPeer> {
        let mut js = JsPeer::client(
            self.version,
            self.url(),
            &[
                ("PREFIX", self.prefix.to_owned()),
                ("AUTO_FULFILL", "1".into()),
            ],
        )
        .await?;
        js.ok("connect", json!({})).await?;
        Ok(js)
    }
}

/// The balance and limit the peer sees (asked of the server it is connected to).
async fn seen_by(peer: &mut JsPeer) -> R<(Value, Value)> {
    Ok((
        peer.ok("getPeerBalance", json!({})).await?,
        peer.ok("getLimit", json!({})).await?,
    ))
}

/// Real traffic on one ILP Kit ledger: the peer pays `paid_in`, ILP Kit pays `paid_out` back, ILP Kit's limits
/// are changed, and a transfer from the peer is left prepared.
async fn traffic(
    ledger: &Ledger,
    kit: &mut JsPeer,
    peer: &mut JsPeer,
    paid_in: u64,
    paid_out: u64,
    maximum: &str,
) -> TestResult {
    let f_in = [paid_in as u8; 32];
    kit.ok("preimage", json!({"fulfillment": b64u(&f_in)}))
        .await?;
    let ilp = peer
        .payment(&format!("{}server.kit", ledger.prefix), paid_in)
        .await?;
    let id = peer.send_transfer(&f_in, paid_in, 20_000, &ilp).await?;
    peer.event_for("outgoing_fulfill", &id).await?;

    let f_out = [paid_out as u8 + 100; 32];
    peer.ok("preimage", json!({"fulfillment": b64u(&f_out)}))
        .await?;
    let ilp = kit
        .payment(&format!("{}client.peer", ledger.prefix), paid_out)
        .await?;
    let id = kit.send_transfer(&f_out, paid_out, 20_000, &ilp).await?;
    kit.event_for("outgoing_fulfill", &id).await?;

    kit.ok("setMaximum", json!({"value": maximum})).await?;
    kit.ok("setMinimum", json!({"value": "-50"})).await?;

    // Nobody knows this preimage: it stays prepared until ILP Kit stops.
    let ilp = peer
        .payment(&format!("{}server.kit", ledger.prefix), 4)
        .await?;
    let id = peer.send_transfer(&[7u8; 32], 4, 120_000, &ilp).await?;
    kit.event_for("incoming_prepare", &id).await?;
    Ok(())
}

/// Waits until ILP Kit's table holds `rows` (key, value) — the plugin writes after it emits its events.
async fn wait_rows(pg: &tokio_postgres::Client, table: &str, rows: &[(&str, &str)]) -> TestResult {
    let started = Instant::now();
    loop {
        let mut all = true;
        for (key, value) in rows {
            let got = pg
                .query_opt(&format!("SELECT value FROM {table} WHERE key = $1"), &[key])
                .await?
                .map(|r| r.get::<_, String>(0));
            all &= got.as_deref() == Some(*value);
        }
        let prepared: i64 = pg
            .query_one(
                &format!(
                    "SELECT count(*) FROM {table} WHERE value LIKE '%\"state\":\"prepared\"%'"
                ),
                &[],
            )
            .await?
            .get(0);
        if all && prepared == 1 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("{table} never held {rows:?} and one prepared transfer").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record of the data folder (to prove a run wrote nothing).
fn dump(dir: &Path) -> R<Vec<(Vec<u8>, Vec<u8>)>> {
    let db = Db::open(dir)?;
    let mut all = Vec::new();
    for item in db.rocks().iterator(rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        all.push((k.to_vec(), v.to_vec()));
    }
    let pending = db.pending_cf()?;
    for item in db
        .rocks()
        .iterator_cf(pending, rocksdb::IteratorMode::Start)
    {
        let (k, v) = item?;
        all.push((k.to_vec(), v.to_vec()));
    }
    Ok(all)
}

/// `ilp-bridge run`, killed by PID on drop.
struct Node(tokio::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        legacy_common::kill_by_pid(&mut self.0);
    }
}

async fn wait_listening(port: u16) -> TestResult {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("nothing listens on {port}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ilp_kit_deployment_moves_to_ilp_bridge_and_its_peers_keep_paying() -> TestResult {
    if !available("1.3.5")? || !available("1.1.3")? {
        return Ok(());
    }
    let Some(mut pg) = PgServer::start().await? else {
        return Ok(());
    };
    let sql = pg.connect(pg_common::DATABASE).await?;
    let a = Ledger {
        prefix: A,
        version: "1.3.5",
        port: free_port()?,
        secret: "secret-a",
        max_balance: "1000",
    };
    let b = Ledger {
        prefix: B,
        version: "1.1.3",
        port: free_port()?,
        secret: "secret-b",
        max_balance: "2000",
    };

    // ILP Kit at work.
    let mut kit_a = a.kit(&pg.url()).await?;
    let mut kit_b = b.kit(&pg.url()).await?;
    kit_a.ok("connect", json!({})).await?;
    kit_b.ok("connect", json!({})).await?;
    let mut peer_a = a.peer().await?;
    let mut peer_b = b.peer().await?;
    traffic(&a, &mut kit_a, &mut peer_a, 10, 3, "1500").await?;
    traffic(&b, &mut kit_b, &mut peer_b, 20, 5, "2500").await?;
    wait_rows(
        &sql,
        &a.table(),
        &[
            (":tl:balance:if", "10"),
            (":tl:balance:of", "3"),
            (":tl:maximum", "1500"),
            (":tl:minimum", "-50"),
        ],
    )
    .await?;
    wait_rows(
        &sql,
        &b.table(),
        &[
            (":tl:balance:if", "20"),
            (":tl:balance:of", "5"),
            (":tl:maximum", "2500"),
            (":tl:minimum", "-50"),
        ],
    )
    .await?;
    let seen_a = seen_by(&mut peer_a).await?;
    let seen_b = seen_by(&mut peer_b).await?;
    assert_eq!(seen_a, (json!("-7"), json!("-1500")));
    assert_eq!(seen_b, (json!("-15"), json!("-2500")));
    // ILP Kit stops; its peers lose their connection.
    drop((kit_a, kit_b, peer_a, peer_b));
    // Rows ILP Kit's table may hold that the legacy plugin never writes.
    sql.batch_execute(&format!(
        "INSERT INTO {} VALUES ('ilpkit:session', 'x', now(), now()), ('orphan', NULL, now(), now())",
        a.table()
    ))
    .await?;
    let rows_a: i64 = sql
        .query_one(&format!("SELECT count(*) FROM {}", a.table()), &[])
        .await?
        .get(0);
    let rows_b: i64 = sql
        .query_one(&format!("SELECT count(*) FROM {}", b.table()), &[])
        .await?
        .get(0);

    let dir = tempfile::tempdir()?;
    let env = dir.path().join("env.list");
    let ledgers = json!({A: a.entry(), B: b.entry(),
        "g.kit.bells.": {"currency": "USD", "plugin": "ilp-plugin-bells", "options": {"account": "x"}}});
    std::fs::write(
        &env,
        format!(
            "API_HOSTNAME=kit.example\nDB_URI={}\nCONNECTOR_LEDGERS={ledgers}\n",
            pg.url()
        ),
    )?;
    let data = dir.path().join("data");
    let config = dir.path().join("ilp-bridge.toml");

    // A database that does not answer: a clear error, exit code ≠ 0, nothing written.
    let closed = free_port()?;
    let down_url = format!("postgres://postgres:pw@127.0.0.1:{closed}/ilpkit");
    let out = migrate(&env, &data, &config, &["--database-url", &down_url]).await?;
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "cannot connect to the database at postgres@127.0.0.1:{closed}/ilpkit"
        )),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("pw@"),
        "password shown: {}",
        out.stderr
    );
    assert!(!data.exists() && !config.exists());

    // Dry run: the full report, nothing written.
    let out = migrate(&env, &data, &config, &["--dry-run"]).await?;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_has(&out, "dry run, nothing written");
    assert_has(
        &out,
        "main log: balance before 7 (IF 10, OF 3), after not written (dry run)",
    );
    assert!(!data.exists() && !config.exists());

    // The migration.
    let out = migrate(&env, &data, &config, &[]).await?;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_has(
        &out,
        &format!("ledger {A} (ilp-plugin-payment-channel-framework): peer \"{A}\", listens on port {}, stateful", a.port),
    );
    assert_has(
        &out,
        &format!(
            "table \"plugin_store_{A}s\": {rows_a} rows read, {} imported, 2 skipped",
            rows_a - 2
        ),
    );
    assert_has(
        &out,
        "skipped \"ilpkit:session\": not a row the legacy plugin writes",
    );
    assert_has(&out, "skipped \"orphan\": value is NULL");
    assert_has(
        &out,
        "main log: balance before 7 (IF 10, OF 3), after 7 (IF 10, OF 3)\n",
    );
    assert_has(
        &out,
        "main log: balance before 15 (IF 20, OF 5), after 15 (IF 20, OF 5)\n",
    );
    assert_has(
        &out,
        &format!("table \"plugin_store_{B}s\": {rows_b} rows read, {rows_b} imported, 0 skipped"),
    );
    assert_has(
        &out,
        "3 transfers, 1 left prepared (imported as cancelled: stale)",
    );
    assert_has(
        &out,
        "limits: maximum 1500 (stored override; configured 1000), minimum -50 (stored override; configured -Infinity)",
    );
    assert_has(
        &out,
        "limits: maximum 2500 (stored override; configured 2000), minimum -50 (stored override; configured -Infinity)",
    );
    assert_has(
        &out,
        "ledger g.kit.bells. (ilp-plugin-bells): not migrated: plugin ilp-plugin-bells is not",
    );
    // Bridge mode: the modern connector's account for each peer starts at P's balance (here P owes).
    assert_has(
        &out,
        &format!("bridge mode: the modern connector's account for \"{A}\" starts at -7 (scale 9;"),
    );
    assert_has(
        &out,
        "P owes 7: interledger-rs has no call that debits an account",
    );
    assert_has(&out, "2 ledger(s) migrated, 1 not taken over; written");
    assert!(
        out.stdout
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("everything balances: yes"),
        "{}",
        out.stdout
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&config)?.permissions().mode() & 0o777,
            0o600
        );
    }
    let node = NodeConfig::load(&config)?;
    let names: Vec<&str> = node.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, [A, B]);
    let written = dump(&data)?;
    let config_text = std::fs::read_to_string(&config)?;

    // A second run changes nothing.
    let out = migrate(&env, &data, &config, &[]).await?;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_has(&out, "already migrated, nothing changed");
    assert_has(&out, "store: already imported, unchanged");
    assert_eq!(dump(&data)?, written);
    assert_eq!(std::fs::read_to_string(&config)?, config_text);

    // A data folder holding other records is refused without --force, and nothing is written to it.
    let other = dir.path().join("other-data");
    let rows = dir.path().join("rows.json");
    std::fs::write(&rows, r#"{":tl:balance:if":"5"}"#)?;
    let imported = cli(&[
        "import-legacy-store",
        "--peer",
        "someone",
        "--rows",
        &rows.display().to_string(),
        "--data-dir",
        &other.display().to_string(),
    ])
    .await?;
    assert_eq!(imported.code, Some(0), "{}", imported.stderr);
    let other_config = dir.path().join("other.toml");
    let before = dump(&other)?;
    let out = migrate(&env, &other, &other_config, &[]).await?;
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert_has(&out, "REFUSED, nothing written: data folder");
    assert_has(&out, "already holds records; pass --force");
    assert_eq!(dump(&other)?, before);
    assert!(!other_config.exists());
    let out = migrate(&env, &other, &other_config, &["--force"]).await?;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_has(&out, "everything balances: yes");

    // ilp-bridge takes ILP Kit's place; the peers come back with the same options.
    let mut node = Node(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ilp-bridge"))
            .args(["run", "--config", &config.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?,
    );
    wait_listening(a.port).await?;
    wait_listening(b.port).await?;
    let mut peer_a = a.peer().await?;
    let mut peer_b = b.peer().await?;
    assert_eq!(seen_by(&mut peer_a).await?, seen_a);
    assert_eq!(seen_by(&mut peer_b).await?, seen_b);

    // A pays B through ilp-bridge, then B pays A.
    let f = [31u8; 32];
    peer_b
        .ok("preimage", json!({"fulfillment": b64u(&f)}))
        .await?;
    let ilp = peer_a.payment(&format!("{B}client.bob"), 10).await?;
    let id = peer_a.send_transfer(&f, 10, 20_000, &ilp).await?;
    peer_a.event_for("outgoing_fulfill", &id).await?;
    let f = [32u8; 32];
    peer_a
        .ok("preimage", json!({"fulfillment": b64u(&f)}))
        .await?;
    let ilp = peer_b.payment(&format!("{A}client.alice"), 6).await?;
    let id = peer_b.send_transfer(&f, 6, 20_000, &ilp).await?;
    peer_b.event_for("outgoing_fulfill", &id).await?;
    // ilp-bridge's balances: A 7 + 10 − 6, B 15 − 10 + 6.
    assert_eq!(seen_by(&mut peer_a).await?, (json!("-11"), json!("-1500")));
    assert_eq!(seen_by(&mut peer_b).await?, (json!("-11"), json!("-2500")));
    drop((peer_a, peer_b));
    legacy_common::kill_by_pid(&mut node.0);
    let _ = node.0.wait().await;

    // Run again after the node has run: still nothing written, the moved balances are not a difference.
    let written = dump(&data)?;
    let out = migrate(&env, &data, &config, &[]).await?;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_has(&out, "main log: balance before 7 (IF 10, OF 3), after 11 (IF 20, OF 9)  (changed since the earlier import: the node has run)");
    assert_has(&out, "already migrated, nothing changed");
    assert_eq!(dump(&data)?, written);

    // A row the importer cannot import whole: that ledger is listed with the reason, nothing is written.
    sql.batch_execute(&format!(
        "INSERT INTO {} VALUES (':tl:transfer:not-a-uuid', '{{}}', now(), now())",
        b.table()
    ))
    .await?;
    let broken = dir.path().join("broken-data");
    let broken_config = dir.path().join("broken.toml");
    let out = migrate(&env, &broken, &broken_config, &[]).await?;
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert_has(&out, &format!("ledger {B} (ilp-plugin-payment-channel-framework): CANNOT BE MIGRATED: table \"plugin_store_{B}s\": legacy row \":tl:transfer:not-a-uuid\""));
    assert_has(&out, "REFUSED, nothing written");
    assert!(!broken.exists() && !broken_config.exists());

    // The database goes down: a clear error, exit code ≠ 0, nothing written.
    drop(sql);
    pg.stop();
    let out = migrate(&env, &broken, &broken_config, &[]).await?;
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "cannot connect to the database at postgres@127.0.0.1:{}/ilpkit",
            pg.port()
        )),
        "{}",
        out.stderr
    );
    assert!(!broken.exists() && !broken_config.exists());
    Ok(())
}
