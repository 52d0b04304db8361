//! The node's Prometheus metrics, served at `/metrics` in the Prometheus text format (0.0.4), made with
//! `prometheus-client` (the Prometheus project's own Rust client: no global registry, so two nodes in one
//! process keep their own metrics, and counters get their `_total` suffix from the encoder).
//!
//! Two kinds:
//! * **counted as it happens**: transfers and their amounts, per peer, direction and final state (from the
//!   trustline's events); lost connections and reconnects per peer (from the BTP session's state); the store's
//!   write and sync latencies (from [`Db::observe_writes`]);
//! * **read at scrape time** from the parts themselves (`NodeCollector`): balances, limits, prepared
//!   transfers and connection state per peer; per engine account its settle requests and credits; BTP auth
//!   failures; the store's poisoned flag and memory (RocksDB's caches); the process's resident memory and open
//!   descriptors; the build.
//!
//! Labels are bounded: a peer name or an engine account ID (both configured or set up by the connector),
//! a direction, a state or a write kind. Never a transfer ID.

use std::sync::Arc;

use btp::transport::{BtpSession, ConnectionState};
use channel_modules::store::{Limit, Transfer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, watch};

use super::Sources;
use crate::peer::{EventReceiver, PeerEvent, Trustline};
use crate::store::db::WriteKind;
use crate::store::Db;

/// Labels of a transfer counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabels {
    /// The peer's configured name.
    pub peer: String,
    /// `incoming` (the peer pays us) or `outgoing`.
    pub direction: &'static str,
    /// `prepared`, `fulfilled`, `rejected` or `expired`.
    pub state: &'static str,
}

/// Labels of a per-peer metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer's configured name.
    pub peer: String,
}

/// Labels of the store latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `synced_write`, `unsynced_write` or `wal_sync` (see [`WriteKind`]).
    pub kind: &'static str,
}

/// Smallest bucket of the store latency histogram, in seconds: 50 µs (a write without a sync on a fast
/// disk). Doubling over [`STORE_LATENCY_BUCKETS`] buckets reaches ≈ 1.6 s, past which a disk is failing.
const STORE_LATENCY_FIRST_BUCKET_SECONDS: f64 = 0.000_05;

/// Number of store latency buckets.
const STORE_LATENCY_BUCKETS: u16 = 16;

fn store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        STORE_LATENCY_FIRST_BUCKET_SECONDS,
        2.0,
        STORE_LATENCY_BUCKETS,
    ))
}

