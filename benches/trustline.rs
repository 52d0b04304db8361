//! BTP/1.0 trustline transfers between two ilp-bridge peers.
//!
//! Two [`PeerNode`]s run in this process, each on its own durable RocksDB [`Db`] in a temporary folder (every
//! TransferLog change is synced before it is acknowledged), connected over one loopback websocket: `server`
//! listens (legacy `listener` options), `client` dials it (legacy `server` URL). The client sends conditional
//! transfers of amount 1 carrying an ILP v1 payment; the server fulfills each one as soon as it is prepared.
//! A transfer is complete when the client has the Response to its Prepare and has applied the Fulfill (the
//! `outgoing_settled` hook); its Response to the Fulfill is written right after. This is the same workload
//! and the same definition as `bench/legacy_trustline.js`.
//!
//! Closed loop: N workers each keep one transfer in flight, 1 s warm-up then 10 s per load point (1 and 50 in
//! flight by default). Prints one JSON object in the format of the legacy script.
//!
//! `--history N` first puts N finished transfers into each peer's log (generated once into `--cache-dir DIR` and
//! reused; without it, into the data folder), to measure throughput against a store with a long history.
//!
//! `--bench [--in-flight 1,50] [--duration-ms 10000] [--warmup-ms 1000] [--data-dir DIR] [--history N]
//! [--cache-dir DIR] [--leader-writes 0|1] [--worker-threads N]`; without `--bench` (under `cargo test`) it runs a
//! 300 ms smoke version. `--leader-writes 0` opens the databases with `DbOptions::leader_writes` off (every group
//! written by the writer thread), for A/B runs of the same binary. `--worker-threads N` runs the runtime on N
//! threads, as the node's `worker_threads` does (default: one per core, as the node's default).

mod harness_common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use btp::ilp_v1::{IlpV1Packet, Payment};
use bytes::Bytes;
use channel_modules::amount::LedgerAmount;
use channel_modules::store::{Direction, Transfer, TransferId};
use harness_common::{closed_loop, fail, history, print_json, Args, LoadPoint};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::peer::{NodeOptions, PeerNode, TransferHook, TransferOutcome, Trustline};
use ilp_bridge::store::{Db, DbOptions};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// The listening peer (and its store namespace).
const SERVER: &str = "bench-server";
/// The dialing peer.
const CLIENT: &str = "bench-client";
/// Shared secret of the benchmark trustline.
const SECRET: &str = "bench-secret";
/// Limits large enough that no run reaches them (amount 1 per transfer).
const MAX_BALANCE: &str = "1000000000000000000";
/// Expiry of each transfer (far beyond any latency seen).
const TRANSFER_EXPIRY: Duration = Duration::from_secs(30);
/// How long a worker waits for the Fulfill after its Prepare was accepted.
const FULFILL_WAIT: Duration = Duration::from_secs(10);
/// Time allowed for the client to connect.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// The fixed preimage every transfer is fulfilled with.
fn fulfillment() -> [u8; 32] {
    Sha256::digest(b"ilp-bridge benchmark preimage").into()
}

/// Server side: fulfills every incoming transfer as soon as it is prepared.
struct FulfillEverything {
    fulfillment: [u8; 32],
}

#[async_trait]
impl TransferHook for FulfillEverything {
    async fn incoming_prepared(&self, peer: Trustline, transfer: Transfer) {
        if let Err(e) = peer
            .fulfill_condition(transfer.id, self.fulfillment, None)
            .await
        {
            tracing::warn!(transfer = %transfer.id, error = %e, "benchmark fulfill failed");
        }
    }

    async fn outgoing_settled(
        &self,
        _peer: Trustline,
        _transfer: Transfer,
        _outcome: TransferOutcome,
    ) {
    }
}

/// Client side: hands each transfer's outcome to the worker waiting for it.
#[derive(Default)]
struct Outcomes {
    waiting: Mutex<HashMap<TransferId, oneshot::Sender<TransferOutcome>>>,
}

impl Outcomes {
    fn wait_for(&self, id: TransferId) -> oneshot::Receiver<TransferOutcome> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        rx
    }

    fn forget(&self, id: &TransferId) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

#[async_trait]
impl TransferHook for Outcomes {
    async fn incoming_prepared(&self, _peer: Trustline, _transfer: Transfer) {}

