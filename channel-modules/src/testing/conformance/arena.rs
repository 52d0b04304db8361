//! The [`Arena`]: one pair of modules on wired [`TestHost`]s, driven as a host mode's host drives them, and
//! the body of each [`Check`].

use std::any::Any;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Check, HostMode, SubjectPair, UNKNOWN_METHOD};
use crate::amount::{LedgerAmount, LedgerSum, ModuleUnits};
use crate::claim::{Claim, IncomingCredit};
use crate::error::ModuleError;
use crate::module::ChannelModule;
use crate::store::{Direction, Transfer, TransferId, TransferLogError};
use crate::testing::{StagedHost, TestClock, TestHost, TestPair};

/// What a check found wrong, in words (a [`super::Violation`]'s detail).
#[derive(Debug)]
pub(super) struct Finding(pub(super) String);

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
pub(super) struct Arena {
    mode: HostMode,
    pair: TestPair,
    /// Next transfer ID in the main logs.
    next_id: AtomicU64,
    _keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl Arena {
    pub(super) fn new(mode: HostMode, clock: TestClock, subject: SubjectPair) -> Self {
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

    pub(super) async fn run(&self, check: Check, totals: &[ModuleUnits]) -> Verdict {
        match check {
            Check::Connect => self.connect().await,
            Check::AssetScaleStable => self.asset_scale_stable(totals).await,
            Check::UnknownMethod => self.unknown_method().await,
            Check::NoClaimCreditsNothing => self.no_claim_credits_nothing(totals).await,
            Check::OutgoingIdempotent => self.outgoing_idempotent(totals).await,
            Check::OutgoingNeverDecreases => self.outgoing_never_decreases(totals).await,
            Check::CreditsIncreaseOnce => self.credits_increase_once(totals).await,
            Check::ReplayCreditsNothing => self.replay_credits_nothing(totals).await,
            Check::IncomingTotalIsCredited => self.incoming_total_is_credited(totals).await,
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

    pub(super) async fn disconnect(&self) -> Verdict {
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
            amount: LedgerAmount(amount),
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
    async fn claim(&self, total: &ModuleUnits) -> Result<Option<Claim>, Finding> {
        let owed = ModuleUnits::from_peer_ledger(
            self.pair
                .a
                .ctx
                .main_log()
                .map_or(LedgerSum::ZERO, |log| log.sums().outgoing_fulfilled),
        );
        if *total > owed {
            let amount =
                u64::try_from(&(total - &owed).0).map_err(|_| "increment past u64::MAX")?;
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
        previous: &ModuleUnits,
        total: &ModuleUnits,
        judge: bool,
    ) -> Result<Claim, Finding> {
        let increase = total - previous;
        let amount = u64::try_from(&increase.0).map_err(|_| "increment past u64::MAX")?;
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

    async fn asset_scale_stable(&self, totals: &[ModuleUnits]) -> Verdict {
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
        let _ = self.settle(&ModuleUnits::zero(), &totals[0], false).await;
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

    async fn no_claim_credits_nothing(&self, totals: &[ModuleUnits]) -> Verdict {
        self.connect().await?;
        self.credits_nothing(None, "no claim, before any claim")
            .await?;
        self.settle(&ModuleUnits::zero(), &totals[0], false).await?;
        self.credits_nothing(None, "no claim, after a credited claim")
            .await
    }

    async fn outgoing_idempotent(&self, totals: &[ModuleUnits]) -> Verdict {
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

    async fn outgoing_never_decreases(&self, totals: &[ModuleUnits]) -> Verdict {
        self.connect().await?;
        self.settle(&ModuleUnits::zero(), &totals[0], false).await?;
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

    async fn credits_increase_once(&self, totals: &[ModuleUnits]) -> Verdict {
        self.connect().await?;
        let mut previous = ModuleUnits::zero();
        let mut ids = HashSet::new();
        for total in totals {
            let increase = total - &previous;
            let amount = u64::try_from(&increase.0).map_err(|_| "increment past u64::MAX")?;
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

    async fn replay_credits_nothing(&self, totals: &[ModuleUnits]) -> Verdict {
        self.connect().await?;
        let mut claims = Vec::new();
        let mut previous = ModuleUnits::zero();
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

    /// The payee's `incoming_total` must be `expected` (when it reports one).
    async fn incoming_total_is(&self, expected: &ModuleUnits, when: &str) -> Verdict {
        match self.payee().incoming_total(&self.pair.b.ctx).await {
            Ok(None) => Ok(()),
            Ok(Some(t)) if t == *expected => Ok(()),
            Ok(Some(t)) => Err(finding!(
                "incoming_total {when} is {t}, not the {expected} credited"
            )),
            Err(e) => Err(finding!("incoming_total {when} failed: {e}")),
        }
    }

    async fn incoming_total_is_credited(&self, totals: &[ModuleUnits]) -> Verdict {
        self.connect().await?;
        self.incoming_total_is(&ModuleUnits::zero(), "before any claim")
            .await?;
        let mut previous = ModuleUnits::zero();
        let mut claims = Vec::new();
        for total in totals {
            claims.push(self.settle(&previous, total, false).await?);
            self.incoming_total_is(total, &format!("after the claim for {total}"))
                .await?;
            previous = total.clone();
        }
        if let Some(first) = claims.first() {
            self.credits_nothing(Some(first), "the first claim again")
                .await?;
        }
        self.incoming_total_is(&previous, "after a replay").await
    }

    async fn prepare_within_allowance(&self, totals: &[ModuleUnits]) -> Verdict {
        self.connect().await?;
        let mut previous = ModuleUnits::zero();
        for total in totals {
            self.settle(&previous, total, true).await?;
            previous = total.clone();
        }
        Ok(())
    }

    async fn staged_credit_retried(&self, totals: &[ModuleUnits]) -> Verdict {
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
        let past = max + ModuleUnits::from(1);
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

    async fn disconnect_after_settling(&self, totals: &[ModuleUnits]) -> Verdict {
        self.connect().await?;
        self.settle(&ModuleUnits::zero(), &totals[0], false).await?;
        self.disconnect().await
    }
}
