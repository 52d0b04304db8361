//! [`RPC_LATEST_CLAIM`], the module RPC by which a payee asks the payer for the claim covering everything it
//! owes, shared by both Ethereum modules: `latest_claim_reply` (payer) and [`pull_latest_claim`] (payee),
//! the latter behind a [`PullLimiter`]. A claim lost with a Fulfill response or a payer restart then does not
//! block the trustline.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::amount::ModuleUnits;
use crate::claim::Claim;
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::module::ChannelModule;
use crate::sync::lock;

/// Module RPC asking the payer for its claim covering everything it owes (args `[]`; reply: the claim JSON,
/// or `null`). The payee calls it before refusing a transfer over `maxUnsecured`: the claim that should have
/// come with a Fulfill response may have been lost (a response sent before the payment was confirmed, a
/// payer restart), and without it the payee would refuse every further transfer.
pub const RPC_LATEST_CLAIM: &str = "eth_latest_claim";
/// Shortest time between two [`RPC_LATEST_CLAIM`] pulls of one account, in milliseconds (see
/// [`PullLimiter`]): a peer sending a burst of prepares over the limit costs at most one round trip per this
/// interval.
pub const LATEST_CLAIM_PULL_MIN_INTERVAL_MS: u64 = 1_000;

/// Limits [`pull_latest_claim`] per account (one limiter per module; one module per account): at most one pull
/// in flight, and after a pull that credited nothing, no new one until [`LATEST_CLAIM_PULL_MIN_INTERVAL_MS`]
/// after it started, on the context's clock ([`ChannelContext::now`]; a clock that went backwards allows a
/// pull). A caller arriving while a pull is in flight waits for that pull to end, at most
/// [`LATEST_CLAIM_PULL_MAX_WAIT`], and then re-checks its limit: the pull may well cover it. A pull that credited something
/// does not hold the next one back: each such pull was paid for, and a payee whose claims keep getting lost
/// still gets them at the pace of its transfers.
#[derive(Debug, Default)]
pub struct PullLimiter {
    state: Mutex<PullState>,
    /// Woken when a pull ends (its permit is dropped).
    done: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct PullState {
    in_flight: bool,
    /// When the last pull that credited nothing (or is still running) started.
    last_unproductive: Option<SystemTime>,
    /// Whether the last pull that ended credited something (what callers that waited for it return).
    last_productive: bool,
}

/// Marks a pull in flight until dropped (also when the pulling future is dropped midway).
pub(crate) struct PullPermit<'a> {
    limiter: &'a PullLimiter,
}

impl PullPermit<'_> {
    /// The pull credited something: the next one need not wait.
    pub(crate) fn productive(self) {
        let mut state = lock(&self.limiter.state);
        state.last_unproductive = None;
        state.last_productive = true;
    }
}

impl Drop for PullPermit<'_> {
    fn drop(&mut self) {
        lock(&self.limiter.state).in_flight = false;
        self.limiter.done.notify_waiters();
    }
}

/// What [`PullLimiter::start`] lets a caller do.
enum PullStart<'a> {
    /// Pull now.
    Pull(PullPermit<'a>),
    /// Wait for the pull in flight to end.
    Wait(tokio::sync::futures::Notified<'a>),
    /// Nothing: an unproductive pull started too recently.
    Skip,
}

impl PullLimiter {
    /// A permit to pull now; or the pull in flight to wait for; or [`PullStart::Skip`] when an unproductive
    /// pull started less than [`LATEST_CLAIM_PULL_MIN_INTERVAL_MS`] before `now`.
    fn start(&self, now: SystemTime) -> PullStart<'_> {
        let mut state = lock(&self.state);
        if state.in_flight {
            // Registered now, under the lock: the pull's end (which takes the lock first) cannot be missed.
            return PullStart::Wait(self.done.notified());
        }
        let min_interval = Duration::from_millis(LATEST_CLAIM_PULL_MIN_INTERVAL_MS);
        if let Some(last) = state.last_unproductive {
            if now
                .duration_since(last)
                .is_ok_and(|elapsed| elapsed < min_interval)
            {
                return PullStart::Skip;
            }
        }
        state.in_flight = true;
        state.last_unproductive = Some(now);
        state.last_productive = false;
        PullStart::Pull(PullPermit { limiter: self })
    }

    /// A permit to pull now, or `None` while a pull is in flight or an unproductive one started less than
    /// [`LATEST_CLAIM_PULL_MIN_INTERVAL_MS`] before `now` (for callers that do not wait for the pull in flight).
    pub(crate) fn try_start(&self, now: SystemTime) -> Option<PullPermit<'_>> {
        match self.start(now) {
            PullStart::Pull(permit) => Some(permit),
            PullStart::Wait(_) | PullStart::Skip => None,
        }
    }
}

