//! The [`ChannelModule`] trait: the legacy payment-channel module's hooks as a Rust trait.
//!
//! When the host calls each hook (trustline mode, `legacy-plugin.md` §4 "Settlement hooks"; engine mode, the
//! settlement-engine section of the README):
//!
//! | hook | trustline (BTP/1.0) | settlement engine (RFC 38) | an `Err` means |
//! |--|--|--|--|
//! | `connect` | once, when the peer is started | once per account, at setup | start fails |
//! | `disconnect` | once, at shutdown | at account deletion / shutdown | logged |
//! | `handle_incoming_prepare` | every received Prepare, after its amount is applied to IFP | not called | the transfer is cancelled and the peer gets an Error with the error's code |
//! | `create_outgoing_claim` | every received Fulfill of our outgoing transfer, with total OF | each settle, with the cumulative amount to have settled | trustline: logged, no claim sent; engine: retried later |
//! | `handle_incoming_claim` | after our Fulfill is answered, with the `claim` it carried (maybe none) | each settlement message from the peer engine | logged; nothing credited |
//! | `handle_rpc` | a BTP Message whose sub-protocol name is not a built-in one | a JSON message `{"method","args"}` from the peer engine | an Error reply to the peer |

use async_trait::async_trait;
use num_bigint::BigUint;
use serde::{Deserialize, Serialize};

use crate::context::ChannelContext;
use crate::store::{StoreError, TransferRecord};

/// A settlement claim as carried in the legacy `claim` sub-protocol (content types 2, 1 and 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Claim {
    /// Content type 2: a JSON value (object in practice).
    Json(serde_json::Value),
    /// Content type 1: UTF-8 text.
    Text(String),
    /// Content type 0: raw bytes.
    Binary(Vec<u8>),
}

/// What an accepted incoming claim or payment is worth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingCredit {
    /// The *increase* newly secured by this claim (claim-based) or the payment's amount (payment-based), in the
    /// module's units ([`ChannelModule::asset_scale`]). Never the claim's cumulative value.
    pub amount: BigUint,
    /// A stable identifier of this settlement (the claim's cumulative value, or the ledger tx id), used as the
    /// idempotency key when crediting the connector. Equal IDs must mean the same settlement.
    pub settlement_id: String,
}

/// Errors a module returns. The name is kept for the legacy wire: the peer layer maps it to the legacy code
/// (`NotAcceptedError` F00, `InvalidFieldsError` F01, `InsufficientBalanceError` F07, other names F00).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModuleError {
    /// The module refuses (e.g. an incoming prepare over `maxUnsecured`, a forged claim).
    #[error("{0}")]
    NotAccepted(String),
    /// Bad options or bad fields from the peer.
    #[error("{0}")]
    InvalidFields(String),
    /// Not enough funds (deposit too low, ledger balance too low).
    #[error("{0}")]
    InsufficientBalance(String),
    /// A custom RPC name the module does not know (legacy: "Unrecognized side protocol: x").
    #[error("Unrecognized side protocol: {0}")]
    UnknownMethod(String),
    /// The ledger (chain node, rippled) failed or is unreachable; retryable.
    #[error("ledger error: {0}")]
    Ledger(String),
    /// The peer did not answer an RPC or answered with an error.
    #[error("rpc error: {0}")]
    Rpc(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ModuleError {
    /// The legacy JavaScript error name for this error, used on the wire.
    pub fn legacy_name(&self) -> &'static str {
        match self {
            ModuleError::NotAccepted(_) => "NotAcceptedError",
            ModuleError::InvalidFields(_) => "InvalidFieldsError",
            ModuleError::InsufficientBalance(_) => "InsufficientBalanceError",
            ModuleError::UnknownMethod(_) => "Error",
            ModuleError::Ledger(_) | ModuleError::Rpc(_) | ModuleError::Store(_) => "Error",
        }
    }
}

/// A payment-channel module (the legacy `paymentChannelBackend`), one instance per peer or per SE account.
///
/// Modules must be safe to call concurrently; they keep their durable state in the context's
/// [`crate::store::TransferLog`] and [`crate::store::MaxValueTracker`] handles, never in memory only.
#[async_trait]
pub trait ChannelModule: Send + Sync {
    /// Stock name (`trustline`, `eth-payment`, …), for logs and status.
    fn name(&self) -> &str;

    /// Scale of the unit the module settles in (drops: 6, wei: 18). Amounts passed to
    /// [`ChannelModule::create_outgoing_claim`] and returned in [`IncomingCredit`] are in this scale.
    fn asset_scale(&self) -> u8;

    /// Called once before any other hook. May exchange RPCs with the peer (e.g. ledger addresses).
    async fn connect(&self, ctx: &ChannelContext) -> Result<(), ModuleError>;

    /// Called once at shutdown; claim-based payees submit their best claim here.
    async fn disconnect(&self, ctx: &ChannelContext) -> Result<(), ModuleError>;

    /// Extra fields for the LedgerInfo JSON (`info` side protocol), if any.
    fn info(&self) -> Option<serde_json::Value> {
        None
    }

    /// Our ledger account (e.g. an Ethereum address), if the module has one.
    fn account(&self) -> Option<String> {
        None
    }

    /// The peer's ledger account, once known.
    fn peer_account(&self) -> Option<String> {
        None
    }

    /// Called on every received Prepare after its amount is applied to IFP. An `Err` refuses the transfer.
    async fn handle_incoming_prepare(
        &self,
        ctx: &ChannelContext,
        record: &TransferRecord,
    ) -> Result<(), ModuleError>;

    /// Produces the claim (or pays) for a cumulative total: `total` is everything we have ever owed the peer.
    /// Implementations must be idempotent for a total already covered (return the best existing claim or
    /// `None`), and must record their intent durably before any ledger side effect.
    async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &BigUint,
    ) -> Result<Option<Claim>, ModuleError>;

    /// Checks a claim (or payment proof) from the peer and keeps the best. Returns the newly secured increase;
    /// a replayed, older or invalid claim returns `Ok(None)` or an `Err` and credits nothing.
    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError>;

    /// A module-defined RPC from the peer: `args` is the JSON array of arguments; the reply is sent back under
    /// the same name.
    async fn handle_rpc(
        &self,
        _ctx: &ChannelContext,
        method: &str,
        _args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError> {
        Err(ModuleError::UnknownMethod(method.to_owned()))
    }

    /// The largest cumulative total, in the module's units ([`ChannelModule::asset_scale`]), that
    /// [`ChannelModule::create_outgoing_claim`] can ever settle for one account (e.g. a module whose claims are
    /// cumulative `u64` drops cannot go past `u64::MAX`). The settlement engine refuses a settle request that
    /// would take an account's cumulative total (settled, in flight and queued, plus the request) past it.
    /// `None` (the default): no limit beyond the engine's per-request one.
    fn max_cumulative_settlement(&self) -> Option<BigUint> {
        None
    }

    /// Token to authenticate with, if the module derives one (legacy `getAuthToken`).
    fn auth_token(&self) -> Option<String> {
        None
    }
}
