//! Expiry of a trustline's prepared transfers (docs/legacy-btp.md §15): when a transfer's `expiresAt` passes
//! while it is still prepared, it is cancelled and the peer gets an R00 Reject.
//!
//! A task and a timer per transfer cost a spawn, a timer registration and an abort for every transfer (≈ 5 % of
//! the CPU of a busy trustline, BENCHMARKS.md). Instead each trustline keeps its deadlines in an [`ExpiryQueue`]
//! and one task (`run_expiries`) sleeps until the earliest. Arming a transfer that expires before every other
//! one wakes the task; disarming never needs to (the task wakes at the old deadline, finds nothing due and
//! sleeps again). Deadlines are wall-clock milliseconds read from the trustline's clock; the task sleeps in
//! chunks of at most [`MAX_TIMER_CHUNK`] and re-reads the clock, so a far expiry never fires early (legacy's
//! timers overflowed beyond 24.8 days and fired at once). Prepared transfers are re-armed at
//! [`Trustline::start`], so they expire after a restart too.
//!
//! An expiry waits while our Fulfill of the transfer is in flight or unacknowledged, while the peer's Fulfill
//! of it is being applied (`guards`), or while the router holds a fulfillment for it
//! ([`TransferHook::hold_incoming_expiry`](super::TransferHook::hold_incoming_expiry)).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use btp::ilp_v1::{IlpV1Error, IlpV1Packet};
use btp::packet::{Packet, ProtocolData, ProtocolDataEntry, ProtocolName, Reject};
use bytes::Bytes;
use channel_modules::clock::Clock;
use channel_modules::store::{Direction, TransferId, TransferState};
use channel_modules::sync::lock;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::guards::CancelGuard;
use super::hooks::TransferOutcome;
use super::side_protocols::names;
use super::{read, unix_ms, Trustline, TrustlineInner};
use crate::peer::events::PeerEvent;

/// Longest single timer sleep; longer expiries sleep in chunks and re-read the clock, so a far expiry never
/// fires early (legacy's `setTimeout` overflowed after 2^31−1 ms and fired at once).
pub const MAX_TIMER_CHUNK: Duration = Duration::from_secs(24 * 60 * 60);

/// How long an expiry waits when a Fulfill of the same transfer is in flight, before checking again.
pub const EXPIRY_RETRY_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct State {
    /// Transfer → its deadline (wall-clock ms).
    deadlines: HashMap<TransferId, i64>,
    /// The same entries ordered by deadline.
    order: BTreeSet<(i64, TransferId)>,
    /// The scheduler task, once started.
    task: Option<AbortHandle>,
}

/// Deadlines of one trustline's prepared transfers, ordered, for its one expiry task.
#[derive(Debug, Default)]
pub(crate) struct ExpiryQueue {
    state: Mutex<State>,
    /// Wakes the scheduler: a deadline earlier than all others was armed.
    wake: Notify,
}

impl ExpiryQueue {
    /// Arms (or moves) the deadline of `id`. Returns true when no scheduler task has been started yet: the
    /// caller starts one and registers it with [`ExpiryQueue::set_task`].
    pub(crate) fn arm(&self, id: TransferId, at_ms: i64) -> bool {
        let (earliest, needs_task) = {
            let mut state = lock(&self.state);
            if let Some(old) = state.deadlines.insert(id, at_ms) {
                state.order.remove(&(old, id));
            }
            state.order.insert((at_ms, id));
            let earliest = state.order.first().is_some_and(|&(at, _)| at == at_ms);
            (earliest, state.task.is_none())
        };
        if earliest {
            self.wake.notify_one();
        }
        needs_task
    }

    /// Forgets the deadline of `id` (finished transfer).
    pub(crate) fn disarm(&self, id: &TransferId) {
        let mut state = lock(&self.state);
        if let Some(at) = state.deadlines.remove(id) {
            state.order.remove(&(at, *id));
        }
    }

    /// Records the scheduler task (aborted by [`ExpiryQueue::abort`]). A second task is aborted at once.
    pub(crate) fn set_task(&self, task: AbortHandle) {
        let mut state = lock(&self.state);
        match &state.task {
            Some(_) => task.abort(),
            None => state.task = Some(task),
        }
    }

