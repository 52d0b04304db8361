//! Money in three units, each its own type so that an amount of one cannot be passed for another, and the
//! parser of decimal amounts read from outside.
//!
//! * Ledger units: amounts of a BTP/1.0 ledger in its smallest unit: a transfer's [`LedgerAmount`], the
//!   transfer log's [`LedgerSum`]s, balances and limits as [`LedgerBalance`]s ([`crate::store`]).
//! * Module units: what a [`ChannelModule`](crate::ChannelModule) counts in (its `asset_scale`): the totals it
//!   makes claims for, the credits it reports, its settlement limit: [`ModuleUnits`].
//! * Connector units: an ILPv4 packet's amount at the connector account's scale, [`ConnectorAmount`] (the
//!   bridge's modern side); the settlement engine's RFC 38 Quantities carry their scale with them
//!   (`ilp_bridge::settlement::quantity::Scaled`).
//!
//! An amount changes unit only through a named function that says why it is exact or how it rounds:
//! [`ModuleUnits::from_peer_ledger`] (peer mode), the engine's conversions in
//! `ilp_bridge::settlement::quantity`, the bridge's `Scales` (`ilp_bridge::bridge::scale`).
//!
//! Decimal amounts read from outside, in peers' claims (the modules) and in RFC 38 requests (the engine), have
//! one bound on their length and one parser, [`parse_decimal`], so that both read the same amounts.

mod connector;
mod ledger;
mod module_units;

pub use connector::ConnectorAmount;
pub use ledger::{LedgerAmount, LedgerBalance, LedgerSum};
pub use module_units::ModuleUnits;

use num_bigint::BigUint;

use crate::error::ModuleError;

/// Decimal digits of 2^64 − 1, the most units a module settles at once (20).
const U64_MAX_DIGITS: usize = u64::MAX.ilog10() as usize + 1;

/// Most decimal digits accepted in an amount string: 275.
///
/// Why this many: the longest amount the node must read is an RFC 38 settle request for up to 2^64 − 1 module
/// units (the most a module settles at once) written at a scale up to 255 digits finer than the module's (RFC
/// 38 scales run from 0 to 255), which takes 20 + 255 digits. Every ledger amount is shorter (none exceeds
/// 2^256, 78 digits), so the same bound serves the amounts in peers' claims.
///
/// Why a bound at all: decimal parsing is quadratic in the length (a 1 MiB number took a second), and an
/// RFC 38 Quantity or a claim is otherwise limited only by the size of a request or a frame.
pub const MAX_AMOUNT_DIGITS: usize = U64_MAX_DIGITS + u8::MAX as usize;

/// How much of a refused amount an error message repeats, in characters.
const QUOTED_CHARS_MAX: usize = 64;

/// Why an amount string was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AmountError {
    /// More than [`MAX_AMOUNT_DIGITS`] characters.
    #[error("amount has {0} digits, more than {MAX_AMOUNT_DIGITS}")]
    TooLong(usize),
    /// Empty, or not only ASCII digits (no sign, point, exponent, separator or space). Holds the first
    /// characters of the input.
    #[error("amount must be a non-negative integer in decimal digits, got {0:?}")]
    NotDecimal(String),
}

/// Parses a non-negative decimal integer: ASCII digits only (leading zeros allowed), at most
/// [`MAX_AMOUNT_DIGITS`] of them. The length is checked before any parsing work.
pub fn parse_decimal(s: &str) -> Result<BigUint, AmountError> {
    if s.len() > MAX_AMOUNT_DIGITS {
        return Err(AmountError::TooLong(s.len()));
    }
    let not_decimal = || AmountError::NotDecimal(s.chars().take(QUOTED_CHARS_MAX).collect());
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_decimal());
    }
    s.parse::<BigUint>().map_err(|_| not_decimal())
}

/// Parses an amount from a peer: [`parse_decimal`] (digits only, at most
/// [`MAX_AMOUNT_DIGITS`]), refused as [`ModuleError::InvalidFields`].
pub(crate) fn parse_amount(s: &str) -> Result<BigUint, ModuleError> {
    parse_decimal(s).map_err(|e| ModuleError::InvalidFields(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_a_settle_request_at_the_finest_scale_and_any_ledger_amount(
    ) -> Result<(), AmountError> {
        // Just under 2^64 module units, at 255 digits finer than the module: 2^64 · 10^255 − 1.
        let finest =
            (BigUint::from(u64::MAX) + 1u8) * num_traits::pow(BigUint::from(10u8), 255) - 1u8;
        let written = finest.to_string();
        assert_eq!(written.len(), MAX_AMOUNT_DIGITS);
        assert_eq!(parse_decimal(&written)?, finest);
        // The largest ledger amount (below 2^256) is well within.
        let ledger_max = (BigUint::from(1u8) << 256u32) - 1u8;
        assert!(ledger_max.to_string().len() < MAX_AMOUNT_DIGITS);
        Ok(())
    }

    #[test]
    fn amounts_are_plain_decimals_of_bounded_length() {
        let longest = "9".repeat(MAX_AMOUNT_DIGITS);
        assert!(parse_decimal(&longest).is_ok());
        assert_eq!(
            parse_decimal(&format!("{longest}9")),
            Err(AmountError::TooLong(MAX_AMOUNT_DIGITS + 1))
        );
        assert_eq!(
            parse_decimal(&"1".repeat(1 << 20)),
            Err(AmountError::TooLong(1 << 20))
        );
        for bad in ["", "+1", "-1", "1_000", "1e3", " 1", "1.5", "١"] {
            assert!(
                matches!(parse_decimal(bad), Err(AmountError::NotDecimal(_))),
                "{bad:?}"
            );
        }
        assert_eq!(parse_decimal("0042").ok(), Some(BigUint::from(42u8)));
    }
}
