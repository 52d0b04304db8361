//! The [`ChannelModule`] conformance suite: every hook's contract (the table in [`crate::module`]), checked in
//! both host modes, for any module, a third party's included.
//!
//! A module is described by a [`Subject`]: it builds a fresh payer and payee for each check (with whatever
//! ledger they need, e.g. a fake one) and names the cumulative totals the payer can settle. [`run`] then
//! drives the pair the way each host does, through [`TestHost`](super::TestHost)s wired to each other:
//!
//! * **peer mode** (a module inside a BTP/1.0 trustline): the payer's outgoing fulfilled transfers are in its
//!   main log and `create_outgoing_claim` gets their total; the payee's incoming transfers are in its main log
//!   before a claim arrives, and `handle_incoming_prepare` judges each when [`Check::PrepareWithinAllowance`]
//!   runs;
//! * **engine mode** (behind an RFC 38 account): no transfers; `handle_incoming_claim` runs on a
//!   [`StagedHost`](super::StagedHost) whose tracker writes are committed only after it returned `Ok`, and dropped on `Err`.
//!
//! Each [`Check`] runs on its own pair, `connect` first on both sides (the hosts' promise), `disconnect` last.
//! The result is a [`Report`]; [`Report::into_result`] turns violations into an error.
//!
//! ```ignore
//! let report = channel_modules::testing::conformance::run(&MySubject).await?;
//! report.into_result()?;
//! ```

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::TestClock;
use crate::amount::ModuleUnits;
use crate::module::ChannelModule;

/// Fewest cumulative totals a [`Subject`] names: a first claim, two raises, and one more after the replays.
pub const MIN_TOTALS: usize = 4;

/// The RPC method [`Check::UnknownMethod`] sends: no module may know it.
pub const UNKNOWN_METHOD: &str = "conformance_unknown_method";

/// How the host runs the module (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostMode {
    /// Inside a BTP/1.0 trustline.
    Peer,
    /// Behind an RFC 38 settlement-engine account.
    Engine,
}

impl HostMode {
    /// Both modes, in the order [`run`] checks them.
    pub const ALL: [HostMode; 2] = [HostMode::Peer, HostMode::Engine];
}

impl fmt::Display for HostMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostMode::Peer => "peer mode",
            HostMode::Engine => "engine mode",
        })
    }
}

/// One contract of the [`ChannelModule`] hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// `connect`, called once before any other hook, succeeds on both sides.
    Connect,
    /// `asset_scale` and `max_cumulative_settlement` answer the same before `connect`, after it and after a
    /// settlement.
    AssetScaleStable,
    /// `handle_rpc` answers a method it does not know with [`crate::ModuleError::UnknownMethod`] naming it.
    UnknownMethod,
    /// `handle_incoming_claim(None)` credits nothing, before and after a credited claim.
    NoClaimCreditsNothing,
    /// `create_outgoing_claim` asked twice for the same total answers the same both times.
    OutgoingIdempotent,
    /// `create_outgoing_claim` asked for a total below one already covered answers `None` or a claim that
    /// credits nothing at a payee holding the best claim, and does not move the payer back: the higher total
    /// asked again gets the same claim as before.
    OutgoingNeverDecreases,
    /// `handle_incoming_claim` credits each claim's increase over the previous one (never its cumulative
    /// value), under a settlement ID no other credit used.
    CreditsIncreaseOnce,
    /// A replayed or older claim credits nothing, and a higher claim after it still credits its increase.
    ReplayCreditsNothing,
    /// `incoming_total`, when the module reports one, is everything credited so far: 0 before the first claim,
    /// each settled total after its claim, unchanged by a replay.
    IncomingTotalIsCredited,
    /// Peer mode: `handle_incoming_prepare` accepts each prepare the subject says is within the payee's
    /// unsecured allowance (every increment of its totals, each followed by the claim for it).
    PrepareWithinAllowance,
    /// Engine mode: a credit whose staged writes were dropped (the request was dropped) is credited again,
    /// with the same amount, when the claim comes again; once committed, never again.
    StagedCreditRetried,
    /// `create_outgoing_claim` refuses a total past `max_cumulative_settlement` (when the module has one).
    MaxCumulativeSettlement,
    /// `disconnect` succeeds on both sides after a settlement.
    Disconnect,
}

impl Check {
    /// Every check, in the order [`run`] runs them.
    pub const ALL: [Check; 13] = [
        Check::Connect,
        Check::AssetScaleStable,
        Check::UnknownMethod,
        Check::NoClaimCreditsNothing,
        Check::OutgoingIdempotent,
        Check::OutgoingNeverDecreases,
        Check::CreditsIncreaseOnce,
        Check::ReplayCreditsNothing,
        Check::IncomingTotalIsCredited,
        Check::PrepareWithinAllowance,
        Check::StagedCreditRetried,
        Check::MaxCumulativeSettlement,
        Check::Disconnect,
    ];

