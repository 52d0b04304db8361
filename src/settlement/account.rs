//! [`Account`]: one RFC 38 account in memory: its module and host, the state of its settle and credit paths
//! (each behind its own lock), and [`AcceptedTotal`], everything accepted for settlement on it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use channel_modules::amount::ModuleUnits;
use channel_modules::sync::lock;
use channel_modules::{ChannelContext, ChannelModule};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::EngineError;
use super::host::AccountHost;
use super::quantity::{to_module_units, Scaled};
use super::store::{
    CreditRecord, HistoryRecord, IncomingRecord, OutgoingRecord, QueuedRequest, SentRecord,
};

/// Longest account ID, in bytes.
pub(super) const ACCOUNT_ID_MAX_BYTES: usize = 128;

/// History entries per kind and account kept in memory for the operator view.
pub(super) const HISTORY_IN_MEMORY: usize = 1000;

/// Checks an account ID: 1..=128 bytes of `[A-Za-z0-9._~-]` (URL-safe, no `/` or `:`).
pub(super) fn validate_account_id(id: &str) -> Result<(), EngineError> {
    if id.is_empty() || id.len() > ACCOUNT_ID_MAX_BYTES {
        return Err(EngineError::BadRequest(format!(
            "account id must be 1 to {ACCOUNT_ID_MAX_BYTES} bytes"
        )));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
    {
        return Err(EngineError::BadRequest(
            "account id may only contain [A-Za-z0-9._~-]".to_owned(),
        ));
    }
    Ok(())
}

/// Mutable status of an account that is not persisted (for the operator view).
#[derive(Default)]
pub(super) struct Status {
    /// The module's `connect` succeeded.
    pub(super) connected: bool,
    /// Why the last `connect` failed.
    pub(super) connect_error: Option<String>,
    /// The amount of the claim being sent, module units.
    pub(super) in_flight: Option<ModuleUnits>,
    /// When the settle worker retries, ms since the epoch.
    pub(super) next_settle_retry_ms: Option<u64>,
}

/// Everything accepted for settlement on an account, in module units: the taken total (`target_total`, settled
/// or in flight), the queued requests, the outgoing leftover, and requests being written. Taking requests off the
/// queue only moves value between those parts, so this changes only when a request is accepted (or its write is
/// refused). Checked, with the request added, against [`ChannelModule::max_cumulative_settlement`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct AcceptedTotal {
    /// Whole module units.
    pub(super) units: ModuleUnits,
    /// Below one module unit.
    pub(super) leftover: Scaled,
}

impl AcceptedTotal {
    /// The total with `amount` (at any scale) added.
    pub(super) fn plus(&self, amount: &Scaled, module_scale: u8) -> AcceptedTotal {
        let (units, leftover) = to_module_units(&self.leftover, amount, module_scale);
        AcceptedTotal {
            units: &self.units + &units,
            leftover,
        }
    }

    /// The total with `amount` taken out again; `None` if it was never added.
    pub(super) fn minus(&self, amount: &Scaled, module_scale: u8) -> Option<AcceptedTotal> {
        let value = Scaled::of_module_units(&self.units, module_scale)
            .add(&self.leftover)
            .checked_sub(amount)?;
        Some(AcceptedTotal::default().plus(&value, module_scale))
    }
}

/// A pending credit with its next attempt time (memory only: everything is due at start-up).
pub(super) struct PendingCredit {
    /// The credit, as stored.
    pub(super) record: CreditRecord,
    /// When the credit worker tries it next.
    pub(super) due: Instant,
}

/// One RFC 38 account and its module.
pub(super) struct Account {
    pub(super) id: String,
    /// Creation time, ms since the epoch.
    pub(super) created_ms: u64,
    pub(super) module: Arc<dyn ChannelModule>,
    pub(super) host: Arc<AccountHost>,
    /// The module's context on [`Account::host`].
    pub(super) ctx: ChannelContext,
    /// Configured connector scale (account override, else engine default).
    pub(super) connector_scale_config: Option<u8>,
    /// Accepted settle requests the settle worker has not taken yet.
    pub(super) queue: Mutex<Vec<QueuedRequest>>,
    /// The settle path's state, as stored.
    pub(super) out: Mutex<OutgoingRecord>,
    /// See [`AcceptedTotal`]; a request is checked and added under this lock, so two concurrent requests cannot
    /// both fit the module's limit only on their own.
    pub(super) accepted: Mutex<AcceptedTotal>,
    pub(super) status: Mutex<Status>,
    /// The incoming side's state; held across an incoming claim, so claims of one account are handled one at
    /// a time.
    pub(super) incoming: tokio::sync::Mutex<IncomingRecord>,
    /// The incoming leftover, mirrored for the operator view.
    pub(super) incoming_view: Mutex<IncomingRecord>,
    /// Credits not yet acknowledged by the connector, by idempotency key.
    pub(super) credits: Mutex<BTreeMap<String, PendingCredit>>,
    /// Recent settle requests taken (at most [`HISTORY_IN_MEMORY`]).
    pub(super) history: Mutex<VecDeque<HistoryRecord>>,
    /// Recent claims sent (at most [`HISTORY_IN_MEMORY`]).
    pub(super) sent: Mutex<VecDeque<SentRecord>>,
    /// Recent credits acknowledged (at most [`HISTORY_IN_MEMORY`]).
    pub(super) credited: Mutex<VecDeque<CreditRecord>>,
    pub(super) wake_settle: Notify,
    pub(super) wake_credit: Notify,
    /// Set once a delete has begun: every later request is refused.
    pub(super) deleted: AtomicBool,
    /// Settle requests hold it shared from their `deleted` check until they are queued; a delete holds it
    /// exclusively, so no request is written for an account the connector is told is gone.
    pub(super) gate: tokio::sync::RwLock<()>,
    /// The account's settle and credit workers.
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Event counts since the process started (for metrics).
    pub(super) counters: AccountCounters,
}

