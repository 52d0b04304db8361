//! Start-up time of a peer whose store holds 1,000,000 finished transfers.
//!
//! The store is made once through the public durable [`TransferLog`](channel_modules::store::TransferLog) API
//! (each transfer prepared, then fulfilled, as a trustline does) in `--cache-dir` and reused by later runs
//! (a `complete` marker is written last). Each measurement starts this binary again as a fresh process
//! (`--role start`) that opens the database and starts a [`PeerNode`] with one listening trustline on that
//! namespace, then prints `READY`; the figure is the wall-clock time from spawning the process to that line
//! (so it includes exec, RocksDB open, the log load and the listener bind). The child also reports the log's
//! incoming-fulfilled sum, which must equal the number of transfers, proving the history is really there.
//! The median of 3 start-ups is reported; the OS page cache is warm (the store was just written or read).
//!
//! `--bench [--transfers 1000000] [--cache-dir DIR] [--data-dir DIR]`; without `--bench` (under
//! `cargo test`) it runs with 2,000 transfers in a temporary folder.

mod harness_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use channel_modules::store::Direction;
use harness_common::history::{self, COMPLETE_MARKER};
use harness_common::{fail, print_json, Args, ChildGuard};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::peer::{NodeOptions, PeerNode};
use ilp_bridge::store::Db;

/// Peer (and store namespace) name.
const PEER: &str = "bench-server";
/// Start-ups measured; the median is reported.
const STARTS: usize = 3;

#[derive(serde::Serialize)]
struct StartupResult {
    implementation: &'static str,
    finished_transfers: u64,
    startup_s: f64,
    startup_runs_s: Vec<f64>,
    store_bytes: u64,
    generated_now: bool,
    generate_s: Option<f64>,
}

fn peer_config() -> PeerConfig {
    let options = serde_json::json!({
        "listener": {"port": 0},
        "prefix": "bench.bridge.",
        "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []},
        "incomingSecret": "bench-secret",
        "maxBalance": "1000000000000000000",
    });
    PeerConfig::from_legacy_json(PEER, &options)
        .unwrap_or_else(|e| fail(&format!("peer config: {e}")))
}

fn main() {
    let args = Args::from_env();
    if args.get("role") == Some("start") {
        let db = args.get("db").unwrap_or_else(|| fail("--db is required"));
        start_once(Path::new(db));
        return;
    }
    let transfers = args.num("transfers", 1_000_000, 2_000);
    let data_dir = args
        .get("data-dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&data_dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", data_dir.display())));
    // A smoke run keeps its store in a temporary folder; a full run caches it.
    let temp = tempfile::Builder::new()
        .prefix("ilp-bridge-bench-startup")
        .tempdir_in(&data_dir)
        .unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let cache_dir = match args.get("cache-dir") {
        Some(d) if args.full => PathBuf::from(d),
        _ => temp.path().to_path_buf(),
    };
    let store = cache_dir.join(format!("startup-{transfers}-finished"));

    let mut generate_s = None;
    if !store.join(COMPLETE_MARKER).exists() {
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", store.display())));
        let runtime =
            tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("tokio: {e}")));
        runtime.block_on(history::generate(
            &store.join("db"),
            PEER,
            Direction::Incoming,
            transfers,
        ));
        std::fs::write(store.join(COMPLETE_MARKER), b"")
            .unwrap_or_else(|e| fail(&format!("marker: {e}")));
        generate_s = Some(started.elapsed().as_secs_f64());
        eprintln!(
            "generated {transfers} finished transfers in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let exe = std::env::current_exe()
        .unwrap_or_else(|e| fail(&format!("cannot find own executable: {e}")));
    let mut runs = Vec::new();
    for _ in 0..STARTS {
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .args(["--role", "start", "--db"])
            .arg(store.join("db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start the peer process: {e}")));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| fail("no stdout from the peer process"));
        let guard = ChildGuard(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| fail(&format!("peer process: {e}")));
        let elapsed = started.elapsed();
        drop(guard);
        let fulfilled: u64 = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail(&format!("peer process did not start: {line:?}")));
        if fulfilled != transfers {
            fail(&format!(
                "the store holds {fulfilled} fulfilled transfers, expected {transfers}"
            ));
        }
        runs.push((elapsed.as_secs_f64() * 1e4).round() / 1e4);
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    print_json(&StartupResult {
        implementation: "ilp-bridge PeerNode::start (fresh process, RocksDB open, trustline log load, listener bind)",
        finished_transfers: transfers,
        startup_s: sorted[sorted.len() / 2],
        startup_runs_s: runs,
        store_bytes: dir_bytes(&store),
        generated_now: generate_s.is_some(),
        generate_s: generate_s.map(|s| (s * 10.0).round() / 10.0),
    });
}

/// The measured process: open the database, start the peer, print `READY <incoming fulfilled>`, stop.
fn start_once(db_path: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("tokio: {e}")));
    runtime.block_on(async {
        let db =
            Db::open(db_path).unwrap_or_else(|e| fail(&format!("open {}: {e}", db_path.display())));
        let options = NodeOptions {
            bind_host: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            ..NodeOptions::default()
        };
        let node = PeerNode::start(vec![peer_config()], db, options)
            .await
            .unwrap_or_else(|e| fail(&format!("peer node: {e}")));
        let tl = node.trustline(PEER).unwrap_or_else(|| fail("no trustline"));
        println!("READY {}", tl.log().sums().incoming_fulfilled);
        node.shutdown().await;
    });
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
