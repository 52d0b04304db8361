//! What every link-local `peer.*` request has in common (docs/modern.md §4): the Prepare that carries it and the
//! Fulfill that answers it. [`crate::ildcp`] and [`crate::ccp`] build on these.
//!
//! | field | value | source |
//! |--|--|--|
//! | Prepare `amount` | 0 | interledger-rs `interledger-ildcp`/`interledger-ccp` `packet.rs` |
//! | Prepare `executionCondition` | [`PEER_PROTOCOL_CONDITION`], `66687aad…2925`, the SHA-256 of 32 zero bytes | same; docs/modern.md §4.1 |
//! | Prepare `expiresAt` | sender's clock + [`PEER_PROTOCOL_EXPIRY`] (60 s) | same (`PEER_PROTOCOL_EXPIRY_DURATION`) |
//! | Fulfill `fulfillment` | [`PEER_PROTOCOL_FULFILLMENT`], 32 zero bytes | same |
//!
//! `peer.settle` is the exception: interledger-rs sends it with a 30 s expiry (docs/modern.md §4.2), so the expiry
//! is a parameter of [`peer_prepare`].

use std::time::Duration;

use bytes::Bytes;

use crate::error::DecodeError;
use crate::ilp_v4::{Address, Fulfill, Prepare};
use crate::time::Timestamp;

/// The condition of every `peer.*` Prepare: SHA-256 of [`PEER_PROTOCOL_FULFILLMENT`]
/// (`66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925`).
pub const PEER_PROTOCOL_CONDITION: [u8; 32] = [
    0x66, 0x68, 0x7a, 0xad, 0xf8, 0x62, 0xbd, 0x77, 0x6c, 0x8f, 0xc1, 0x8b, 0x8e, 0x9f, 0x8e, 0x20,
    0x08, 0x97, 0x14, 0x85, 0x6e, 0xe2, 0x33, 0xb3, 0x90, 0x2a, 0x59, 0x1d, 0x0d, 0x5f, 0x29, 0x25,
];

/// The fulfillment of every `peer.*` reply: 32 zero bytes.
pub const PEER_PROTOCOL_FULFILLMENT: [u8; 32] = [0; 32];

/// How far ahead of the sender's clock a `peer.config` or `peer.route.*` Prepare expires (interledger-rs sends
/// 60 s; the receiving connector's expiry shortener may cut it further).
pub const PEER_PROTOCOL_EXPIRY: Duration = Duration::from_secs(60);

/// A `peer.*` Prepare: amount 0, [`PEER_PROTOCOL_CONDITION`], expiring `expiry` after `now` (clamped to the
/// latest representable instant).
pub fn peer_prepare(
    destination: Address,
    data: Bytes,
    now: Timestamp,
    expiry: Duration,
) -> Prepare {
    Prepare {
        amount: 0,
        expires_at: now.checked_add(expiry).unwrap_or(Timestamp::MAX),
        execution_condition: PEER_PROTOCOL_CONDITION,
        destination,
        data,
    }
}

/// The Fulfill answering a `peer.*` Prepare: [`PEER_PROTOCOL_FULFILLMENT`] and `data`.
pub fn peer_fulfill(data: Bytes) -> Fulfill {
    Fulfill {
        fulfillment: PEER_PROTOCOL_FULFILLMENT,
        data,
    }
}

/// A `peer.*` destination from a literal that is a valid address (checked by this module's tests).
pub(crate) fn peer_address(name: &'static str) -> Address {
    Address::from_static_trusted(name)
}

/// Checks that `prepare` is addressed to `destination` with the peer-protocol condition; `field` names the packet
/// for the error (for example `"ccp.control"`).
pub(crate) fn check_peer_prepare(
    prepare: &Prepare,
    destination: &'static str,
    field: &'static str,
) -> Result<(), DecodeError> {
    if prepare.destination.as_bytes() != destination.as_bytes() {
        return Err(DecodeError::Mismatch {
            field,
            expected: destination,
        });
    }
    if prepare.execution_condition != PEER_PROTOCOL_CONDITION {
        return Err(DecodeError::Mismatch {
            field,
            expected: "the peer-protocol condition 66687aad…2925",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_is_the_hash_of_the_fulfillment() {
        // Computed independently: `printf '\0%.0s' {1..32} | sha256sum`.
        assert_eq!(
            hex::encode(PEER_PROTOCOL_CONDITION),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(PEER_PROTOCOL_FULFILLMENT, [0u8; 32]);
    }

    #[test]
    fn prepare_fields() {
        let now = Timestamp::from_unix_millis(1_000).expect("in range");
        let p = peer_prepare(
            peer_address("peer.config"),
            Bytes::new(),
            now,
            PEER_PROTOCOL_EXPIRY,
        );
        assert_eq!(p.amount, 0);
        assert_eq!(p.expires_at.unix_millis(), 61_000);
        assert_eq!(p.destination.as_str(), "peer.config");
        assert!(check_peer_prepare(&p, "peer.config", "x").is_ok());
        assert!(check_peer_prepare(&p, "peer.route.control", "x").is_err());
        let near_end = peer_prepare(
            peer_address("peer.config"),
            Bytes::new(),
            Timestamp::MAX,
            PEER_PROTOCOL_EXPIRY,
        );
        assert_eq!(near_end.expires_at, Timestamp::MAX);
    }
}
