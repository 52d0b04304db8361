//! Memory per connected idle peer.
//!
//! This binary re-executes itself as the bridge process (`--role server`): it starts the tokio runtime and
//! opens its durable RocksDB [`Db`] in a temporary folder, then waits; the parent reads the child's `VmRSS`
//! from `/proc/<pid>/status` (the baseline). The child then starts a [`PeerNode`] with N legacy-style server
//! trustlines (`peer0` … `peer{N-1}`, each its own secret, one shared listener on 127.0.0.1), and the parent
//! dials all N (one websocket each, BTP auth), waits until every one is connected, lets the memory settle and
//! reads `VmRSS` again. Figure: (after − before) / N, i.e. everything one configured and connected peer costs
//! (trustline state, its log, session, socket, buffers). Prints `{idle_peers, rss_before_kib, rss_after_kib,
//! per_peer_kib}`.
//!
//! Run by `bench/run` (`--bench --peers 1000`); under `cargo test` it runs a smoke version with 20 peers.

mod harness_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use btp::packet::Packet;
use btp::transport::{
    BtpEndpoint, BtpSession, BtpUrl, ClientOptions, EndpointConfig, PeerKey, Reply, RequestHandler,
};
use harness_common::{fail, print_json, rss_kib, Args, ChildGuard};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::peer::{NodeOptions, PeerNode};
use ilp_bridge::store::Db;

/// How long the memory is left to settle before each reading.
const SETTLE_TIME: Duration = Duration::from_secs(1);
/// Time allowed for all peers to connect.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// The dialling side answers nothing: the peers stay idle.
struct IdleHandler;

#[async_trait]
impl RequestHandler for IdleHandler {
    async fn handle_request(
        &self,
        _session: &BtpSession,
        _request_id: u32,
        _packet: Packet,
    ) -> Option<Reply> {
        None
    }
}

#[derive(serde::Serialize)]
struct IdleResult {
    implementation: &'static str,
    idle_peers: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    per_peer_kib: f64,
}

fn secret(i: u64) -> String {
    format!("bench-secret-{i}")
}

fn main() {
    let args = Args::from_env();
    let peers = args.num("peers", 1000, 20);
    if args.get("role") == Some("server") {
        let db = args.get("db").unwrap_or_else(|| fail("--db is required"));
        server(peers, PathBuf::from(db));
        return;
    }
    let data_dir = args
        .get("data-dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&data_dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", data_dir.display())));
    let dir = tempfile::Builder::new()
        .prefix("ilp-bridge-bench-idle")
        .tempdir_in(&data_dir)
        .unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| fail(&format!("cannot find own executable: {e}")));
    let mut child = Command::new(exe)
        .args(["--role", "server", "--peers", &peers.to_string(), "--db"])
        .arg(dir.path().join("db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start the bridge process: {e}")));
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| fail("no stdout from the bridge process"));
    let mut stdin = child
        .stdin
        .take()
        .unwrap_or_else(|| fail("no stdin to the bridge process"));
    let guard = ChildGuard(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut next_line = || -> String {
        match lines.next() {
            Some(Ok(l)) => l,
            other => fail(&format!("bridge process stopped: {other:?}")),
        }
    };

    if next_line() != "BASELINE" {
        fail("bridge process did not reach its baseline");
    }
    std::thread::sleep(SETTLE_TIME);
    let before = rss_kib(pid).unwrap_or_else(|| fail("cannot read VmRSS of the bridge process"));
    writeln!(stdin, "go").unwrap_or_else(|e| fail(&format!("bridge process: {e}")));
    let ready = next_line();
    let port: u16 = ready
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            fail(&format!(
                "bridge process did not start its peers: {ready:?}"
            ))
        });

    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("tokio: {e}")));
    let sessions = runtime.block_on(connect_all(port, peers));

    std::thread::sleep(SETTLE_TIME);
    let after = rss_kib(pid).unwrap_or_else(|| fail("cannot read VmRSS of the bridge process"));
    let connected = sessions.iter().filter(|s| s.is_connected()).count() as u64;
    if connected != peers {
        fail(&format!(
            "only {connected} of {peers} peers stayed connected"
        ));
    }
    drop(stdin);
    drop(guard);
    drop(sessions);
    print_json(&IdleResult {
        implementation:
            "ilp-bridge PeerNode: one durable trustline per peer, one shared BTP/1.0 listener",
        idle_peers: peers,
        rss_before_kib: before,
        rss_after_kib: after,
        per_peer_kib: ((after.saturating_sub(before)) as f64 / peers as f64 * 10.0).round() / 10.0,
    });
}

/// Dials `peers` sessions to the bridge on `port` and waits until all are connected.
async fn connect_all(port: u16, peers: u64) -> Vec<BtpSession> {
    let endpoint = BtpEndpoint::new(EndpointConfig::default());
    let handler: Arc<dyn RequestHandler> = Arc::new(IdleHandler);
    let mut sessions = Vec::new();
    for i in 0..peers {
        let url = BtpUrl::parse(&format!("btp+ws://:{}@127.0.0.1:{port}", secret(i)))
            .unwrap_or_else(|e| fail(&format!("url: {e}")));
        sessions.push(endpoint.connect(
            PeerKey::new(format!("peer{i}")),
            &url,
            ClientOptions::default(),
            handler.clone(),
        ));
    }
    let deadline = Instant::now() + CONNECT_DEADLINE;
    while sessions.iter().any(|s| !s.is_connected()) {
        if Instant::now() > deadline {
            let n = sessions.iter().filter(|s| s.is_connected()).count();
            fail(&format!(
                "only {n} of {peers} peers connected within {CONNECT_DEADLINE:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sessions
}

/// The bridge process. Prints `BASELINE` once the runtime and the database are up, waits for a line on stdin,
/// starts `peers` server trustlines on one listener, prints `READY <port>` and runs until stdin closes.
fn server(peers: u64, db_path: PathBuf) {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("tokio: {e}")));
    let db =
        Db::open(&db_path).unwrap_or_else(|e| fail(&format!("open {}: {e}", db_path.display())));
    let configs: Vec<PeerConfig> = (0..peers)
        .map(|i| {
            let options = serde_json::json!({
                "listener": {"port": 0},
                "prefix": format!("bench.p{i}."),
                "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []},
                "incomingSecret": secret(i),
                "maxBalance": "1000000000",
            });
            PeerConfig::from_legacy_json(&format!("peer{i}"), &options)
                .unwrap_or_else(|e| fail(&format!("peer config: {e}")))
        })
        .collect();
    println!("BASELINE");
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .unwrap_or_else(|e| fail(&format!("stdin: {e}")));
    runtime.block_on(async move {
        let options = NodeOptions {
            bind_host: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            ..NodeOptions::default()
        };
        let node = PeerNode::start(configs, db, options)
            .await
            .unwrap_or_else(|e| fail(&format!("peer node: {e}")));
        let port = node
            .listen_addr(0)
            .unwrap_or_else(|| fail("no listener"))
            .port();
        println!("READY {port}");
        let mut sink = Vec::new();
        // Runs until the parent closes stdin (or dies).
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_to_end(&mut sink)).await;
        node.shutdown().await;
    });
}
