//! Bridge mode: ILPv4 Prepares from a modern connector through the bridge to a BTP/1.0 trustline peer, and the
//! Fulfill back, beside the direct trustline row (`benches/trustline.rs`): the difference is the translation and
//! the modern side's own durable log.
//!
//! Three parts in this process, each durable on its own RocksDB folder where it has one:
//! * the legacy side P: an ilp-bridge trustline peer listening for BTP/1.0 that fulfills every transfer as soon
//!   as it is prepared (the same peer as the trustline row's server);
//! * the bridge B: a bridged peer that dials P and listens for its modern connector over BTP/2.0
//!   (`link = "btp-server"`), the same scale on both sides;
//! * the modern connector M: a BTP/2.0 client sending ILPv4 Prepares of amount 1 to P's address and waiting for
//!   each Fulfill.
//!
//! A transfer is complete when M has the Fulfill: B has written the modern record, prepared the legacy transfer
//! at P (synced), taken P's Fulfill and answered M. Closed loop, 1 and 50 in flight by default.
//!
//! `--bench [--in-flight 1,50] [--duration-ms 10000] [--warmup-ms 1000] [--data-dir DIR]`; without `--bench`
//! (under `cargo test`) a short smoke run.

mod harness_common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use btp::ilp_v4::{self, Address};
use btp::transport::{BtpEndpoint, BtpUrl, ClientOptions, EndpointConfig, PeerKey};
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::store::Transfer;
use harness_common::{closed_loop, fail, print_json, Args, LoadPoint};
use ilp_bridge::bridge::modern::btp2::{Btp2Handler, Btp2Link};
use ilp_bridge::bridge::modern::{IlpHandler, IlpReply, ModernLink};
use ilp_bridge::bridge::run::{BridgeNode, ModernStores};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::node::NodeConfig;
use ilp_bridge::peer::{
    NodeOptions, PeerNode, PeerStores, TransferHook, TransferOutcome, Trustline,
};
use ilp_bridge::store::{Db, RocksStores};
use sha2::{Digest, Sha256};

/// Shared secret of the legacy trustline.
const SECRET: &str = "bench-secret";
/// Token the modern connector presents to the bridge.
const MODERN_TOKEN: &str = "bench-modern";
/// Limits large enough that no run reaches them (amount 1 per transfer).
const MAX_BALANCE: &str = "1000000000000000000";
/// Expiry of each Prepare (far beyond any latency seen).
const PREPARE_EXPIRY: Duration = Duration::from_secs(30);
/// Time allowed for the links to come up.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// The fixed preimage every transfer is fulfilled with.
fn fulfillment() -> [u8; 32] {
    Sha256::digest(b"ilp-bridge benchmark preimage").into()
}

/// P: fulfills every incoming transfer as soon as it is prepared.
struct FulfillEverything;

#[async_trait]
impl TransferHook for FulfillEverything {
    async fn incoming_prepared(&self, peer: Trustline, transfer: Transfer) {
        if let Err(e) = peer
            .fulfill_condition(transfer.id, fulfillment(), None)
            .await
        {
            tracing::warn!(transfer = %transfer.id, error = %e, "benchmark fulfill failed");
        }
    }

    async fn outgoing_settled(&self, _: Trustline, _: Transfer, _: TransferOutcome) {}
}

/// M's answer to what the bridge sends it (its route updates): a Reject, which the bridge only logs.
struct RejectAll;

#[async_trait]
impl IlpHandler for RejectAll {
    async fn handle_prepare(&self, _prepare: ilp_v4::Prepare) -> IlpReply {
        Err(ilp_v4::Reject {
            code: *b"F00",
            triggered_by: None,
            message: "benchmark connector".to_owned(),
            data: Bytes::new(),
        })
    }
}

#[derive(serde::Serialize)]
struct BridgeResult {
    implementation: &'static str,
    store: &'static str,
    processes: u32,
    transport: &'static str,
    workload: &'static str,
    results: Vec<LoadPoint>,
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
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("tokio: {e}")));
    let results = runtime.block_on(run(in_flight, warmup, duration, data_dir));
    if !args.full {
        if let Some(p) = results.iter().find(|p| p.completed == 0 || p.errors > 0) {
            fail(&format!("smoke run: {p:?}"));
        }
    }
    print_json(&BridgeResult {
        implementation: "ilp-bridge bridge mode (release build, tokio multi-thread runtime, P, B and M in one process)",
        store: "durable RocksDB: P's trustline, B's trustline and B's modern log (WAL synced, group commit)",
        processes: 1,
        transport: "ILPv4 over BTP/2.0 (M -> B), BTP/1.0 (B -> P), one loopback websocket each",
        workload: "ILPv4 prepare -> legacy prepare -> legacy fulfill -> ILPv4 fulfill, closed loop, amount 1",
        results,
    });
}

