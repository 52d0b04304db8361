//! Recovery after a restart. The forwarded transfer's ID is derived from the incoming peer and ID
//! ([`forward_id`]), so [`Router::recover`] finds every pair again from the logs alone: no routing table is
//! stored.

use std::sync::Arc;
use std::time::Duration;

use btp::ilp_v1::IlpV1Packet;
use bytes::Bytes;
use channel_modules::clock::Clock;
use channel_modules::store::{Direction, TransferState};

use super::{forward_id, now_ms, Router, Source};
use crate::peer::error::{log_err_plain, PeerError};

/// How often recovery checks whether a peer it waits for has connected.
const RECOVERY_POLL: Duration = Duration::from_millis(200);

impl Router {
    /// Waits (polling) until `ready` gives `Some` or `clock` passes `until_ms`. `ready` should hold only weak
    /// references between polls, so a node that shuts down meanwhile is not kept alive (its database stays
    /// locked while anything holds it).
    async fn wait_for<T>(
        clock: &dyn Clock,
        until_ms: i64,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        loop {
            if let Some(t) = ready() {
                return Some(t);
            }
            if now_ms(clock) >= until_ms {
                return None;
            }
            tokio::time::sleep(RECOVERY_POLL).await;
        }
    }

    /// After a restart: finds every forwarded pair again from the logs and finishes what can be finished:
    /// sources whose forwarded transfer was fulfilled are fulfilled, those whose forwarded transfer was
    /// cancelled are rejected, those never forwarded are forwarded once their next peer is reachable (if
    /// time is left). A forwarded transfer is found by its ID ([`forward_id`]) in the other peers' logs, not
    /// by routing, so this works before any peer has connected (a client learns its prefix only then); the
    /// steps that need a connection wait for it. Call after the peers'
    /// [`Trustline::start`](crate::peer::Trustline::start).
    pub async fn recover(self: &Arc<Self>) -> Result<usize, PeerError> {
        let mut n = 0;
        let peers = self.peers();
        for peer in &peers {
            let prepared = peer.log().prepared().await.map_err(log_err_plain)?;
            for rec in prepared
                .into_iter()
                .filter(|r| r.direction == Direction::Incoming)
            {
                let out_id = forward_id(peer.name(), &rec.transfer.id);
                let mut found = None;
                for next in peers.iter().filter(|p| p.name() != peer.name()) {
                    if let Ok(Some(out)) = next.log().get(&out_id).await {
                        found = Some((next.clone(), out.state));
                        break;
                    }
                }
                let source = Source {
                    peer: peer.clone(),
                    id: rec.transfer.id,
                };
                let expires_at_ms = rec.transfer.expires_at_ms;
                let me = Arc::downgrade(self);
                match found {
                    Some((next, TransferState::Prepared)) => {
                        n += 1;
                        self.lock_forwarded()
                            .insert((next.name().to_owned(), out_id), source);
                    }
                    Some((_, TransferState::Fulfilled { fulfillment })) => {
                        // We paid the next hop: the source trustline delivers the Fulfill whenever it can.
                        n += 1;
                        tokio::spawn(async move {
                            if let Err(e) = source
                                .peer
                                .fulfill_when_possible(source.id, fulfillment, None)
                                .await
                            {
                                tracing::error!(peer = source.peer.name(), transfer = %source.id, error = %e, "cannot fulfill a source whose forwarded transfer was fulfilled");
                            }
                        });
                    }
                    Some((_, TransferState::Cancelled { .. })) => {
                        n += 1;
                        let err = self.ilp_error(
                            b"R00",
                            "Transfer Timed Out",
                            peer.account().unwrap_or_default(),
                            "forwarded transfer was cancelled",
                        );
                        let (peer, id) = (source.peer.downgrade(), source.id);
                        drop(source);
                        let clock = Arc::clone(&self.clock);
                        tokio::spawn(async move {
                            // Without a connection the source simply expires; nothing was paid onwards.
                            let ready = || {
                                let peer = peer.upgrade()?;
                                let me = me.upgrade()?;
                                peer.is_connected().then_some((me, peer))
                            };
                            if let Some((me, peer)) =
                                Self::wait_for(&*clock, expires_at_ms, ready).await
                            {
                                me.refuse(&peer, id, err).await;
                            }
                        });
                    }
                    None => {
                        let Ok(IlpV1Packet::Payment(payment)) =
                            IlpV1Packet::decode(&Bytes::from(rec.transfer.ilp.clone()))
                        else {
                            continue;
                        };
                        n += 1;
                        let (p, t) = (peer.downgrade(), rec.transfer.clone());
                        let clock = Arc::clone(&self.clock);
                        tokio::spawn(async move {
                            // Forwarded once its next peer is reachable; a local one (decided by `forward`)
                            // once its own peer is, since a client learns its address only at connect.
                            let routable = || {
                                let p = p.upgrade()?;
                                let me = me.upgrade()?;
                                let local = p
                                    .prefix()
                                    .is_some_and(|prefix| payment.account.starts_with(&prefix));
                                let ready = p.is_connected()
                                    && (local
                                        || me
                                            .route(&payment.account, p.name())
                                            .is_some_and(|next| next.is_connected()));
                                ready.then_some((me, p))
                            };
                            if let Some((me, p)) =
                                Self::wait_for(&*clock, expires_at_ms, routable).await
                            {
                                me.forward(p, t).await;
                            }
                        });
                    }
                }
            }
        }
        tracing::info!(pairs = n, "router recovered forwarded transfers");
        Ok(n)
    }
}
