//! The suite against a module that conforms, and against one broken copy of it per check: every check can fail,
//! and fails for the fault it is about.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use num_bigint::BigUint;
use serde_json::json;

use super::*;
use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::store::{MaxValue, TransferRecord};
use crate::sync::lock;

/// Most the test module settles in all (it declares it as its `max_cumulative_settlement`).
const TEST_MAX_TOTAL: u64 = 1_000;
/// Tracker of the payer's best claim.
const OUT_KEY: &str = "conformance_out";
/// Tracker of the payee's best claim.
const IN_KEY: &str = "conformance_in";

/// What is broken in a [`TestModule`], each aimed at one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    ConnectFails,
    ScaleChangesOnConnect,
    UnknownMethodAnswered,
    CreditsWithoutClaim,
    NotIdempotent,
    Regresses,
    CreditsCumulative,
    CreditsReplays,
    RefusesPrepares,
    KeepsCreditsInMemory,
    IgnoresMax,
    DisconnectFails,
    MisreportsIncomingTotal,
}

/// Cumulative claims `{"amount", "seq"}`, `seq` counting the claims signed; both ends keep their best claim
/// in a tracker. Conforms unless given a fault.
struct TestModule {
    fault: Option<Fault>,
    connected: AtomicBool,
    seq: AtomicU64,
    /// `Fault::Regresses`: the payer's best claim, kept in memory and overwritten by any request.
    last_out: Mutex<Option<(BigUint, Claim)>>,
    /// `Fault::KeepsCreditsInMemory`: the payee's best total, in memory.
    best_in: Mutex<BigUint>,
}

impl TestModule {
    fn new(fault: Option<Fault>) -> Self {
        TestModule {
            fault,
            connected: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            last_out: Mutex::new(None),
            best_in: Mutex::new(BigUint::default()),
        }
    }

    fn is(&self, fault: Fault) -> bool {
        self.fault == Some(fault)
    }

    fn sign(&self, total: &BigUint) -> Claim {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        Claim::Json(json!({ "amount": total.to_string(), "seq": seq }))
    }
}

fn amount_of(claim: &Claim) -> Result<BigUint, ModuleError> {
    match claim {
        Claim::Json(value) => value["amount"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| ModuleError::InvalidFields("no amount".to_owned())),
        _ => Err(ModuleError::InvalidFields("not JSON".to_owned())),
    }
}

#[async_trait]
impl ChannelModule for TestModule {
    fn name(&self) -> &str {
        "conformance-test"
    }

    fn asset_scale(&self) -> u8 {
        if self.is(Fault::ScaleChangesOnConnect) && self.connected.load(Ordering::Relaxed) {
            9
        } else {
            6
        }
    }

    async fn connect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        if self.is(Fault::ConnectFails) {
            return Err(ModuleError::Ledger("broken connect".to_owned()));
        }
        self.connected.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn incoming_total(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<ModuleUnits>, ModuleError> {
        let best = ctx.max_value_tracker(IN_KEY)?.get_max().await?.value;
        Ok(Some(ModuleUnits(
            if self.fault == Some(Fault::MisreportsIncomingTotal) {
                best + 1u8
            } else {
                best
            },
        )))
    }

    async fn disconnect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        if self.is(Fault::DisconnectFails) {
            return Err(ModuleError::Ledger("broken disconnect".to_owned()));
        }
        Ok(())
    }

    async fn handle_incoming_prepare(
        &self,
        _ctx: &ChannelContext,
        _record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        if self.is(Fault::RefusesPrepares) {
            return Err(ModuleError::NotAccepted("broken prepare check".to_owned()));
        }
        Ok(())
    }

    async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        let total = &total.0;
        if *total > BigUint::from(TEST_MAX_TOTAL) && !self.is(Fault::IgnoresMax) {
            return Err(ModuleError::InsufficientBalance(format!(
                "{total} is past {TEST_MAX_TOTAL}"
            )));
        }
        if self.is(Fault::Regresses) {
            let mut last = lock(&self.last_out);
            if let Some((asked, claim)) = last.as_ref() {
                if total == asked {
                    return Ok(Some(claim.clone()));
                }
            }
            // Whatever was asked last becomes the best, lower or not.
            let claim = self.sign(total);
            *last = Some((total.clone(), claim.clone()));
            return Ok(Some(claim));
        }
        let tracker = ctx.max_value_tracker(OUT_KEY)?;
        let best = tracker.get_max().await?;
        let covered =
            *total < best.value || (*total == best.value && !self.is(Fault::NotIdempotent));
        if covered {
            return Ok(Some(Claim::Json(best.data)));
        }
        let claim = self.sign(total);
        if let Claim::Json(data) = &claim {
            tracker
                .set_if_max(MaxValue {
                    value: total.clone(),
                    data: data.clone(),
                })
                .await?;
        }
        Ok(Some(claim))
    }

    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let Some(claim) = claim else {
            return Ok(self.is(Fault::CreditsWithoutClaim).then(|| IncomingCredit {
                amount: ModuleUnits::from(1),
                settlement_id: "no-claim".to_owned(),
            }));
        };
        let value = amount_of(claim)?;
        let previous = if self.is(Fault::KeepsCreditsInMemory) {
            let mut best = lock(&self.best_in);
            let previous = best.clone();
            if value > previous {
                *best = value.clone();
            }
            previous
        } else {
            let previous = ctx.max_value_tracker(IN_KEY)?.get_max().await?.value;
            ctx.max_value_tracker(IN_KEY)?
                .set_if_max(MaxValue {
                    value: value.clone(),
                    data: json!(null),
                })
                .await?;
            previous
        };
        if value == previous && self.is(Fault::CreditsReplays) {
            return Ok(Some(IncomingCredit {
                amount: ModuleUnits(value.clone()),
                settlement_id: format!(
                    "replay:{value}:{}",
                    self.seq.fetch_add(1, Ordering::Relaxed)
                ),
            }));
        }
        if value <= previous {
            return Ok(None);
        }
        let amount = if self.is(Fault::CreditsCumulative) {
            value.clone()
        } else {
            &value - &previous
        };
        Ok(Some(IncomingCredit {
            amount: ModuleUnits(amount),
            settlement_id: value.to_string(),
        }))
    }

    async fn handle_rpc(
        &self,
        _ctx: &ChannelContext,
        method: &str,
        _args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError> {
        if self.is(Fault::UnknownMethodAnswered) {
            return Ok(serde_json::Value::Null);
        }
        Err(ModuleError::UnknownMethod(method.to_owned()))
    }

    fn max_cumulative_settlement(&self) -> Option<ModuleUnits> {
        Some(ModuleUnits::from(TEST_MAX_TOTAL))
    }
}

