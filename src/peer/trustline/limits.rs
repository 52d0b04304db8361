//! How a trustline applies the peer's [`PrepareLimits`] (configuration, with the reasons for each limit:
//! [`crate::config::prepare_limits`]): the checks on one Prepare, and [`PreparedSet`], the count of prepared
//! transfers behind the last limit.

use std::collections::HashSet;

use btp::packet::Prepare;
use channel_modules::store::{Direction, TransferId};
use channel_modules::sync::lock;

use super::legacy_format::iso_time;
use super::side_protocols::names;
use super::{unix_ms, Trustline};
use crate::config::prepare_limits::PrepareLimits;
use crate::peer::error::WireError;

/// The IDs of one trustline's prepared transfers, per direction: what
/// [`PrepareLimits::max_prepared_transfers`] counts. A transfer is added before it is prepared in the log (so
/// racing Prepares cannot pass the cap together) and removed when it is finished, or when preparing it failed.
#[derive(Debug, Default)]
pub(super) struct PreparedSet {
    incoming: HashSet<TransferId>,
    outgoing: HashSet<TransferId>,
}

/// What [`PreparedSet::reserve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reservation {
    /// The ID was added: release it if the transfer is not prepared after all.
    New,
    /// The ID was there already (a repeated Prepare): the log decides, nothing to release.
    Known,
    /// The cap is reached: refuse.
    Full,
}

impl PreparedSet {
    fn side(&mut self, direction: Direction) -> &mut HashSet<TransferId> {
        match direction {
            Direction::Incoming => &mut self.incoming,
            Direction::Outgoing => &mut self.outgoing,
        }
    }

    /// Makes room for transfer `id` in `direction` unless `cap` transfers are there already.
    pub(super) fn reserve(
        &mut self,
        direction: Direction,
        id: TransferId,
        cap: usize,
    ) -> Reservation {
        let side = self.side(direction);
        if side.contains(&id) {
            Reservation::Known
        } else if side.len() >= cap {
            Reservation::Full
        } else {
            side.insert(id);
            Reservation::New
        }
    }

    /// Adds a transfer found prepared in the log (at start; the cap is not checked: transfers prepared before
    /// a lower cap was configured still count, and new ones wait until they are finished).
    pub(super) fn insert(&mut self, direction: Direction, id: TransferId) {
        self.side(direction).insert(id);
    }

    /// Forgets transfer `id` (finished, or not prepared after all).
    pub(super) fn release(&mut self, id: &TransferId) {
        self.incoming.remove(id);
        self.outgoing.remove(id);
    }

    /// Number of prepared transfers in `direction`.
    pub(super) fn len(&self, direction: Direction) -> usize {
        match direction {
            Direction::Incoming => self.incoming.len(),
            Direction::Outgoing => self.outgoing.len(),
        }
    }
}

impl Trustline {
    /// The peer's [`PrepareLimits`] on one Prepare: its `ilp` and `custom` data, and how far ahead it expires
    /// (by our clock). A legacy `NotAcceptedError` over a limit; exactly at it is fine.
    pub(super) fn check_prepare_limits(&self, p: &Prepare) -> Result<(), WireError> {
        let limits: PrepareLimits = self.inner.limits;
        let entry_bytes = |name: &str| p.protocol_data.get(name).map_or(0, |e| e.data.len());
        let data_bytes = entry_bytes(names::ILP).saturating_add(entry_bytes(names::CUSTOM));
        if data_bytes > limits.max_prepare_data_bytes {
            tracing::info!(peer = %self.inner.name, transfer = %TransferId(p.transfer_id), data_bytes, max = limits.max_prepare_data_bytes, "prepare refused: too much data");
            return Err(WireError::new(
                "NotAcceptedError",
                format!(
                    "ilp and custom data of {data_bytes} bytes exceed the {} bytes allowed per transfer",
                    limits.max_prepare_data_bytes
                ),
            ));
        }
        let expires_at_ms = p.expires_at.unix_millis();
        let ahead_ms = expires_at_ms.saturating_sub(unix_ms(self.now()));
        if ahead_ms > limits.max_hold_ms() {
            tracing::info!(peer = %self.inner.name, transfer = %TransferId(p.transfer_id), ahead_ms, max_hold_ms = limits.max_hold_ms(), "prepare refused: expires too far ahead");
            return Err(WireError::new(
                "NotAcceptedError",
                format!(
                    "expiresAt {} is {ahead_ms} ms ahead, more than the {} ms a transfer may be held",
                    iso_time(expires_at_ms),
                    limits.max_hold_ms()
                ),
            ));
        }
        Ok(())
    }

    /// Reserves a place for a new prepared transfer `id` in `direction`; a legacy `NotAcceptedError` when the
    /// peer's [`PrepareLimits::max_prepared_transfers`] are prepared already.
    pub(super) fn reserve_prepared(
        &self,
        direction: Direction,
        id: TransferId,
    ) -> Result<Reservation, WireError> {
        let cap = self.inner.limits.max_prepared_transfers;
        let mut prepared = lock(&self.inner.prepared);
        match prepared.reserve(direction, id, cap) {
            Reservation::Full => {
                tracing::info!(peer = %self.inner.name, transfer = %id, ?direction, cap, "prepare refused: too many prepared transfers");
                Err(WireError::new(
                    "NotAcceptedError",
                    format!(
                        "{} {} transfers are prepared already, the most allowed with this peer",
                        prepared.len(direction),
                        match direction {
                            Direction::Incoming => "incoming",
                            Direction::Outgoing => "outgoing",
                        }
                    ),
                ))
            }
            r => Ok(r),
        }
    }

    /// Undoes a [`Reservation::New`] of a transfer that did not end up prepared.
    pub(super) fn unreserve(&self, reservation: Reservation, id: &TransferId) {
        if reservation == Reservation::New {
            lock(&self.inner.prepared).release(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_is_refused_at_the_cap_and_a_repeat_is_not_counted_twice() {
        let mut set = PreparedSet::default();
        let id = |n: u8| TransferId([n; 16]);
        assert_eq!(set.reserve(Direction::Incoming, id(1), 2), Reservation::New);
        assert_eq!(
            set.reserve(Direction::Incoming, id(1), 2),
            Reservation::Known
        );
        assert_eq!(set.reserve(Direction::Incoming, id(2), 2), Reservation::New);
        assert_eq!(
            set.reserve(Direction::Incoming, id(3), 2),
            Reservation::Full
        );
        // The other direction has its own cap.
        assert_eq!(set.reserve(Direction::Outgoing, id(3), 2), Reservation::New);
        set.release(&id(1));
        assert_eq!(set.len(Direction::Incoming), 1);
        assert_eq!(set.reserve(Direction::Incoming, id(3), 2), Reservation::New);
    }
}
