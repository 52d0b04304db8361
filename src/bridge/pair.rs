//! [`BridgedPair`]: one legacy peer P (its BTP/1.0 [`Trustline`]) and the modern connector M that stands in for
//! it, joined by this node. Towards P the node is the trustline peer it always is; towards M it is P, an
//! ordinary account whose packets travel over a [`ModernLink`].
//!
//! Every packet that crosses is written down on both sides: P's side in the trustline's log as always, M's side
//! in the pair's own transfer log (namespace `bridge/<name>`, no limits: M keeps its own), under an ID derived
//! from the legacy transfer's ([`modern_id`]) and holding the legacy ID in its record. What the two logs hold is
//! the node's books of the pair; after a restart they are all it needs to finish or expire what was in flight
//! (`recover`). The flows are in `to_modern` (P → M), `to_legacy` (M → P), `peer_protocols` (IL-DCP, CCP and
//! the other `peer.*` requests from M) and `quote` (ILQP from P).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use btp::ilp_v1::IlpV1Packet;
use btp::ilp_v4::{self, Address};
use bytes::Bytes;
use channel_modules::amount::{ConnectorAmount, LedgerAmount};
use channel_modules::clock::{unix_ms, Clock, SystemClock};
use channel_modules::store::{Sums, Transfer, TransferId, TransferLog};
use channel_modules::sync::lock;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::modern::{IlpHandler, IlpReply, ModernLink};
use super::scale::Scales;
use super::translate::Translation;
use crate::peer::trustline::{TransferHook, TransferOutcome, Trustline};

/// How the modern connector relates to this node, as the connector's account for us says the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// M is our child: it asks us for its address (IL-DCP) and takes our routes; its account for us is `Parent`.
    Child,
    /// M is our parent: we ask it for our address; it does not take routes from us (a static route for P's
    /// prefix on M, or M's default route, brings P's packets to us); its account for us is `Child`.
    Parent,
    /// M is our peer: routes go both ways (CCP); its account for us is `Peer`.
    Peer,
}

impl Relation {
    /// Whether M takes route updates from us (interledger-rs sends routes to Child and Peer accounts and takes
    /// them from Parent and Peer accounts, docs/modern.md §5.10).
    pub fn sends_routes(self) -> bool {
        matches!(self, Relation::Child | Relation::Peer)
    }

    /// Whether we take route updates from M.
    pub fn takes_routes(self) -> bool {
        matches!(self, Relation::Parent | Relation::Peer)
    }
}

/// The settings of one pair.
#[derive(Debug, Clone)]
pub struct PairSettings {
    /// The two sides' scales.
    pub scales: Scales,
    /// The modern account's asset code (answered by IL-DCP, checked against what a parent says).
    pub asset_code: String,
    /// See [`Translation::expiry_margin`].
    pub expiry_margin: Duration,
    /// See [`Translation::min_window`].
    pub min_window: Duration,
    /// See [`Translation::legacy_max_hold`].
    pub legacy_max_hold: Duration,
    /// How M relates to us.
    pub relation: Relation,
    /// Our ILPv4 address (a parent's IL-DCP answer replaces it).
    pub modern_address: Address,
    /// The address M gets when it asks (IL-DCP) as our child.
    pub child_address: Option<Address>,
}

/// What the pair's books show (see [`BridgedPair::books`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Books {
    /// The trustline's sums, in legacy units: IF = what P paid us, OF = what we paid P.
    pub legacy: Sums,
    /// The modern side's sums, in modern units: IF = what M paid us (packets M → P), OF = what we paid M.
    pub modern: Sums,
    /// Fulfills P sent after the modern side had stopped waiting (a restart, or M's Prepare expired first):
    /// paid to P and not collected from M. Count and modern units, since the process started.
    pub undelivered_fulfills: (u64, ConnectorAmount),
    /// Prepares sent to M whose answer never came (timeout, dropped connection, restart): their outcome on M's
    /// side is unknown. Count and modern units, since the process started.
    pub unknown_outcomes: (u64, ConnectorAmount),
}

/// The ID under which a legacy transfer's counterpart is kept in the pair's modern log.
pub fn modern_id(pair: &str, legacy: &TransferId) -> TransferId {
    let mut h = Sha256::new();
    h.update(b"ilp-bridge modern v1\0");
    h.update(pair.as_bytes());
    h.update([0]);
    h.update(legacy.0);
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    TransferId(out)
}

