//! A flood of idle junk sockets against the real `ilp-bridge` binary, run with `RLIMIT_NOFILE` = 256 (under
//! `prlimit` from util-linux) and two trustline peers, so that payments flow through it.
//!
//! ```text
//!   alice (in this process) ──btp──▶ [ x1 | ilp-bridge, 256 fds | x2 ] ◀──btp── carol (in this process)
//!                                      ▲
//!   300 idle TCP sockets from 127.0.0.2–5, reopened whenever the bridge closes one
//! ```
//!
//! The bridge must keep its file descriptors for its store and its peers: carol, a legitimate peer, dials
//! during the flood and must authenticate, payments alice → carol must keep being fulfilled, and afterwards
//! the node must still pay, must never have run out of file descriptors, and its store must not be poisoned.
//! The junk comes from other loopback addresses than the legitimate peers (127.0.0.1), as an attacker's would.
//!
//! `prlimit` must be installed; when it is missing the test fails if `CI=true` and is skipped otherwise. The
//! bridge process is killed by PID when its guard drops, also when the test fails.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btp::ilp_v1::{IlpV1Packet, Payment};
use bytes::Bytes;
use channel_modules::amount::{LedgerAmount, LedgerBalance};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{Limit, Transfer, TransferId};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::routing::{LocalPayments, RoutingConfig};
use ilp_bridge::peer::{NodeOptions, PeerEvent, PeerNode, PeerStores, Trustline};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The bridge's soft and hard `RLIMIT_NOFILE`.
const NOFILE_LIMIT: u64 = 256;
/// Idle junk sockets kept open against the bridge's listener.
const JUNK_SOCKETS: usize = 300;
/// Source addresses of the junk sockets (the legitimate peers dial from 127.0.0.1).
const JUNK_SOURCES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
    Ipv4Addr::new(127, 0, 0, 5),
];
/// A junk socket the bridge closed is reopened this much later (a sustained flood without a busy loop).
const JUNK_REOPEN_DELAY: Duration = Duration::from_millis(500);
/// The flood lasts at least this long: beyond the bridge's 2 s auth timeout, so that junk sockets are
/// closed and reopened while payments go on.
const FLOOD_MIN_DURATION: Duration = Duration::from_secs(4);
/// Pause between payments during the flood.
const PAYMENT_INTERVAL: Duration = Duration::from_millis(50);
/// Most payments during the flood (transfer IDs are `[n; 16]` with `n: u8`), and payments after it.
const MAX_PAYMENTS_DURING: u8 = 200;
const PAYMENTS_AFTER: u8 = 5;
/// Generous bound for each step (connecting, one payment); the test fails, not hangs, past it.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// The preimage of every payment's condition (carol fulfils them all).
const FULFILLMENT: [u8; 32] = [9; 32];
/// The trustlines' secrets on the bridge's shared listener.
const SECRET_ALICE: &str = "alice-secret";
const SECRET_CAROL: &str = "carol-secret";

/// Whether `prlimit` runs; `Err` (fail) under CI when it does not.
fn prlimit_available() -> R<bool> {
    let ok = Command::new("prlimit")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Ok(true);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        return Err("prlimit (util-linux) is missing".into());
    }
    eprintln!("SKIPPED: prlimit (util-linux) is not installed");
    Ok(false)
}

/// The running bridge: its process, every line it logged, and its listener's port. Killed on drop.
struct Bridge {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bridge {
    /// Every logged line so far (stdout and stderr).
    fn log(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The logged lines that contain `needle`.
    fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// File descriptors the process has open now.
    fn open_fds(&self) -> R<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))?.count())
    }

    /// A numeric field of the `file descriptor budget` log line.
    fn budget_field(&self, name: &str) -> R<usize> {
        let line = self
            .log_lines_with("file descriptor budget")
            .into_iter()
            .next()
            .ok_or("no `file descriptor budget` in the log")?;
        let v: Value = serde_json::from_str(&line)?;
        let n = v["fields"][name]
            .as_u64()
            .ok_or_else(|| format!("no {name} in {line}"))?;
        Ok(usize::try_from(n)?)
    }

    /// The `Max open files` line of the process's `/proc/<pid>/limits`.
    fn open_files_limit(&self) -> R<String> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))?;
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(str::to_owned)
            .ok_or_else(|| "no `Max open files` in /proc/<pid>/limits".into())
    }
}