    async fn outgoing_settled(
        &self,
        _peer: Trustline,
        transfer: Transfer,
        outcome: TransferOutcome,
    ) {
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&transfer.id);
        if let Some(tx) = waiter {
            let _ = tx.send(outcome);
        }
    }
}

#[derive(serde::Serialize)]
struct TrustlineResult {
    implementation: &'static str,
    /// Threads of the runtime both peers run on.
    worker_threads: usize,
    store: &'static str,
    processes: u32,
    transport: &'static str,
    workload: &'static str,
    /// Finished transfers each peer's log held before the run (`--history`).
    finished_transfers_in_store: u64,
    results: Vec<LoadPoint>,
}

fn peer_config(name: &str, options: serde_json::Value) -> PeerConfig {
    PeerConfig::from_legacy_json(name, &options)
        .unwrap_or_else(|e| fail(&format!("peer config {name}: {e}")))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn main() {
    let args = Args::from_env();
    let in_flight = args.list("in-flight", &[1, 50], &[1, 4]);
    let duration = Duration::from_millis(args.num("duration-ms", 10_000, 300));
    let warmup = Duration::from_millis(args.num("warmup-ms", 1_000, 100));
    let data_dir = args
        .get("data-dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let db_options = DbOptions {
        leader_writes: args.num("leader-writes", 1, 1) != 0,
        ..DbOptions::default()
    };
    let history = History {
        transfers: args.num("history", 0, 200),
        cache_dir: args.get("cache-dir").map(PathBuf::from),
    };
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
    }

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let worker_threads = args.num("worker-threads", 0, 0);
    if worker_threads > 0 {
        builder.worker_threads(worker_threads as usize);
    }
    let runtime = builder
        .build()
        .unwrap_or_else(|e| fail(&format!("tokio: {e}")));
    let worker_threads = runtime.metrics().num_workers();
    let results = runtime.block_on(run(
        in_flight, warmup, duration, data_dir, &history, db_options,
    ));
    if !args.full {
        if let Some(p) = results.iter().find(|p| p.completed == 0 || p.errors > 0) {
            fail(&format!("smoke run: {p:?}"));
        }
    }
    print_json(&TrustlineResult {
        implementation:
            "ilp-bridge (release build, tokio multi-thread runtime, both peers in one process)",
        worker_threads,
        store: "durable RocksDB store per peer (WAL synced, group commit)",
        processes: 1,
        transport: "BTP/1.0, one loopback websocket",
        workload: "prepare -> fulfill -> response, closed loop, amount 1",
        finished_transfers_in_store: history.transfers,
        results,
    });
}

/// Finished transfers each peer's log holds before the run (`--history N`), generated once into `--cache-dir`.
struct History {
    transfers: u64,
    cache_dir: Option<PathBuf>,
}

impl History {
    /// Puts the history into the databases `server` and `client` (not yet open): a working copy of the cached
    /// stores, generated first if the cache has none.
    async fn prepare(&self, server: &std::path::Path, client: &std::path::Path) {
        if self.transfers == 0 {
            return;
        }
        let cache = match &self.cache_dir {
            Some(dir) => dir.join(format!("trustline-history-{}", self.transfers)),
            None => server.with_extension("history"),
        };
        if !cache.join(history::COMPLETE_MARKER).exists() {
            let started = std::time::Instant::now();
            let _ = std::fs::remove_dir_all(&cache);
            history::generate(
                &cache.join("server"),
                SERVER,
                Direction::Incoming,
                self.transfers,
            )
            .await;
            history::generate(
                &cache.join("client"),
                CLIENT,
                Direction::Outgoing,
                self.transfers,
            )
            .await;
            std::fs::write(cache.join(history::COMPLETE_MARKER), b"")
                .unwrap_or_else(|e| fail(&format!("marker: {e}")));
            eprintln!(
                "generated {} finished transfers per peer in {:.1} s",
                self.transfers,
                started.elapsed().as_secs_f64()
            );
        }
        history::working_copy(&cache.join("server"), server);
        history::working_copy(&cache.join("client"), client);
    }
}

