//! What the node's admin API answers (JSON); [`crate::admin::client`] reads the same types back.

use channel_modules::store::{Direction, Limit, TransferRecord, TransferState};
use serde::{Deserialize, Serialize};

use super::PeerEntry;
use crate::peer::trustline::legacy_format::{b64url, iso_time};

/// A BTP/1.0 peer as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerView {
    /// The peer's configured name.
    pub name: String,
    /// The BTP connection: `connected`, `connecting`, `disconnected`, `closed` or `none` (no BTP session).
    pub link: String,
    /// Whether the trustline is connected (legacy `connect()` done: info exchanged, module connected).
    pub trustline_connected: bool,
    /// The ledger prefix, once known.
    pub prefix: Option<String>,
    /// Our balance from our records (IF − OF; positive: the peer owes us), in ledger units.
    pub balance: String,
    /// The maximum balance in force (`Infinity` when unbounded).
    pub max_balance: String,
    /// The minimum balance in force (`-Infinity` when unbounded).
    pub min_balance: String,
    /// Transfers the peer prepared to us that are still prepared.
    pub prepared_incoming: usize,
    /// Transfers we prepared to the peer that are still prepared.
    pub prepared_outgoing: usize,
    /// The cap on prepared transfers in each direction.
    pub max_prepared_transfers: usize,
    /// The last failure seen with this peer (a refused request with its reason, a failed connect).
    pub last_error: Option<String>,
    /// The peer's traffic goes to a modern connector (bridge mode).
    pub bridged: bool,
    /// The payment-channel module, if any.
    pub module: Option<String>,
}

fn limit_text(limit: Limit, negative: bool) -> String {
    match limit {
        Limit::Finite(v) => v.to_string(),
        Limit::Unbounded if negative => "-Infinity".to_owned(),
        Limit::Unbounded => "Infinity".to_owned(),
    }
}

impl PeerView {
    /// The view of `p` now.
    pub(crate) fn of(p: &PeerEntry) -> PeerView {
        let tl = &p.trustline;
        let (prepared_incoming, prepared_outgoing) = tl.prepared_counts();
        let link = match &p.session {
            None => "none",
            Some(s) => match *s.state().borrow() {
                btp::transport::ConnectionState::Connected => "connected",
                btp::transport::ConnectionState::Connecting => "connecting",
                btp::transport::ConnectionState::Disconnected => "disconnected",
                btp::transport::ConnectionState::Closed => "closed",
            },
        };
        PeerView {
            name: tl.name().to_owned(),
            link: link.to_owned(),
            trustline_connected: tl.is_connected(),
            prefix: tl.prefix(),
            balance: tl.local_balance().to_string(),
            max_balance: limit_text(tl.log().maximum(), false),
            min_balance: limit_text(tl.log().minimum(), true),
            prepared_incoming,
            prepared_outgoing,
            max_prepared_transfers: tl.limits().max_prepared_transfers,
            last_error: tl.last_error(),
            bridged: p.bridged,
            module: tl.module().map(|m| m.name().to_owned()),
        }
    }
}

/// One transfer of a peer's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransferView {
    /// Transfer ID (UUID).
    pub id: String,
    /// `incoming` (the peer pays us) or `outgoing`.
    pub direction: String,
    /// Amount in ledger units.
    pub amount: String,
    /// `prepared`, `fulfilled` or `cancelled`.
    pub state: String,
    /// Why it was cancelled (rejected, expired, refused), if it was.
    pub reason: Option<String>,
    /// Expiry (ISO 8601, UTC).
    pub expires_at: String,
    /// The execution condition, base64url.
    pub execution_condition: String,
}

impl TransferView {
    /// The view of a stored record.
    pub(crate) fn of(r: &TransferRecord) -> TransferView {
        let (state, reason) = match &r.state {
            TransferState::Prepared => ("prepared", None),
            TransferState::Fulfilled { .. } => ("fulfilled", None),
            TransferState::Cancelled { reason } => ("cancelled", Some(reason.clone())),
        };
        TransferView {
            id: r.transfer.id.to_uuid_string(),
            direction: match r.direction {
                Direction::Incoming => "incoming",
                Direction::Outgoing => "outgoing",
            }
            .to_owned(),
            amount: r.transfer.amount.0.to_string(),
            state: state.to_owned(),
            reason,
            expires_at: iso_time(r.transfer.expires_at_ms),
            execution_condition: b64url(&r.transfer.execution_condition),
        }
    }
}

/// Body of `PUT /peers/{name}/limits`: either or both, as decimal strings in ledger units;
/// `Infinity` / `-Infinity` for no bound.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsChange {
    /// The new maximum balance (the most the peer may owe us, prepared included).
    pub max_balance: Option<String>,
    /// The new minimum balance (minus the most we may owe the peer).
    pub min_balance: Option<String>,
}

/// Body of `POST /peers/{name}/pay`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// Amount in the peer ledger's units (a positive integer, as a string or a number).
    pub amount: String,
    /// The ILP address to pay (default: `<peer's prefix>admin-test`).
    pub to: Option<String>,
}

/// What a test payment came to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PayOutcome {
    /// The peer it went through.
    pub peer: String,
    /// The transfer's ID.
    pub transfer_id: String,
    /// The ILP address paid.
    pub destination: String,
    /// Amount, ledger units.
    pub amount: String,
    /// `fulfilled`, `rejected`, `expired`, `refused` (the peer or our limits refused the Prepare) or
    /// `unknown` (no outcome before the deadline).
    pub outcome: String,
    /// The ILP error code of a rejection (`F02`, …), or the BTP error name of a refusal.
    pub code: Option<String>,
    /// The error's name or message.
    pub message: Option<String>,
    /// The address that triggered a rejection.
    pub triggered_by: Option<String>,
    /// From sending the Prepare to the outcome, in milliseconds.
    pub elapsed_ms: u64,
}

/// `GET /settlements`: the engine's accounts and alerts, and the bridged pairs' settlement ledgers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettlementsView {
    /// The settlement engine's accounts (`[settlement-engine]`), if it runs.
    pub accounts: Vec<serde_json::Value>,
    /// The engine's alerts (credits refused with 409).
    pub alerts: Vec<serde_json::Value>,
    /// Each bridged pair's reconciliation ledger (`[peer.modern] settlement_listen`).
    pub pairs: Vec<serde_json::Value>,
}

/// `GET /status`: everything `ilp-bridge status` and the status page show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// Package version.
    pub version: String,
    /// Commit the binary was built from.
    pub commit: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Whether `/ready` would answer 200.
    pub ready: bool,
    /// Why not (empty when ready).
    pub problems: Vec<String>,
    /// The BTP peers.
    pub peers: Vec<PeerView>,
    /// Settlement: engine accounts, alerts, bridged pairs.
    pub settlements: SettlementsView,
}