/// Legacy options of a bridge trustline on the shared listener (port 0: the OS picks it).
fn bridge_peer(name: &str, secret: &str, prefix: &str) -> String {
    let options = json!({
        "listener": {"port": 0}, "incomingSecret": secret, "maxBalance": "1000000", "prefix": prefix,
        "info": {"currencyCode": "USD", "currencyScale": 9, "connectors": []}, "store": true});
    format!("[[peer]]\nname = \"{name}\"\noptions_json = '{options}'\n")
}

/// Starts `ilp-bridge run` under `prlimit --nofile=256:256` with trustlines x1 (alice's, prefix `test.a.`)
/// and x2 (carol's, prefix `test.b.`) on one listener, and waits for the listener's address in its log.
fn start_bridge(dir: &Path) -> R<Bridge> {
    let data = dir.join("data");
    let config = format!(
        "data_dir = {data:?}\n[log]\nfilter = \"info\"\nformat = \"json\"\n{}{}",
        bridge_peer("x1", SECRET_ALICE, "test.a."),
        bridge_peer("x2", SECRET_CAROL, "test.b."),
    );
    let config_path = dir.join("bridge.toml");
    std::fs::write(&config_path, config)?;
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={NOFILE_LIMIT}:{NOFILE_LIMIT}"))
        .arg(env!("CARGO_BIN_EXE_ilp-bridge"))
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
    let outputs: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(child.stdout.take().ok_or("no stdout")?),
        Box::new(child.stderr.take().ok_or("no stderr")?),
    ];
    for output in outputs {
        let lines = lines.clone();
        let port_tx = port_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = listener_port(&line) {
                    let _ = port_tx.send(port);
                }
                if let Ok(mut all) = lines.lock() {
                    all.push(line);
                }
            }
        });
    }
    let mut bridge = Bridge {
        child,
        lines,
        port: 0,
    };
    bridge.port = match port_rx.recv_timeout(STEP_TIMEOUT) {
        Ok(port) => port,
        Err(_) => {
            return Err(format!(
                "the bridge logged no listener address within {STEP_TIMEOUT:?}; its log:\n{}",
                bridge.log().join("\n")
            )
            .into())
        }
    };
    Ok(bridge)
}

/// The port of a `BTP/1.0 listener started` JSON log line.
fn listener_port(line: &str) -> Option<u16> {
    let v: Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != "BTP/1.0 listener started" {
        return None;
    }
    let addr: SocketAddr = fields.get("addr")?.as_str()?.parse().ok()?;
    Some(addr.port())
}

/// A legitimate peer: a node in this process with one client trustline `name` dialing the bridge.
async fn legit_peer(name: &str, secret: &str, port: u16) -> R<(PeerNode, Trustline)> {
    let options =
        json!({"server": format!("btp+ws://:{secret}@127.0.0.1:{port}"), "maxBalance": "1000000"});
    let config = PeerConfig::from_legacy_json(name, &options)?;
    let stores = |c: &PeerConfig| -> Arc<dyn PeerStores> {
        Arc::new(MemoryStores::new(c.max_balance, Limit::Unbounded))
    };
    // The test fulfils the payments it receives itself: an embedder that receives payments.
    let node_options = NodeOptions {
        bind_host: Some(Ipv4Addr::LOCALHOST.into()),
        routing: RoutingConfig {
            local_payments: LocalPayments::Embedder,
            ..RoutingConfig::default()
        },
        ..NodeOptions::default()
    };
    let node = PeerNode::start_with_stores(vec![config], stores, node_options).await?;
    let trustline = node.trustline(name).ok_or("no trustline")?.clone();
    Ok((node, trustline))
}

