//! Forwarding one incoming transfer: to the peer whose prefix is the longest prefix of its ILP v1 Payment's
//! destination (never back to the peer it came from), with the same condition and ILP packet, the amount
//! converted (`convert`), expiring the configured margin before the incoming one but no further ahead than the
//! next peer's hold window. The forwarded transfer's ID is [`forward_id`] of the incoming one.
//!
//! A transfer local to the ledger it came from (paying the node itself, e.g. `g.kit.server.bob` from the peer
//! whose prefix is `g.kit.`) is not routed: with [`LocalPayments::Refuse`] (the default, and `ilp-bridge run`)
//! it is refused at once with `F02 Unreachable`; with [`LocalPayments::Embedder`] it is left to the embedder.
//!
//! Refusals (ILP v1 Errors sent back in a Reject): `F02 Unreachable` (no route), `R02 Insufficient Timeout`,
//! `R01 Insufficient Source Amount` (converted to 0, or below the Payment's amount on the destination ledger),
//! `F00 Bad Request` (no rate between currencies), `T01 Ledger Unreachable` (next peer not connected), `T04
//! Insufficient Liquidity` (next peer refused the Prepare, or our own limit with it is reached: its balance
//! limit or its prepared transfers).

use btp::ilp_v1::IlpV1Packet;
use btp::transport::RpcError;
use bytes::Bytes;
use channel_modules::amount::LedgerAmount;
use channel_modules::store::{Transfer, TransferId};

use super::{forward_id, Router, Source};
use crate::config::routing::LocalPayments;
use crate::peer::error::PeerError;
use crate::peer::trustline::Trustline;

impl Router {
    /// Forwards one incoming transfer (the hook calls this).
    pub(super) async fn forward(&self, from: Trustline, transfer: Transfer) {
        let Ok(IlpV1Packet::Payment(payment)) =
            IlpV1Packet::decode(&Bytes::from(transfer.ilp.clone()))
        else {
            tracing::debug!(peer = from.name(), transfer = %transfer.id, "incoming transfer has no ILP v1 payment; not routed");
            return;
        };
        if from
            .account()
            .is_some_and(|own| payment.account.starts_with(&own))
        {
            self.local_payment(
                &from,
                transfer.id,
                &payment.account,
                "payment for this node",
            )
            .await;
            return;
        }
        let me = from.account().unwrap_or_default();
        let Some(next) = self.route(&payment.account, from.name()) else {
            if from
                .prefix()
                .is_some_and(|p| payment.account.starts_with(&p))
            {
                self.local_payment(
                    &from,
                    transfer.id,
                    &payment.account,
                    "payment to another account of the ledger it came from",
                )
                .await;
                return;
            }
            self.refuse(
                &from,
                transfer.id,
                self.ilp_error(b"F02", "Unreachable", me, "no route to destination"),
            )
            .await;
            return;
        };
        if !next.is_connected() {
            self.refuse(
                &from,
                transfer.id,
                self.ilp_error(
                    b"T01",
                    "Ledger Unreachable",
                    me,
                    "next ledger is not connected",
                ),
            )
            .await;
            return;
        }
        let margin = i64::try_from(self.config.expiry_margin.as_millis()).unwrap_or(i64::MAX);
        let window = i64::try_from(self.config.min_forward_window.as_millis()).unwrap_or(i64::MAX);
        let now = from.clock_ms();
        // Never more than the next peer's hold window ahead: the incoming transfer was refused beyond its own
        // peer's window, but it may have been prepared under a larger one (or before there was one).
        let expires_at_ms = transfer
            .expires_at_ms
            .saturating_sub(margin)
            .min(now.saturating_add(next.limits().max_hold_ms()));
        if expires_at_ms < now.saturating_add(window) {
            self.refuse(
                &from,
                transfer.id,
                self.ilp_error(
                    b"R02",
                    "Insufficient Timeout",
                    me,
                    "not enough time left to forward",
                ),
            )
            .await;
            return;
        }
        let amount = match self.convert(&from, &next, transfer.amount) {
            Ok(a) => a,
            Err(reason) => {
                self.refuse(
                    &from,
                    transfer.id,
                    self.ilp_error(b"F00", "Bad Request", me, &reason.to_string()),
                )
                .await;
                return;
            }
        };
        let final_hop = next
            .prefix()
            .is_some_and(|p| payment.account.starts_with(&p));
        // An ILP v1 payment's amount is on the destination ledger, in its units.
        if amount.is_zero() || (final_hop && amount < LedgerAmount(payment.amount)) {
            self.refuse(
                &from,
                transfer.id,
                self.ilp_error(
                    b"R01",
                    "Insufficient Source Amount",
                    me,
                    "amount too small after conversion",
                ),
            )
            .await;
            return;
        }
        let out = Transfer {
            id: forward_id(from.name(), &transfer.id),
            amount,
            execution_condition: transfer.execution_condition,
            expires_at_ms,
            ilp: transfer.ilp.clone(),
            custom: None,
        };
        self.lock_forwarded().insert(
            (next.name().to_owned(), out.id),
            Source {
                peer: from.clone(),
                id: transfer.id,
            },
        );
        tracing::debug!(from = from.name(), to = next.name(), incoming = %transfer.id, outgoing = %out.id, amount = amount.0, "forwarding");
        match next.send_transfer(out.clone()).await {
            Ok(()) => {}
            Err(PeerError::Rpc(RpcError::Timeout | RpcError::Disconnected | RpcError::Closed)) => {
                // May be prepared there; its outcome (or expiry) settles the incoming one.
            }
            Err(e) => {
                self.lock_forwarded()
                    .remove(&(next.name().to_owned(), out.id));
                let err = match e {
                    PeerError::Remote(r) => self.ilp_error(
                        b"T04",
                        "Insufficient Liquidity",
                        me,
                        &format!("next peer refused: {} {}", r.code_str(), r.data),
                    ),
                    // Our own limit with the next peer (its balance, or its prepared transfers) is reached.
                    PeerError::Refused(w) if w.name == "NotAcceptedError" => self.ilp_error(
                        b"T04",
                        "Insufficient Liquidity",
                        me,
                        &format!("refused towards the next peer: {}", w.message),
                    ),
                    other => self.ilp_error(b"T01", "Ledger Unreachable", me, &other.to_string()),
                };
                self.refuse(&from, transfer.id, err).await;
            }
        }
    }

    /// A transfer that is local to the ledger it came from (see [`LocalPayments`]): left to the embedder, or
    /// refused at once with `F02 Unreachable` when nothing on the node receives payments.
    async fn local_payment(
        &self,
        from: &Trustline,
        id: TransferId,
        destination: &str,
        kind: &'static str,
    ) {
        match self.config.local_payments {
            LocalPayments::Embedder => {
                tracing::debug!(peer = from.name(), transfer = %id, %destination, kind, "local payment left to the embedder");
            }
            LocalPayments::Refuse => {
                tracing::info!(peer = from.name(), transfer = %id, %destination, kind, "payment refused: nothing on this node receives payments");
                let err = self.ilp_error(
                    b"F02",
                    "Unreachable",
                    from.account().unwrap_or_default(),
                    &format!("{kind}: nothing on this node receives payments"),
                );
                self.refuse(from, id, err).await;
            }
        }
    }
}