    /// Removes and returns every transfer due at `now_ms`, and the next deadline after them.
    pub(crate) fn take_due(&self, now_ms: i64) -> (Vec<TransferId>, Option<i64>) {
        let mut state = lock(&self.state);
        let mut due = Vec::new();
        while let Some(&(at, id)) = state.order.first() {
            if at > now_ms {
                return (due, Some(at));
            }
            state.order.pop_first();
            state.deadlines.remove(&id);
            due.push(id);
        }
        (due, None)
    }

    /// Resolves when an earlier deadline was armed since the last call (a wake-up is never lost: it is kept
    /// until awaited).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Number of armed deadlines.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).deadlines.len()
    }

    /// Stops the scheduler task (the trustline is gone).
    pub(crate) fn abort(&self) {
        if let Some(task) = lock(&self.state).task.take() {
            task.abort();
        }
    }
}

/// The expiry task of one trustline: sleeps until the earliest deadline (in chunks of at most
/// [`MAX_TIMER_CHUNK`], re-reading the clock, so a far expiry never fires early), then expires what is due,
/// each in its own task (an expiry sends a Reject and waits for the answer). Holds no strong reference to the
/// trustline while it sleeps; the trustline aborts it when dropped.
async fn run_expiries(weak: Weak<TrustlineInner>, queue: Arc<ExpiryQueue>, clock: Arc<dyn Clock>) {
    loop {
        let (due, next) = queue.take_due(unix_ms(clock.now()));
        for id in due {
            tokio::spawn(expire_when_possible(weak.clone(), id));
        }
        let wait = next.map(|at| {
            let ms = u64::try_from(at - unix_ms(clock.now())).unwrap_or(0);
            Duration::from_millis(ms).min(MAX_TIMER_CHUNK)
        });
        match wait {
            Some(wait) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = queue.woken() => {}
                }
            }
            None => queue.woken().await,
        }
        if weak.strong_count() == 0 {
            return;
        }
    }
}

/// Expires transfer `id`; while our Fulfill of it is in flight or unacknowledged (its outcome decides),
/// checks again [`EXPIRY_RETRY_DELAY`] later.
async fn expire_when_possible(weak: Weak<TrustlineInner>, id: TransferId) {
    let Some(inner) = weak.upgrade() else { return };
    let tl = Trustline { inner };
    if !tl.expire(id).await {
        let retry_at = unix_ms(tl.inner.clock.now())
            .saturating_add(i64::try_from(EXPIRY_RETRY_DELAY.as_millis()).unwrap_or(i64::MAX));
        tl.arm_expiry(id, retry_at);
    }
}

impl Trustline {
    /// Arms (or moves) the expiry of transfer `id`, starting the trustline's expiry task if none runs yet.
    pub(super) fn arm_expiry(&self, id: TransferId, expires_at_ms: i64) {
        if self.inner.expiries.arm(id, expires_at_ms) {
            let task = tokio::spawn(run_expiries(
                Arc::downgrade(&self.inner),
                Arc::clone(&self.inner.expiries),
                Arc::clone(&self.inner.clock),
            ));
            self.inner.expiries.set_task(task.abort_handle());
        }
    }

    /// Number of prepared transfers with an armed expiry (`testing` feature: tests check that finished ones
    /// leave).
    #[cfg(any(test, feature = "testing"))]
    pub fn armed_expiries(&self) -> usize {
        self.inner.expiries.len()
    }

    /// The legacy expiry Reject reason: R00 "Transfer Timed Out", triggered by us, data "expired".
    pub fn expiry_error(&self) -> IlpV1Error {
        IlpV1Error {
            code: *b"R00",
            name: "Transfer Timed Out".to_owned(),
            triggered_by: self.account().unwrap_or_default(),
            forwarded_by: Vec::new(),
            triggered_at: self.now_ts(),
            data: Bytes::from_static(b"expired"),
        }
    }

    /// Expires a transfer if it is still prepared: cancel, send R00 Reject, emit `*_cancel`. Returns false
    /// (and does nothing) while our Fulfill of it is in flight or unacknowledged, while the peer's Fulfill of
    /// it is being applied, or while the hook holds a fulfillment for it
    /// ([`TransferHook::hold_incoming_expiry`](super::TransferHook::hold_incoming_expiry)).
    pub(crate) async fn expire(&self, id: TransferId) -> bool {
        if let Some(hook) = read(&self.inner.hook) {
            if let Ok(Some(rec)) = self.inner.log.get(&id).await {
                if rec.direction == Direction::Incoming && rec.state == TransferState::Prepared {
                    if lock(&self.inner.settling).delivering(&id) {
                        return false;
                    }
                    if hook.hold_incoming_expiry(self.clone(), rec.transfer).await {
                        tracing::debug!(peer = %self.inner.name, transfer = %id, "expiry held: the router holds a fulfillment for it");
                        return false;
                    }
                }
            }
        }
        self.expire_unheld(id).await
    }