/// A main-log error as a module error.
fn log_error(e: crate::store::TransferLogError) -> ModuleError {
    match e {
        crate::store::TransferLogError::Store(e) => ModuleError::Store(e),
        other => ModuleError::Ledger(format!("main log: {other}")),
    }
}

/// Payer side of [`RPC_LATEST_CLAIM`]: the claim for everything the main log says we owe (outgoing
/// fulfilled), exactly what the next Fulfill would carry (`create_outgoing_claim` pays or signs only what is
/// not yet covered, so asking again is harmless). `null` when there is nothing to claim.
pub(crate) async fn latest_claim_reply(
    module: &dyn ChannelModule,
    ctx: &ChannelContext,
) -> Result<Value, ModuleError> {
    // Durable sums: the claim leaves the node and must not cover a fulfill a crash could still undo.
    let sums = ctx.main_log()?.durable_sums().await.map_err(log_error)?;
    let owed = ModuleUnits::from_peer_ledger(sums.outgoing_fulfilled);
    match module.create_outgoing_claim(ctx, &owed).await? {
        Some(Claim::Json(claim)) => Ok(claim),
        Some(_) => Err(ModuleError::Ledger(
            "this module's claims are JSON".to_owned(),
        )),
        None => Ok(Value::Null),
    }
}

/// Longest a prepare waits for a latest-claim pull already in flight ([`pull_latest_claim`]) before it is
/// judged without it.
pub const LATEST_CLAIM_PULL_MAX_WAIT: Duration = Duration::from_secs(5);

/// Payee side of [`RPC_LATEST_CLAIM`]: asks the peer for its latest claim and hands it to
/// `module.handle_incoming_claim`, which checks it like any other. Callers ask only when a claim can help (the
/// peer owes more than it has paid or signed for); `limiter` makes a caller wait for a pull already in flight
/// instead of starting another, and drops the pull when an unproductive one started too recently. Failures are
/// logged; the caller re-checks its limit afterwards. A caller waits at most [`LATEST_CLAIM_PULL_MAX_WAIT`]
/// for the pull in flight (which also checks what it got on the ledger, and may wait on a channel close). Returns
/// whether the pull (its own, or the most recent one it waited for) credited something.
pub async fn pull_latest_claim(
    module: &dyn ChannelModule,
    ctx: &ChannelContext,
    limiter: &PullLimiter,
) -> bool {
    let permit = match limiter.start(ctx.now()) {
        PullStart::Pull(permit) => permit,
        PullStart::Wait(pull_done) => {
            debug!(
                account = ctx.account_id(),
                "waiting for the latest-claim pull in flight"
            );
            // Bounded: the pull in flight also checks what it got on the ledger, and a prepare waiting here
            // holds its place under the limit without an expiry timer yet.
            if tokio::time::timeout(LATEST_CLAIM_PULL_MAX_WAIT, pull_done)
                .await
                .is_err()
            {
                debug!(
                    account = ctx.account_id(),
                    "stopped waiting for the latest-claim pull in flight"
                );
                return false;
            }
            return lock(&limiter.state).last_productive;
        }
        PullStart::Skip => {
            debug!(
                account = ctx.account_id(),
                "latest-claim pull skipped (an unproductive one is too recent)"
            );
            return false;
        }
    };
    let claim = match ctx.rpc(RPC_LATEST_CLAIM, json!([])).await {
        Ok(Value::Null) => return false,
        Ok(Value::Object(map)) if map.is_empty() => return false,
        Ok(claim) => claim,
        Err(err) => {
            warn!(%err, "could not ask the peer for its latest claim");
            return false;
        }
    };
    match module
        .handle_incoming_claim(ctx, Some(&Claim::Json(claim)))
        .await
    {
        Ok(Some(credit)) => {
            info!(amount = %credit.amount, settlement_id = %credit.settlement_id, "credited the peer's latest claim");
            permit.productive();
            true
        }
        Ok(None) => false,
        Err(err) => {
            warn!(%err, "the peer's latest claim was refused");
            false
        }
    }
}