async fn run(
    in_flight: Vec<u64>,
    warmup: Duration,
    duration: Duration,
    data_dir: PathBuf,
    history: &History,
    db_options: DbOptions,
) -> Vec<LoadPoint> {
    std::fs::create_dir_all(&data_dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", data_dir.display())));
    let dir = tempfile::Builder::new()
        .prefix("ilp-bridge-bench-trustline")
        .tempdir_in(&data_dir)
        .unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    history
        .prepare(&dir.path().join("server"), &dir.path().join("client"))
        .await;
    let open = |name: &str| {
        Db::open_with(dir.path().join(name), db_options)
            .unwrap_or_else(|e| fail(&format!("open {name}: {e}")))
    };
    let options = NodeOptions {
        bind_host: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        ..NodeOptions::default()
    };

    let server_cfg = peer_config(
        SERVER,
        serde_json::json!({
            "listener": {"port": 0},
            "prefix": "bench.bridge.",
            "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []},
            "incomingSecret": SECRET,
            "maxBalance": MAX_BALANCE,
        }),
    );
    let server = PeerNode::start(vec![server_cfg], open("server"), options.clone())
        .await
        .unwrap_or_else(|e| fail(&format!("server node: {e}")));
    let port = server
        .listen_addr(0)
        .unwrap_or_else(|| fail("server node has no listener"))
        .port();
    let server_tl = server
        .trustline(SERVER)
        .unwrap_or_else(|| fail("no server trustline"))
        .clone();
    server_tl.set_hook(Arc::new(FulfillEverything {
        fulfillment: fulfillment(),
    }));

    let client_cfg = peer_config(
        CLIENT,
        serde_json::json!({
            "server": format!("btp+ws://:{SECRET}@127.0.0.1:{port}"),
            "maxBalance": MAX_BALANCE,
        }),
    );
    let client = PeerNode::start(vec![client_cfg], open("client"), options)
        .await
        .unwrap_or_else(|e| fail(&format!("client node: {e}")));
    let client_tl = client
        .trustline(CLIENT)
        .unwrap_or_else(|| fail("no client trustline"))
        .clone();
    let outcomes = Arc::new(Outcomes::default());
    client_tl.set_hook(outcomes.clone());

    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    while !(client_tl.is_connected() && server_tl.is_connected()) {
        if tokio::time::Instant::now() > deadline {
            fail("the trustline did not connect");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let to = client_tl
        .get_peer_account()
        .unwrap_or_else(|e| fail(&format!("peer account: {e}")));
    let ilp = IlpV1Packet::Payment(Payment {
        amount: 1,
        account: format!("{to}.bob"),
        data: Bytes::new(),
    })
    .to_bytes()
    .to_vec();
    let condition: [u8; 32] = Sha256::digest(fulfillment()).into();

    let mut results = Vec::new();
    for n in in_flight {
        let client_tl = client_tl.clone();
        let outcomes = outcomes.clone();
        let ilp = ilp.clone();
        let point = closed_loop(n, warmup, duration, move |_worker| {
            let client_tl = client_tl.clone();
            let outcomes = outcomes.clone();
            let transfer = Transfer {
                id: TransferId(*uuid::Uuid::new_v4().as_bytes()),
                amount: LedgerAmount(1),
                execution_condition: condition,
                expires_at_ms: now_ms() + TRANSFER_EXPIRY.as_millis() as i64,
                ilp: ilp.clone(),
                custom: None,
            };
            async move {
                let id = transfer.id;
                let outcome = outcomes.wait_for(id);
                if let Err(e) = client_tl.send_transfer(transfer).await {
                    outcomes.forget(&id);
                    return Err(format!("send_transfer: {e}"));
                }
                match tokio::time::timeout(FULFILL_WAIT, outcome).await {
                    Ok(Ok(TransferOutcome::Fulfilled { .. })) => Ok(()),
                    Ok(Ok(other)) => Err(format!("not fulfilled: {other:?}")),
                    Ok(Err(_)) => Err("outcome dropped".to_owned()),
                    Err(_) => {
                        outcomes.forget(&id);
                        Err("no fulfill within the wait".to_owned())
                    }
                }
            }
        })
        .await;
        if let Some(e) = &point.first_error {
            eprintln!("{n} in flight: {} errors, first: {e}", point.errors);
        }
        results.push(point);
    }
    client.shutdown().await;
    server.shutdown().await;
    results
}
