//! Issue 7, row 3: settlement-engine settle requests accepted per second, and their latency, at 32 connections.
//!
//! Two ilp-bridge settlement engines (module `trustline`), each on its own durable RocksDB [`Db`] in a
//! temporary folder, each with a mock interledger-rs accounting system ([`MockConnector`]); the two accounts
//! are linked, so the IOU messages engine A sends while settling reach engine B, which credits its connector.
//! The load generator opens 32 HTTP/1.1 connections to engine A (one `reqwest` client with a single pooled
//! connection per worker) and sends `POST /accounts/{id}/settlements` with a fresh `Idempotency-Key` and
//! `{"amount":"1","scale":9}`, one request in flight per connection. A request counts when it is answered
//! `201` (the engine answers only after the request, its leftover and its key are durable).
//!
//! `--bench [--connections 32] [--duration-ms 10000] [--warmup-ms 1000] [--data-dir DIR]`; without `--bench`
//! (under `cargo test`) it runs a 300 ms smoke version with 2 connections.

mod harness_common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use harness_common::{closed_loop, fail, print_json, Args, LoadPoint};
use ilp_bridge::se::host::{ModuleLogs, RocksModuleLogs};
use ilp_bridge::se::store::{RocksSeStore, SeStore};
use ilp_bridge::se::{self, SeConfig, SeHandle};
use ilp_bridge::store::Db;
use ilp_bridge::testing::mock_connector::MockConnector;

/// Timeout of one settle request (interledger-rs uses 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Body of every settle request.
const SETTLE_BODY: &str = r#"{"amount":"1","scale":9}"#;

#[derive(serde::Serialize)]
struct SettleResult {
    implementation: &'static str,
    store: &'static str,
    connections: u64,
    duration_s: f64,
    accepted: u64,
    errors: u64,
    accepted_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

fn main() {
    let args = Args::from_env();
    let connections = args.num("connections", 32, 2);
    let duration = Duration::from_millis(args.num("duration-ms", 10_000, 300));
    let warmup = Duration::from_millis(args.num("warmup-ms", 1_000, 100));
    let data_dir = args
        .get("data-dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("tokio: {e}")));
    let point = runtime.block_on(run(connections, warmup, duration, data_dir));
    if !args.full && (point.completed == 0 || point.errors > 0) {
        fail(&format!("smoke run: {point:?}"));
    }
    print_json(&SettleResult {
        implementation:
            "ilp-bridge settlement engine (module trustline), mock interledger-rs connectors",
        store: "durable RocksDB (WAL synced, group commit)",
        connections,
        duration_s: point.duration_s,
        accepted: point.completed,
        errors: point.errors,
        accepted_per_s: point.transfers_per_s,
        p50_ms: point.p50_ms,
        p99_ms: point.p99_ms,
        max_ms: point.max_ms,
        first_error: point.first_error,
    });
}

/// Starts one engine on its own database in `dir`, connected to `connector`.
async fn start_engine(dir: &std::path::Path, connector: &MockConnector) -> SeHandle {
    let db = Db::open(dir).unwrap_or_else(|e| fail(&format!("open {}: {e}", dir.display())));
    let config = SeConfig {
        connector: connector.url(),
        module: "trustline".to_owned(),
        data_dir: dir.to_path_buf(),
        ..SeConfig::default()
    };
    let store: Arc<dyn SeStore> = Arc::new(RocksSeStore::new(Arc::clone(&db)));
    let logs: Arc<dyn ModuleLogs> = Arc::new(RocksModuleLogs::new(db));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| fail(&format!("bind: {e}")));
    se::start(config, store, logs, listener, None)
        .await
        .unwrap_or_else(|e| fail(&format!("start engine: {e}")))
}

async fn run(
    connections: u64,
    warmup: Duration,
    duration: Duration,
    data_dir: PathBuf,
) -> LoadPoint {
    std::fs::create_dir_all(&data_dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", data_dir.display())));
    let dir = tempfile::Builder::new()
        .prefix("ilp-bridge-bench-settle")
        .tempdir_in(&data_dir)
        .unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let connector_a = MockConnector::start()
        .await
        .unwrap_or_else(|e| fail(&format!("mock connector: {e}")));
    let connector_b = MockConnector::start()
        .await
        .unwrap_or_else(|e| fail(&format!("mock connector: {e}")));
    let engine_a = start_engine(&dir.path().join("a"), &connector_a).await;
    let engine_b = start_engine(&dir.path().join("b"), &connector_b).await;
    let url_a = format!("http://{}", engine_a.addr);
    let url_b = format!("http://{}", engine_b.addr);
    let account_a = connector_a
        .add_account(&url_a)
        .await
        .unwrap_or_else(|e| fail(&format!("account: {e}")));
    let account_b = connector_b
        .add_account(&url_b)
        .await
        .unwrap_or_else(|e| fail(&format!("account: {e}")));
    MockConnector::link(&connector_a, &account_a, &connector_b, &account_b)
        .unwrap_or_else(|e| fail(&format!("link: {e}")));

    let settle_url: Arc<str> = Arc::from(format!("{url_a}/accounts/{account_a}/settlements"));
    // One client per connection, each allowed one pooled connection: exactly `connections` sockets.
    let clients: Vec<reqwest::Client> = (0..connections)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_else(|e| fail(&format!("http client: {e}")))
        })
        .collect();
    let clients = Arc::new(clients);
    // Worker i always uses client i.
    let point = closed_loop(connections, warmup, duration, {
        let clients = Arc::clone(&clients);
        move |worker| {
            let clients = Arc::clone(&clients);
            let settle_url = Arc::clone(&settle_url);
            let i = worker as usize % clients.len();
            async move {
                let response = clients[i]
                    .post(&*settle_url)
                    .header("Content-Type", "application/json")
                    .header("Accept", "application/json")
                    .header(
                        "Idempotency-Key",
                        uuid::Uuid::new_v4().hyphenated().to_string(),
                    )
                    .body(SETTLE_BODY)
                    .send()
                    .await
                    .map_err(|e| format!("request: {e}"))?;
                let status = response.status().as_u16();
                // Read the body so the connection is reused.
                let _ = response.bytes().await;
                if status == 201 {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                }
            }
        }
    })
    .await;
    engine_a.stop().await;
    engine_b.stop().await;
    point
}
