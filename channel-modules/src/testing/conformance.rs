//! The [`ChannelModule`] conformance suite: every hook's contract (the table in [`crate::module`]), checked in
//! both host modes, for any module, a third party's included.
//!
//! A module is described by a [`Subject`]: it builds a fresh payer and payee for each check (with whatever
//! ledger they need, e.g. a fake one) and names the cumulative totals the payer can settle. [`run`] then
//! drives the pair the way each host does, through [`TestHost`]s wired to each other:
//!
//! * **peer mode** (a module inside a BTP/1.0 trustline): the payer's outgoing fulfilled transfers are in its
//!   main log and `create_outgoing_claim` gets their total; the payee's incoming transfers are in its main log
//!   before a claim arrives, and `handle_incoming_prepare` judges each when [`Check::PrepareWithinAllowance`]
//!   runs;
//! * **engine mode** (behind an RFC 38 account): no transfers; `handle_incoming_claim` runs on a
//!   [`StagedHost`] whose tracker writes are committed only after it returned `Ok`, and dropped on `Err`.
//!
//! Each [`Check`] runs on its own pair, `connect` first on both sides (the hosts' promise), `disconnect` last.
//! The result is a [`Report`]; [`Report::into_result`] turns violations into an error.
//!
//! ```ignore
//! let report = channel_modules::testing::conformance::run(&MySubject).await?;
//! report.into_result()?;
//! ```

use std::any::Any;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use num_bigint::BigUint;

