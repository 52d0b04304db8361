//! [`ExpiryQueue`]: the prepared transfers of one trustline ordered by expiry, for its one scheduler task.
//!
//! A task and a timer per transfer cost a spawn, a timer registration and an abort for every transfer (≈ 5 % of
//! the CPU of a busy trustline, BENCHMARKS.md). Instead each trustline keeps its deadlines here and one task
//! (`Trustline::run_expiries`) sleeps until the earliest. Arming a transfer that expires before every other one
//! wakes the task; disarming never needs to (the task wakes at the old deadline, finds nothing due and sleeps
//! again). Deadlines are wall-clock milliseconds read from the trustline's clock; the task sleeps in chunks of at
//! most `MAX_TIMER_CHUNK` and re-reads the clock, so a far expiry never fires early.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use channel_modules::store::TransferId;
use channel_modules::sync::lock;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

#[derive(Debug, Default)]
struct State {
    /// Transfer → its deadline (wall-clock ms).
    deadlines: HashMap<TransferId, i64>,
    /// The same entries ordered by deadline.
    order: BTreeSet<(i64, TransferId)>,
    /// The scheduler task, once started.
    task: Option<AbortHandle>,
}

/// Deadlines of one trustline's prepared transfers (see the module docs).
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
