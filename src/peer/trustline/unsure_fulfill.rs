//! Deciding a Fulfill whose answer does not say whether it was applied.
//!
//! A restarted legacy peer answers every Fulfill of a transfer from before its restart with `TypeError` (it reads
//! its stored record as a string, docs/legacy-btp.md §16.3), whether it applied our earlier Fulfill (and we never
//! got its answer) or still holds the transfer prepared (and never will fulfill it: its cache of prepared
//! transfers is gone). The answer cannot tell them apart; the peer's balance can. Our log has none of these
//! transfers applied yet, so the peer's balance, negated, exceeds ours by exactly the amounts of those it did
//! apply, provided nothing else is in flight between us while the two balances are read (a *quiet* probe: the
//! only prepared transfers in our log are these, and our sums did not move while the peer answered).
//!
//! With every such transfer of the peer kept here until decided ([`UnsureFulfills`]), [`UnsureFulfills::judge`]
//! looks at the sets of them whose amounts make up the difference, and decides all of them at once:
//!
//! - exactly one set: each transfer is applied (in it) or not (outside it);
//! - more than one (amounts that add up two ways, common when amounts are alike): while any of them may still
//!   be fulfilled in time, nothing is decided; once all are past their expiry no probe can ever tell more, and
//!   one of the sets is taken (the first in a fixed order, so every probe of the same facts picks the same).
//!   The balance then agrees with the peer's to the unit; which of the alike transfers the peer applied cannot
//!   be known from a legacy peer, and the decision is logged at warn with every transfer it covered;
//! - none (the probe was not quiet after all, or the peer's books are not ours): undecided, asked again later.

use std::collections::{BTreeMap, HashMap};

use channel_modules::store::TransferId;

/// Most undecided transfers searched together: beyond it only "none" and "all" are recognised and the others
/// wait. The search meets in the middle (2 × 2^(n/2) sums, a few milliseconds at 32), and 32 covers what a power
/// cut can leave: the payee's fulfills of up to `DEFERRED_SYNC_DELAY` (2 ms), ≈ 28 at 14,000 transfers/s.
pub(crate) const MAX_UNSURE_JUDGED: usize = 32;

/// One Fulfill the peer answered ambiguously.
#[derive(Debug, Clone, Copy)]
struct Unsure {
    /// Legacy units.
    amount: u64,
    /// The transfer's expiry, ms since the epoch.
    expires_at_ms: i64,
}

/// Fulfills the peer answered ambiguously, by transfer, until decided; and the verdicts reached for them, until
/// each transfer's re-sending task takes its own.
#[derive(Debug, Default)]
pub(crate) struct UnsureFulfills {
    pending: BTreeMap<TransferId, Unsure>,
    decided: BTreeMap<TransferId, Verdict>,
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

/// The balances as read once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    /// The peer's balance, negated, less ours.
    pub(crate) difference: i128,
    /// Nothing but the unsure transfers was in flight while the two balances were read.
    pub(crate) quiet: bool,
    /// Our clock, ms since the epoch.
    pub(crate) now_ms: i64,
}

impl Probe {
    /// The probe of the peer's balance `theirs` (as it reports it) against ours; `None` when the difference
    /// does not fit (a peer's figure that far off decides nothing).
    pub(crate) fn of_balances(theirs: i128, ours: i128, quiet: bool, now_ms: i64) -> Option<Probe> {
        Some(Probe {
            difference: theirs.checked_sub(ours)?,
            quiet,
            now_ms,
        })
    }
}

/// What a [`Probe`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// Nothing: ask again later.
    Undecided,
    /// Exactly one set of the unsure transfers makes up the difference.
    Exact,
    /// `sets` sets make it up, and all the transfers are past their expiry: the first set was taken.
    BySum {
        /// How many sets made up the difference.
        sets: usize,
    },
}

impl UnsureFulfills {
    /// Keeps `id` (of `amount`, expiring at `expires_at_ms`) until decided.
    pub(crate) fn insert(&mut self, id: TransferId, amount: u64, expires_at_ms: i64) {
        if !self.decided.contains_key(&id) {
            self.pending.insert(
                id,
                Unsure {
                    amount,
                    expires_at_ms,
                },
            );
        }
    }

    /// Forgets `id` (finished).
    pub(crate) fn remove(&mut self, id: &TransferId) {
        self.pending.remove(id);
        self.decided.remove(id);
    }

    /// The total of the undecided transfers (legacy units).
    pub(crate) fn pending_total(&self) -> u128 {
        self.pending.values().map(|u| u128::from(u.amount)).sum()
    }

    /// The undecided transfers.
    pub(crate) fn pending(&self) -> impl Iterator<Item = &TransferId> {
        self.pending.keys()
    }

