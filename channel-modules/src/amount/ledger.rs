//! Ledger units: amounts a transfer log records, in the smallest unit of the ledger it keeps the books of: a
//! BTP/1.0 trustline (a peer's main log, in the ledger's `currencyScale`), the modern account of a bridged pair
//! (its modern log), or a module's own ledger (the logs of its payments and channel transactions). A transfer
//! carries a [`LedgerAmount`]; the log adds them up in [`LedgerSum`]s; a balance, a limit and a limit check's
//! figure are [`LedgerBalance`]s. The store ([`crate::store`]) and its rules ([`crate::ledger`]) count in these;
//! an amount leaves them through a named conversion ([`ModuleUnits::from_peer_ledger`],
//! [`ModuleUnits::from_own_log`], the bridge's `Scales` and modern-log functions).

use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::ModuleUnits;

/// The amount of one transfer, in the units of the ledger its log keeps. BTP/1.0 carries it as a UInt64.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LedgerAmount(pub u64);

impl LedgerAmount {
    /// Nothing.
    pub const ZERO: LedgerAmount = LedgerAmount(0);

    /// True for a zero amount (BTP/1.0 refuses zero-amount transfers).
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// The bare integer, as the plain integer this type replaced printed, so logs and messages read the same.
impl fmt::Debug for LedgerAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LedgerAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A sum of transfer amounts, in ledger units: one of the transfer log's four sums (IF, IFP, OF, OFP). Every
/// store keeps it within `0..=`[`LedgerSum::MAX`], so the difference of two sums is a [`LedgerBalance`] that
/// cannot overflow.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LedgerSum(pub u128);

impl LedgerSum {
    /// Nothing.
    pub const ZERO: LedgerSum = LedgerSum(0);

    /// The largest sum a store keeps (`i128::MAX`), so that `IF − OF` and the limit formulas never overflow.
    pub const MAX: LedgerSum = LedgerSum(i128::MAX as u128);

    /// The sum with `amount` (a transfer's amount or another sum) added; `None` past [`LedgerSum::MAX`].
    pub fn checked_add(self, amount: impl Into<LedgerSum>) -> Option<LedgerSum> {
        self.0
            .checked_add(amount.into().0)
            .map(LedgerSum)
            .filter(|sum| *sum <= LedgerSum::MAX)
    }

    /// The sum with `amount` (a transfer's amount or another sum) taken out; `None` below zero.
    pub fn checked_sub(self, amount: impl Into<LedgerSum>) -> Option<LedgerSum> {
        self.0.checked_sub(amount.into().0).map(LedgerSum)
    }

    /// `self − other` as a balance. Exact for sums within [`LedgerSum::MAX`], as every store keeps them: both
    /// fit an `i128`, and so does their difference.
    pub fn minus(self, other: LedgerSum) -> LedgerBalance {
        LedgerBalance(self.0 as i128 - other.0 as i128)
    }
}

impl From<LedgerAmount> for LedgerSum {
    /// One transfer's amount as a sum (exact: a `u64` always fits).
    fn from(amount: LedgerAmount) -> Self {
        LedgerSum(u128::from(amount.0))
    }
}

/// The bare integer, as the plain integer this type replaced printed, so logs and messages read the same.
impl fmt::Debug for LedgerSum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LedgerSum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A signed amount in ledger units: a balance (`IF − OF`, positive when the peer owes us), a balance limit, or
/// the figure a limit check compares with it.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LedgerBalance(pub i128);

impl LedgerBalance {
    /// Even.
    pub const ZERO: LedgerBalance = LedgerBalance(0);

    /// The opposite balance; `None` for `i128::MIN`, whose opposite does not fit.
    pub fn checked_neg(self) -> Option<LedgerBalance> {
        self.0.checked_neg().map(LedgerBalance)
    }
}

/// The bare integer, as the plain integer this type replaced printed, so logs and messages read the same.
impl fmt::Debug for LedgerBalance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LedgerBalance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_stays_within_its_maximum() {
        let below = LedgerSum(LedgerSum::MAX.0 - 5);
        assert_eq!(below.checked_add(LedgerAmount(5)), Some(LedgerSum::MAX));
        assert_eq!(below.checked_add(LedgerAmount(6)), None);
        assert_eq!(LedgerSum(u128::MAX).checked_add(LedgerAmount(1)), None);
        assert_eq!(
            LedgerSum(5).checked_sub(LedgerAmount(5)),
            Some(LedgerSum::ZERO)
        );
        assert_eq!(LedgerSum(5).checked_sub(LedgerAmount(6)), None);
    }

    #[test]
    fn the_difference_of_two_sums_is_exact_at_the_extremes() {
        assert_eq!(
            LedgerSum::MAX.minus(LedgerSum::ZERO),
            LedgerBalance(i128::MAX)
        );
        assert_eq!(
            LedgerSum::ZERO.minus(LedgerSum::MAX),
            LedgerBalance(-i128::MAX)
        );
        assert_eq!(LedgerSum(3).minus(LedgerSum(10)), LedgerBalance(-7));
        assert_eq!(
            LedgerSum::from(LedgerAmount(u64::MAX)),
            LedgerSum(u128::from(u64::MAX))
        );
    }

    #[test]
    fn ledger_amounts_serialize_as_their_integers() -> Result<(), serde_json::Error> {
        assert_eq!(serde_json::to_string(&LedgerAmount(7))?, "7");
        assert_eq!(serde_json::to_string(&LedgerSum(8))?, "8");
        assert_eq!(serde_json::to_string(&LedgerBalance(-9))?, "-9");
        assert_eq!(
            serde_json::from_str::<LedgerBalance>("-9")?,
            LedgerBalance(-9)
        );
        assert_eq!(LedgerBalance(-9).to_string(), "-9");
        assert_eq!(LedgerBalance(i128::MIN).checked_neg(), None);
        Ok(())
    }
}
