//! The two money-holding primitives of the legacy framework, as interfaces.
//!
//! * [`TransferLog`]: conditional transfers of one trustline (or one module key) and the four sums the legacy
//!   plugin keeps: incoming fulfilled (IF), incoming fulfilled-and-prepared (IFP), outgoing fulfilled (OF) and
//!   outgoing fulfilled-and-prepared (OFP). Balance = IF − OF.
//! * [`MaxValueTracker`]: the best (largest) value seen so far with its data, e.g. the best claim.
//!
//! The semantics follow docs/legacy-btp.md §10–§11 with the legacy bugs of §16 fixed (see each method); the
//! rules both transfer logs apply are in [`crate::ledger`]. Implementations: [`crate::memory`] here, RocksDB in
//! the root crate (`ilp_bridge::store`); modules only ever see these traits through [`crate::ChannelContext`].
//!
//! Contract common to every `async fn` that changes state: when it returns `Ok`, the change is durable (for the
//! RocksDB store: written in one atomic batch and the WAL synced). When it returns `Err`, nothing changed.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use num_bigint::BigUint;
use serde::{Deserialize, Serialize};

use crate::amount::{LedgerAmount, LedgerBalance, LedgerSum};

/// A 16-byte transfer ID (a UUID; the wire carries the raw 16 bytes, the legacy API a lowercase dashed UUID).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransferId(pub [u8; 16]);

impl TransferId {
    /// Lowercase dashed UUID form, as the legacy plugin reports received IDs.
    pub fn to_uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.0).hyphenated().to_string()
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uuid_string())
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferId({self})")
    }
}

impl FromStr for TransferId {
    type Err = StoreError;
    /// Accepts a UUID with or without dashes, any case (legacy IDs are strings; peers reply in lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(|u| TransferId(*u.as_bytes()))
            .map_err(|_| StoreError::InvalidTransferId(s.to_owned()))
    }
}

/// Which way a transfer goes, seen from the owner of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// The peer pays us (a Prepare we received).
    Incoming,
    /// We pay the peer (a Prepare we sent).
    Outgoing,
}

/// A conditional transfer as the log stores it. Two transfers with the same `id` are "the same transfer" only if
/// every field is equal; otherwise a second prepare is a [`TransferLogError::DuplicateId`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Transfer ID.
    pub id: TransferId,
    /// Amount in the ledger's smallest unit (BTP/1.0 carries a UInt64).
    pub amount: LedgerAmount,
    /// SHA-256 condition.
    pub execution_condition: [u8; 32],
    /// Expiry, milliseconds since the Unix epoch (UTC).
    pub expires_at_ms: i64,
    /// The ILP packet carried in the `ilp` sub-protocol (opaque here; ILP v1 in legacy peers). May be empty.
    pub ilp: Vec<u8>,
    /// The `custom` sub-protocol JSON, if any.
    pub custom: Option<serde_json::Value>,
}

/// Life-cycle state of a transfer: prepared → fulfilled | cancelled, exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferState {
    /// Funds held; waiting for fulfill, reject or expiry.
    Prepared,
    /// Executed with this 32-byte fulfillment.
    Fulfilled {
        /// The preimage of the condition.
        fulfillment: [u8; 32],
    },
    /// Rolled back (rejected by the receiver, expired, or refused by a module).
    Cancelled {
        /// Why (free text, for operators; legacy does not store it).
        reason: String,
    },
}

/// A stored transfer with its direction and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// The transfer as prepared.
    pub transfer: Transfer,
    /// Incoming or outgoing.
    pub direction: Direction,
    /// Current state.
    pub state: TransferState,
}

/// The four sums of a log. All are non-negative; IF ≤ IFP and OF ≤ OFP always hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    /// Incoming fulfilled.
    pub incoming_fulfilled: LedgerSum,
    /// Incoming fulfilled and prepared.
    pub incoming_fulfilled_and_prepared: LedgerSum,
    /// Outgoing fulfilled.
    pub outgoing_fulfilled: LedgerSum,
    /// Outgoing fulfilled and prepared.
    pub outgoing_fulfilled_and_prepared: LedgerSum,
}

impl Sums {
    /// Balance = IF − OF (positive: the peer owes us).
    pub fn balance(&self) -> LedgerBalance {
        // Sums are kept ≤ `LedgerSum::MAX` by every implementation (see `StoreError::Overflow`).
        self.incoming_fulfilled.minus(self.outgoing_fulfilled)
    }
}

/// A balance limit: a finite integer or unbounded (the legacy stateless mode's ±Infinity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// A finite bound, in ledger units.
    Finite(LedgerBalance),
    /// No bound.
    Unbounded,
}

impl fmt::Display for Limit {
    /// Legacy renders limits as decimal strings, and `"Infinity"` for the stateless mode.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Finite(v) => write!(f, "{v}"),
            Limit::Unbounded => f.write_str("Infinity"),
        }
    }
}

