//! After a restart: finishing or expiring what the pair had in flight, from the two logs alone.
//!
//! | modern record | legacy transfer | done |
//! |--|--|--|
//! | P → M, fulfilled | incoming, prepared | M's Fulfill is delivered to P ([`Trustline::fulfill_when_possible`]) |
//! | P → M, prepared | incoming, prepared | M's answer is lost with the connection: the outcome is unknown; the legacy transfer expires on its own, the record at its expiry |
//! | P → M, prepared | finished or missing | the record is cancelled |
//! | M → P, prepared | outgoing, fulfilled | written down as fulfilled: P was paid, M's Prepare is gone (the bridge's loss, counted) |
//! | M → P, prepared | outgoing, prepared | P's outcome arrives later and is written down (no Prepare waits for it any more); the record expires otherwise |
//! | M → P, prepared | cancelled or missing | the record is cancelled |
//!
//! [`Trustline::fulfill_when_possible`]: crate::peer::trustline::Trustline::fulfill_when_possible

use channel_modules::store::{Direction, TransferLogError, TransferState};

use super::pair::{connector_amount_of, legacy_id_of, modern_id, BridgedPair, Counters};

/// What [`BridgedPair::recover`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Fulfills from M delivered to P again.
    pub fulfills_resumed: usize,
    /// Prepares to M whose outcome is unknown.
    pub unknown: usize,
    /// Modern records closed because their legacy side had finished.
    pub closed: usize,
    /// Transfers to P fulfilled while no Prepare from M waited.
    pub undelivered: usize,
}

impl BridgedPair {
    /// Finishes or expires what was in flight before a restart (see the module docs). Call after the trustline
    /// started (its timers are armed) and before the link to M carries traffic.
    pub async fn recover(&self) -> Result<Recovered, TransferLogError> {
        let mut found = Recovered::default();
        let legacy_log = self.inner.trustline.log();
        // Fulfills M sent for transfers P still holds prepared.
        for rec in legacy_log.prepared().await? {
            if rec.direction != Direction::Incoming {
                continue;
            }
            let id = modern_id(self.name(), &rec.transfer.id);
            if let Some(modern) = self.inner.modern_log.get(&id).await? {
                if let TransferState::Fulfilled { fulfillment } = modern.state {
                    found.fulfills_resumed += 1;
                    if let Err(error) = self
                        .inner
                        .trustline
                        .fulfill_when_possible(rec.transfer.id, fulfillment, None)
                        .await
                    {
                        tracing::error!(pair = self.name(), transfer = %rec.transfer.id, %error, "resuming a modern Fulfill failed");
                    }
                }
            }
        }
        // Modern records still open.
        for modern in self.inner.modern_log.prepared().await? {
            let id = modern.transfer.id;
            let legacy = match legacy_id_of(&modern.transfer) {
                Some(l) => legacy_log.get(&l).await?,
                None => None,
            };
            let legacy_state = legacy.map(|l| l.state);
            match (modern.direction, legacy_state) {
                (Direction::Outgoing, Some(TransferState::Prepared)) => {
                    found.unknown += 1;
                    Counters::add(
                        &self.inner.counters.unknown_count,
                        &self.inner.counters.unknown_amount,
                        connector_amount_of(&modern.transfer),
                    );
                    tracing::warn!(pair = self.name(), modern = %id, amount = connector_amount_of(&modern.transfer).0, "a transfer sent to the modern connector before the restart has no known outcome");
                    self.expire_modern_later(id, modern.transfer.expires_at_ms);
                }
                (Direction::Incoming, Some(TransferState::Fulfilled { fulfillment })) => {
                    found.undelivered += 1;
                    Counters::add(
                        &self.inner.counters.undelivered_count,
                        &self.inner.counters.undelivered_amount,
                        connector_amount_of(&modern.transfer),
                    );
                    tracing::error!(pair = self.name(), modern = %id, amount = connector_amount_of(&modern.transfer).0, "the legacy peer was paid for a Prepare from the modern connector that was lost in the restart");
                    self.inner.modern_log.fulfill(&id, &fulfillment).await?;
                }
                (Direction::Incoming, Some(TransferState::Prepared)) => {
                    self.expire_modern_later(id, modern.transfer.expires_at_ms);
                }
                _ => {
                    found.closed += 1;
                    self.inner
                        .modern_log
                        .cancel(&id, "its legacy side finished before a restart")
                        .await?;
                }
            }
        }
        if found != Recovered::default() {
            tracing::info!(
                pair = self.name(),
                ?found,
                "bridge recovered transfers in flight"
            );
        }
        Ok(found)
    }
}