/// A Prepare from M waiting for P's answer to the transfer it became.
pub(super) struct Waiter {
    pub(super) reply: oneshot::Sender<IlpReply>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) undelivered_count: AtomicU64,
    pub(super) undelivered_amount: AtomicU64,
    pub(super) unknown_count: AtomicU64,
    pub(super) unknown_amount: AtomicU64,
}

impl Counters {
    pub(super) fn add(count: &AtomicU64, amount_counter: &AtomicU64, amount: ConnectorAmount) {
        count.fetch_add(1, Ordering::Relaxed);
        let _ = amount_counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
            Some(a.saturating_add(amount.0))
        });
    }
}

pub(super) struct PairInner {
    pub(super) name: String,
    pub(super) trustline: Trustline,
    pub(super) link: RwLock<Option<Arc<dyn ModernLink>>>,
    pub(super) settings: RwLock<PairSettings>,
    pub(super) modern_log: Arc<dyn TransferLog>,
    /// Transfers to P (by legacy ID) whose Prepare from M waits for P's answer.
    pub(super) waiting: Mutex<HashMap<TransferId, Waiter>>,
    /// Transfers from P (by legacy ID) whose Fulfill from M is being written down and delivered: their expiry
    /// must wait.
    pub(super) fulfilling: Mutex<HashSet<TransferId>>,
    pub(super) counters: Counters,
    pub(super) clock: Arc<dyn Clock>,
    /// The routing table ID of our CCP updates (random per process: M re-reads our table from epoch 0 when
    /// it changes).
    pub(super) routing_table_id: [u8; 16],
}

/// One bridged pair. Cheap to clone.
#[derive(Clone)]
pub struct BridgedPair {
    pub(super) inner: Arc<PairInner>,
}

impl std::fmt::Debug for BridgedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgedPair")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl BridgedPair {
    /// A pair joining `trustline` (P's side) with a modern side whose transfers are recorded in `modern_log`.
    /// The link to M is set with [`BridgedPair::set_link`]; the pair becomes the trustline's hook here, so do
    /// this before the trustline starts (its expiry timers ask the hook).
    pub fn new(
        trustline: Trustline,
        modern_log: Arc<dyn TransferLog>,
        settings: PairSettings,
        clock: Option<Arc<dyn Clock>>,
    ) -> BridgedPair {
        let pair = BridgedPair {
            inner: Arc::new(PairInner {
                name: trustline.name().to_owned(),
                trustline: trustline.clone(),
                link: RwLock::new(None),
                settings: RwLock::new(settings),
                modern_log,
                waiting: Mutex::new(HashMap::new()),
                fulfilling: Mutex::new(HashSet::new()),
                counters: Counters::default(),
                clock: clock.unwrap_or_else(|| Arc::new(SystemClock)),
                routing_table_id: rand::random(),
            }),
        };
        trustline.set_hook(Arc::new(pair.clone()) as Arc<dyn TransferHook>);
        pair
    }

    /// The pair's name (the legacy peer's).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// P's side.
    pub fn trustline(&self) -> &Trustline {
        &self.inner.trustline
    }

    /// The modern side's transfer log.
    pub fn modern_log(&self) -> &Arc<dyn TransferLog> {
        &self.inner.modern_log
    }

    /// Sets (or replaces) the link to M.
    pub fn set_link(&self, link: Arc<dyn ModernLink>) {
        match self.inner.link.write() {
            Ok(mut l) => *l = Some(link),
            Err(p) => *p.into_inner() = Some(link),
        }
    }

    /// Drops the link and the trustline's hook (breaks the reference cycles at shutdown).
    pub fn clear(&self) {
        match self.inner.link.write() {
            Ok(mut l) => *l = None,
            Err(p) => *p.into_inner() = None,
        }
        self.inner.trustline.clear_hook();
    }

    /// The link to M, if set.
    pub fn link(&self) -> Option<Arc<dyn ModernLink>> {
        match self.inner.link.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The current settings.
    pub fn settings(&self) -> PairSettings {
        match self.inner.settings.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(super) fn set_modern_address(&self, address: Address) {
        match self.inner.settings.write() {
            Ok(mut s) => s.modern_address = address,
            Err(p) => p.into_inner().modern_address = address,
        }
    }

    /// How packets cross right now (B's legacy address follows the trustline's prefix, which a client
    /// trustline learns when it connects).
    pub fn translation(&self) -> Translation {
        let s = self.settings();
        Translation {
            scales: s.scales,
            expiry_margin: s.expiry_margin,
            min_window: s.min_window,
            legacy_max_hold: s.legacy_max_hold,
            legacy_address: self.inner.trustline.account().unwrap_or_default(),
            modern_address: s.modern_address,
        }
    }

    /// The pair's books.
    pub fn books(&self) -> Books {
        let c = &self.inner.counters;
        Books {
            legacy: self.inner.trustline.log().sums(),
            modern: self.inner.modern_log.sums(),
            undelivered_fulfills: (
                c.undelivered_count.load(Ordering::Relaxed),
                ConnectorAmount(c.undelivered_amount.load(Ordering::Relaxed)),
            ),
            unknown_outcomes: (
                c.unknown_count.load(Ordering::Relaxed),
                ConnectorAmount(c.unknown_amount.load(Ordering::Relaxed)),
            ),
        }
    }

    pub(super) fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    pub(super) fn now_ms(&self) -> i64 {
        unix_ms(self.now())
    }

    /// The pair clock's time as an ILP timestamp (clamped to the range one can hold).
    pub(super) fn now_stamp(&self) -> btp::Timestamp {
        btp::Timestamp::from_system_time_clamped(self.now())
    }
}

/// The wall-clock time of Unix milliseconds `ms`.
pub(super) fn system_time(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH,
    }
}