    /// The verdict reached for `id`, handed out once ([`Verdict::Undecided`] if none was).
    pub(crate) fn take_verdict(&mut self, id: &TransferId) -> Verdict {
        self.decided.remove(id).unwrap_or(Verdict::Undecided)
    }

    /// Decides every undecided transfer from one probe of the balances, or none (see the module docs).
    pub(crate) fn judge(&mut self, probe: Probe) -> Judgement {
        let difference = probe.difference;
        if !probe.quiet || self.pending.is_empty() || difference < 0 {
            return Judgement::Undecided;
        }
        let total = i128::try_from(self.pending_total()).unwrap_or(i128::MAX);
        // Amounts are positive, so nothing (0) and everything (the total) are each made by one set only: the
        // two answers after a restart in which the peer applied none or all of them, decided however many.
        let (mask, judgement) = if difference == 0 {
            (Mask::None, Judgement::Exact)
        } else if difference == total {
            (Mask::All, Judgement::Exact)
        } else {
            match self.sets_making(difference) {
                None | Some((_, 0)) => return Judgement::Undecided,
                Some((first, 1)) => (Mask::Bits(first), Judgement::Exact),
                Some((first, sets)) => {
                    if self
                        .pending
                        .values()
                        .any(|u| u.expires_at_ms > probe.now_ms)
                    {
                        return Judgement::Undecided;
                    }
                    (Mask::Bits(first), Judgement::BySum { sets })
                }
            }
        };
        for (i, id) in std::mem::take(&mut self.pending).into_keys().enumerate() {
            let applied = match mask {
                Mask::None => false,
                Mask::All => true,
                Mask::Bits(bits) => bits & (1u64 << i) != 0,
            };
            let verdict = if applied {
                Verdict::Applied
            } else {
                Verdict::NotApplied
            };
            self.decided.insert(id, verdict);
        }
        judgement
    }

    /// The first set (in the order of the ids; bit i: the i-th applied; first: the smallest such number) whose
    /// amounts make up `difference`, and how many sets do; `None` if there are too many transfers to search.
    ///
    /// Meets in the middle: the sums of every set of the first half, by sum (how many sets make each, and the
    /// smallest of them), then every set of the second half in increasing order, each looking up the rest of the
    /// difference. The first hit is the smallest number, since the second half's sets are its high bits.
    fn sets_making(&self, difference: i128) -> Option<(u64, usize)> {
        let amounts: Vec<i128> = self
            .pending
            .values()
            .map(|u| i128::from(u.amount))
            .collect();
        if amounts.len() > MAX_UNSURE_JUDGED {
            return None;
        }
        let (low, high) = amounts.split_at(amounts.len() / 2);
        let mut by_sum: HashMap<i128, (usize, u64)> = HashMap::new();
        for (mask, sum) in subset_sums(low).into_iter().enumerate() {
            let entry = by_sum.entry(sum).or_insert((0, mask as u64));
            entry.0 += 1;
        }
        let mut first = None;
        let mut sets = 0usize;
        for (high_mask, sum) in subset_sums(high).into_iter().enumerate() {
            if let Some(&(count, low_mask)) = by_sum.get(&(difference - sum)) {
                sets += count;
                first.get_or_insert(((high_mask as u64) << low.len()) | low_mask);
            }
        }
        Some((first.unwrap_or(0), sets))
    }
}

/// The sum of every set of `amounts`, indexed by the set (bit i: `amounts[i]` in it).
fn subset_sums(amounts: &[i128]) -> Vec<i128> {
    let mut sums = vec![0i128; 1 << amounts.len()];
    for mask in 1..sums.len() {
        let lowest = mask.trailing_zeros() as usize;
        sums[mask] = sums[mask & (mask - 1)] + amounts[lowest];
    }
    sums
}

