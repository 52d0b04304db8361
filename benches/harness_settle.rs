//! Settlement-engine settle requests accepted per second, and their latency, at 32 connections.
//!
//! Two ilp-bridge settlement engines (module `trustline`), each on its own durable RocksDB [`Db`] in a
//! temporary folder, each with a mock interledger-rs accounting system ([`MockConnector`]); the two accounts
//! are linked, so the IOU messages engine A sends while settling reach engine B, which credits its connector.
//! The load generator opens 32 HTTP/1.1 keep-alive connections to engine A and sends
//! `POST /accounts/{id}/settlements` with a fresh `Idempotency-Key` and `{"amount":"1","scale":9}`, one request
//! in flight per connection. A request counts when it is answered `201` (the engine answers only after the
//! request, its leftover and its key are durable). The client is a minimal HTTP/1.1 writer/reader in the
//! manner of `wrk` ([`RawConn`]): it shares the 2 cores with the engines it measures, and a profile showed a
//! full `reqwest` client taking ≈ 22 % of the CPU of the run.
//!
//! `--bench [--connections 32] [--duration-ms 10000] [--warmup-ms 1000] [--data-dir DIR]`; without `--bench`
//! (under `cargo test`) it runs a 300 ms smoke version with 2 connections.

mod harness_common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use harness_common::{closed_loop, fail, print_json, Args, LoadPoint};
use ilp_bridge::config::settlement::SeConfig;
use ilp_bridge::settlement::host::{ModuleLogs, RocksModuleLogs};
use ilp_bridge::settlement::store::{RocksSeStore, SeStore};
use ilp_bridge::settlement::{self, SeHandle};
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
    /// Synced group writes (one WAL sync each) of engine A's and engine B's databases during the run, warm-up
    /// included: how many settle requests share a sync.
    synced_groups_a: u64,
    synced_groups_b: u64,
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
    let (point, (synced_groups_a, synced_groups_b)) =
        runtime.block_on(run(connections, warmup, duration, data_dir));
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
        synced_groups_a,
        synced_groups_b,
        first_error: point.first_error,
    });
}

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 4096;

/// One HTTP/1.1 keep-alive connection that sends a request and reads its response (status line, headers,
/// `Content-Length` body), reconnecting when the server closes it.
struct RawConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl RawConn {
    fn new(addr: SocketAddr) -> Self {
        RawConn {
            addr,
            stream: None,
            buf: Vec::with_capacity(READ_CHUNK_BYTES),
        }
    }

    /// Sends `request` (complete, with headers and body) and returns the response's status code.
    async fn send(&mut self, request: &[u8]) -> Result<u16, String> {
        let result = self.exchange(request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<u16, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            stream
                .set_nodelay(true)
                .map_err(|e| format!("nodelay: {e}"))?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head =
            std::str::from_utf8(&self.buf[..head_end]).map_err(|_| "response head is not UTF-8")?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line: {:?}", head.lines().next()))?;
        let mut body_len = None;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    body_len = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        let body_len = body_len.ok_or("response without Content-Length")?;
        while self.buf.len() < head_end + body_len {
            read_more(stream, &mut self.buf).await?;
        }
        self.buf.drain(..head_end + body_len);
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed by the server".to_owned());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Starts one engine on its own database in `dir`, connected to `connector`; returns it with its database.
async fn start_engine(dir: &std::path::Path, connector: &MockConnector) -> (SeHandle, Arc<Db>) {
    let db = Db::open(dir).unwrap_or_else(|e| fail(&format!("open {}: {e}", dir.display())));
    let config = SeConfig {
        connector: connector.url(),
        module: "trustline".to_owned(),
        // The paired engines trust each other for every IOU the run can send (engine mode's default is none).
        module_options: serde_json::json!({ "trustLimit": "1000000000000000000000000000000" }),
        ..SeConfig::default()
    };
    let store: Arc<dyn SeStore> = Arc::new(RocksSeStore::new(Arc::clone(&db)));
    let logs: Arc<dyn ModuleLogs> = Arc::new(RocksModuleLogs::new(Arc::clone(&db)));
    let identities = ilp_bridge::identity::IdentityRegistry::on_db(Arc::clone(&db));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| fail(&format!("bind: {e}")));
    let engine = settlement::start(config, store, logs, identities, listener, None)
        .await
        .unwrap_or_else(|e| fail(&format!("start engine: {e}")));
    (engine, db)
}

async fn run(
    connections: u64,
    warmup: Duration,
    duration: Duration,
    data_dir: PathBuf,
) -> (LoadPoint, (u64, u64)) {
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
    let (engine_a, db_a) = start_engine(&dir.path().join("a"), &connector_a).await;
    let (engine_b, db_b) = start_engine(&dir.path().join("b"), &connector_b).await;
    let groups_before = (db_a.group_writes(), db_b.group_writes());
    let write_times: Arc<std::sync::Mutex<Vec<u32>>> = Arc::default();
    if std::env::var_os("SETTLE_GROUP_TIMES").is_some() {
        let sink = Arc::clone(&write_times);
        db_a.observe_writes(Arc::new(move |_, took| {
            if let Ok(mut v) = sink.lock() {
                v.push(took.as_micros() as u32);
            }
        }));
    }
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

    let path: Arc<str> = Arc::from(format!("/accounts/{account_a}/settlements"));
    let host: Arc<str> = Arc::from(engine_a.addr.to_string());
    // One connection per worker: exactly `connections` sockets.
    let conns: Arc<Vec<tokio::sync::Mutex<RawConn>>> = Arc::new(
        (0..connections)
            .map(|_| tokio::sync::Mutex::new(RawConn::new(engine_a.addr)))
            .collect(),
    );
    // Worker i always uses connection i.
    let point = closed_loop(connections, warmup, duration, {
        let conns = Arc::clone(&conns);
        move |worker| {
            let conns = Arc::clone(&conns);
            let path = Arc::clone(&path);
            let host = Arc::clone(&host);
            let i = worker as usize % conns.len();
            async move {
                let request = format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                     Accept: application/json\r\nIdempotency-Key: {}\r\nContent-Length: {}\r\n\r\n{SETTLE_BODY}",
                    uuid::Uuid::new_v4().hyphenated(),
                    SETTLE_BODY.len()
                );
                let mut conn = conns[i].lock().await;
                let status = tokio::time::timeout(REQUEST_TIMEOUT, conn.send(request.as_bytes()))
                    .await
                    .map_err(|_| "request timed out".to_owned())??;
                if status == 201 {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                }
            }
        }
    })
    .await;
    let groups = (
        db_a.group_writes() - groups_before.0,
        db_b.group_writes() - groups_before.1,
    );
    if let Ok(mut v) = write_times.lock() {
        if !v.is_empty() {
            v.sort_unstable();
            let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
            eprintln!(
                "engine A group writes: {} , p50 {} us, p90 {} us, p99 {} us",
                v.len(),
                at(0.5),
                at(0.9),
                at(0.99)
            );
        }
    }
    engine_a.stop().await;
    engine_b.stop().await;
    (point, groups)
}