/// What an account's workers did since the process started, counted for the node's metrics (not stored: a
/// Prometheus counter may restart from zero with the process).
#[derive(Debug, Default)]
pub(super) struct AccountCounters {
    /// Claims (or ledger payments) the peer's engine acknowledged.
    pub(super) claims_sent: std::sync::atomic::AtomicU64,
    /// Failed settle attempts.
    pub(super) settle_failures: std::sync::atomic::AtomicU64,
    /// Incoming settlements credited to the connector.
    pub(super) credits_done: std::sync::atomic::AtomicU64,
    /// Failed credit attempts, each retried later.
    pub(super) credit_retries: std::sync::atomic::AtomicU64,
}

impl AccountCounters {
    /// Adds one to `counter`.
    pub(super) fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Account {
    /// An account with nothing loaded yet.
    pub(super) fn new(
        id: &str,
        created_ms: u64,
        module: Arc<dyn ChannelModule>,
        host: Arc<AccountHost>,
        ctx: ChannelContext,
        connector_scale_config: Option<u8>,
    ) -> Self {
        Account {
            id: id.to_owned(),
            created_ms,
            module,
            host,
            ctx,
            connector_scale_config,
            queue: Mutex::new(Vec::new()),
            out: Mutex::new(OutgoingRecord::default()),
            accepted: Mutex::new(AcceptedTotal::default()),
            status: Mutex::new(Status::default()),
            incoming: tokio::sync::Mutex::new(IncomingRecord::default()),
            incoming_view: Mutex::new(IncomingRecord::default()),
            credits: Mutex::new(BTreeMap::new()),
            history: Mutex::new(VecDeque::new()),
            sent: Mutex::new(VecDeque::new()),
            credited: Mutex::new(VecDeque::new()),
            wake_settle: Notify::new(),
            wake_credit: Notify::new(),
            deleted: AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
            tasks: Mutex::new(Vec::new()),
            counters: AccountCounters::default(),
        }
    }

    /// The scale incoming settlements are credited at.
    pub(super) fn credit_scale(&self) -> u8 {
        self.connector_scale_config
            .or(lock(&self.out).connector_scale)
            .unwrap_or_else(|| self.module.asset_scale())
    }
}

/// Appends `item` to an in-memory history ring, dropping the oldest entry past [`HISTORY_IN_MEMORY`].
pub(super) fn push_bounded<T>(ring: &Mutex<VecDeque<T>>, item: T) {
    let mut r = lock(ring);
    if r.len() >= HISTORY_IN_MEMORY {
        r.pop_front();
    }
    r.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accepted_total_adds_and_gives_back_across_scales() {
        let q = |a: u64, scale: u8| Scaled::new(num_bigint::BigUint::from(a), scale);
        // Module scale 0: 2.5 + 0.7 = 3 units and 0.2 left over.
        let start = AcceptedTotal::default().plus(&q(25, 1), 0);
        assert_eq!(start.units, ModuleUnits::from(2));
        let more = start.plus(&q(700, 3), 0);
        assert_eq!(
            (more.units.clone(), more.leftover.clone()),
            (ModuleUnits::from(3), q(2, 1))
        );
        // Taking the 0.7 out again gives the first total back (same value; leftover normalized).
        let back = more.minus(&q(700, 3), 0).expect("was added");
        assert_eq!(back.units, start.units);
        assert_eq!(
            back.leftover.upscale(3),
            start.leftover.upscale(3),
            "{back:?}"
        );
        // More than was ever added cannot be taken out.
        assert!(more.minus(&q(4, 0), 0).is_none());
    }

    #[test]
    fn account_ids() {
        assert!(validate_account_id("3f0c8e2a-7f5e-4a52-9c1b-2d1b1f0a9c11").is_ok());
        assert!(validate_account_id("a.b_c~d-e").is_ok());
        for bad in [
            "",
            "a/b",
            "a:b",
            "a b",
            "é",
            &"x".repeat(ACCOUNT_ID_MAX_BYTES + 1),
        ] {
            assert!(validate_account_id(bad).is_err(), "{bad:?}");
        }
    }
}
