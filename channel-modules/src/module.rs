//! The [`ChannelModule`] trait: the legacy payment-channel module's hooks as a Rust trait. A module works
//! through its [`ChannelContext`]; it returns [`Claim`]s, [`IncomingCredit`]s and [`ModuleError`]s.
//! `testing::conformance` (feature `testing`) checks every contract below, in both host modes.
//!
//! When the host calls each hook (peer mode, inside a BTP/1.0 trustline: docs/legacy-btp.md §13; engine mode,
//! behind an RFC 38 account: the settlement-engine section of the README):
//!
//! | hook | peer mode (BTP/1.0) | engine mode (RFC 38) | an `Err` means |
//! |--|--|--|--|
//! | `connect` | once, when the peer is started | once per account, at setup | start fails |
//! | `disconnect` | once, at shutdown | at account deletion / shutdown | logged |
//! | `handle_incoming_prepare` | every received Prepare, after its amount is applied to IFP | not called | the transfer is cancelled and the peer gets an Error with the error's code |
//! | `create_outgoing_claim` | every received Fulfill of our outgoing transfer, with total OF | each settle, with the cumulative amount to have settled | peer mode: logged, no claim sent; engine mode: retried later |
//! | `handle_incoming_claim` | after our Fulfill is answered, with the `claim` it carried (maybe none) | each settlement message from the peer engine | logged; nothing credited |
//! | `handle_rpc` | a BTP Message whose sub-protocol name is not a built-in one | a JSON message `{"method","args"}` from the peer engine | an Error reply to the peer |

use async_trait::async_trait;

use crate::amount::ModuleUnits;
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::store::TransferRecord;

/// A payment-channel module (the legacy `paymentChannelBackend`), one instance per peer or per SE account.
///
/// Modules must be safe to call concurrently; they keep their durable state in the context's
/// [`crate::store::TransferLog`] and [`crate::store::MaxValueTracker`] handles, never in memory only.
#[async_trait]
pub trait ChannelModule: Send + Sync {
    /// Stock name (`iou`, `eth-payment`, …), for logs and status.
    fn name(&self) -> &str;

    /// Scale of the unit the module settles in (drops: 6, wei: 18). Amounts passed to
    /// [`ChannelModule::create_outgoing_claim`] and returned in [`IncomingCredit`] are [`ModuleUnits`] of this
    /// scale.
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
    /// Implementations must record their intent durably before any ledger side effect, and be idempotent for
    /// a total already covered: the same total asked again gets the same answer, with no new side effect; a
    /// lower total gets `None`, the best existing claim, or a claim that credits nothing at a payee holding the
    /// best one, and never moves the module back (the higher total asked again still gets the best claim).
    async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &ModuleUnits,
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
    fn max_cumulative_settlement(&self) -> Option<ModuleUnits> {
        None
    }

    /// Everything the peer has paid us through this module so far, cumulative, in the module's units: the value
    /// of the best incoming claim a claim-based payee keeps, or what a payment-based payee has received. Read from
    /// the module's durable state, so a host that reports payments onwards (bridge mode: to the modern
    /// connector) can derive what is left to report after a crash instead of trusting events it may have missed.
    /// `Ok(None)` (the default): the module cannot tell.
    async fn incoming_total(
        &self,
        _ctx: &ChannelContext,
    ) -> Result<Option<ModuleUnits>, ModuleError> {
        Ok(None)
    }

    /// Token to authenticate with, if the module derives one (legacy `getAuthToken`).
    fn auth_token(&self) -> Option<String> {
        None
    }
}