/// The node's metrics (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    transfers: Family<TransferLabels, Counter>,
    amounts: Family<TransferLabels, Counter>,
    reconnects: Family<PeerLabels, Counter>,
    connection_losses: Family<PeerLabels, Counter>,
    store_writes: Family<WriteLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics reading the parts in `sources` at scrape time.
    pub(crate) fn new(sources: Arc<Sources>) -> Metrics {
        let mut registry = Registry::default();
        let transfers = Family::<TransferLabels, Counter>::default();
        registry.register(
            "ilp_bridge_peer_transfers",
            "BTP/1.0 transfers reaching a state, by peer, direction and state (prepared, fulfilled, rejected, expired)",
            transfers.clone(),
        );
        let amounts = Family::<TransferLabels, Counter>::default();
        registry.register(
            "ilp_bridge_peer_transfer_amount_ledger_units",
            "Sum of the amounts of those transfers, in the peer ledger's smallest unit",
            amounts.clone(),
        );
        let reconnects = Family::<PeerLabels, Counter>::default();
        registry.register(
            "ilp_bridge_peer_reconnects",
            "Times a peer's BTP connection came back after it had been up",
            reconnects.clone(),
        );
        let connection_losses = Family::<PeerLabels, Counter>::default();
        registry.register(
            "ilp_bridge_peer_connection_losses",
            "Times a peer's BTP connection went down",
            connection_losses.clone(),
        );
        let store_writes: Family<WriteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(store_histogram);
        registry.register(
            "ilp_bridge_store_write_duration_seconds",
            "Time the store's writer took per group write (synced or not) and per WAL sync",
            store_writes.clone(),
        );
        registry.register_collector(Box::new(NodeCollector { sources }));
        Metrics {
            registry: Arc::new(registry),
            transfers,
            amounts,
            reconnects,
            connection_losses,
            store_writes,
        }
    }

    /// The metrics in the Prometheus text format (0.0.4).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Observes the latency of every write of `db` from now on.
    pub(crate) fn observe_store(&self, db: &Db) {
        let hist = self.store_writes.clone();
        let set = db.observe_writes(Arc::new(move |kind, took| {
            let kind = match kind {
                WriteKind::SyncedWrite => "synced_write",
                WriteKind::UnsyncedWrite => "unsynced_write",
                WriteKind::WalSync => "wal_sync",
            };
            hist.get_or_create(&WriteLabels { kind })
                .observe(took.as_secs_f64());
        }));
        if !set {
            tracing::debug!(
                "store writes already observed by another view; latencies not measured here"
            );
        }
    }

    /// Counts (and logs at debug) the events of `trustline` and the state changes of its `session` until
    /// `stop` turns true.
    pub(crate) fn watch_peer(
        &self,
        trustline: &Trustline,
        session: Option<&BtpSession>,
        stop: watch::Receiver<bool>,
    ) {
        let name = trustline.name().to_owned();
        let events = trustline.subscribe();
        tokio::spawn(
            self.clone()
                .count_events(name.clone(), events, stop.clone()),
        );
        if let Some(session) = session {
            tokio::spawn(self.clone().watch_connection(name, session.state(), stop));
        }
    }

    fn count(&self, peer: &str, direction: &'static str, state: &'static str, t: &Transfer) {
        let labels = TransferLabels {
            peer: peer.to_owned(),
            direction,
            state,
        };
        self.transfers.get_or_create(&labels).inc();
        self.amounts.get_or_create(&labels).inc_by(t.amount.0);
        tracing::debug!(peer, transfer = %t.id, direction, state, amount = t.amount.0, "transfer state changed");
    }

    async fn count_events(
        self,
        peer: String,
        mut events: EventReceiver,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                e = events.recv_shared() => e,
                _ = stop.wait_for(|s| *s) => return,
            };
            let event = match event {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        peer,
                        missed = n,
                        "metrics fell behind the peer's events; transfer counts are short"
                    );
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            match &*event {
                PeerEvent::IncomingPrepare(t) => self.count(&peer, "incoming", "prepared", t),
                PeerEvent::OutgoingPrepare(t) => self.count(&peer, "outgoing", "prepared", t),
                PeerEvent::IncomingFulfill { transfer, .. } => {
                    self.count(&peer, "incoming", "fulfilled", transfer)
                }
                PeerEvent::OutgoingFulfill { transfer, .. } => {
                    self.count(&peer, "outgoing", "fulfilled", transfer)
                }
                PeerEvent::IncomingReject { transfer, reason } => {
                    self.count(&peer, "incoming", "rejected", transfer);
                    tracing::debug!(peer, transfer = %transfer.id, code = reason.code_str(), "incoming transfer rejected by us");
                }
                PeerEvent::OutgoingReject { transfer, reason } => {
                    self.count(&peer, "outgoing", "rejected", transfer);
                    tracing::debug!(peer, transfer = %transfer.id, code = %reason.code, "outgoing transfer rejected by the peer");
                }
                PeerEvent::IncomingCancel(t) => self.count(&peer, "incoming", "expired", t),
                PeerEvent::OutgoingCancel(t) => self.count(&peer, "outgoing", "expired", t),
                _ => {}
            }
        }
    }

    async fn watch_connection(
        self,
        peer: String,
        mut state: watch::Receiver<ConnectionState>,
        mut stop: watch::Receiver<bool>,
    ) {
        let labels = PeerLabels { peer: peer.clone() };
        let mut was_up = *state.borrow_and_update() == ConnectionState::Connected;
        let mut been_up = was_up;
        loop {
            tokio::select! {
                r = state.changed() => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = *state.borrow_and_update();
            let up = now == ConnectionState::Connected;
            if up && !was_up {
                if been_up {
                    self.reconnects.get_or_create(&labels).inc();
                    tracing::info!(peer, "BTP connection back");
                }
                been_up = true;
            } else if !up && was_up && now != ConnectionState::Closed {
                self.connection_losses.get_or_create(&labels).inc();
                tracing::warn!(peer, state = ?now, "BTP connection lost");
            }
            was_up = up;
        }
    }
}

