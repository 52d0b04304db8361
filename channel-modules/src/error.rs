//! [`ModuleError`]: what a [`crate::ChannelModule`] hook, or the [`crate::ChannelContext`] it works through,
//! returns when it fails. The hosts map it to their wire (the legacy error names of docs/legacy-btp.md §7 in
//! peer mode; problem JSON or a retry in engine mode).

use crate::store::StoreError;

/// Errors a module returns. The peer layer maps each to its legacy error name and code (`NotAcceptedError` F00,
/// `InvalidFieldsError` F01, `InsufficientBalanceError` F07, other names F00), and sends the message as the
/// legacy plugin would, which is why the messages are plain strings.
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
