//! The two tasks each account runs, and their backoff.
//!
//! * The **settle worker** sets the module up (`connect`, retried until it succeeds, e.g. until the peer's
//!   account exists), takes accepted settle requests off the queue, converts them to module units with the
//!   leftover, and asks the module for a claim for the *cumulative* total, which it sends to the peer engine. A
//!   failure is recorded and retried with backoff; since claims are cumulative, a retry after a lost reply is
//!   harmless.
//! * The **credit worker** credits incoming settlements to the connector with one stable Idempotency-Key each,
//!   retrying with exponential backoff and jitter (capped at 1 h) until a 2xx; 409 stops and raises an alert;
//!   404 keeps retrying. Everything pending is retried at start-up.

use std::sync::Arc;
use std::time::Duration;

use channel_modules::amount::ModuleUnits;
use channel_modules::store::StoreError;
use channel_modules::sync::lock;
use channel_modules::ModuleError;
use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::account::{push_bounded, Account, AccountCounters};
use super::client::{ClientError, CreditOutcome};
use super::engine::Engine;
use super::error::EngineError;
use super::quantity::to_module_units;
use super::store::{keys, CreditRecord, CreditStatus, Family, HistoryRecord, SeBatch, SentRecord};
use super::wire;

/// Backoff before attempt `attempts + 1`: `initial × 2^attempts`, capped, times a jitter factor in [0.5, 1].
pub(super) fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempts.min(30));
    let capped = exp.min(max);
    let jitter: f64 = rand::thread_rng().gen_range(0.5..=1.0);
    capped.mul_f64(jitter)
}

/// Waits for a wake-up, a retry deadline or shutdown. Returns false on shutdown.
pub(super) async fn wait(
    notify: &Notify,
    retry_in: Option<Duration>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    match retry_in {
        Some(d) => tokio::select! {
            _ = notify.notified() => true,
            _ = tokio::time::sleep(d) => true,
            _ = shutdown.changed() => false,
        },
        None => tokio::select! {
            _ = notify.notified() => true,
            _ = shutdown.changed() => false,
        },
    }
}

/// The settle worker of `acct` (see the module doc); runs until the engine shuts down.
pub(super) async fn settle_worker(engine: Engine, acct: Arc<Account>) {
    let mut shutdown = engine.inner.shutdown.subscribe();
    let mut retry_in = None;
    let mut failures = 0u32;
    while wait(&acct.wake_settle, retry_in, &mut shutdown).await {
        match settle_once(&engine, &acct).await {
            Ok(()) => {
                failures = 0;
                retry_in = None;
                lock(&acct.status).next_settle_retry_ms = None;
            }
            Err(error) => {
                let d = backoff(
                    failures,
                    engine.inner.config.retry_initial(),
                    engine.inner.config.retry_max(),
                );
                failures = failures.saturating_add(1);
                tracing::warn!(account = %acct.id, %error, retry_in_ms = d.as_millis() as u64, "settlement attempt failed");
                lock(&acct.status).next_settle_retry_ms =
                    Some(engine.now_ms() + d.as_millis() as u64);
                retry_in = Some(d);
            }
        }
    }
}

