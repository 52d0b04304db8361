//! [`EngineError`]: what an engine operation fails with. [`super::api`] maps each to an HTTP status (the only
//! place that does): input errors 400, an unknown account 404, a reused key 409, a cause that may pass 503, a
//! broken configuration or invariant 500.

use channel_modules::store::StoreError;
use channel_modules::ModuleError;

use super::client::ClientError;
use super::quantity::QuantityError;
use super::wire::MessageError;

/// Errors of engine operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// A settle request whose body is not an RFC 38 Quantity (400).
    #[error(transparent)]
    Quantity(#[from] QuantityError),
    /// A malformed message from the peer's engine (400).
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A message type neither the engine nor the module knows (400).
    #[error("unknown message type {0:?}")]
    UnknownMessage(String),
    /// Unknown account (404).
    #[error("account {0} not found")]
    AccountNotFound(String),
    /// Idempotency-Key reused with another request (409).
    #[error("idempotency key {0:?} was already used with a different request")]
    KeyConflict(String),
    /// Not ready; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// The module failed, e.g. its ledger did not answer; retry later (503).
    #[error(transparent)]
    Module(ModuleError),
    /// A delete found the module unable to disconnect (e.g. a payee that cannot redeem its best claim yet), so
    /// the account was kept; `reload` says why it could not even be read back from the store (503).
    #[error("module disconnect failed, account kept: {source}{}", reload_failure(.reload))]
    DisconnectFailed {
        /// Why the module could not disconnect.
        source: ModuleError,
        /// Why reading the kept account back failed, if it did.
        reload: Option<Box<EngineError>>,
    },
    /// An account a failed delete kept cannot be read back from the store yet (503; retried in the
    /// background and on every call).
    #[error(
        "account {account} was kept by a failed delete but cannot be read back from the store \
         (retried in the background): {source}"
    )]
    KeptAccountUnreadable {
        /// The account ID.
        account: String,
        /// Why reading it back failed.
        source: Box<EngineError>,
    },
    /// The task running a request ended without an answer (503).
    #[error("{task} task failed: {source}")]
    Task {
        /// Which request: `create`, `delete`, `settle` or `message`.
        task: &'static str,
        /// How it ended.
        source: tokio::task::JoinError,
    },
    /// An answer could not be encoded (503).
    #[error(transparent)]
    Encode(serde_json::Error),
    /// The store failed (503; the node must restart if the store is poisoned).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The module refused (400).
    #[error("module refused: {0}")]
    Refused(#[source] ModuleError),
    /// The configured module cannot be built (500).
    #[error("module {module:?}: {source}")]
    ModuleConfig {
        /// The configured module name.
        module: String,
        /// Why it cannot be built.
        source: ModuleError,
    },
    /// The connector client cannot be built (at start).
    #[error(transparent)]
    Connector(#[from] ClientError),
    /// An account being loaded was locked by someone else, which cannot happen: nobody else holds it yet (500).
    #[error("account state locked during load")]
    LoadLocked(#[from] tokio::sync::TryLockError),
}

/// The end of [`EngineError::DisconnectFailed`]'s message when the kept account could not be read back.
fn reload_failure(reload: &Option<Box<EngineError>>) -> String {
    match reload {
        None => String::new(),
        Some(error) => format!(
            "; reading the account back from the store failed too ({error}): it answers 503 until a retry (on \
             every call and in the background) succeeds"
        ),
    }
}
