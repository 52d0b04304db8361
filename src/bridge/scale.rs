//! Amounts between the legacy ledger's units ([`LedgerAmount`]) and the modern account's units
//! ([`ConnectorAmount`]): a power of ten, exact when it multiplies, rounded **down** when it divides (the bridge
//! keeps the dust, so it never delivers more than it was given), except where a quote asks what P must send for
//! an amount to arrive ([`Scales::least_legacy_for`], rounded up).

use channel_modules::amount::{ConnectorAmount, LedgerAmount};
use num_bigint::BigUint;
use num_traits::{ToPrimitive, Zero};

/// The two sides' asset scales (`currencyScale` of the legacy ledger, `asset_scale` of the modern account).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scales {
    /// Decimal places of one unit on the legacy ledger.
    pub legacy: u8,
    /// Decimal places of one unit on the modern account.
    pub modern: u8,
}

/// Why an amount has no counterpart on the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// A non-zero amount that is less than one unit on the other side.
    #[error("the amount is less than one unit on the other side")]
    BelowOneUnit,
    /// The converted amount is above 2^64 − 1, the most a packet carries.
    #[error("the converted amount does not fit in 64 bits")]
    TooLarge {
        /// The largest amount of this side that does convert.
        max: u64,
    },
}

impl Scales {
    /// `legacy` units in modern units: exact to a finer modern scale, rounded down to a coarser one.
    pub fn to_modern(&self, legacy: LedgerAmount) -> Result<ConnectorAmount, ScaleError> {
        convert(legacy.0, self.legacy, self.modern).map(ConnectorAmount)
    }

    /// `modern` units in legacy units: exact to a finer legacy scale, rounded down to a coarser one.
    pub fn to_legacy(&self, modern: ConnectorAmount) -> Result<LedgerAmount, ScaleError> {
        convert(modern.0, self.modern, self.legacy).map(LedgerAmount)
    }

    /// The least legacy amount that arrives as at least `modern` on the modern side (so a quote by
    /// destination amount never promises too little): exact to a finer legacy scale, rounded **up** to a
    /// coarser one. `None` if it does not fit in 64 bits.
    pub fn least_legacy_for(&self, modern: ConnectorAmount) -> Option<LedgerAmount> {
        if self.legacy >= self.modern {
            // Finer legacy units: multiply exactly.
            return self.to_legacy(modern).ok();
        }
        // Coarser legacy units: divide, rounding up.
        let factor = 10u64.checked_pow(u32::from(self.modern - self.legacy))?;
        let modern = modern.0;
        Some(LedgerAmount(
            modern / factor + u64::from(modern % factor != 0),
        ))
    }

    /// The largest legacy amount whose modern counterpart fits in 64 bits.
    pub fn largest_convertible_legacy(&self) -> LedgerAmount {
        match self.to_modern(LedgerAmount(u64::MAX)) {
            Ok(_) | Err(ScaleError::BelowOneUnit) => LedgerAmount(u64::MAX),
            Err(ScaleError::TooLarge { max }) => LedgerAmount(max),
        }
    }
}

fn convert(amount: u64, from: u8, to: u8) -> Result<u64, ScaleError> {
    if from == to {
        return Ok(amount);
    }
    let factor = BigUint::from(10u32).pow(u32::from(from.abs_diff(to)));
    let value = BigUint::from(amount);
    let converted = if to > from {
        value * &factor
    } else {
        value / &factor
    };
    if amount > 0 && converted.is_zero() {
        return Err(ScaleError::BelowOneUnit);
    }
    converted.to_u64().ok_or_else(|| ScaleError::TooLarge {
        // Only a multiplication overflows: the largest amount that survives it.
        max: (BigUint::from(u64::MAX) / factor).to_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn coarser_rounds_down_and_finer_is_exact() {
        let s = Scales {
            legacy: 9,
            modern: 6,
        };
        let (legacy, modern) = (LedgerAmount, ConnectorAmount);
        assert_eq!(s.to_modern(legacy(1_999_999)), Ok(modern(1_999)));
        assert_eq!(s.to_modern(legacy(999)), Err(ScaleError::BelowOneUnit));
        assert_eq!(s.to_modern(legacy(0)), Ok(modern(0)));
        assert_eq!(s.to_legacy(modern(1_999)), Ok(legacy(1_999_000)));
        assert_eq!(
            s.to_legacy(modern(u64::MAX)),
            Err(ScaleError::TooLarge {
                max: u64::MAX / 1000
            })
        );
        assert_eq!(
            s.to_legacy(modern(u64::MAX / 1000)),
            Ok(legacy(u64::MAX / 1000 * 1000))
        );
        let far = Scales {
            legacy: 0,
            modern: 255,
        };
        assert!(matches!(
            far.to_modern(legacy(1)),
            Err(ScaleError::TooLarge { max: 0 })
        ));
        assert_eq!(
            far.to_legacy(modern(u64::MAX)),
            Err(ScaleError::BelowOneUnit)
        );
    }

    #[test]
    fn the_least_legacy_amount_for_a_modern_amount_rounds_up() {
        let (legacy, modern) = (LedgerAmount, ConnectorAmount);
        let coarser_legacy = Scales {
            legacy: 2,
            modern: 4,
        };
        assert_eq!(
            coarser_legacy.least_legacy_for(modern(10_001)),
            Some(legacy(101))
        );
        assert_eq!(
            coarser_legacy.least_legacy_for(modern(10_000)),
            Some(legacy(100))
        );
        let finer_legacy = Scales {
            legacy: 4,
            modern: 2,
        };
        assert_eq!(finer_legacy.least_legacy_for(modern(7)), Some(legacy(700)));
        assert_eq!(finer_legacy.least_legacy_for(modern(u64::MAX)), None);
        assert_eq!(finer_legacy.largest_convertible_legacy(), legacy(u64::MAX));
        assert_eq!(
            coarser_legacy.largest_convertible_legacy(),
            legacy(u64::MAX / 100)
        );
    }

    proptest! {
        #[test]
        fn a_round_trip_never_gains(amount: u64, legacy in 0u8..20, modern in 0u8..20) {
            let s = Scales { legacy, modern };
            if let Ok(m) = s.to_modern(LedgerAmount(amount)) {
                if let Ok(back) = s.to_legacy(m) {
                    prop_assert!(back <= LedgerAmount(amount));
                }
            }
        }

        #[test]
        fn the_least_legacy_amount_delivers_at_least_the_modern_amount(
            amount: u64, legacy in 0u8..20, modern in 0u8..20,
        ) {
            let s = Scales { legacy, modern };
            if let Some(source) = s.least_legacy_for(ConnectorAmount(amount)) {
                if let Ok(delivered) = s.to_modern(source) {
                    prop_assert!(delivered >= ConnectorAmount(amount));
                }
            }
        }
    }
}