/// Why a pass of the settle path failed. The message is what the operator view shows as the account's last
/// error (and what the outgoing record keeps).
#[derive(Debug, thiserror::Error)]
enum SettleError {
    /// The module's `connect` failed.
    #[error("module setup failed: {0}")]
    Setup(#[source] ModuleError),
    /// Writing the settle path's state failed.
    #[error("store: {0}")]
    Store(#[source] StoreError),
    /// A record of the settle path could not be encoded.
    #[error(transparent)]
    Record(StoreError),
    /// The module could not make a claim for the total.
    #[error("module could not make a claim: {0}")]
    Claim(#[source] ModuleError),
    /// The claim could not be sent to the peer's engine.
    #[error("sending the claim failed: {0}")]
    Send(#[source] ClientError),
}

/// One pass of the settle path: setup, take the queue, send a claim for the cumulative total.
async fn settle_once(engine: &Engine, acct: &Arc<Account>) -> Result<(), SettleError> {
    let store = &engine.inner.store;
    let connected = lock(&acct.status).connected;
    if !connected {
        match acct.module.connect(&acct.ctx).await {
            Ok(()) => {
                let mut st = lock(&acct.status);
                st.connected = true;
                st.connect_error = None;
                tracing::info!(account = %acct.id, module = acct.module.name(), "module connected");
            }
            Err(e) => {
                let error = SettleError::Setup(e);
                lock(&acct.status).connect_error = Some(error.to_string());
                return Err(error);
            }
        }
    }

    // Take the queue. The requests stay in it until their history records are durable, and then leave it in
    // the same step (under the queue lock, which the admin views take first) as they enter the in-memory
    // history: a view sees each accepted request queued or in the history, never neither (as while the write
    // was in flight, when the queue was emptied first) nor both.
    let taken: Vec<super::store::QueuedRequest> = lock(&acct.queue).clone();
    if !taken.is_empty() {
        let mut out = lock(&acct.out).clone();
        let module_scale = acct.module.asset_scale();
        let mut batch = SeBatch::new();
        let mut hist = Vec::with_capacity(taken.len());
        let mut encode = || -> Result<(), StoreError> {
            for req in &taken {
                let (units, leftover) = to_module_units(&out.leftover, &req.amount, module_scale);
                out.leftover = leftover;
                out.target_total += &units;
                out.requests_taken += 1;
                out.connector_scale = Some(req.amount.scale);
                let h = HistoryRecord {
                    request: req.clone(),
                    module_units: units,
                    target_total_after: out.target_total.clone(),
                };
                batch.delete(Family::Pending, keys::queued(&acct.id, req.seq));
                batch.put_json(Family::Main, keys::history(&acct.id, req.seq), &h)?;
                hist.push(h);
            }
            batch.put_json(Family::Main, keys::outgoing(&acct.id), &out)?;
            Ok(())
        };
        let written = match encode() {
            Ok(()) => match store.submit(batch) {
                Ok(ticket) => ticket.await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // The requests are still queued.
            return Err(SettleError::Store(e));
        }
        let taken_seqs: std::collections::HashSet<u64> = taken.iter().map(|r| r.seq).collect();
        let mut queue = lock(&acct.queue);
        *lock(&acct.out) = out;
        for h in hist {
            push_bounded(&acct.history, h);
        }
        queue.retain(|r| !taken_seqs.contains(&r.seq));
        drop(queue);
    }

    let (target, settled) = {
        let out = lock(&acct.out);
        (out.target_total.clone(), out.settled_total.clone())
    };
    if target <= settled {
        return Ok(());
    }
    lock(&acct.status).in_flight = Some(&target - &settled);
    let result = send_claim(engine, acct, &target).await;
    lock(&acct.status).in_flight = None;
    let mut out = lock(&acct.out).clone();
    let mut batch = SeBatch::new();
    let seq = engine.next_seq();
    let outcome = match result {
        Ok(claim_id) => {
            AccountCounters::bump(&acct.counters.claims_sent);
            tracing::debug!(account = %acct.id, total = %target, claim = %claim_id, "settlement acknowledged by the peer");
            out.settled_total = target.clone();
            out.attempts = 0;
            out.last_error = None;
            out.last_claim_id = Some(claim_id.clone());
            let sent = SentRecord {
                total: target.clone(),
                claim_id,
                sent_ms: engine.now_ms(),
            };
            batch
                .put_json(Family::Main, keys::sent(&acct.id, seq), &sent)
                .map_err(SettleError::Record)?;
            Ok(sent)
        }
        Err(e) => {
            AccountCounters::bump(&acct.counters.settle_failures);
            out.attempts = out.attempts.saturating_add(1);
            out.last_error = Some(e.to_string());
            Err(e)
        }
    };
    batch
        .put_json(Family::Main, keys::outgoing(&acct.id), &out)
        .map_err(SettleError::Record)?;
    let written = match store.submit(batch) {
        Ok(t) => t.await,
        Err(e) => Err(e),
    };
    // Publish even if the write failed: the claim went out; after a restart the same cumulative claim is sent
    // again and the peer credits nothing twice.
    *lock(&acct.out) = out;
    match outcome {
        Ok(sent) => {
            tracing::info!(account = %acct.id, total = %sent.total, claim_id = %sent.claim_id, "settlement sent");
            push_bounded(&acct.sent, sent);
            written.map_err(SettleError::Store)
        }
        Err(e) => Err(e),
    }
}

/// Asks the module for a claim for `total` and sends it to the peer engine. Returns the claim ID.
async fn send_claim(
    engine: &Engine,
    acct: &Arc<Account>,
    total: &ModuleUnits,
) -> Result<String, SettleError> {
    let claim = acct
        .module
        .create_outgoing_claim(&acct.ctx, total)
        .await
        .map_err(SettleError::Claim)?;
    let fallback = total.to_string();
    let Some(claim) = claim else {
        // Payment modules settle on the ledger and have nothing to send.
        return Ok(fallback);
    };
    let id = wire::claim_id(&claim, &fallback);
    engine
        .inner
        .client
        .send_message(&acct.id, wire::claim_message(&claim))
        .await
        .map_err(SettleError::Send)?;
    Ok(id)
}

/// The credit worker of `acct` (see the module doc); runs until the engine shuts down.
pub(super) async fn credit_worker(engine: Engine, acct: Arc<Account>) {
    let mut shutdown = engine.inner.shutdown.subscribe();
    let mut retry_in = None;
    while wait(&acct.wake_credit, retry_in, &mut shutdown).await {
        credit_due(&engine, &acct).await;
        let now = Instant::now();
        retry_in = lock(&acct.credits)
            .values()
            .filter(|p| p.record.status == CreditStatus::Pending)
            .map(|p| p.due.saturating_duration_since(now))
            .min();
    }
}

async fn credit_due(engine: &Engine, acct: &Arc<Account>) {
    let now = Instant::now();
    let due: Vec<CreditRecord> = lock(&acct.credits)
        .values()
        .filter(|p| p.record.status == CreditStatus::Pending && p.due <= now)
        .map(|p| p.record.clone())
        .collect();
    for mut rec in due {
        let outcome = engine
            .inner
            .client
            .credit(&acct.id, &rec.idempotency_key, &rec.amount.to_quantity())
            .await;
        rec.attempts = rec.attempts.saturating_add(1);
        let mut batch = SeBatch::new();
        let pending_key = keys::credit(&acct.id, &rec.idempotency_key);
        let mut next_due = None;
        let done = match outcome {
            Ok(CreditOutcome::Credited) => {
                AccountCounters::bump(&acct.counters.credits_done);
                rec.status = CreditStatus::Credited;
                rec.done_ms = Some(engine.now_ms());
                rec.last_error = None;
                batch.delete(Family::Pending, pending_key);
                let seq = engine.next_seq();
                if let Err(error) =
                    batch.put_json(Family::Main, keys::credited(&acct.id, seq), &rec)
                {
                    tracing::error!(account = %acct.id, %error, "encoding credit record failed");
                }
                tracing::info!(account = %acct.id, key = %rec.idempotency_key, amount = %rec.amount, "settlement credited");
                true
            }
            Ok(CreditOutcome::AlreadyUsed) => {
                rec.status = CreditStatus::Conflict;
                rec.done_ms = Some(engine.now_ms());
                rec.last_error =
                    Some("connector answered 409: idempotency key already used".to_owned());
                tracing::error!(account = %acct.id, key = %rec.idempotency_key, amount = %rec.amount,
                    settlement_id = %rec.settlement_id, "credit refused with 409: reconcile with the connector");
                if let Err(error) = batch.put_json(Family::Pending, pending_key, &rec) {
                    tracing::error!(account = %acct.id, %error, "encoding credit record failed");
                }
                false
            }
            Ok(CreditOutcome::UnknownAccount) | Err(_) => {
                AccountCounters::bump(&acct.counters.credit_retries);
                let msg = match outcome {
                    Err(e) => e.to_string(),
                    _ => "connector does not know the account yet (404)".to_owned(),
                };
                let d = backoff(
                    rec.attempts.saturating_sub(1),
                    engine.inner.config.retry_initial(),
                    engine.inner.config.retry_max(),
                );
                tracing::warn!(account = %acct.id, key = %rec.idempotency_key, error = %msg,
                    retry_in_ms = d.as_millis() as u64, "credit failed");
                rec.last_error = Some(msg);
                next_due = Some(Instant::now() + d);
                if let Err(error) = batch.put_json(Family::Pending, pending_key, &rec) {
                    tracing::error!(account = %acct.id, %error, "encoding credit record failed");
                }
                false
            }
        };
        let written = match engine.inner.store.submit(batch) {
            Ok(t) => t.await,
            Err(e) => Err(e),
        };
        if let Err(error) = &written {
            // Not recorded: keep it pending in memory; it is retried (and still pending on disk).
            tracing::error!(account = %acct.id, %error, "recording a credit outcome failed");
        }
        let mut credits = lock(&acct.credits);
        if done && written.is_ok() {
            credits.remove(&rec.idempotency_key);
            drop(credits);
            push_bounded(&acct.credited, rec);
        } else if let Some(p) = credits.get_mut(&rec.idempotency_key) {
            if done {
                // Credited but not recorded: the next attempt will get 409 from interledger-rs; keep the
                // acknowledgement in memory instead of retrying.
                rec.status = CreditStatus::Credited;
                p.record = rec;
                continue;
            }
            p.record = rec;
            p.due = next_due.unwrap_or_else(Instant::now);
        }
    }
}

impl Engine {
    /// Admin: retry every pending settlement and credit of the account now.
    pub fn retry_now(&self, id: &str) -> Result<(), EngineError> {
        let acct = self.account(id)?;
        for c in lock(&acct.credits).values_mut() {
            c.due = Instant::now();
        }
        acct.wake_settle.notify_one();
        acct.wake_credit.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn backoff_is_capped_and_jittered() {
        let init = Duration::from_secs(1);
        let max = Duration::from_secs(3600);
        for attempts in 0..64 {
            let d = backoff(attempts, init, max);
            assert!(d <= max);
            let expected = init.saturating_mul(1u32 << attempts.min(30)).min(max);
            assert!(d >= expected / 2, "{attempts}: {d:?}");
        }
    }
}