/// Which of the pending transfers a judgement applied.
#[derive(Clone, Copy)]
enum Mask {
    None,
    All,
    Bits(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TransferId {
        TransferId([n; 16])
    }

    fn probe(difference: i128) -> Probe {
        Probe {
            difference,
            quiet: true,
            now_ms: 0,
        }
    }

    fn unsure(amounts: &[(u8, u64)], expires_at_ms: i64) -> UnsureFulfills {
        let mut u = UnsureFulfills::default();
        for (n, a) in amounts {
            u.insert(id(*n), *a, expires_at_ms);
        }
        u
    }

    #[test]
    fn the_one_set_that_makes_up_the_difference_decides() {
        let amounts = [(1, 1061), (2, 1062), (3, 1063)];
        // The peer applied none: each was refused.
        let mut u = unsure(&amounts, 10);
        assert_eq!(u.judge(probe(0)), Judgement::Exact);
        for n in 1..=3 {
            assert_eq!(u.take_verdict(&id(n)), Verdict::NotApplied);
        }
        // It applied the first and the third.
        let mut u = unsure(&amounts, 10);
        assert_eq!(u.judge(probe(2124)), Judgement::Exact);
        assert_eq!(u.take_verdict(&id(1)), Verdict::Applied);
        assert_eq!(u.take_verdict(&id(2)), Verdict::NotApplied);
        assert_eq!(u.take_verdict(&id(3)), Verdict::Applied);
        // A verdict is handed out once.
        assert_eq!(u.take_verdict(&id(3)), Verdict::Undecided);
        // A difference no set makes (something else moved the balances): wait, nothing decided.
        let mut u = unsure(&amounts, 10);
        assert_eq!(u.judge(probe(5)), Judgement::Undecided);
        assert_eq!(u.judge(probe(-1)), Judgement::Undecided);
        assert_eq!(u.take_verdict(&id(1)), Verdict::Undecided);
        assert_eq!(u.pending_total(), 3186);
        // A transfer not kept here is never judged.
        assert_eq!(u.take_verdict(&id(9)), Verdict::Undecided);
    }

    #[test]
    fn a_probe_that_is_not_quiet_decides_nothing() {
        let mut u = unsure(&[(1, 5), (2, 7)], 10);
        let noisy = Probe {
            quiet: false,
            ..probe(5)
        };
        assert_eq!(u.judge(noisy), Judgement::Undecided);
        assert_eq!(
            u.judge(Probe {
                quiet: false,
                ..probe(0)
            }),
            Judgement::Undecided
        );
        assert_eq!(u.take_verdict(&id(1)), Verdict::Undecided);
        assert_eq!(u.judge(probe(5)), Judgement::Exact);
        assert_eq!(u.take_verdict(&id(1)), Verdict::Applied);
        assert_eq!(u.take_verdict(&id(2)), Verdict::NotApplied);
    }

    #[test]
    fn none_or_all_are_decided_however_many() {
        // More than are searched, with amounts whose subsets share sums (consecutive amounts).
        let amounts: Vec<(u8, u64)> = (0..40u8).map(|n| (n, 1_000 + u64::from(n))).collect();
        let total: i128 = (0..40).map(|n| 1_000 + n).sum();
        let mut u = unsure(&amounts, 10);
        assert_eq!(u.judge(probe(total)), Judgement::Exact);
        assert_eq!(u.take_verdict(&id(3)), Verdict::Applied);
        let mut u = unsure(&amounts, 10);
        assert_eq!(u.judge(probe(0)), Judgement::Exact);
        assert_eq!(u.take_verdict(&id(3)), Verdict::NotApplied);
        let mut u = unsure(&amounts, 0);
        assert_eq!(u.judge(probe(2_001)), Judgement::Undecided);
    }

    /// The kill -9 campaign's round 15 with `KILL9_SEED=1796635801240`: alike amounts, several of them applied
    /// by a restarted legacy peer; the difference is made up by many sets. Before the transfers expire nothing is
    /// decided; after, one set is taken and the balances agree to the unit.
    #[test]
    fn alike_amounts_are_decided_by_their_sum_once_all_have_expired() {
        let applied = [1052u64, 1054, 1055, 1057, 1058, 1059, 1060, 1061, 1062];
        let refused = [1053u64, 1056, 1063, 1064, 1065, 1066];
        let amounts: Vec<(u8, u64)> = (0u8..)
            .zip(applied.iter().chain(refused.iter()).copied())
            .collect();
        let difference: i128 = applied.iter().map(|a| i128::from(*a)).sum();
        let mut u = unsure(&amounts, 1_000);
        let early = Probe {
            now_ms: 999,
            ..probe(difference)
        };
        assert_eq!(u.judge(early), Judgement::Undecided);
        let late = Probe {
            now_ms: 1_000,
            ..probe(difference)
        };
        let Judgement::BySum { sets } = u.judge(late) else {
            panic!("not decided by the sum")
        };
        assert!(sets > 1, "{sets}");
        let mut sum = 0i128;
        for (n, a) in &amounts {
            match u.take_verdict(&id(*n)) {
                Verdict::Applied => sum += i128::from(*a),
                Verdict::NotApplied => {}
                Verdict::Undecided => panic!("transfer {n} left undecided"),
            }
        }
        assert_eq!(sum, difference);
        // Nothing is left to decide; a transfer joining later starts a new set.
        assert_eq!(u.pending_total(), 0);
        u.insert(id(99), 3, 1_000);
        assert_eq!(u.judge(probe(3)), Judgement::Exact);
        assert_eq!(u.take_verdict(&id(99)), Verdict::Applied);
    }

    /// A power cut under load loses up to `DEFERRED_SYNC_DELAY` (2 ms) of the payee's deferred fulfills: at
    /// 14,000 transfers/s ≈ 28 of them, which the peer mostly applied (it had answered them) and partly not
    /// (still in flight). More than 16 were never searched, so such a mix stayed undecided for ever.
    #[test]
    fn twenty_unsure_of_which_the_peer_applied_eighteen_are_decided() {
        // Distinct powers of two: exactly one set makes any difference.
        let amounts: Vec<(u8, u64)> = (0..20u8).map(|n| (n, 1u64 << n)).collect();
        let not_applied = [4u8, 17];
        let difference: i128 = amounts
            .iter()
            .filter(|(n, _)| !not_applied.contains(n))
            .map(|(_, a)| i128::from(*a))
            .sum();
        let mut u = unsure(&amounts, 10);
        assert_eq!(u.judge(probe(difference)), Judgement::Exact);
        for (n, _) in &amounts {
            let expected = if not_applied.contains(n) {
                Verdict::NotApplied
            } else {
                Verdict::Applied
            };
            assert_eq!(u.take_verdict(&id(*n)), expected, "transfer {n}");
        }
        // Alike amounts (1,000 + n): many sets make the difference; decided by the sum once all have expired.
        let amounts: Vec<(u8, u64)> = (0..MAX_UNSURE_JUDGED as u8)
            .map(|n| (n, 1_000 + u64::from(n)))
            .collect();
        let difference: i128 =
            amounts.iter().map(|(_, a)| i128::from(*a)).sum::<i128>() - 1_003 - 1_020;
        let mut u = unsure(&amounts, 10);
        assert_eq!(
            u.judge(Probe {
                now_ms: 9,
                ..probe(difference)
            }),
            Judgement::Undecided
        );
        let Judgement::BySum { sets } = u.judge(Probe {
            now_ms: 10,
            ..probe(difference)
        }) else {
            panic!("not decided by the sum")
        };
        assert!(sets > 1, "{sets}");
        let applied: i128 = amounts
            .iter()
            .filter(|(n, _)| u.take_verdict(&id(*n)) == Verdict::Applied)
            .map(|(_, a)| i128::from(*a))
            .sum();
        assert_eq!(applied, difference);
    }

    /// The search over halves finds the same first set and the same number of sets as trying every set.
    #[test]
    fn the_search_agrees_with_trying_every_set() {
        // A small linear congruential generator: amounts 1..=6 collide a lot, so many differences have several
        // sets; sizes up to 12 keep trying every set quick.
        let mut seed: u64 = 0x5eed;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        for _ in 0..300 {
            let n = 1 + (next() % 12) as u8;
            let amounts: Vec<(u8, u64)> = (0..n).map(|i| (i, 1 + next() % 6)).collect();
            let u = unsure(&amounts, 10);
            let values: Vec<i128> = amounts.iter().map(|(_, a)| i128::from(*a)).collect();
            let total: i128 = values.iter().sum();
            for difference in 0..=total + 1 {
                let mut first = None;
                let mut sets = 0usize;
                for mask in 0u64..(1 << values.len()) {
                    let sum: i128 = (0..values.len())
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| values[i])
                        .sum();
                    if sum == difference {
                        sets += 1;
                        first.get_or_insert(mask);
                    }
                }
                assert_eq!(
                    u.sets_making(difference),
                    Some((first.unwrap_or(0), sets)),
                    "{amounts:?} {difference}"
                );
            }
        }
    }