    /// Whether the check applies in `mode` (two are about one mode's host only).
    pub fn applies_to(self, mode: HostMode) -> bool {
        match self {
            Check::PrepareWithinAllowance => mode == HostMode::Peer,
            Check::StagedCreditRetried => mode == HostMode::Engine,
            _ => true,
        }
    }
}

/// A payer and a payee module built for one check, with the options their hosts pass them.
pub struct SubjectPair {
    /// The paying side (its context's account ID is `"a"`).
    pub payer: Arc<dyn ChannelModule>,
    /// The payer's options.
    pub payer_options: serde_json::Value,
    /// The paid side (account ID `"b"`).
    pub payee: Arc<dyn ChannelModule>,
    /// The payee's options.
    pub payee_options: serde_json::Value,
    /// Whatever must live as long as the pair (a fake ledger, say); dropped after the check.
    pub keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

/// The module under test.
#[async_trait]
pub trait Subject: Send + Sync {
    /// A fresh payer and payee for one check in `mode`, built as that mode's host builds them, with fresh
    /// ledger state; `clock` is the hosts' clock (share it with a fake ledger).
    async fn pair(
        &self,
        mode: HostMode,
        clock: &TestClock,
    ) -> Result<SubjectPair, Box<dyn std::error::Error + Send + Sync>>;

    /// At least [`MIN_TOTALS`] strictly increasing cumulative totals, in module units, that the payer can
    /// settle on a fresh pair, each increment at most `u64::MAX` and within the payee's unsecured allowance.
    fn totals(&self) -> Vec<ModuleUnits>;
}

/// The suite could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// [`Subject::pair`] failed.
    #[error("the subject could not build a pair for {mode}: {source}")]
    Pair {
        /// The mode it was asked for.
        mode: HostMode,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// [`Subject::totals`] breaks its rules.
    #[error("the subject's totals {0}")]
    Totals(&'static str),
}

/// A check a module failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The contract.
    pub check: Check,
    /// The host mode it failed in.
    pub mode: HostMode,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} in {}: {}", self.check, self.mode, self.detail)
    }
}

/// The module failed one or more checks.
#[derive(Debug, thiserror::Error)]
#[error("the module fails {} conformance check(s): {}", .violations.len(), list(.violations))]
pub struct Nonconformance {
    /// Every failed check.
    pub violations: Vec<Violation>,
}

fn list(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What [`run`] found.
#[derive(Debug, Default)]
pub struct Report {
    checked: Vec<(Check, HostMode)>,
    violations: Vec<Violation>,
}

impl Report {
    /// Every check run, with its mode.
    pub fn checked(&self) -> &[(Check, HostMode)] {
        &self.checked
    }

    /// The checks failed.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Whether `check` failed in `mode`.
    pub fn violated(&self, check: Check, mode: HostMode) -> bool {
        self.violations
            .iter()
            .any(|v| v.check == check && v.mode == mode)
    }

    /// `Ok` when no check failed.
    pub fn into_result(self) -> Result<(), Nonconformance> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(Nonconformance {
                violations: self.violations,
            })
        }
    }
}

/// Runs every check that applies, in both host modes, each on a fresh pair from `subject`.
pub async fn run(subject: &dyn Subject) -> Result<Report, SetupError> {
    let totals = subject.totals();
    if totals.len() < MIN_TOTALS {
        return Err(SetupError::Totals("name fewer than MIN_TOTALS totals"));
    }
    let mut previous = ModuleUnits::zero();
    for total in &totals {
        if *total <= previous {
            return Err(SetupError::Totals(
                "are not positive and strictly increasing",
            ));
        }
        if u64::try_from(&(total - &previous).0).is_err() {
            return Err(SetupError::Totals("have an increment past u64::MAX"));
        }
        previous = total.clone();
    }
    let mut report = Report::default();
    for mode in HostMode::ALL {
        for check in Check::ALL.into_iter().filter(|c| c.applies_to(mode)) {
            let clock = TestClock::default();
            let pair = subject
                .pair(mode, &clock)
                .await
                .map_err(|source| SetupError::Pair { mode, source })?;
            let arena = Arena::new(mode, clock, pair);
            let outcome = arena.run(check, &totals).await;
            if check != Check::Disconnect {
                // Stops background tasks; its result belongs to `Check::Disconnect`.
                let _ = arena.disconnect().await;
            }
            report.checked.push((check, mode));
            if let Err(Finding(detail)) = outcome {
                report.violations.push(Violation {
                    check,
                    mode,
                    detail,
                });
            }
        }
    }
    Ok(report)
}

mod arena;
#[cfg(test)]
mod tests;

use self::arena::{Arena, Finding};
