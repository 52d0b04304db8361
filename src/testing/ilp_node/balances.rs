//! Balances, as interledger-rs's Redis Lua scripts keep them (`crates/interledger-store/src/redis/lua/*.lua`,
//! docs/modern.md §5.3). Pure arithmetic, no IO: the node calls these where interledger-rs runs the scripts.
//!
//! Each account has `balance` and `prepaid_amount`, both from the **peer's** point of view: a positive balance
//! is what the node owes the peer. The scripts use Redis integers (`HINCRBY`, signed 64 bit); an overflow is an
//! error there, and is [`BalanceError::Overflow`] here.
//!
//! | script | effect |
//! |--|--|
//! | `process_prepare` (incoming Prepare, amount `a` from account F) | refused if `min_balance` is set and `balance + prepaid − a < min_balance`; else `a` comes out of `prepaid_amount` first, the rest out of `balance` |
//! | `process_fulfill` (Fulfill from account T for outgoing amount `a`) | `balance += a`; then if `settle_threshold` and `settle_to` are set, `balance ≥ settle_threshold` and `settle_threshold > settle_to`: settle `balance − settle_to` and set `balance = settle_to` **before** the settlement is sent |
//! | `process_reject` (Reject for incoming amount `a` from F) | `balance += a` (never back into `prepaid_amount`) |
//! | `process_incoming_settlement` (credit `a`, key `k`) | nothing if `k` was seen in the last 24 h; else if `balance ≥ 0`: `prepaid += a`; else if `|balance| ≥ a`: `balance += a`; else `prepaid += a + balance`, `balance = 0` |
//! | `refund_settlement` (a settlement that failed) | `balance += a` |

use std::collections::HashSet;

use super::accounts::Account;

/// The two numbers interledger-rs keeps per account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    /// What the node owes the peer (negative: what the peer owes the node).
    pub balance: i64,
    /// Money the peer paid in advance (settlements beyond its debt).
    pub prepaid_amount: i64,
}

impl Balance {
    /// `balance + prepaid_amount`, what interledger-rs's `GET /accounts/:username/balance` reports.
    pub fn total(&self) -> i64 {
        self.balance.saturating_add(self.prepaid_amount)
    }
}

/// Why a script refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// The Prepare would take the account under its `min_balance`.
    #[error("incoming prepare of {amount} would bring the account under its minimum balance ({min_balance})")]
    UnderMinBalance {
        /// The Prepare amount.
        amount: u64,
        /// The limit.
        min_balance: i64,
    },
    /// A signed 64-bit overflow (Redis refuses such an `HINCRBY`).
    #[error("balance arithmetic overflow")]
    Overflow,
}

fn signed(amount: u64) -> Result<i64, BalanceError> {
    i64::try_from(amount).map_err(|_| BalanceError::Overflow)
}

/// `process_prepare.lua`.
pub fn process_prepare(
    b: &mut Balance,
    account: &Account,
    amount: u64,
) -> Result<(), BalanceError> {
    let a = signed(amount)?;
    if let Some(min_balance) = account.min_balance {
        let after = b
            .balance
            .checked_add(b.prepaid_amount)
            .and_then(|t| t.checked_sub(a))
            .ok_or(BalanceError::Overflow)?;
        if after < min_balance {
            return Err(BalanceError::UnderMinBalance {
                amount,
                min_balance,
            });
        }
    }
    if b.prepaid_amount >= a {
        b.prepaid_amount -= a;
    } else if b.prepaid_amount > 0 {
        let from_balance = a - b.prepaid_amount;
        b.prepaid_amount = 0;
        b.balance = b
            .balance
            .checked_sub(from_balance)
            .ok_or(BalanceError::Overflow)?;
    } else {
        b.balance = b.balance.checked_sub(a).ok_or(BalanceError::Overflow)?;
    }
    Ok(())
}

/// `process_fulfill.lua`: returns the amount to settle (0 for none); the balance is already at `settle_to` when
/// it is positive.
pub fn process_fulfill(
    b: &mut Balance,
    account: &Account,
    amount: u64,
) -> Result<u64, BalanceError> {
    b.balance = b
        .balance
        .checked_add(signed(amount)?)
        .ok_or(BalanceError::Overflow)?;
    let (Some(threshold), Some(settle_to)) = (account.settle_threshold, account.settle_to) else {
        return Ok(0);
    };
    if b.balance >= threshold && threshold > settle_to {
        let settle = b
            .balance
            .checked_sub(settle_to)
            .ok_or(BalanceError::Overflow)?;
        b.balance = settle_to;
        // `balance >= threshold > settle_to`, so `settle` is positive.
        return Ok(settle.unsigned_abs());
    }
    Ok(0)
}

/// `process_reject.lua`.
pub fn process_reject(b: &mut Balance, amount: u64) -> Result<(), BalanceError> {
    b.balance = b
        .balance
        .checked_add(signed(amount)?)
        .ok_or(BalanceError::Overflow)?;
    Ok(())
}

/// `refund_settlement.lua`.
pub fn refund_settlement(b: &mut Balance, amount: u64) -> Result<(), BalanceError> {
    process_reject(b, amount)
}

/// The keys `process_incoming_settlement.lua` has seen (interledger-rs keeps each for 24 h with `SET … EX 86400`;
/// a test never runs that long, so they are kept for the node's life).
#[derive(Debug, Default)]
pub struct SettlementKeys(HashSet<String>);

