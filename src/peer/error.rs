//! Errors of the peer layer, and the one place where an error becomes what a legacy peer sees: a BTP/1.0 Error
//! (docs/legacy-btp.md §7), or the ILP v1 Error legacy answers a failed request handler with (§6).
//!
//! A [`WireError`] is a legacy JavaScript error: a `name` (`NotAcceptedError`, `TransferNotFoundError`, plain
//! `Error`, `TypeError`, …) and a `message`. On the wire it becomes `code` (from the framework's name table,
//! [`btp::legacy_error_code`]), `name`, `triggeredAt` = now and `data` = `{"message": …}`, exactly as the
//! legacy `jsErrorToBtpError`. [`PeerError`] is what the Rust library API returns. The messages are the
//! framework's, byte for byte: peers and their operators match on them.

use btp::ilp_v1::{IlpV1Error, IlpV1Packet};
use btp::packet::{BtpError, ProtocolData};
use btp::transport::RpcError;
use btp::{DecodeError, Timestamp};
use bytes::Bytes;
use channel_modules::store::{StoreError, TransferLogError};
use channel_modules::ModuleError;

/// A legacy-shaped error: JavaScript error name and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// JavaScript error name; decides the code.
    pub name: String,
    /// Message, sent as `{"message": …}`.
    pub message: String,
}

