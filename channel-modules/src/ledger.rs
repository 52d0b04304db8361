//! The limit and state rules of a [`TransferLog`](crate::store::TransferLog), as pure functions over
//! [`Sums`] and [`TransferRecord`]s: the limit formulas ([`reserve`]), the prepared → fulfilled | cancelled
//! state machine ([`settle`]) and the idempotent-prepare rule ([`check_idempotent_prepare`]), as
//! docs/legacy-btp.md §10 describes them, with the legacy bugs of §10.3 and §10.4 fixed.
//!
//! Both stores run on these functions: the in-memory one ([`crate::memory`]) and the RocksDB one of the root
//! crate (`ilp_bridge::store`), so the two cannot drift apart. This module stores nothing itself.

use crate::amount::{LedgerAmount, LedgerSum};
use crate::store::{
    Direction, Limit, PrepareOutcome, StoreError, Sums, Transfer, TransferLogError, TransferRecord,
    TransferState,
};

fn add_sum(sum: LedgerSum, amount: LedgerAmount) -> Result<LedgerSum, StoreError> {
    sum.checked_add(amount).ok_or(StoreError::Overflow)
}

fn sub_sum(sum: LedgerSum, amount: LedgerAmount) -> Result<LedgerSum, StoreError> {
    // A prepared amount is always included in its fulfilled-and-prepared sum, so this only fails on corrupt
    // state; report it rather than wrap around.
    sum.checked_sub(amount).ok_or_else(|| StoreError::Corrupt {
        key: "sums".to_owned(),
        reason: format!("fulfilled-and-prepared sum {sum} is below a prepared amount {amount}"),
    })
}

/// Checks the limit for a new prepared transfer and returns the sums with its amount reserved.
///
/// Incoming: fails if `(IFP + amount) − OF > maximum`. Outgoing: fails if `(OFP + amount) − IF > −minimum`.
/// Equality is allowed; [`Limit::Unbounded`] never fails. Outgoing prepared amounts never relieve the incoming
/// limit (only OF is subtracted). A sum above [`LedgerSum::MAX`] is [`StoreError::Overflow`].
pub fn reserve(
    sums: &Sums,
    direction: Direction,
    amount: LedgerAmount,
    maximum: Limit,
    minimum: Limit,
) -> Result<Sums, TransferLogError> {
    let mut next = *sums;
    match direction {
        Direction::Incoming => {
            let ifp = add_sum(sums.incoming_fulfilled_and_prepared, amount)?;
            // Both sums are ≤ `LedgerSum::MAX`, so their difference cannot overflow.
            let after = ifp.minus(sums.outgoing_fulfilled);
            if let Limit::Finite(maximum) = maximum {
                if after > maximum {
                    return Err(TransferLogError::IncomingLimitExceeded { after, maximum });
                }
            }
            next.incoming_fulfilled_and_prepared = ifp;
        }
        Direction::Outgoing => {
            let ofp = add_sum(sums.outgoing_fulfilled_and_prepared, amount)?;
            let after = ofp.minus(sums.incoming_fulfilled);
            if let Limit::Finite(minimum) = minimum {
                // −i128::MIN does not fit: it is larger than any `after`, so that limit never fails.
                if let Some(negated) = minimum.checked_neg() {
                    if after > negated {
                        return Err(TransferLogError::OutgoingLimitExceeded { after, minimum });
                    }
                }
            }
            next.outgoing_fulfilled_and_prepared = ofp;
        }
    }
    Ok(next)
}

/// What [`settle`] decided for a fulfill or cancel request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// A prepared transfer changes state: store `record` and `sums`.
    Changed {
        /// The record in its new state.
        record: TransferRecord,
        /// The sums after the change.
        sums: Sums,
    },
    /// The request repeats what already happened (same fulfillment, or a second cancel): nothing changes.
    Unchanged(TransferRecord),
}