/// `process_incoming_settlement.lua`: returns false (and changes nothing) for a key already seen.
pub fn process_incoming_settlement(
    b: &mut Balance,
    keys: &mut SettlementKeys,
    amount: u64,
    key: &str,
) -> Result<bool, BalanceError> {
    if keys.0.contains(key) {
        return Ok(false);
    }
    let a = signed(amount)?;
    if b.balance >= 0 {
        b.prepaid_amount = b
            .prepaid_amount
            .checked_add(a)
            .ok_or(BalanceError::Overflow)?;
    } else if b.balance.unsigned_abs() >= amount {
        b.balance += a;
    } else {
        b.prepaid_amount = b
            .prepaid_amount
            .checked_add(a + b.balance)
            .ok_or(BalanceError::Overflow)?;
        b.balance = 0;
    }
    keys.0.insert(key.to_owned());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ilp_node::accounts::AccountDetails;
    use btp::ilp_v4::Address;
    use uuid::Uuid;

    fn account(min: Option<i64>, threshold: Option<i64>, to: Option<i64>) -> Account {
        let mut d = AccountDetails::new("peer", "XRP", 6);
        d.min_balance = min;
        d.settle_threshold = threshold;
        d.settle_to = to;
        let node = Address::new("example.node").expect("valid");
        Account::from_details(Uuid::new_v4(), d, &node).expect("valid")
    }

    #[test]
    fn prepare_takes_prepaid_first_then_balance() -> Result<(), BalanceError> {
        let a = account(Some(-100), None, None);
        let mut b = Balance {
            balance: 0,
            prepaid_amount: 30,
        };
        process_prepare(&mut b, &a, 50)?;
        assert_eq!(
            b,
            Balance {
                balance: -20,
                prepaid_amount: 0
            }
        );
        process_prepare(&mut b, &a, 80)?;
        assert_eq!(b.balance, -100);
        assert_eq!(
            process_prepare(&mut b, &a, 1),
            Err(BalanceError::UnderMinBalance {
                amount: 1,
                min_balance: -100
            })
        );
        assert_eq!(b.balance, -100, "a refused prepare changes nothing");
        Ok(())
    }

    #[test]
    fn no_min_balance_means_no_limit() -> Result<(), BalanceError> {
        let a = account(None, None, None);
        let mut b = Balance::default();
        process_prepare(&mut b, &a, 1_000_000)?;
        assert_eq!(b.balance, -1_000_000);
        Ok(())
    }

    #[test]
    fn reject_refunds_into_balance_not_prepaid() -> Result<(), BalanceError> {
        let a = account(None, None, None);
        let mut b = Balance {
            balance: 0,
            prepaid_amount: 10,
        };
        process_prepare(&mut b, &a, 10)?;
        process_reject(&mut b, 10)?;
        assert_eq!(
            b,
            Balance {
                balance: 10,
                prepaid_amount: 0
            }
        );
        Ok(())
    }

    #[test]
    fn fulfill_settles_down_to_settle_to() -> Result<(), BalanceError> {
        let a = account(None, Some(100), Some(10));
        let mut b = Balance::default();
        assert_eq!(process_fulfill(&mut b, &a, 99)?, 0);
        assert_eq!(b.balance, 99);
        assert_eq!(process_fulfill(&mut b, &a, 1)?, 90);
        assert_eq!(b.balance, 10);
        // threshold <= settle_to: never settles.
        let never = account(None, Some(10), Some(10));
        let mut b = Balance::default();
        assert_eq!(process_fulfill(&mut b, &never, 1000)?, 0);
        assert_eq!(b.balance, 1000);
        // Unset threshold: never settles.
        let unset = account(None, None, Some(0));
        assert_eq!(process_fulfill(&mut Balance::default(), &unset, 5)?, 0);
        Ok(())
    }

    #[test]
    fn zero_fulfill_prefunds_with_negative_settle_to() -> Result<(), BalanceError> {
        let a = account(None, Some(0), Some(-1000));
        let mut b = Balance::default();
        assert_eq!(process_fulfill(&mut b, &a, 0)?, 1000);
        assert_eq!(b.balance, -1000);
        Ok(())
    }

    #[test]
    fn credit_fills_debt_then_prepaid_and_is_idempotent() -> Result<(), BalanceError> {
        let mut keys = SettlementKeys::default();
        let mut b = Balance {
            balance: -50,
            prepaid_amount: 0,
        };
        assert!(process_incoming_settlement(&mut b, &mut keys, 20, "k1")?);
        assert_eq!(b.balance, -30);
        assert!(process_incoming_settlement(&mut b, &mut keys, 100, "k2")?);
        assert_eq!(
            b,
            Balance {
                balance: 0,
                prepaid_amount: 70
            }
        );
        assert!(!process_incoming_settlement(&mut b, &mut keys, 100, "k2")?);
        assert_eq!(b.prepaid_amount, 70);
        assert!(process_incoming_settlement(&mut b, &mut keys, 5, "k3")?);
        assert_eq!(b.prepaid_amount, 75);
        Ok(())
    }

    #[test]
    fn overflow_is_an_error() {
        let a = account(None, None, None);
        let mut b = Balance {
            balance: i64::MIN + 1,
            prepaid_amount: 0,
        };
        assert_eq!(process_prepare(&mut b, &a, 2), Err(BalanceError::Overflow));
        assert_eq!(
            process_prepare(&mut Balance::default(), &a, u64::MAX),
            Err(BalanceError::Overflow)
        );
    }
}