async fn run(
    in_flight: Vec<u64>,
    warmup: Duration,
    duration: Duration,
    data_dir: PathBuf,
) -> Vec<LoadPoint> {
    std::fs::create_dir_all(&data_dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", data_dir.display())));
    let dir = tempfile::Builder::new()
        .prefix("ilp-bridge-bench-bridge")
        .tempdir_in(&data_dir)
        .unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let open = |name: &str| {
        Db::open(dir.path().join(name)).unwrap_or_else(|e| fail(&format!("open {name}: {e}")))
    };
    let options = NodeOptions {
        bind_host: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        ..NodeOptions::default()
    };

    // P.
    let p_cfg = PeerConfig::from_legacy_json(
        "legacy-p",
        &serde_json::json!({
            "listener": {"port": 0},
            "prefix": "bench.kit.",
            "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []},
            "incomingSecret": SECRET,
            "maxBalance": MAX_BALANCE,
        }),
    )
    .unwrap_or_else(|e| fail(&format!("P config: {e}")));
    let p = PeerNode::start(vec![p_cfg], open("p"), options.clone())
        .await
        .unwrap_or_else(|e| fail(&format!("P node: {e}")));
    let p_port = p
        .listen_addr(0)
        .unwrap_or_else(|| fail("P has no listener"))
        .port();
    let p_tl = p
        .trustline("legacy-p")
        .unwrap_or_else(|| fail("no P trustline"))
        .clone();
    p_tl.set_hook(Arc::new(FulfillEverything));

    // B.
    let modern_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("free port: {e}")));
    let toml = format!(
        r#"
        [[peer]]
        name = "kit"
        options = {{ server = "btp+ws://:{SECRET}@127.0.0.1:{p_port}", maxBalance = "{MAX_BALANCE}", prefix = "bench.kit.", store = true, info = {{ currencyCode = "USD", currencyScale = 9 }} }}
        [peer.modern]
        link = "btp-server"
        listen = "127.0.0.1:{modern_port}"
        incoming_token = "{MODERN_TOKEN}"
        relation = "child"
        ilp_address = "bench.kit.bridge"
        "#
    );
    let config = NodeConfig::parse(&toml).unwrap_or_else(|e| fail(&format!("B config: {e}")));
    let b_db = open("b");
    let b_options = NodeOptions {
        bridged: config.modern.keys().cloned().collect(),
        ..options
    };
    let stores = |c: &PeerConfig| -> Arc<dyn PeerStores> {
        Arc::new(RocksStores::new(
            Arc::clone(&b_db),
            &c.name,
            c.max_balance,
            c.min_balance,
        ))
    };
    let mut b = PeerNode::build(config.peers.clone(), stores, b_options)
        .unwrap_or_else(|e| fail(&format!("B node: {e}")));
    let mut bridge = BridgeNode::wire(
        &b,
        &config.peers,
        &config.modern,
        ModernStores::Rocks(Arc::clone(&b_db)),
        None,
    )
    .await
    .unwrap_or_else(|e| fail(&format!("bridge: {e}")));
    b.launch()
        .await
        .unwrap_or_else(|e| fail(&format!("B launch: {e}")));
    bridge.launch().await;
    let b_tl = b
        .trustline("kit")
        .unwrap_or_else(|| fail("no B trustline"))
        .clone();

    // M.
    let endpoint = BtpEndpoint::new(EndpointConfig::default());
    let url = BtpUrl::parse(&format!("btp+ws://:{MODERN_TOKEN}@127.0.0.1:{modern_port}"))
        .unwrap_or_else(|e| fail(&format!("M url: {e}")));
    let handler: Arc<dyn IlpHandler> = Arc::new(RejectAll);
    let session = endpoint.connect(
        PeerKey::new("bridge"),
        &url,
        ClientOptions::default(),
        Arc::new(Btp2Handler::new(&handler)),
    );
    let m = Arc::new(Btp2Link::new(session.clone()));

    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    while !(b_tl.is_connected() && p_tl.is_connected() && m.is_connected()) {
        if tokio::time::Instant::now() > deadline {
            fail("the links did not come up");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let destination =
        Address::new("bench.kit.bob").unwrap_or_else(|e| fail(&format!("address: {e}")));
    let condition: [u8; 32] = Sha256::digest(fulfillment()).into();

    let mut results = Vec::new();
    for n in in_flight {
        let m = Arc::clone(&m);
        let destination = destination.clone();
        let point = closed_loop(n, warmup, duration, move |_worker| {
            let m = Arc::clone(&m);
            let expires = SystemTime::now() + PREPARE_EXPIRY;
            let prepare = Timestamp::from_system_time(expires).map(|expires_at| ilp_v4::Prepare {
                amount: 1,
                expires_at,
                execution_condition: condition,
                destination: destination.clone(),
                data: Bytes::new(),
            });
            async move {
                let prepare = prepare.ok_or_else(|| "expiry out of range".to_owned())?;
                match m.send(&prepare, PREPARE_EXPIRY).await {
                    Ok(Ok(_fulfill)) => Ok(()),
                    Ok(Err(reject)) => Err(format!("rejected: {reject:?}")),
                    Err(e) => Err(format!("link: {e}")),
                }
            }
        })
        .await;
        if let Some(e) = &point.first_error {
            eprintln!("{n} in flight: {} errors, first: {e}", point.errors);
        }
        results.push(point);
    }
    drop(session);
    bridge.shutdown().await;
    b.shutdown().await;
    p.shutdown().await;
    results
}