/// The record of a packet on the modern side: its amount and expiry in M's terms, the destination in `ilp`,
/// and the legacy transfer's ID in `custom` (`{"legacy": "<uuid>"}`).
pub(super) fn modern_record(
    id: TransferId,
    legacy: &TransferId,
    prepare: &ilp_v4::Prepare,
) -> Transfer {
    Transfer {
        id,
        amount: modern_log_amount(ConnectorAmount(prepare.amount)),
        execution_condition: prepare.execution_condition,
        expires_at_ms: prepare.expires_at.unix_millis(),
        ilp: prepare.destination.as_bytes().to_vec(),
        custom: Some(serde_json::json!({ "legacy": legacy.to_uuid_string() })),
    }
}

/// A modern-side amount as the pair's modern log records it. Exact, the same integer: the modern log keeps the
/// books of M's account ([`Books::modern`]), so its ledger units are that account's units.
pub(super) fn modern_log_amount(amount: ConnectorAmount) -> LedgerAmount {
    LedgerAmount(amount.0)
}

/// The modern-side amount of a modern log's record (the inverse of [`modern_log_amount`]).
pub(super) fn connector_amount_of(record: &Transfer) -> ConnectorAmount {
    ConnectorAmount(record.amount.0)
}

/// The legacy transfer's ID a modern record holds.
pub(super) fn legacy_id_of(record: &Transfer) -> Option<TransferId> {
    record
        .custom
        .as_ref()?
        .get("legacy")?
        .as_str()?
        .parse()
        .ok()
}

#[async_trait]
impl TransferHook for BridgedPair {
    async fn incoming_prepared(&self, _peer: Trustline, transfer: Transfer) {
        self.forward_to_modern(transfer).await;
    }

    async fn outgoing_settled(
        &self,
        _peer: Trustline,
        transfer: Transfer,
        outcome: TransferOutcome,
    ) {
        self.legacy_outcome(transfer, outcome).await;
    }

    async fn quote_request(&self, _peer: Trustline, request: IlpV1Packet) -> Option<Bytes> {
        Some(self.quote(&request).to_bytes())
    }

    async fn hold_incoming_expiry(&self, _peer: Trustline, transfer: Transfer) -> bool {
        self.hold_expiry(&transfer).await
    }
}

#[async_trait]
impl IlpHandler for BridgedPair {
    async fn handle_prepare(&self, prepare: ilp_v4::Prepare) -> IlpReply {
        self.forward_to_legacy(prepare).await
    }
}

impl BridgedPair {
    /// The waiter of legacy transfer `id`, if a Prepare from M still waits for it.
    pub(super) fn take_waiter(&self, id: &TransferId) -> Option<Waiter> {
        lock(&self.inner.waiting).remove(id)
    }
}
