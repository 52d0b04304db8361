//! Who may finish a transfer right now. A transfer ends once, fulfilled or cancelled, but several tasks race to
//! end it: our `fulfill_condition`, its expiry, our Reject, the peer's Fulfill. Each takes a guard first:
//! [`FulfillGuard`] (our Fulfill, from before its checks until its outcome is known), [`CancelGuard`] (an
//! expiry or our Reject), [`AcceptGuard`] (the peer's Fulfill of our transfer, from before its expiry check
//! until it is applied). A guard is refused while a conflicting one is held, so a preimage never goes out for
//! a transfer being cancelled here, and nothing cancels a transfer whose Fulfill may already count.

use std::collections::{HashMap, HashSet};

use channel_modules::store::TransferId;
use channel_modules::sync::lock;

use super::{Trustline, TrustlineInner};

/// The guards held per transfer (one per trustline, behind a mutex).
#[derive(Default)]
pub(super) struct Settling {
    /// Our `fulfill_condition` calls in progress, per transfer.
    fulfilling: HashMap<TransferId, u32>,
    /// Our Fulfills whose outcome is unknown, being re-sent (the transfer may not be cancelled meanwhile).
    unacked: HashSet<TransferId>,
    /// Transfers being cancelled by their expiry or our Reject (a Fulfill may not start).
    cancelling: HashSet<TransferId>,
    /// Our outgoing transfers whose Fulfill from the peer passed its checks in time and is being applied
    /// ([`AcceptGuard`]): not cancelled meanwhile.
    accepting: HashMap<TransferId, u32>,
}

impl Settling {
    /// Whether our Fulfill of `id` is in flight or being re-sent.
    pub(super) fn delivering(&self, id: &TransferId) -> bool {
        self.fulfilling.contains_key(id) || self.unacked.contains(id)
    }

    /// Registers the re-sending of our Fulfill of `id`; `false` if it is being re-sent already.
    pub(super) fn start_resending(&mut self, id: TransferId) -> bool {
        self.unacked.insert(id)
    }

    /// The peer answered our re-sent Fulfill of `id`.
    pub(super) fn stop_resending(&mut self, id: &TransferId) {
        self.unacked.remove(id);
    }

    /// Our Fulfills being re-sent.
    pub(super) fn resending(&self) -> Vec<TransferId> {
        self.unacked.iter().copied().collect()
    }
}

/// Held by the handling of the peer's Fulfill of our outgoing transfer, from before its expiry check until it
/// is applied (or refused).
pub(super) struct AcceptGuard<'a> {
    inner: &'a TrustlineInner,
    id: TransferId,
}

impl<'a> AcceptGuard<'a> {
    /// `None` if the transfer is being cancelled.
    pub(super) fn take(inner: &'a TrustlineInner, id: TransferId) -> Option<Self> {
        let mut settling = lock(&inner.settling);
        if settling.cancelling.contains(&id) {
            return None;
        }
        *settling.accepting.entry(id).or_insert(0) += 1;
        Some(AcceptGuard { inner, id })
    }
}

impl Drop for AcceptGuard<'_> {
    fn drop(&mut self) {
        let mut settling = lock(&self.inner.settling);
        if let Some(n) = settling.accepting.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                settling.accepting.remove(&self.id);
            }
        }
    }
}

/// Held by a `fulfill_condition` call from before its checks until the outcome is known.
pub(super) struct FulfillGuard<'a> {
    inner: &'a TrustlineInner,
    id: TransferId,
}

impl<'a> FulfillGuard<'a> {
    /// `None` if the transfer is being cancelled.
    pub(super) fn take(inner: &'a TrustlineInner, id: TransferId) -> Option<Self> {
        let mut settling = lock(&inner.settling);
        if settling.cancelling.contains(&id) {
            return None;
        }
        *settling.fulfilling.entry(id).or_insert(0) += 1;
        Some(FulfillGuard { inner, id })
    }

    /// As [`FulfillGuard::take`], but `Ok(None)` when our Fulfill of the transfer is already in flight or
    /// being re-sent (whoever sends it delivers it), and `Err(())` if the transfer is being cancelled.
    pub(super) fn take_unless_delivering(
        inner: &'a TrustlineInner,
        id: TransferId,
    ) -> Result<Option<Self>, ()> {
        let mut settling = lock(&inner.settling);
        if settling.cancelling.contains(&id) {
            return Err(());
        }
        if settling.delivering(&id) {
            return Ok(None);
        }
        *settling.fulfilling.entry(id).or_insert(0) += 1;
        Ok(Some(FulfillGuard { inner, id }))
    }
}

impl Drop for FulfillGuard<'_> {
    fn drop(&mut self) {
        let mut settling = lock(&self.inner.settling);
        if let Some(n) = settling.fulfilling.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                settling.fulfilling.remove(&self.id);
            }
        }
    }
}

/// Held while an expiry or our Reject cancels a transfer.
pub(super) struct CancelGuard<'a> {
    inner: &'a TrustlineInner,
    id: TransferId,
}

impl<'a> CancelGuard<'a> {
    /// `None` while our Fulfill of the transfer is in flight or unacknowledged, or the peer's Fulfill of it is
    /// being applied.
    pub(super) fn take(inner: &'a TrustlineInner, id: TransferId) -> Option<Self> {
        let mut settling = lock(&inner.settling);
        if settling.delivering(&id) || settling.accepting.contains_key(&id) {
            return None;
        }
        settling.cancelling.insert(id);
        Some(CancelGuard { inner, id })
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.settling).cancelling.remove(&self.id);
    }
}

impl Trustline {
    /// Whether the peer's Fulfill of our outgoing transfer `id` passed its checks in time and is being applied
    /// (a router holds the transfer it was forwarded from meanwhile).
    pub(crate) fn is_accepting_fulfill(&self, id: &TransferId) -> bool {
        lock(&self.inner.settling).accepting.contains_key(id)
    }
}