/// What a successful [`TransferLog::prepare`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
// With serde_json's `preserve_order` (enabled by the root crate) a `custom` JSON value is larger; the record is
// returned once per prepare, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum PrepareOutcome {
    /// The transfer was new: the limit was checked and the prepared sum incremented.
    Prepared,
    /// The same transfer (identical contents) was already in the log; nothing changed. Carries its stored
    /// record, which may already be fulfilled or cancelled.
    AlreadyExists(TransferRecord),
}

/// Errors of a [`TransferLog`]. Each maps to one legacy error code in the peer layer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferLogError {
    /// Same ID, different contents (legacy F04 DuplicateIdError).
    #[error("transfer {0} already exists with different contents")]
    DuplicateId(TransferId),
    /// Unknown ID (legacy F02 TransferNotFoundError).
    #[error("no transfer found with id {0}")]
    NotFound(TransferId),
    /// Cancel of a fulfilled transfer, or fulfill with a different fulfillment (legacy F06).
    #[error("transfer {0} has already been fulfilled")]
    AlreadyFulfilled(TransferId),
    /// Fulfill of a cancelled transfer (legacy F05 AlreadyRolledBackError).
    #[error("transfer {0} has already been rolled back")]
    AlreadyRolledBack(TransferId),
    /// `(IFP + amount) − OF > maximum`. Legacy message: "balanceIncomingFulfilledAndPrepared exceeds greatest
    /// allowed value after: …".
    #[error("balanceIncomingFulfilledAndPrepared exceeds greatest allowed value after: {after} (maximum {maximum})")]
    IncomingLimitExceeded {
        /// `(IFP + amount) − OF`.
        after: LedgerBalance,
        /// The limit in force.
        maximum: LedgerBalance,
    },
    /// `(OFP + amount) − IF > −minimum`.
    #[error("balanceOutgoingFulfilledAndPrepared exceeds greatest allowed value after: {after} (minimum {minimum})")]
    OutgoingLimitExceeded {
        /// `(OFP + amount) − IF`.
        after: LedgerBalance,
        /// The limit in force.
        minimum: LedgerBalance,
    },
    /// The underlying store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of the storage layer shared by both primitives.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// A key outside the legacy alphabet `[A-Za-z0-9_-]`.
    #[error("invalid store key {0:?}: only [A-Za-z0-9_-] allowed")]
    InvalidKey(String),
    /// A transfer ID that is not a UUID.
    #[error("invalid transfer id {0:?}")]
    InvalidTransferId(String),
    /// A sum would leave the supported range (0 ..= [`LedgerSum::MAX`]).
    #[error("amount overflow")]
    Overflow,
    /// A previous write or sync failed; the store refuses every write until restarted.
    #[error("store is poisoned by an earlier write failure; restart to recover")]
    Poisoned,
    /// An I/O or database error.
    #[error("storage error: {0}")]
    Io(String),
    /// Stored bytes that do not decode.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

/// Checks a store key against the legacy alphabet `[A-Za-z0-9_-]*` (the main log uses `""`).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_owned()))
    }
}

/// A durable log of conditional transfers with legacy limits (docs/legacy-btp.md §10), bugs fixed.
///
/// Limit checks (equality allowed): an incoming prepare fails if `(IFP + amount) − OF > maximum`; an outgoing
/// one if `(OFP + amount) − IF > −minimum`. Outgoing prepared transfers never relieve the incoming limit.
/// Stored overrides ([`TransferLog::set_maximum`]) beat the configured limits.
///
/// Concurrent calls are safe: limit check and increment are atomic, so racing prepares never exceed a limit.
#[async_trait]
pub trait TransferLog: Send + Sync {
    /// Records a new prepared transfer after checking the limit for its direction.
    ///
    /// * Same ID, identical contents and direction, in any state: `Ok(AlreadyExists(stored))`, nothing changes.
    /// * Same ID, other contents: `Err(DuplicateId)`.
    /// * A limit failure leaves nothing behind, so an identical retry is checked again (legacy bug fixed).
    async fn prepare(
        &self,
        transfer: &Transfer,
        direction: Direction,
    ) -> Result<PrepareOutcome, TransferLogError>;

    /// Prepared → fulfilled; adds the amount to IF or OF. Fulfilling a fulfilled transfer with the same
    /// fulfillment returns the stored record (idempotent); with another fulfillment: `AlreadyFulfilled`;
    /// a cancelled one: `AlreadyRolledBack`; unknown: `NotFound`. The condition is not checked here.
    async fn fulfill(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
    ) -> Result<TransferRecord, TransferLogError>;

    /// Prepared → cancelled; subtracts the amount from IFP or OFP. Cancelling a cancelled transfer returns it
    /// (idempotent); a fulfilled one: `AlreadyFulfilled`; unknown: `NotFound`.
    async fn cancel(
        &self,
        id: &TransferId,
        reason: &str,
    ) -> Result<TransferRecord, TransferLogError>;

