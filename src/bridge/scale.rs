//! Amounts between the legacy ledger's units and the modern account's units: a power of ten, exact when it
//! multiplies, rounded **down** when it divides (the bridge keeps the dust, so it never delivers more than it
//! was given).

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
    /// `legacy` units in modern units.
    pub fn to_modern(&self, legacy: u64) -> Result<u64, ScaleError> {
        convert(legacy, self.legacy, self.modern)
    }

    /// `modern` units in legacy units.
    pub fn to_legacy(&self, modern: u64) -> Result<u64, ScaleError> {
        convert(modern, self.modern, self.legacy)
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
        assert_eq!(s.to_modern(1_999_999), Ok(1_999));
        assert_eq!(s.to_modern(999), Err(ScaleError::BelowOneUnit));
        assert_eq!(s.to_modern(0), Ok(0));
        assert_eq!(s.to_legacy(1_999), Ok(1_999_000));
        assert_eq!(
            s.to_legacy(u64::MAX),
            Err(ScaleError::TooLarge {
                max: u64::MAX / 1000
            })
        );
        assert_eq!(s.to_legacy(u64::MAX / 1000), Ok(u64::MAX / 1000 * 1000));
        let far = Scales {
            legacy: 0,
            modern: 255,
        };
        assert!(matches!(
            far.to_modern(1),
            Err(ScaleError::TooLarge { max: 0 })
        ));
        assert_eq!(far.to_legacy(u64::MAX), Err(ScaleError::BelowOneUnit));
    }

    proptest! {
        #[test]
        fn a_round_trip_never_gains(amount: u64, legacy in 0u8..20, modern in 0u8..20) {
            let s = Scales { legacy, modern };
            if let Ok(m) = s.to_modern(amount) {
                if let Ok(back) = s.to_legacy(m) {
                    prop_assert!(back <= amount);
                }
            }
        }
    }
}