use super::{StagedHost, TestClock, TestHost, TestPair};
use crate::claim::{Claim, IncomingCredit};
use crate::error::ModuleError;
use crate::module::ChannelModule;
use crate::store::{Direction, Transfer, TransferId, TransferLogError};

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
    /// `handle_rpc` answers a method it does not know with [`ModuleError::UnknownMethod`] naming it.
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
    pub const ALL: [Check; 12] = [
        Check::Connect,
        Check::AssetScaleStable,
        Check::UnknownMethod,
        Check::NoClaimCreditsNothing,
        Check::OutgoingIdempotent,
        Check::OutgoingNeverDecreases,
        Check::CreditsIncreaseOnce,
        Check::ReplayCreditsNothing,
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
    fn totals(&self) -> Vec<BigUint>;
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
    let mut previous = BigUint::default();
    for total in &totals {
        if *total <= previous {
            return Err(SetupError::Totals(
                "are not positive and strictly increasing",
            ));
        }
        if u64::try_from(total - &previous).is_err() {
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

/// What a check found wrong, in words (a [`Violation`]'s detail).
#[derive(Debug)]
struct Finding(String);

impl From<String> for Finding {
    fn from(detail: String) -> Self {
        Finding(detail)
    }
}

impl From<&str> for Finding {
    fn from(detail: &str) -> Self {
        Finding(detail.to_owned())
    }
}

/// A check's verdict.
type Verdict = Result<(), Finding>;

/// A [`Finding`] from `format!` arguments.
macro_rules! finding {
    ($($arg:tt)*) => {
        Finding(format!($($arg)*))
    };
}

/// One pair of modules on wired hosts, driven as `mode`'s host drives them.
struct Arena {
    mode: HostMode,
    pair: TestPair,
    /// Next transfer ID in the main logs.
    next_id: AtomicU64,
    _keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl Arena {
    fn new(mode: HostMode, clock: TestClock, subject: SubjectPair) -> Self {
        Arena {
            mode,
            pair: TestHost::pair_on(
                clock,
                subject.payer,
                subject.payer_options,
                subject.payee,
                subject.payee_options,
            ),
            next_id: AtomicU64::new(1),
            _keep_alive: subject.keep_alive,
        }
    }

    async fn run(&self, check: Check, totals: &[BigUint]) -> Verdict {
        match check {
            Check::Connect => self.connect().await,
            Check::AssetScaleStable => self.asset_scale_stable(totals).await,
            Check::UnknownMethod => self.unknown_method().await,
            Check::NoClaimCreditsNothing => self.no_claim_credits_nothing(totals).await,
            Check::OutgoingIdempotent => self.outgoing_idempotent(totals).await,
            Check::OutgoingNeverDecreases => self.outgoing_never_decreases(totals).await,
            Check::CreditsIncreaseOnce => self.credits_increase_once(totals).await,
            Check::ReplayCreditsNothing => self.replay_credits_nothing(totals).await,
            Check::PrepareWithinAllowance => self.prepare_within_allowance(totals).await,
            Check::StagedCreditRetried => self.staged_credit_retried(totals).await,
            Check::MaxCumulativeSettlement => self.max_cumulative_settlement().await,
            Check::Disconnect => self.disconnect_after_settling(totals).await,
        }
    }

    fn payer(&self) -> &dyn ChannelModule {
        self.pair.a.module.as_ref()
    }

    fn payee(&self) -> &dyn ChannelModule {
        self.pair.b.module.as_ref()
    }

    async fn connect(&self) -> Verdict {
        self.payer()
            .connect(&self.pair.a.ctx)
            .await
            .map_err(|e| finding!("payer's connect failed: {e}"))?;
        self.payee()
            .connect(&self.pair.b.ctx)
            .await
            .map_err(|e| finding!("payee's connect failed: {e}"))
    }

    async fn disconnect(&self) -> Verdict {
        self.payer()
            .disconnect(&self.pair.a.ctx)
            .await
            .map_err(|e| finding!("payer's disconnect failed: {e}"))?;
        self.payee()
            .disconnect(&self.pair.b.ctx)
            .await
            .map_err(|e| finding!("payee's disconnect failed: {e}"))
    }

    fn transfer(&self, amount: u64) -> Transfer {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        Transfer {
            id: TransferId(id),
            amount,
            execution_condition: [0x5a; 32],
            expires_at_ms: i64::MAX,
            ilp: Vec::new(),
            custom: None,
        }
    }

    /// Peer mode: prepares and fulfills a transfer of `amount` in `side`'s main log (`judge`: after asking the
    /// payee's `handle_incoming_prepare`, as the trustline does). Engine mode: nothing.
    async fn transfer_in_log(&self, incoming: bool, amount: u64, judge: bool) -> Verdict {
        if self.mode != HostMode::Peer || amount == 0 {
            return Ok(());
        }
        let (side, direction) = if incoming {
            (&self.pair.b, Direction::Incoming)
        } else {
            (&self.pair.a, Direction::Outgoing)
        };
        let log = side.ctx.main_log().map_err(|e| finding!("main log: {e}"))?;
        let transfer = self.transfer(amount);
        let logged = |e: TransferLogError| format!("main log: {e}");
        log.prepare(&transfer, direction).await.map_err(logged)?;
        if judge {
            let record = log
                .get(&transfer.id)
                .await
                .map_err(logged)?
                .ok_or("main log lost a prepared transfer")?;
            if let Err(err) = side
                .module
                .handle_incoming_prepare(&side.ctx, &record)
                .await
            {
                return Err(finding!(
                    "handle_incoming_prepare refused a prepare of {amount}: {err}"
                ));
            }
        }
        log.fulfill(&transfer.id, &[0x11; 32])
            .await
            .map_err(logged)?;
        Ok(())
    }

    /// The payer's claim for `total`: in peer mode its main log first gets an outgoing fulfilled transfer for
    /// what `total` adds to its outgoing fulfilled sum, as a trustline asks with that sum.
    async fn claim(&self, total: &BigUint) -> Result<Option<Claim>, Finding> {
        let owed = BigUint::from(
            self.pair
                .a
                .ctx
                .main_log()
                .map_or(0, |log| log.sums().outgoing_fulfilled),
        );
        if *total > owed {
            let amount = u64::try_from(total - &owed).map_err(|_| "increment past u64::MAX")?;
            self.transfer_in_log(false, amount, false).await?;
        }
        self.payer()
            .create_outgoing_claim(&self.pair.a.ctx, total)
            .await
            .map_err(|e| finding!("create_outgoing_claim({total}) failed: {e}"))
    }

    /// Hands `claim` to the payee as its host does: directly in peer mode; in engine mode on a fresh stage,
    /// committed when the hook returned `Ok`.
    async fn credit(&self, claim: Option<&Claim>) -> Result<Option<IncomingCredit>, ModuleError> {
        match self.mode {
            HostMode::Peer => {
                self.payee()
                    .handle_incoming_claim(&self.pair.b.ctx, claim)
                    .await
            }
            HostMode::Engine => {
                let stage = self.pair.b.host.stage();
                let credit = self.credit_on(&stage, claim).await?;
                stage.commit().await?;
                Ok(credit)
            }
        }
    }

    async fn credit_on(
        &self,
        stage: &Arc<StagedHost>,
        claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let ctx = stage.context(
            self.pair.b.ctx.options().clone(),
            self.pair.b.ctx.account_id(),
        );
        self.payee().handle_incoming_claim(&ctx, claim).await
    }

    /// One settlement from `previous` to `total`: the payee's incoming transfer (peer mode), the payer's claim,
    /// the payee's credit, which must be exactly the increase.
    async fn settle(
        &self,
        previous: &BigUint,
        total: &BigUint,
        judge: bool,
    ) -> Result<Claim, Finding> {
        let increase = total - previous;
        let amount = u64::try_from(&increase).map_err(|_| "increment past u64::MAX")?;
        self.transfer_in_log(true, amount, judge).await?;
        let claim = self.claim(total).await?.ok_or_else(|| {
            format!("create_outgoing_claim({total}) gave no claim for a new total")
        })?;
        match self.credit(Some(&claim)).await {
            Ok(Some(credit)) if credit.amount == increase => Ok(claim),
            Ok(Some(credit)) => Err(finding!(
                "the claim for {total} credited {}, not its increase {increase}",
                credit.amount
            )),
            Ok(None) => Err(finding!("the claim for {total} credited nothing")),
            Err(err) => Err(finding!("the claim for {total} was refused: {err}")),
        }
    }

    /// Hands `claim` to the payee and fails if it credits anything.
    async fn credits_nothing(&self, claim: Option<&Claim>, what: &str) -> Verdict {
        match self.credit(claim).await {
            Ok(Some(credit)) => Err(finding!(
                "{what} credited {} (settlement {})",
                credit.amount,
                credit.settlement_id
            )),
            Ok(None) | Err(_) => Ok(()),
        }
    }

    async fn asset_scale_stable(&self, totals: &[BigUint]) -> Verdict {
        let read = |a: &Self| {
            (
                a.payer().asset_scale(),
                a.payee().asset_scale(),
                a.payer().max_cumulative_settlement(),
                a.payee().max_cumulative_settlement(),
            )
        };
        let before = read(self);
        self.connect().await?;
        let connected = read(self);
        let _ = self.settle(&BigUint::default(), &totals[0], false).await;
        let settled = read(self);
        if before != connected || connected != settled {
            return Err(finding!(
                "(payer scale, payee scale, payer max, payee max) went {before:?} → {connected:?} (connect) → \
                 {settled:?} (a settlement)"
            ));
        }
        Ok(())
    }

    async fn unknown_method(&self) -> Verdict {
        self.connect().await?;
        for (side, name) in [(&self.pair.a, "payer"), (&self.pair.b, "payee")] {
            match side
                .module
                .handle_rpc(&side.ctx, UNKNOWN_METHOD, serde_json::json!([]))
                .await
            {
                Err(ModuleError::UnknownMethod(method)) if method == UNKNOWN_METHOD => {}
                other => {
                    return Err(finding!(
                        "the {name} answered the unknown method {UNKNOWN_METHOD} with {other:?}"
                    ))
                }
            }
        }
        Ok(())
    }

    async fn no_claim_credits_nothing(&self, totals: &[BigUint]) -> Verdict {
        self.connect().await?;
        self.credits_nothing(None, "no claim, before any claim")
            .await?;
        self.settle(&BigUint::default(), &totals[0], false).await?;
        self.credits_nothing(None, "no claim, after a credited claim")
            .await
    }

    async fn outgoing_idempotent(&self, totals: &[BigUint]) -> Verdict {
        self.connect().await?;
        for total in &totals[..2] {
            let first = self.claim(total).await?;
            let again = self.claim(total).await?;
            if first != again {
                return Err(finding!(
                    "asked twice for {total}: {first:?}, then {again:?}"
                ));
            }
        }
        Ok(())
    }

    async fn outgoing_never_decreases(&self, totals: &[BigUint]) -> Verdict {
        self.connect().await?;
        self.settle(&BigUint::default(), &totals[0], false).await?;
        let best = self.settle(&totals[0], &totals[1], false).await?;
        let lower = self.claim(&totals[0]).await?;
        self.credits_nothing(
            lower.as_ref(),
            &format!("the claim for {} asked after {}", totals[0], totals[1]),
        )
        .await?;
        let again = self.claim(&totals[1]).await?;
        if again.as_ref() != Some(&best) {
            return Err(finding!(
                "after a request for the lower total {}, {} got {again:?} instead of the best claim {best:?}",
                totals[0], totals[1]
            ));
        }
        Ok(())
    }

    async fn credits_increase_once(&self, totals: &[BigUint]) -> Verdict {
        self.connect().await?;
        let mut previous = BigUint::default();
        let mut ids = HashSet::new();
        for total in totals {
            let increase = total - &previous;
            let amount = u64::try_from(&increase).map_err(|_| "increment past u64::MAX")?;
            self.transfer_in_log(true, amount, false).await?;
            let claim = self.claim(total).await?;
            match self.credit(claim.as_ref()).await {
                Ok(Some(credit)) if credit.amount != increase => {
                    return Err(finding!(
                        "the claim for {total} credited {}, not its increase {increase}",
                        credit.amount
                    ))
                }
                Ok(Some(credit)) => {
                    if !ids.insert(credit.settlement_id.clone()) {
                        return Err(finding!(
                            "the claim for {total} reused the settlement ID {}",
                            credit.settlement_id
                        ));
                    }
                }
                Ok(None) => return Err(finding!("the claim for {total} credited nothing")),
                Err(err) => return Err(finding!("the claim for {total} was refused: {err}")),
            }
            previous = total.clone();
        }
        Ok(())
    }

    async fn replay_credits_nothing(&self, totals: &[BigUint]) -> Verdict {
        self.connect().await?;
        let mut claims = Vec::new();
        let mut previous = BigUint::default();
        for total in &totals[..3] {
            claims.push(self.settle(&previous, total, false).await?);
            previous = total.clone();
        }
        for (claim, what) in [
            (&claims[2], "the best claim again"),
            (&claims[1], "an older claim"),
            (&claims[0], "the first claim"),
        ] {
            self.credits_nothing(Some(claim), what).await?;
        }
        self.settle(&totals[2], &totals[3], false)
            .await
            .map(|_| ())
            .map_err(|Finding(e)| finding!("after the replays: {e}"))
    }

    async fn prepare_within_allowance(&self, totals: &[BigUint]) -> Verdict {
        self.connect().await?;
        let mut previous = BigUint::default();
        for total in totals {
            self.settle(&previous, total, true).await?;
            previous = total.clone();
        }
        Ok(())
    }

    async fn staged_credit_retried(&self, totals: &[BigUint]) -> Verdict {
        self.connect().await?;
        let claim = self
            .claim(&totals[0])
            .await?
            .ok_or("create_outgoing_claim gave no claim for a new total")?;
        let dropped = self.pair.b.host.stage();
        let first = self
            .credit_on(&dropped, Some(&claim))
            .await
            .map_err(|e| finding!("the claim was refused: {e}"))?;
        drop(dropped);
        let stage = self.pair.b.host.stage();
        let again = self.credit_on(&stage, Some(&claim)).await.map_err(|e| {
            format!("the claim, again after its stage was dropped, was refused: {e}")
        })?;
        // The same amount again; the settlement ID may differ, since the first never left the stage.
        let amount = |credit: &Option<IncomingCredit>| credit.as_ref().map(|c| c.amount.clone());
        if first.is_none() || amount(&again) != amount(&first) {
            return Err(finding!(
                "credited {first:?}, then, after that stage was dropped, {again:?}"
            ));
        }
        stage
            .commit()
            .await
            .map_err(|e| finding!("commit failed: {e}"))?;
        self.credits_nothing(Some(&claim), "the claim after its credit was committed")
            .await
    }

    async fn max_cumulative_settlement(&self) -> Verdict {
        self.connect().await?;
        let Some(max) = self.payer().max_cumulative_settlement() else {
            return Ok(());
        };
        let past = max + 1u8;
        match self
            .payer()
            .create_outgoing_claim(&self.pair.a.ctx, &past)
            .await
        {
            Err(_) => Ok(()),
            Ok(claim) => Err(finding!(
                "create_outgoing_claim({past}), past max_cumulative_settlement, gave {claim:?}"
            )),
        }
    }

    async fn disconnect_after_settling(&self, totals: &[BigUint]) -> Verdict {
        self.connect().await?;
        self.settle(&BigUint::default(), &totals[0], false).await?;
        self.disconnect().await
    }
}

#[cfg(test)]
mod tests;