/// The target of [`settle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleTo<'a> {
    /// Fulfill with this fulfillment.
    Fulfill(&'a [u8; 32]),
    /// Cancel for this reason.
    Cancel(&'a str),
}

/// The state machine of fulfill and cancel: prepared → fulfilled | cancelled, exactly once.
///
/// * prepared + fulfill: adds the amount to IF or OF; prepared + cancel: subtracts it from IFP or OFP.
/// * fulfilled + fulfill with the same fulfillment, cancelled + cancel: [`Settlement::Unchanged`].
/// * fulfilled + other fulfillment, fulfilled + cancel: `AlreadyFulfilled`; cancelled + fulfill:
///   `AlreadyRolledBack`.
pub fn settle(
    sums: &Sums,
    record: &TransferRecord,
    to: SettleTo<'_>,
) -> Result<Settlement, TransferLogError> {
    let id = record.transfer.id;
    match (&record.state, to) {
        (TransferState::Prepared, SettleTo::Fulfill(fulfillment)) => {
            let mut next = *sums;
            let amount = record.transfer.amount;
            match record.direction {
                Direction::Incoming => {
                    next.incoming_fulfilled = add_sum(sums.incoming_fulfilled, amount)?
                }
                Direction::Outgoing => {
                    next.outgoing_fulfilled = add_sum(sums.outgoing_fulfilled, amount)?
                }
            }
            let mut record = record.clone();
            record.state = TransferState::Fulfilled {
                fulfillment: *fulfillment,
            };
            Ok(Settlement::Changed { record, sums: next })
        }
        (TransferState::Prepared, SettleTo::Cancel(reason)) => {
            let mut next = *sums;
            let amount = record.transfer.amount;
            match record.direction {
                Direction::Incoming => {
                    next.incoming_fulfilled_and_prepared =
                        sub_sum(sums.incoming_fulfilled_and_prepared, amount)?
                }
                Direction::Outgoing => {
                    next.outgoing_fulfilled_and_prepared =
                        sub_sum(sums.outgoing_fulfilled_and_prepared, amount)?
                }
            }
            let mut record = record.clone();
            record.state = TransferState::Cancelled {
                reason: reason.to_owned(),
            };
            Ok(Settlement::Changed { record, sums: next })
        }
        (TransferState::Fulfilled { fulfillment }, SettleTo::Fulfill(requested)) => {
            if fulfillment == requested {
                Ok(Settlement::Unchanged(record.clone()))
            } else {
                Err(TransferLogError::AlreadyFulfilled(id))
            }
        }
        (TransferState::Fulfilled { .. }, SettleTo::Cancel(_)) => {
            Err(TransferLogError::AlreadyFulfilled(id))
        }
        (TransferState::Cancelled { .. }, SettleTo::Fulfill(_)) => {
            Err(TransferLogError::AlreadyRolledBack(id))
        }
        (TransferState::Cancelled { .. }, SettleTo::Cancel(_)) => {
            Ok(Settlement::Unchanged(record.clone()))
        }
    }
}

/// A prepare whose ID is already stored: identical transfer and direction is `AlreadyExists(stored)` in any
/// state (no limit check, no sum change); anything else is `DuplicateId`.
pub fn check_idempotent_prepare(
    stored: &TransferRecord,
    transfer: &Transfer,
    direction: Direction,
) -> Result<PrepareOutcome, TransferLogError> {
    if stored.transfer == *transfer && stored.direction == direction {
        Ok(PrepareOutcome::AlreadyExists(stored.clone()))
    } else {
        Err(TransferLogError::DuplicateId(transfer.id))
    }
}

/// The error [`TransferLog::note_fulfillment`](crate::store::TransferLog::note_fulfillment) gives for a record that is not prepared (`None` if it is).
pub fn not_prepared_error(record: &TransferRecord) -> Option<TransferLogError> {
    match record.state {
        TransferState::Prepared => None,
        TransferState::Fulfilled { .. } => {
            Some(TransferLogError::AlreadyFulfilled(record.transfer.id))
        }
        TransferState::Cancelled { .. } => {
            Some(TransferLogError::AlreadyRolledBack(record.transfer.id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::LedgerBalance;

    #[test]
    fn outgoing_limit_with_min_i128_never_fails() {
        let sums = Sums::default();
        let next = reserve(
            &sums,
            Direction::Outgoing,
            LedgerAmount(u64::MAX),
            Limit::Finite(LedgerBalance::ZERO),
            Limit::Finite(LedgerBalance(i128::MIN)),
        )
        .expect("−i128::MIN exceeds every value");
        assert_eq!(
            next.outgoing_fulfilled_and_prepared,
            LedgerSum::from(LedgerAmount(u64::MAX))
        );
    }
}
