//! Deciding a Fulfill whose answer does not say whether it was applied.
//!
//! A restarted legacy peer answers every Fulfill of a transfer from before its restart with `TypeError` (it reads
//! its stored record as a string, docs/legacy-btp.md §16.3), whether it applied our earlier Fulfill (and we never
//! got its answer) or still holds the transfer prepared (and never will fulfill it: its cache of prepared
//! transfers is gone). The answer cannot tell them apart; the peer's balance can. Our log has none of these
//! transfers applied yet, so the peer's balance, negated, exceeds ours by exactly the amounts of those it did
//! apply. With every such transfer of the peer kept here until decided ([`UnsureFulfills`]), [`decide`] looks
//! for the one set of them whose amounts make up the difference. Exactly one set: each transfer is applied
//! (in it) or refused (not in it). None, or more than one (other transfers moving the balances meanwhile, or
//! amounts that add up two ways): undecided, the Fulfill is sent again later and decided then.

use std::collections::BTreeMap;

use channel_modules::store::TransferId;

/// Most undecided transfers searched together: beyond it only "none" and "all" are recognised (the search over
/// 2^n sets is not made) and the others wait.
pub(crate) const MAX_UNSURE_JUDGED: usize = 16;

/// A Fulfill the peer answered ambiguously, by transfer, with its amount (legacy units).
#[derive(Debug, Default)]
pub(crate) struct UnsureFulfills {
    amounts: BTreeMap<TransferId, u64>,
}

/// What the balances say about one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The peer applied our Fulfill.
    Applied,
    /// The peer did not apply it, and will not.
    NotApplied,
    /// The balances do not tell (yet).
    Undecided,
}

impl UnsureFulfills {
    /// Keeps `id` (of `amount`) until decided.
    pub(crate) fn insert(&mut self, id: TransferId, amount: u64) {
        self.amounts.insert(id, amount);
    }

    /// Forgets `id` (decided).
    pub(crate) fn remove(&mut self, id: &TransferId) {
        self.amounts.remove(id);
    }

    /// Judges `id` when the peer's balance, negated, exceeds ours by `difference`.
    pub(crate) fn decide(&self, id: &TransferId, difference: i128) -> Verdict {
        if !self.amounts.contains_key(id) || difference < 0 {
            return Verdict::Undecided;
        }
        // Amounts are positive, so nothing (0) and everything (the total) are each made by one set only: the
        // two answers after a restart in which the peer applied none or all of them, decided however many.
        let total: i128 = self.amounts.values().map(|a| i128::from(*a)).sum();
        if difference == 0 {
            return Verdict::NotApplied;
        }
        if difference == total {
            return Verdict::Applied;
        }
        let items: Vec<(&TransferId, u64)> = self.amounts.iter().map(|(k, v)| (k, *v)).collect();
        if items.len() > MAX_UNSURE_JUDGED {
            return Verdict::Undecided;
        }
        let mut found: Option<u32> = None;
        for mask in 0u32..(1u32 << items.len()) {
            let sum: i128 = items
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, (_, a))| i128::from(*a))
                .sum();
            if sum == difference {
                if found.is_some() {
                    return Verdict::Undecided;
                }
                found = Some(mask);
            }
        }
        let Some(mask) = found else {
            return Verdict::Undecided;
        };
        let index = items.iter().position(|(k, _)| *k == id).unwrap_or(0);
        if mask & (1 << index) != 0 {
            Verdict::Applied
        } else {
            Verdict::NotApplied
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TransferId {
        TransferId([n; 16])
    }

    #[test]
    fn the_one_set_that_makes_up_the_difference_decides() {
        let mut u = UnsureFulfills::default();
        u.insert(id(1), 1061);
        u.insert(id(2), 1062);
        u.insert(id(3), 1063);
        // The peer applied none: each was refused.
        for n in 1..=3 {
            assert_eq!(u.decide(&id(n), 0), Verdict::NotApplied);
        }
        // It applied the first and the third.
        assert_eq!(u.decide(&id(1), 2124), Verdict::Applied);
        assert_eq!(u.decide(&id(2), 2124), Verdict::NotApplied);
        assert_eq!(u.decide(&id(3), 2124), Verdict::Applied);
        // A difference no set makes (something else moved the balances): wait.
        assert_eq!(u.decide(&id(1), 5), Verdict::Undecided);
        assert_eq!(u.decide(&id(1), -1), Verdict::Undecided);
        // A transfer not kept here is never judged.
        assert_eq!(u.decide(&id(9), 0), Verdict::Undecided);
    }

    #[test]
    fn none_or_all_are_decided_however_many() {
        let mut u = UnsureFulfills::default();
        // More than are searched, with amounts whose subsets share sums (consecutive amounts).
        for n in 0..40u8 {
            u.insert(id(n), 1_000 + u64::from(n));
        }
        let total: i128 = (0..40).map(|n| 1_000 + n).sum();
        assert_eq!(u.decide(&id(3), total), Verdict::Applied);
        assert_eq!(u.decide(&id(3), 0), Verdict::NotApplied);
        assert_eq!(u.decide(&id(3), 2_001), Verdict::Undecided);
    }

    #[test]
    fn two_sets_with_the_same_sum_decide_nothing() {
        let mut u = UnsureFulfills::default();
        u.insert(id(1), 5);
        u.insert(id(2), 5);
        assert_eq!(u.decide(&id(1), 5), Verdict::Undecided);
        assert_eq!(u.decide(&id(1), 10), Verdict::Applied);
        u.remove(&id(2));
        assert_eq!(u.decide(&id(1), 5), Verdict::Applied);
    }
}