/// Waits until `trustline` is connected (authenticated and its `connect` done), or fails naming `what`.
async fn connected(trustline: &Trustline, what: &str) -> R<()> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while !trustline.is_connected() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what}: not connected within {STEP_TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Carol fulfils every prepare she receives, until the returned task is aborted.
fn auto_fulfil(carol: &Trustline) -> JoinHandle<()> {
    let mut events = carol.subscribe();
    let carol = carol.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(PeerEvent::IncomingPrepare(t)) => {
                    if let Err(e) = carol.fulfill_condition(t.id, FULFILLMENT, None).await {
                        eprintln!("carol could not fulfil {}: {e}", t.id);
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Alice pays carol 10 units through the bridge (transfer ID `[n; 16]`) and waits for the fulfill.
async fn pay(alice: &Trustline, n: u8) -> R<()> {
    let transfer = Transfer {
        id: TransferId([n; 16]),
        amount: LedgerAmount(10),
        execution_condition: Sha256::digest(FULFILLMENT).into(),
        expires_at_ms: now_ms() + 15_000,
        ilp: IlpV1Packet::Payment(Payment {
            amount: 10,
            account: "test.b.carol".to_owned(),
            data: Bytes::new(),
        })
        .to_bytes()
        .to_vec(),
        custom: None,
    };
    let mut events = alice.subscribe();
    alice.send_transfer(transfer.clone()).await?;
    let wait = async {
        loop {
            match events.recv().await? {
                PeerEvent::OutgoingFulfill { transfer: t, .. } if t.id == transfer.id => {
                    return Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
                }
                PeerEvent::OutgoingReject {
                    transfer: t,
                    reason,
                } if t.id == transfer.id => {
                    return Err(format!("payment {n} rejected: {reason:?}").into())
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .map_err(|_| format!("payment {n}: no fulfill within {STEP_TIMEOUT:?}"))?
}

/// [`JUNK_SOCKETS`] idle TCP connections to the bridge, each reopened [`JUNK_REOPEN_DELAY`] after the bridge
/// closed it, until dropped.
struct Flood {
    stop: watch::Sender<bool>,
    opened: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
    started: tokio::time::Instant,
    /// Open descriptors of the bridge just before the flood, and the most seen since (sampled every 5 ms).
    fds_before: usize,
    fds_peak: Arc<AtomicUsize>,
}

/// The bridge's open descriptors before the flood and at its peak.
struct PeakFds {
    before: usize,
    during: usize,
}

impl Flood {
    fn start(bridge: &Bridge) -> R<Flood> {
        let port = bridge.port;
        let fds_before = bridge.open_fds()?;
        let fds_peak = Arc::new(AtomicUsize::new(fds_before));
        let fd_dir = format!("/proc/{}/fd", bridge.child.id());
        let (stop, stop_rx) = watch::channel(false);
        let opened = Arc::new(AtomicUsize::new(0));
        let target = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let tasks: Vec<JoinHandle<()>> = (0..JUNK_SOCKETS)
            .map(|i| {
                let source = JUNK_SOURCES[i % JUNK_SOURCES.len()];
                let opened = opened.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    while !*stop.borrow() {
                        if let Ok(socket) = TcpSocket::new_v4() {
                            let connected = async {
                                socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
                                socket.connect(target).await
                            };
                            if let Ok(mut stream) = connected.await {
                                opened.fetch_add(1, Ordering::SeqCst);
                                // Idle: send nothing, wait for the bridge to close the socket (or the end).
                                let mut buf = [0u8; 256];
                                tokio::select! {
                                    _ = stop.wait_for(|s| *s) => return,
                                    _ = async { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} } => {}
                                }
                            }
                        }
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => return,
                            _ = tokio::time::sleep(JUNK_REOPEN_DELAY) => {}
                        }
                    }
                })
            })
            .collect();
        let sampler = {
            let peak = fds_peak.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(dir) = std::fs::read_dir(&fd_dir) {
                        peak.fetch_max(dir.count(), Ordering::SeqCst);
                    }
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
            })
        };
        let mut tasks: Vec<JoinHandle<()>> = tasks;
        tasks.push(sampler);
        Ok(Flood {
            stop,
            opened,
            tasks,
            started: tokio::time::Instant::now(),
            fds_before,
            fds_peak,
        })
    }

    /// How long the flood has been running.
    fn running_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// The bridge's descriptors before the flood and the most seen during it (sampled once more now).
    fn peak_fds(&self, bridge: &Bridge) -> R<PeakFds> {
        self.fds_peak
            .fetch_max(bridge.open_fds()?, Ordering::SeqCst);
        Ok(PeakFds {
            before: self.fds_before,
            during: self.fds_peak.load(Ordering::SeqCst),
        })
    }

    /// Connections opened so far.
    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// Closes every junk socket.
    async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_socket_flood_under_256_fds_keeps_paying_and_the_store_unpoisoned() -> R<()> {
    if !prlimit_available()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let bridge = start_bridge(dir.path())?;
    let limit = bridge.open_files_limit()?;
    assert!(
        limit.split_whitespace().any(|w| w == "256"),
        "the bridge runs with 256 file descriptors: {limit}"
    );

    let (alice_node, alice) = legit_peer("alice", SECRET_ALICE, bridge.port).await?;
    connected(&alice, "alice before the flood").await?;

    let flood = Flood::start(&bridge)?;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while flood.opened() < JUNK_SOCKETS {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("only {} junk sockets opened", flood.opened()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A legitimate peer dials during the flood and authenticates.
    let (carol_node, carol) = legit_peer("carol", SECRET_CAROL, bridge.port).await?;
    let during = connected(
        &carol,
        "carol, dialing during the flood of 300 junk sockets",
    )
    .await;
    if let Err(e) = during {
        let fd_errors = bridge.log_lines_with("Too many open files").len();
        return Err(
            format!("{e} (the bridge logged {fd_errors} `Too many open files` errors)").into(),
        );
    }
    let fulfiller = auto_fulfil(&carol);
    let mut paid_during = 0u8;
    while paid_during < MAX_PAYMENTS_DURING && flood.running_for() < FLOOD_MIN_DURATION {
        paid_during += 1;
        pay(&alice, paid_during).await?;
        tokio::time::sleep(PAYMENT_INTERVAL).await;
    }
    let peak_fds = flood.peak_fds(&bridge)?;
    let reopened = flood.opened() - JUNK_SOCKETS;
    flood.stop().await;
    eprintln!(
        "flood: {} junk connections ({reopened} reopened), bridge descriptors {} before, {} at most during; \
         {paid_during} payments during",
        JUNK_SOCKETS + reopened,
        peak_fds.before,
        peak_fds.during
    );
    assert!(
        reopened > 0,
        "the bridge closed junk sockets and they were reopened during the payments"
    );
    // After the flood: still paying (a poisoned store refuses every write).
    for n in paid_during + 1..=paid_during + PAYMENTS_AFTER {
        pay(&alice, n).await?;
    }
    let paid = i128::from(paid_during + PAYMENTS_AFTER) * 10;
    assert_eq!(
        alice.local_balance(),
        LedgerBalance(-paid),
        "alice paid every payment"
    );
    // Alice's fulfill is relayed by the bridge before carol's own Fulfill is answered and applied at her end:
    // her balance may trail the last payment by a moment.
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while carol.local_balance() != LedgerBalance(paid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        carol.local_balance(),
        LedgerBalance(paid),
        "carol was paid every payment"
    );

    let mut bridge = bridge;
    assert!(
        bridge.child.try_wait()?.is_none(),
        "the bridge is still running"
    );
    let fd_errors = bridge.log_lines_with("Too many open files");
    assert!(
        fd_errors.is_empty(),
        "the bridge ran out of file descriptors {} times, first: {:?}",
        fd_errors.len(),
        fd_errors.first()
    );
    let poisoned = bridge.log_lines_with("poisoned");
    assert!(poisoned.is_empty(), "store poisoned: {poisoned:?}");
    // The flood never took more than the budget's accepted-socket pools: the rest (the store's reserve
    // above all) stayed free.
    let accepted_budget = bridge.budget_field("max_unauthenticated_sockets")?
        + bridge.budget_field("max_authenticated_sockets")?;
    assert!(
        peak_fds.during.saturating_sub(peak_fds.before) <= accepted_budget,
        "the flood took {} descriptors (from {} to {}), more than the {accepted_budget} for accepted sockets",
        peak_fds.during.saturating_sub(peak_fds.before),
        peak_fds.before,
        peak_fds.during
    );

    fulfiller.abort();
    carol_node.shutdown().await;
    alice_node.shutdown().await;
    Ok(())
}
