//! [`EngineError`]: what an engine operation fails with. [`super::api`] maps each to an HTTP status (the only
//! place that does).

use channel_modules::store::StoreError;
use channel_modules::ModuleError;

use super::quantity::QuantityError;

/// Errors of engine operations; [`super::api`] maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Unknown account (404).
    #[error("account {0} not found")]
    AccountNotFound(String),
    /// Idempotency-Key reused with another request (409).
    #[error("idempotency key {0:?} was already used with a different request")]
    KeyConflict(String),
    /// Not ready or a dependency failed; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// The store failed (503; the node must restart if the store is poisoned).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The module refused (400).
    #[error("module refused: {0}")]
    Refused(ModuleError),
    /// Start-up or configuration failure.
    #[error("{0}")]
    Config(String),
}

impl From<QuantityError> for EngineError {
    fn from(e: QuantityError) -> Self {
        EngineError::BadRequest(e.to_string())
    }
}
