//! Module units: what a [`ChannelModule`](crate::ChannelModule) counts in, the unit of its ledger at its
//! [`asset_scale`](crate::ChannelModule::asset_scale) (drops for XRP, wei for Ethereum). The totals a host
//! asks claims for, the credits a module reports and its settlement limit are [`ModuleUnits`]; a host brings
//! its own amounts into them with one named conversion: [`ModuleUnits::from_peer_ledger`] in peer mode, the
//! settlement engine's scale conversion (`ilp_bridge::settlement::quantity`) in engine mode; a module reads the
//! logs of its own ledger's transactions with [`ModuleUnits::from_own_log`].

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use num_bigint::BigUint;
use num_traits::Zero;
use serde::{Deserialize, Serialize};

use super::ledger::LedgerSum;

/// A non-negative amount in a module's units, of any size (a cumulative total of wei passes 2^64).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModuleUnits(pub BigUint);

impl ModuleUnits {
    /// Nothing.
    pub fn zero() -> Self {
        ModuleUnits(BigUint::zero())
    }

    /// True for a zero amount.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// `self − other`; `None` if `other` is larger.
    pub fn checked_sub(&self, other: &ModuleUnits) -> Option<ModuleUnits> {
        (self.0 >= other.0).then(|| ModuleUnits(&self.0 - &other.0))
    }

    /// An amount of a trustline's ledger (a transfer's amount or one of the log's sums) in the units of the
    /// module that settles that trustline, in peer mode.
    ///
    /// Exact, one ledger unit for one module unit: in peer mode the module settles the trustline's own ledger,
    /// whose smallest unit is the module's unit (the legacy framework hands its modules the transfer log's
    /// integers as they are, and its peers' claims count the same integers). Engine mode has no such
    /// identity: there the connector's amounts are converted by scale.
    pub fn from_peer_ledger(amount: impl Into<LedgerSum>) -> ModuleUnits {
        ModuleUnits(BigUint::from(amount.into().0))
    }

    /// An amount of a transfer log a module keeps of its own ledger's transactions (its payments, its channel
    /// transactions; [`ChannelContext::transfer_log`](crate::ChannelContext::transfer_log)) in module units.
    ///
    /// Exact, the same integer: the module writes those transfers in its own units, in either host mode.
    pub fn from_own_log(amount: impl Into<LedgerSum>) -> ModuleUnits {
        ModuleUnits(BigUint::from(amount.into().0))
    }
}

impl From<u64> for ModuleUnits {
    fn from(units: u64) -> Self {
        ModuleUnits(BigUint::from(units))
    }
}

impl From<BigUint> for ModuleUnits {
    fn from(units: BigUint) -> Self {
        ModuleUnits(units)
    }
}

/// The bare integer, as the plain integer this type replaced printed, so logs and messages read the same.
impl fmt::Debug for ModuleUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ModuleUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Add<&ModuleUnits> for &ModuleUnits {
    type Output = ModuleUnits;
    fn add(self, other: &ModuleUnits) -> ModuleUnits {
        ModuleUnits(&self.0 + &other.0)
    }
}

impl Add for ModuleUnits {
    type Output = ModuleUnits;
    fn add(self, other: ModuleUnits) -> ModuleUnits {
        ModuleUnits(self.0 + other.0)
    }
}

impl AddAssign<&ModuleUnits> for ModuleUnits {
    fn add_assign(&mut self, other: &ModuleUnits) {
        self.0 += &other.0;
    }
}

impl Sub<&ModuleUnits> for &ModuleUnits {
    type Output = ModuleUnits;
    /// Panics if `other` is larger, as unsigned subtraction does; use [`ModuleUnits::checked_sub`] where that
    /// can happen.
    fn sub(self, other: &ModuleUnits) -> ModuleUnits {
        ModuleUnits(&self.0 - &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::LedgerAmount;

    #[test]
    fn a_peer_ledger_amount_is_the_same_number_of_module_units() {
        assert_eq!(
            ModuleUnits::from_peer_ledger(LedgerSum::MAX),
            ModuleUnits(BigUint::from(i128::MAX as u128))
        );
        assert_eq!(
            ModuleUnits::from_peer_ledger(LedgerAmount(u64::MAX)),
            ModuleUnits::from(u64::MAX)
        );
        assert!(ModuleUnits::from_peer_ledger(LedgerSum::ZERO).is_zero());
        assert_eq!(
            ModuleUnits::from_own_log(LedgerAmount(42)),
            ModuleUnits::from(42)
        );
    }

    #[test]
    fn module_units_add_and_subtract_exactly() {
        let a = ModuleUnits::from(7);
        let b = ModuleUnits::from(5);
        assert_eq!(&a + &b, ModuleUnits::from(12));
        assert_eq!(a.checked_sub(&b), Some(ModuleUnits::from(2)));
        assert_eq!(b.checked_sub(&a), None);
        let mut c = ModuleUnits::from(u64::MAX);
        c += &ModuleUnits::from(1);
        assert_eq!(c.to_string(), "18446744073709551616");
    }

    #[test]
    fn module_units_serialize_as_the_integer_they_hold() -> Result<(), serde_json::Error> {
        let big = BigUint::from(u64::MAX) * 3u8;
        assert_eq!(
            serde_json::to_string(&ModuleUnits(big.clone()))?,
            serde_json::to_string(&big)?
        );
        Ok(())
    }
}
