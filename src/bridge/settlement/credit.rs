//! P → M: what P's module paid us is credited to M's account through M's settlement API (RFC 38 accounting
//! API, docs/modern.md §1.5), one credit at a time.
//!
//! Each credit is derived from durable state only: the module's [`incoming_total`] (what P paid, from its
//! trackers) minus what M acknowledged (`credited`). It is written down as `pending`, with its
//! `Idempotency-Key`, before it is first sent; after a crash the same key and amount are sent again, never a
//! new credit over the same payment. M's acknowledgement (a 2xx, or 409: interledger-rs answers a repeated key
//! with 409 even when it took the first one) moves `credited` up and clears `pending`, in one write.
//!
//! [`incoming_total`]: channel_modules::ChannelModule::incoming_total

use std::time::Duration;

use channel_modules::sync::lock;
use tokio::sync::watch;

use super::record::PendingCredit;
use super::{PairSettlement, SettlementError};
use crate::settlement::client::CreditOutcome;
use crate::settlement::quantity::Quantity;

/// How often the module's total is read when nothing is pending: 200 ms (one tracker read).
pub(super) const CREDIT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// First pause before a failed credit is sent again; doubled after each failure up to
/// [`CREDIT_RETRY_MAX`].
pub(super) const CREDIT_RETRY_MIN: Duration = Duration::from_millis(500);

/// Longest pause between attempts of a credit M does not acknowledge: 1 hour, RFC 38's bound.
pub(super) const CREDIT_RETRY_MAX: Duration = Duration::from_secs(3600);

/// What one step of the credit task did.
enum Step {
    /// Nothing to credit.
    Idle,
    /// A credit was acknowledged; there may be more.
    Credited,
    /// M does not know the account yet (404): try again later.
    NotYet,
}

/// Runs until `stop`: credits what P paid, retrying with backoff.
pub(super) async fn credit_task(s: PairSettlement, mut stop: watch::Receiver<bool>) {
    let mut retry = CREDIT_RETRY_MIN;
    loop {
        let pause = match credit_once(&s).await {
            Ok(Step::Idle) => {
                retry = CREDIT_RETRY_MIN;
                CREDIT_POLL_INTERVAL
            }
            Ok(Step::Credited) => {
                retry = CREDIT_RETRY_MIN;
                Duration::ZERO
            }
            Ok(Step::NotYet) => {
                tracing::warn!(pair = %s.inner.name, "the modern connector does not know P's account yet; crediting later");
                next_retry(&mut retry)
            }
            Err(error) => {
                tracing::warn!(pair = %s.inner.name, %error, "crediting the modern connector failed; retrying with the same key");
                next_retry(&mut retry)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = s.inner.wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn next_retry(retry: &mut Duration) -> Duration {
    let now = *retry;
    *retry = (*retry * 2).min(CREDIT_RETRY_MAX);
    now
}

/// Makes (or takes up again) the pending credit and sends it once.
async fn credit_once(s: &PairSettlement) -> Result<Step, SettlementError> {
    let inner = &s.inner;
    let pending = {
        let mut rec = inner.record.lock().await;
        match rec.pending.clone() {
            Some(p) => p,
            None => {
                let Some(account) = rec.account.clone() else {
                    return Ok(Step::Idle);
                };
                let Some(module) = inner.trustline.module() else {
                    return Ok(Step::Idle);
                };
                let Some(total) = module
                    .incoming_total(inner.trustline.module_context())
                    .await?
                else {
                    return Ok(Step::Idle);
                };
                let Some(amount) = total.checked_sub(&rec.credited) else {
                    return Ok(Step::Idle);
                };
                if amount.is_zero() {
                    return Ok(Step::Idle);
                }
                let pending = PendingCredit {
                    key: format!("ilp-bridge-{}-{account}-{total}", inner.name),
                    account,
                    total,
                    amount,
                };
                let mut next = rec.clone();
                next.pending = Some(pending.clone());
                inner.store.save(&inner.name, &next, None).await?;
                *rec = next;
                *lock(&inner.shown) = rec.clone();
                pending
            }
        }
    };
    let quantity = Quantity {
        amount: pending.amount.to_string(),
        scale: inner.legacy_scale,
    };
    let outcome = inner
        .client
        .credit(&pending.account, &pending.key, &quantity)
        .await?;
    match outcome {
        CreditOutcome::Credited | CreditOutcome::AlreadyUsed => {
            let mut rec = inner.record.lock().await;
            let mut next = rec.clone();
            next.credited = pending.total.clone();
            next.pending = None;
            next.credits += 1;
            inner.store.save(&inner.name, &next, None).await?;
            tracing::info!(
                pair = %inner.name,
                amount = %pending.amount,
                credited = %next.credited,
                key = %pending.key,
                already_used = outcome == CreditOutcome::AlreadyUsed,
                "what P paid is credited to the modern connector"
            );
            *rec = next;
            *lock(&inner.shown) = rec.clone();
            Ok(Step::Credited)
        }
        CreditOutcome::UnknownAccount => Ok(Step::NotYet),
    }
}