    /// [`Trustline::expire`] without asking the hook: after the payer refused our Fulfill (it decided the
    /// Fulfill was late), nothing holds the transfer any more.
    pub(super) async fn expire_unheld(&self, id: TransferId) -> bool {
        let Some(_guard) = CancelGuard::take(&self.inner, id) else {
            return false;
        };
        let rec = match self.inner.log.get(&id).await {
            Ok(Some(r)) if r.state == TransferState::Prepared => r,
            Ok(_) => {
                // Finished by other means (e.g. by a module through the main log).
                self.finished(&id);
                return true;
            }
            Err(e) => {
                tracing::warn!(peer = %self.inner.name, transfer = %id, error = %e, "expiry: lookup failed");
                return true;
            }
        };
        if let Err(e) = self.inner.log.cancel(&id, "expired").await {
            tracing::debug!(peer = %self.inner.name, transfer = %id, error = %e, "error expiring");
            return true;
        }
        self.finished(&id);
        tracing::debug!(peer = %self.inner.name, transfer = %id, "transfer expired");
        let reason = self.expiry_error();
        let packet = Packet::Reject(Reject {
            transfer_id: id.0,
            protocol_data: ProtocolData::new().with(ProtocolDataEntry::octets(
                ProtocolName::from_static(names::ILP),
                IlpV1Packet::Error(reason.clone()).to_bytes(),
            )),
        });
        // The peer may answer with an Error (e.g. it expired the transfer itself); that is ignored.
        let _ = self.request(packet).await;
        match rec.direction {
            Direction::Incoming => self.emit(PeerEvent::IncomingCancel(rec.transfer)),
            Direction::Outgoing => {
                self.emit(PeerEvent::OutgoingCancel(rec.transfer.clone()));
                self.notify_settled(rec.transfer, TransferOutcome::Expired(reason));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TransferId {
        TransferId([n; 16])
    }

    #[test]
    fn due_entries_come_out_in_deadline_order_and_only_once() {
        let q = ExpiryQueue::default();
        assert!(q.arm(id(1), 300));
        q.arm(id(2), 100);
        q.arm(id(3), 200);
        q.arm(id(4), 200);
        assert_eq!(q.take_due(99), (vec![], Some(100)));
        assert_eq!(q.take_due(200), (vec![id(2), id(3), id(4)], Some(300)));
        assert_eq!(q.take_due(200), (vec![], Some(300)));
        assert_eq!(q.take_due(1_000), (vec![id(1)], None));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn rearming_moves_and_disarming_removes() {
        let q = ExpiryQueue::default();
        q.arm(id(1), 100);
        q.arm(id(2), 150);
        q.arm(id(1), 500); // moved later
        q.disarm(&id(2));
        q.disarm(&id(9)); // unknown: nothing happens
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_due(400), (vec![], Some(500)));
        assert_eq!(q.take_due(500), (vec![id(1)], None));
    }

    #[tokio::test]
    async fn only_an_earlier_deadline_wakes_the_scheduler() {
        let q = ExpiryQueue::default();
        q.arm(id(1), 100); // the first deadline is the earliest: wakes
        q.woken().await;
        q.arm(id(2), 200); // later than 100: no wake-up
        let later = tokio::time::timeout(std::time::Duration::from_millis(50), q.woken()).await;
        assert!(
            later.is_err(),
            "a later deadline must not wake the scheduler"
        );
        q.arm(id(3), 50);
        tokio::time::timeout(std::time::Duration::from_secs(5), q.woken())
            .await
            .expect("an earlier deadline wakes the scheduler");
    }

    #[tokio::test]
    async fn the_first_task_is_kept_and_a_second_one_aborted() {
        let q = ExpiryQueue::default();
        assert!(q.arm(id(1), 100));
        let first = tokio::spawn(std::future::pending::<()>());
        q.set_task(first.abort_handle());
        assert!(!q.arm(id(2), 200), "a task runs already");
        let second = tokio::spawn(std::future::pending::<()>());
        q.set_task(second.abort_handle());
        assert!(second.await.expect_err("aborted").is_cancelled());
        q.abort();
        assert!(first.await.expect_err("aborted").is_cancelled());
    }
}