impl WireError {
    /// An error with this name and message.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        WireError {
            name: name.into(),
            message: message.into(),
        }
    }

    /// The legacy code of this error (`F02` for `TransferNotFoundError`, …).
    pub fn code(&self) -> [u8; 3] {
        btp::legacy_error_code(&self.name)
    }

    /// The BTP Error packet body, triggered at `now`.
    pub fn to_btp(&self, now: Timestamp) -> BtpError {
        BtpError {
            code: self.code(),
            name: self.name.clone(),
            triggered_at: now,
            data: serde_json::json!({ "message": self.message }).to_string(),
            protocol_data: ProtocolData::new(),
        }
    }

    /// The error a module's `Err` becomes on the wire (its legacy name, its message).
    pub fn from_module(e: &ModuleError) -> Self {
        WireError::new(e.legacy_name(), e.to_string())
    }

    /// A JSON entry that does not parse: legacy's `JSON.parse` throws a `SyntaxError`.
    pub(crate) fn from_json(e: &serde_json::Error) -> Self {
        WireError::new("SyntaxError", format!("{e}"))
    }

    /// A Reject whose `ilp` entry is not an ILP v1 packet: legacy's parser throws a `TypeError`.
    pub(crate) fn from_ilp_decode(e: &DecodeError) -> Self {
        WireError::new("TypeError", e.to_string())
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// Errors of the Rust library API ([`super::Trustline`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The call needs a connected trustline (legacy "Must be connected before X can be called.").
    #[error("Must be connected before {0} can be called.")]
    NotConnected(&'static str),
    /// Refused locally, with the legacy error the JS plugin would throw.
    #[error("{0}")]
    Refused(WireError),
    /// The peer answered with a BTP Error.
    #[error("peer answered with error {code} {name}: {data}", code = .0.code_str(), name = .0.name, data = .0.data)]
    Remote(BtpError),
    /// The request got no reply (timeout, no connection, ...).
    #[error("request failed: {0}")]
    Rpc(#[from] RpcError),
    /// The peer's reply was malformed.
    #[error("invalid reply from peer: {0}")]
    InvalidReply(#[source] ReplyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The channel module failed.
    #[error("module error: {0}")]
    Module(#[from] ModuleError),
    /// A request handler refused a request (becomes an ILP v1 F00 "Bad Request" whose message is this error's
    /// text): the handler's own error.
    #[error("{0}")]
    Handler(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::error::ConfigError),
}

impl PeerError {
    /// A local refusal with a legacy name and message.
    pub fn refused(name: &str, message: impl Into<String>) -> Self {
        PeerError::Refused(WireError::new(name, message))
    }

    /// A request handler's refusal: `error` (any error, or a message) says why.
    pub fn handler(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        PeerError::Handler(error.into())
    }
}

/// What is wrong with a reply of the peer ([`PeerError::InvalidReply`]). The messages of the replies the
/// legacy plugin checks are its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A JSON entry that does not parse.
    #[error(transparent)]
    Json(serde_json::Error),
    /// The `info` reply names no prefix, and none is configured.
    #[error("peer info has no prefix")]
    NoPrefix,
    /// The reply to `getPeerBalance` has no `balance` entry.
    #[error("Could not get peer balance.")]
    NoBalance,
    /// The `balance` entry is not 8 bytes long (its length).
    #[error("balance is not 8 bytes")]
    BalanceLength(usize),
    /// The reply to `getLimit` has no `limit` entry.
    #[error("Failed to get limit of peer.")]
    NoLimit,
    /// The `limit` entry is neither a string nor a number.
    #[error("limit is {0}")]
    Limit(serde_json::Value),
}

/// Maps a transfer-log error to the legacy wire error (the framework's TransferLog messages, docs/legacy-btp.md
/// §10).
pub(crate) fn log_err_to_wire(e: TransferLogError) -> WireError {
    match e {
        TransferLogError::DuplicateId(id) => WireError::new(
            "DuplicateIdError",
            format!("transfer {id} matches the id of an existing transfer but not the contents."),
        ),
        TransferLogError::NotFound(id) => WireError::new(
            "TransferNotFoundError",
            format!("No transfer found with ID {id}"),
        ),
        TransferLogError::AlreadyFulfilled(id) => WireError::new(
            "AlreadyFulfilledError",
            format!("{id} has already been fulfilled"),
        ),
        TransferLogError::AlreadyRolledBack(id) => WireError::new(
            "AlreadyRolledBackError",
            format!("{id} has already been rolled back"),
        ),
        TransferLogError::IncomingLimitExceeded { after, .. } => WireError::new(
            "NotAcceptedError",
            format!(
                "balanceIncomingFulfilledAndPrepared exceeds greatest allowed value after: {after}"
            ),
        ),
        TransferLogError::OutgoingLimitExceeded { after, .. } => WireError::new(
            "NotAcceptedError",
            format!(
                "balanceOutgoingFulfilledAndPrepared exceeds greatest allowed value after: {after}"
            ),
        ),
        other => WireError::new("Error", other.to_string()),
    }
}

/// Maps a transfer-log error to the library API's error: a store failure as itself, anything else as the
/// legacy refusal ([`log_err_to_wire`]).
pub(crate) fn log_err_to_peer(e: TransferLogError) -> PeerError {
    match e {
        TransferLogError::Store(s) => PeerError::Store(s),
        other => PeerError::Refused(log_err_to_wire(other)),
    }
}

/// [`log_err_to_wire`] for a received Prepare the log refused: there legacy names the transfer by its
/// `transferWithInfo` JSON (`transfer`), and for a duplicate ID the stored transfer too (`existing`, empty if it
/// could not be read).
pub(crate) fn prepare_err_to_wire(
    e: TransferLogError,
    transfer: &str,
    existing: &str,
) -> WireError {
    match e {
        TransferLogError::DuplicateId(_) => WireError::new(
            "DuplicateIdError",
            format!("transfer {transfer} matches the id of {existing} but not the contents."),
        ),
        TransferLogError::IncomingLimitExceeded { .. } => WireError::new(
            "NotAcceptedError",
            format!(
                "balanceIncomingFulfilledAndPrepared exceeds greatest allowed value after: {transfer}"
            ),
        ),
        other => log_err_to_wire(other),
    }
}

/// [`log_err_to_wire`] for applying the peer's Fulfill of our transfer: a transfer cancelled meanwhile is
/// refused as the checks before it refuse one already cancelled.
pub(crate) fn fulfill_err_to_wire(e: TransferLogError) -> WireError {
    match e {
        TransferLogError::AlreadyRolledBack(id) => WireError::new(
            "AlreadyRolledBackError",
            format!("{id} has already been cancelled"),
        ),
        other => log_err_to_wire(other),
    }
}

/// A transfer-log error outside any legacy call (the router's recovery at start): a plain `Error` with the
/// log's own message.
pub(crate) fn log_err_plain(e: TransferLogError) -> PeerError {
    PeerError::Refused(WireError::new("Error", e.to_string()))
}

/// The ILP v1 Error legacy answers a request with when its request handler fails (docs/legacy-btp.md §6): F00
/// "Bad Request" triggered by us (`triggered_by`, our address), data `{"message": …}`, sent in a Response.
pub(crate) fn handler_err_to_ilp(e: &PeerError, triggered_by: String, at: Timestamp) -> Bytes {
    IlpV1Packet::Error(IlpV1Error {
        code: *b"F00",
        name: "Bad Request".to_owned(),
        triggered_by,
        forwarded_by: Vec::new(),
        triggered_at: at,
        data: Bytes::from(serde_json::json!({ "message": e.to_string() }).to_string()),
    })
    .to_bytes()
}