/// Reads the node's parts at scrape time (see the module docs).
#[derive(Clone)]
struct NodeCollector {
    sources: Arc<Sources>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector").finish_non_exhaustive()
    }
}

/// One metric family: its name, help, type and series.
struct FamilyOut<V> {
    name: &'static str,
    help: &'static str,
    series: Vec<(Vec<(&'static str, String)>, V)>,
}

impl<V> FamilyOut<V> {
    fn new(name: &'static str, help: &'static str) -> Self {
        FamilyOut {
            name,
            help,
            series: Vec::new(),
        }
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, v: V) {
        self.series.push((labels, v));
    }
}

fn encode_gauges(
    encoder: &mut DescriptorEncoder,
    f: FamilyOut<f64>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(f.name, f.help, None, MetricType::Gauge)?;
    for (labels, v) in &f.series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn encode_counters(
    encoder: &mut DescriptorEncoder,
    f: FamilyOut<u64>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(f.name, f.help, None, MetricType::Counter)?;
    for (labels, v) in &f.series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// The process's resident memory in KiB, from `VmRSS` in `/proc/self/status` (`None` where there is no such
/// file, e.g. not Linux).
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A balance or limit as a gauge value (f64: exact up to 2^53 ledger units, close enough beyond).
fn units(v: i128) -> f64 {
    v as f64
}

fn bool_gauge(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.sources;
        let mut build = FamilyOut::new(
            "ilp_bridge_build_info",
            "The build: version and commit (always 1)",
        );
        build.push(
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("commit", super::COMMIT.to_owned()),
            ],
            1.0,
        );
        encode_gauges(&mut encoder, build)?;

        let mut poisoned = FamilyOut::new(
            "ilp_bridge_store_poisoned",
            "1 once a store write or sync failed: the store refuses every write until the node restarts",
        );
        if let Some(db) = &s.db {
            poisoned.push(Vec::new(), bool_gauge(db.is_poisoned()));
        }
        encode_gauges(&mut encoder, poisoned)?;

        let mut store_memory = FamilyOut::new(
            "ilp_bridge_store_memory_bytes",
            "What the store's RocksDB holds in memory: block_cache (bounded, 64 MiB), memtables (bounded by the \
             write buffers), table_readers (index and filter blocks of the table files: grow with the history)",
        );
        if let Some(memory) = s.db.as_ref().and_then(|db| db.memory().ok()) {
            for (part, bytes) in [
                ("block_cache", memory.block_cache_bytes),
                ("memtables", memory.memtable_bytes),
                ("table_readers", memory.table_reader_bytes),
            ] {
                store_memory.push(vec![("part", part.to_owned())], bytes as f64);
            }
        }
        encode_gauges(&mut encoder, store_memory)?;

        let mut resident = FamilyOut::new(
            "process_resident_memory_bytes",
            "Resident memory of the node's process (VmRSS of /proc/self/status)",
        );
        if let Some(kib) = resident_kib() {
            resident.push(Vec::new(), (kib * 1024) as f64);
        }
        encode_gauges(&mut encoder, resident)?;

        let mut fds = FamilyOut::new(
            "process_open_fds",
            "Open file descriptors of the node's process (entries of /proc/self/fd)",
        );
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            fds.push(Vec::new(), dir.count() as f64);
        }
        encode_gauges(&mut encoder, fds)?;

        let mut auth = FamilyOut::new(
            "ilp_bridge_btp_auth_failures",
            "BTP auth attempts refused on the node's listeners (wrong secret or username)",
        );
        if let Some(ep) = &*s
            .endpoint
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            auth.push(Vec::new(), ep.auth_failures());
        }
        encode_counters(&mut encoder, auth)?;

        let peers: Vec<super::PeerEntry> = s
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut balance = FamilyOut::new(
            "ilp_bridge_peer_balance_ledger_units",
            "Our balance with the peer from our records (incoming fulfilled − outgoing fulfilled; positive: the peer owes us)",
        );
        let mut max = FamilyOut::new(
            "ilp_bridge_peer_max_balance_ledger_units",
            "The peer's maximum balance in force (absent when unbounded)",
        );
        let mut min = FamilyOut::new(
            "ilp_bridge_peer_min_balance_ledger_units",
            "The peer's minimum balance in force (absent when unbounded)",
        );
        let mut prepared = FamilyOut::new(
            "ilp_bridge_peer_prepared_transfers",
            "Transfers prepared now, by peer and direction",
        );
        let mut connected = FamilyOut::new(
            "ilp_bridge_peer_connected",
            "1 while the peer's BTP connection is up (at least one authenticated websocket)",
        );
        let mut trustline_up = FamilyOut::new(
            "ilp_bridge_peer_trustline_connected",
            "1 while the trustline is connected (info exchanged, module connected; legacy connect())",
        );
        for p in &peers {
            let tl = &p.trustline;
            let name = || vec![("peer", tl.name().to_owned())];
            balance.push(name(), units(tl.local_balance().0));
            if let Limit::Finite(v) = tl.log().maximum() {
                max.push(name(), units(v.0));
            }
            if let Limit::Finite(v) = tl.log().minimum() {
                min.push(name(), units(v.0));
            }
            let (incoming, outgoing) = tl.prepared_counts();
            let mut l = name();
            l.push(("direction", "incoming".to_owned()));
            prepared.push(l, incoming as f64);
            let mut l = name();
            l.push(("direction", "outgoing".to_owned()));
            prepared.push(l, outgoing as f64);
            if let Some(session) = &p.session {
                connected.push(name(), bool_gauge(session.is_connected()));
            }
            trustline_up.push(name(), bool_gauge(tl.is_connected()));
        }
        for f in [balance, max, min, prepared, connected, trustline_up] {
            encode_gauges(&mut encoder, f)?;
        }

        let engine = s
            .engine
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut accepted = FamilyOut::new(
            "ilp_bridge_engine_settle_requests_accepted",
            "Settle requests the engine accepted from the connector for the account",
        );
        let mut queued = FamilyOut::new(
            "ilp_bridge_engine_settle_requests_queued",
            "Accepted settle requests the settle worker has not taken yet",
        );
        let mut paid = FamilyOut::new(
            "ilp_bridge_engine_settlements_paid",
            "Settlements the peer's engine acknowledged since the node started",
        );
        let mut failed = FamilyOut::new(
            "ilp_bridge_engine_settle_failures",
            "Failed settle attempts since the node started (each retried with backoff)",
        );
        let mut failing = FamilyOut::new(
            "ilp_bridge_engine_settle_attempts_failing",
            "Failed settle attempts since the last success (0: the settle path works)",
        );
        let mut credits = FamilyOut::new(
            "ilp_bridge_engine_credits",
            "Incoming settlements credited to the connector since the node started",
        );
        let mut retried = FamilyOut::new(
            "ilp_bridge_engine_credit_retries",
            "Failed credit attempts since the node started (each retried with backoff)",
        );
        let mut pending = FamilyOut::new(
            "ilp_bridge_engine_credits_pending",
            "Incoming settlements not yet credited to the connector",
        );
        let mut alerted = FamilyOut::new(
            "ilp_bridge_engine_credits_alerted",
            "Credits the connector refused with 409: an operator must reconcile them",
        );
        let mut account_up = FamilyOut::new(
            "ilp_bridge_engine_account_connected",
            "1 once the account's module is set up",
        );
        if let Some(engine) = engine {
            for id in engine.account_ids() {
                let Ok(v) = engine.account_view(&id) else {
                    continue;
                };
                let l = || vec![("account", v.id.clone())];
                accepted.push(l(), v.requests_accepted);
                queued.push(l(), v.queued_requests as f64);
                paid.push(l(), v.since_start.claims_sent);
                failed.push(l(), v.since_start.settle_failures);
                failing.push(l(), f64::from(v.attempts));
                credits.push(l(), v.since_start.credits_done);
                retried.push(l(), v.since_start.credit_retries);
                let conflicts = v
                    .uncredited
                    .iter()
                    .filter(|c| c.status == crate::settlement::store::CreditStatus::Conflict)
                    .count();
                pending.push(l(), (v.uncredited.len() - conflicts) as f64);
                alerted.push(l(), conflicts as f64);
                account_up.push(l(), bool_gauge(v.connected));
            }
        }
        for f in [accepted, paid, failed, credits, retried] {
            encode_counters(&mut encoder, f)?;
        }
        for f in [queued, failing, pending, alerted, account_up] {
            encode_gauges(&mut encoder, f)?;
        }
        Ok(())
    }
}