    /// [`TransferLog::prepare`] with *deferred durability*: the change is checked, applied and its write
    /// submitted exactly as there, but the call returns without waiting for that write's sync. The write still
    /// becomes durable, and no later than any synced write of the same database submitted after it (writes
    /// become durable in order); if it fails, the store is poisoned and every later write fails.
    ///
    /// For callers whose answer to the outside world is harmless if the change is lost in a power cut, and
    /// whose next consequential step is itself a synced write: a payee's incoming prepare (lost, it simply
    /// expires on the payer's side; any Fulfill is preceded by the synced [`TransferLog::note_fulfillment`]).
    /// A store without a separate durability step does what `prepare` does.
    async fn prepare_deferred(
        &self,
        transfer: &Transfer,
        direction: Direction,
    ) -> Result<PrepareOutcome, TransferLogError> {
        self.prepare(transfer, direction).await
    }

    /// [`TransferLog::fulfill`] with deferred durability (see [`TransferLog::prepare_deferred`]). For a payee
    /// applying a Fulfill the payer has accepted: the fulfillment was noted durably first, so if this change
    /// is lost the note makes the owner re-send the Fulfill after a restart and apply it then.
    async fn fulfill_deferred(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
    ) -> Result<TransferRecord, TransferLogError> {
        self.fulfill(id, fulfillment).await
    }

    /// The stored record, in any state.
    async fn get(&self, id: &TransferId) -> Result<Option<TransferRecord>, TransferLogError>;

    /// The current four sums (kept in memory; never a scan). They include changes whose write is not durable
    /// yet; use [`TransferLog::durable_sums`] for a figure that leaves the node (e.g. a claim's total).
    fn sums(&self) -> Sums;

    /// The sums once every change they include is durable (waits for that). A store without a separate
    /// durability step returns [`TransferLog::sums`].
    async fn durable_sums(&self) -> Result<Sums, TransferLogError> {
        Ok(self.sums())
    }

    /// Balance = IF − OF.
    fn balance(&self) -> LedgerBalance {
        self.sums().balance()
    }

    /// The maximum in force (stored override, else configured).
    fn maximum(&self) -> Limit;
    /// The minimum in force (stored override, else configured).
    fn minimum(&self) -> Limit;
    /// Stores a maximum override (durable; beats the configured one from then on, also after restart).
    async fn set_maximum(&self, maximum: Limit) -> Result<(), TransferLogError>;
    /// Stores a minimum override.
    async fn set_minimum(&self, minimum: Limit) -> Result<(), TransferLogError>;

    /// Every transfer still prepared, so its owner can re-arm expiry timers after a restart.
    async fn prepared(&self) -> Result<Vec<TransferRecord>, TransferLogError>;

    /// Write-ahead of revealing a preimage: records, durably, that we are about to send `fulfillment` (and
    /// the Fulfill's `ilp` data) for the prepared transfer `id`, so that after a crash the send can be
    /// finished instead of the transfer silently expiring while the peer has already paid. The note is
    /// removed in the same write that fulfills or cancels the transfer. Noting the same fulfillment again
    /// is a no-op. Errors: `NotFound`; `AlreadyFulfilled` / `AlreadyRolledBack` if the transfer is finished
    /// (nothing is written).
    async fn note_fulfillment(
        &self,
        id: &TransferId,
        fulfillment: &[u8; 32],
        ilp: &[u8],
    ) -> Result<(), TransferLogError>;

    /// The noted fulfillments ([`TransferLog::note_fulfillment`]) of transfers still prepared.
    async fn noted_fulfillments(&self) -> Result<Vec<NotedFulfillment>, TransferLogError>;
}

/// A fulfillment we were about to reveal for a prepared transfer (see [`TransferLog::note_fulfillment`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotedFulfillment {
    /// The transfer.
    pub id: TransferId,
    /// The preimage.
    pub fulfillment: [u8; 32],
    /// The `ilp` data sent with the Fulfill (empty if none).
    pub ilp: Vec<u8>,
}

/// A best value with its data (`{value, data}` in legacy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxValue {
    /// Non-negative integer of any size.
    pub value: BigUint,
    /// Arbitrary JSON (legacy default `null`).
    pub data: serde_json::Value,
}

impl Default for MaxValue {
    fn default() -> Self {
        MaxValue {
            value: BigUint::default(),
            data: serde_json::Value::Null,
        }
    }
}

/// Durable "keep the largest" register (docs/legacy-btp.md §11). The stored value never
/// decreases.
#[async_trait]
pub trait MaxValueTracker: Send + Sync {
    /// If `entry.value` is strictly larger than the stored value, stores `entry` and returns the previous entry
    /// (the default `{0, null}` if none); otherwise stores nothing and returns `entry` unchanged.
    async fn set_if_max(&self, entry: MaxValue) -> Result<MaxValue, StoreError>;
    /// The stored entry, or the default `{0, null}`.
    async fn get_max(&self) -> Result<MaxValue, StoreError>;
}
