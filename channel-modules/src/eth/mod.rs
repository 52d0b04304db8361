//! Ethereum stock modules and the small Ethereum toolkit they stand on.
//!
//! * [`payment`]: `eth-payment`, payment-based: each settlement is an on-chain ETH (or ERC-20) transfer to the
//!   peer, and the claim the peer receives is its transaction hash.
//! * [`channel`]: `eth-channel`, claim-based: the payer deposits into a one-way payment channel contract
//!   (`channel-modules/contracts/PaymentChannel.sol`) and hands the payee signed cumulative claims off-ledger.
//!
//! Both stand on [`peer`] (the peer's address, configured or proven, and held in the node's identity
//! registry), [`latest_claim`] (a payee pulling the claim it missed) and `options` (the options they share).
//!
//! The toolkit keeps to what the two modules need, with no Ethereum framework: [`key`] (secp256k1 signing
//! with recovery, EIP-191), [`rlp`], [`tx`] (EIP-1559 transactions, EIP-155 chain binding), [`abi`], [`rpc`]
//! (JSON-RPC over HTTP) and [`wallet`] (nonces, fees, broadcast, receipts and confirmations).
//! `testing` (feature `testing`) runs a throw-away `anvil` chain for tests.

pub mod abi;
pub mod channel;
pub mod key;
pub mod latest_claim;
pub(crate) mod options;
pub mod payment;
pub mod peer;
pub mod rlp;
pub mod rpc;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tx;
pub mod types;
pub mod wallet;

pub use key::PrivateKey;
pub use types::{Address, TxHash};

use crate::error::ModuleError;

/// Errors of the Ethereum toolkit.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EthError {
    /// A private key that is missing, unreadable or invalid (the message never contains the key).
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// Malformed hex.
    #[error("invalid hex: {0}")]
    InvalidHex(String),
    /// A signature that does not parse or recover.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    /// The endpoint could not be reached or did not answer JSON.
    #[error("json-rpc transport error: {0}")]
    Transport(String),
    /// The endpoint answered with a JSON-RPC error.
    #[error("json-rpc error {code}: {message}")]
    Rpc {
        /// JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// The endpoint answered something this client does not understand.
    #[error("unexpected json-rpc response: {0}")]
    BadResponse(String),
    /// A number outside the range a field allows.
    #[error("value out of range: {0}")]
    Range(String),
    /// Waited too long (the operation may still complete later).
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

impl From<EthError> for ModuleError {
    fn from(err: EthError) -> Self {
        match err {
            EthError::InvalidKey(_) => ModuleError::InvalidFields(err.to_string()),
            EthError::InvalidHex(_) | EthError::InvalidSignature(_) => {
                ModuleError::NotAccepted(err.to_string())
            }
            EthError::Transport(_)
            | EthError::Rpc { .. }
            | EthError::BadResponse(_)
            | EthError::Range(_)
            | EthError::Timeout(_) => ModuleError::Ledger(err.to_string()),
        }
    }
}