/// Pairs of [`TestModule`]s with one fault (or none).
struct TestSubject(Option<Fault>);

#[async_trait]
impl Subject for TestSubject {
    async fn pair(
        &self,
        _mode: HostMode,
        _clock: &TestClock,
    ) -> Result<SubjectPair, Box<dyn std::error::Error + Send + Sync>> {
        Ok(SubjectPair {
            payer: Arc::new(TestModule::new(self.0)),
            payer_options: json!({}),
            payee: Arc::new(TestModule::new(self.0)),
            payee_options: json!({}),
            keep_alive: None,
        })
    }

    fn totals(&self) -> Vec<ModuleUnits> {
        [5u64, 9, 20, 31].map(ModuleUnits::from).to_vec()
    }
}

#[tokio::test]
async fn a_conforming_module_passes_every_check_in_both_modes(
) -> Result<(), Box<dyn std::error::Error>> {
    let report = run(&TestSubject(None)).await?;
    let applicable = Check::ALL
        .iter()
        .map(|c| HostMode::ALL.iter().filter(|m| c.applies_to(**m)).count())
        .sum::<usize>();
    assert_eq!(report.checked().len(), applicable);
    report.into_result()?;
    Ok(())
}

#[tokio::test]
async fn every_check_fails_for_its_fault() -> Result<(), Box<dyn std::error::Error>> {
    for (fault, check) in [
        (Fault::ConnectFails, Check::Connect),
        (Fault::ScaleChangesOnConnect, Check::AssetScaleStable),
        (Fault::UnknownMethodAnswered, Check::UnknownMethod),
        (Fault::CreditsWithoutClaim, Check::NoClaimCreditsNothing),
        (Fault::NotIdempotent, Check::OutgoingIdempotent),
        (Fault::Regresses, Check::OutgoingNeverDecreases),
        (Fault::CreditsCumulative, Check::CreditsIncreaseOnce),
        (Fault::CreditsReplays, Check::ReplayCreditsNothing),
        (Fault::RefusesPrepares, Check::PrepareWithinAllowance),
        (Fault::KeepsCreditsInMemory, Check::StagedCreditRetried),
        (Fault::IgnoresMax, Check::MaxCumulativeSettlement),
        (Fault::DisconnectFails, Check::Disconnect),
        (
            Fault::MisreportsIncomingTotal,
            Check::IncomingTotalIsCredited,
        ),
    ] {
        let report = run(&TestSubject(Some(fault))).await?;
        for mode in HostMode::ALL.into_iter().filter(|m| check.applies_to(*m)) {
            assert!(
                report.violated(check, mode),
                "{fault:?} passed {check:?} in {mode}: {:?}",
                report.violations()
            );
        }
        let err = report
            .into_result()
            .err()
            .ok_or("a broken module conformed")?;
        assert!(err.to_string().contains(&format!("{check:?}")), "{err}");
    }
    Ok(())
}

#[tokio::test]
async fn a_subject_with_too_few_or_unordered_totals_is_refused() {
    struct Totals(Vec<u64>);
    #[async_trait]
    impl Subject for Totals {
        async fn pair(
            &self,
            mode: HostMode,
            clock: &TestClock,
        ) -> Result<SubjectPair, Box<dyn std::error::Error + Send + Sync>> {
            TestSubject(None).pair(mode, clock).await
        }
        fn totals(&self) -> Vec<ModuleUnits> {
            self.0.iter().copied().map(ModuleUnits::from).collect()
        }
    }
    for bad in [vec![1, 2, 3], vec![1, 2, 2, 3], vec![0, 1, 2, 3]] {
        assert!(matches!(
            run(&Totals(bad)).await,
            Err(SetupError::Totals(_))
        ));
    }
}