    /// The peer's balance is read from its own answer: a figure whose difference with ours overflows is no
    /// probe (the subtraction used to be unchecked: a panic in a debug build, a wrapped difference in release).
    #[test]
    fn a_balance_difference_that_overflows_is_no_probe() {
        assert!(Probe::of_balances(i128::MAX, -1, true, 0).is_none());
        assert!(Probe::of_balances(i128::MIN, 1, true, 0).is_none());
        let probe = Probe::of_balances(-700, -1_500, true, 5);
        assert_eq!(
            probe.map(|p| (p.difference, p.quiet, p.now_ms)),
            Some((800, true, 5))
        );
    }

    #[test]
    fn two_sets_with_the_same_sum_wait_until_expired() {
        let mut u = unsure(&[(1, 5), (2, 5)], 10);
        assert_eq!(u.judge(probe(5)), Judgement::Undecided);
        assert_eq!(u.judge(probe(10)), Judgement::Exact);
        assert_eq!(u.take_verdict(&id(1)), Verdict::Applied);
        assert_eq!(u.take_verdict(&id(2)), Verdict::Applied);
        let mut u = unsure(&[(1, 5), (2, 5)], 10);
        u.remove(&id(2));
        assert_eq!(u.judge(probe(5)), Judgement::Exact);
        assert_eq!(u.take_verdict(&id(1)), Verdict::Applied);
    }
}
