//! [`Router`]: forwards prepared transfers between trustlines, as an ILP v1 connector would.
//!
//! An incoming transfer whose `ilp` is an ILP v1 Payment is forwarded to the peer whose prefix is the longest
//! prefix of the Payment's destination account (never back to the peer it came from). The forwarded transfer
//! has the same condition and the same (unchanged) ILP packet, expires [`RoutingConfig::expiry_margin`] before
//! the incoming one but no further ahead than the next peer's hold window
//! ([`PrepareLimits::max_hold`](super::limits::PrepareLimits::max_hold)), and carries the incoming amount
//! converted to the next ledger:
//! * same currency and scale: the same amount;
//! * same currency, other scale: multiplied or divided by a power of ten; a division is exact or rounded
//!   **down** (the bridge keeps the dust), never up;
//! * other currency: only with a configured [`Rate`] (rounded down);
//! * a converted amount of 0, or below the Payment's amount when the next ledger is the destination ledger,
//!   is refused.
//!
//! When the forwarded transfer is fulfilled, the incoming one is fulfilled with the same preimage: sent even
//! if it is past its expiry by our clock (the payer decides whether it is late; we have paid the next hop),
//! and re-sent while its outcome is unknown. Its own expiry timer does not cancel it meanwhile
//! ([`TransferHook::hold_incoming_expiry`]). When the forwarded transfer is rejected, the incoming one is
//! rejected with the same ILP Error plus our address in `forwardedBy`; when it expires, the incoming one is
//! rejected with the R00.
//!
//! The forwarded transfer's ID is derived from the incoming peer and ID ([`forward_id`]), so after a restart
//! [`Router::recover`] finds every pair again from the logs alone: no routing table is stored.
//!
//! ILQP quote requests (ILP v1 types 2, 4, 6 in a Message's `ilp`) are routed the same way and answered for
//! the next ledger ([`Router::quote`]): converted amounts, hold duration plus the expiry margin.
//!
//! A transfer local to the ledger it came from (paying the node itself, e.g. `g.kit.server.bob` from the peer
//! whose prefix is `g.kit.`) is not routed: with [`LocalPayments::Refuse`] (the default, and `ilp-bridge run`)
//! it is refused at once with `F02 Unreachable`; with [`LocalPayments::Embedder`] it is left to the embedder.
//!
//! Refusals (ILP v1 Errors sent back in a Reject): `F02 Unreachable` (no route), `R02 Insufficient Timeout`,
//! `R01 Insufficient Source Amount`, `F00 Bad Request` (no rate between currencies), `T01 Ledger Unreachable`
//! (next peer not connected), `T04 Insufficient Liquidity` (next peer refused the Prepare, or our own limit
//! with it is reached: its balance limit or its prepared transfers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use btp::ilp_v1::{
    ByDestinationResponse, BySourceResponse, IlpV1Error, IlpV1Packet, LiquidityPoint,
    LiquidityResponse,
};
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::store::{Direction, Transfer, TransferId, TransferState};
use num_bigint::BigUint;
use num_traits::{ToPrimitive, Zero};
use sha2::{Digest, Sha256};

use super::error::{log_err_plain, PeerError};
use super::trustline::{TransferHook, TransferOutcome, Trustline};
use crate::config::routing::{LocalPayments, RoutingConfig};

/// How long a liquidity curve the bridge quotes stays valid (ilp-connector's default quote expiry).
pub const QUOTE_EXPIRY: Duration = Duration::from_secs(45);

/// How often recovery checks whether a peer it waits for has connected.
const RECOVERY_POLL: Duration = Duration::from_millis(200);

/// The forwarded transfer's ID for incoming transfer `id` from peer `from`: the first 16 bytes of
/// SHA-256(`"ilp-bridge forward v1"`, peer name, id), with the UUID version-4 bits set.
pub fn forward_id(from: &str, id: &TransferId) -> TransferId {
    let mut h = Sha256::new();
    h.update(b"ilp-bridge forward v1\0");
    h.update(from.as_bytes());
    h.update([0]);
    h.update(id.0);
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    TransferId(out)
}

/// Where a forwarded transfer came from.
#[derive(Clone)]
struct Source {
    peer: Trustline,
    id: TransferId,
}

/// Forwards transfers between trustlines. Create with [`Router::new`], add peers with [`Router::add_peer`].
pub struct Router {
    config: RoutingConfig,
    peers: RwLock<Vec<Trustline>>,
    /// (next peer name, forwarded id) → source.
    forwarded: Mutex<HashMap<(String, TransferId), Source>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn ilp_error(code: &[u8; 3], name: &str, triggered_by: String, message: &str) -> IlpV1Error {
    IlpV1Error {
        code: *code,
        name: name.to_owned(),
        triggered_by,
        forwarded_by: Vec::new(),
        triggered_at: Timestamp::now(),
        data: Bytes::from(serde_json::json!({ "message": message }).to_string()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Router {
    /// A router with no peers.
    pub fn new(config: RoutingConfig) -> Arc<Router> {
        Arc::new(Router {
            config,
            peers: RwLock::new(Vec::new()),
            forwarded: Mutex::new(HashMap::new()),
        })
    }

    /// Adds a peer and installs the router as its transfer hook.
    pub fn add_peer(self: &Arc<Self>, peer: &Trustline) {
        peer.set_hook(Arc::clone(self) as Arc<dyn TransferHook>);
        match self.peers.write() {
            Ok(mut p) => p.push(peer.clone()),
            Err(p) => p.into_inner().push(peer.clone()),
        }
    }

    /// Forgets every peer and removes the router from their hooks (at shutdown).
    pub fn clear(&self) {
        let peers = match self.peers.write() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for p in peers {
            p.clear_hook();
        }
        self.lock_forwarded().clear();
    }

    fn peers(&self) -> Vec<Trustline> {
        match self.peers.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The peer for `destination`: the longest prefix match, excluding `from`.
    pub fn route(&self, destination: &str, from: &str) -> Option<Trustline> {
        self.peers()
            .into_iter()
            .filter(|p| p.name() != from)
            .filter_map(|p| {
                let prefix = p.prefix()?;
                destination
                    .starts_with(&prefix)
                    .then_some((prefix.len(), p))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, p)| p)
    }

    fn lock_forwarded(&self) -> std::sync::MutexGuard<'_, HashMap<(String, TransferId), Source>> {
        self.forwarded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Converts `amount` from `from`'s ledger to `to`'s. Rounds down; `Err` names the reason.
    pub fn convert(&self, from: &Trustline, to: &Trustline, amount: u64) -> Result<u64, String> {
        let (num, den) = self.rate_between(from, to)?;
        (BigUint::from(amount) * num / den)
            .to_u64()
            .ok_or_else(|| "converted amount does not fit in 64 bits".to_owned())
    }

    /// The least amount on `from`'s ledger that [`Router::convert`] turns into at least `amount_to` on `to`'s
    /// (so a quote by destination amount never promises too little). `Err` names the reason.
    pub fn convert_back(
        &self,
        from: &Trustline,
        to: &Trustline,
        amount_to: u64,
    ) -> Result<u64, String> {
        let (num, den) = self.rate_between(from, to)?;
        let scaled = BigUint::from(amount_to) * den;
        let (q, r) = (&scaled / &num, &scaled % &num);
        let up = if r.is_zero() { q } else { q + 1u32 };
        up.to_u64()
            .ok_or_else(|| "converted amount does not fit in 64 bits".to_owned())
    }

    /// Numerator and denominator (both non-zero) turning `from`'s units into `to`'s: the configured rate (or 1
    /// for the same currency) times 10^(scale difference).
    fn rate_between(&self, from: &Trustline, to: &Trustline) -> Result<(BigUint, BigUint), String> {
        let info = |t: &Trustline| {
            let i = t.get_info().unwrap_or(serde_json::Value::Null);
            (
                i.get("currencyCode")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned),
                i.get("currencyScale").and_then(|s| s.as_u64()).unwrap_or(0),
            )
        };
        let (code_in, scale_in) = info(from);
        let (code_out, scale_out) = info(to);
        let rate = self
            .config
            .rates
            .get(&(from.name().to_owned(), to.name().to_owned()));
        let (mut num, mut den) = match rate {
            Some(r) => (r.numerator.clone(), r.denominator.clone()),
            None if code_in == code_out => (BigUint::from(1u32), BigUint::from(1u32)),
            None => {
                return Err(format!(
                    "no rate configured from {} ({}) to {} ({})",
                    from.name(),
                    code_in.unwrap_or_default(),
                    to.name(),
                    code_out.unwrap_or_default()
                ))
            }
        };
        // Scales may come from the peer's info reply: bound them before raising 10 to their difference, so a
        // bad value is refused instead of building a huge number.
        for (name, scale) in [(from.name(), scale_in), (to.name(), scale_out)] {
            if scale > u64::from(u8::MAX) {
                return Err(format!(
                    "ledger {name} has currencyScale {scale}, above 255"
                ));
            }
        }
        let ten = BigUint::from(10u32);
        if scale_out >= scale_in {
            num *= ten.pow((scale_out - scale_in) as u32);
        } else {
            den *= ten.pow((scale_in - scale_out) as u32);
        }
        Ok((num, den))
    }

    /// Answers an ILQP quote request from `from` for a destination reachable through the bridge, as an ILP v1
    /// connector answers for a ledger it is connected to: the next ledger is found by longest prefix (like a
    /// transfer's), amounts are converted with [`Router::convert`] (by source: rounded down) and
    /// [`Router::convert_back`] (by destination: rounded up), and the source hold duration is the destination's
    /// plus [`RoutingConfig::expiry_margin`] (what a forwarded transfer takes off its expiry). A liquidity
    /// request gets a two-point curve (`0 → 0` to the largest convertible amount) for the next ledger's prefix,
    /// valid for [`QUOTE_EXPIRY`].
    ///
    /// `None` leaves the request to the trustline's request handler: the destination is our own account, or
    /// lies on the ledger the request came from. Refusals are ILP v1 Errors: `F02 Unreachable` (no route),
    /// `T01 Ledger Unreachable` (next peer not connected), `F00 Bad Request` (no rate, or an amount or hold
    /// duration out of range).
    pub fn quote(&self, from: &Trustline, request: &IlpV1Packet) -> Option<IlpV1Packet> {
        let destination = match request {
            IlpV1Packet::LiquidityRequest(r) => &r.destination_account,
            IlpV1Packet::BySourceRequest(r) => &r.destination_account,
            IlpV1Packet::ByDestinationRequest(r) => &r.destination_account,
            _ => return None,
        };
        if from
            .account()
            .is_some_and(|own| destination.starts_with(&own))
        {
            return None;
        }
        let me = from.account().unwrap_or_default();
        let Some(next) = self.route(destination, from.name()) else {
            if from.prefix().is_some_and(|p| destination.starts_with(&p)) {
                return None;
            }
            return Some(IlpV1Packet::Error(ilp_error(
                b"F02",
                "Unreachable",
                me,
                "no route to destination",
            )));
        };
        let bad_request = |reason: &str| {
            Some(IlpV1Packet::Error(ilp_error(
                b"F00",
                "Bad Request",
                from.account().unwrap_or_default(),
                reason,
            )))
        };
        if !next.is_connected() {
            return Some(IlpV1Packet::Error(ilp_error(
                b"T01",
                "Ledger Unreachable",
                me,
                "next ledger is not connected",
            )));
        }
        let margin = u32::try_from(self.config.expiry_margin.as_millis()).unwrap_or(u32::MAX);
        let hold = |destination_hold: u32| destination_hold.checked_add(margin);
        tracing::debug!(from = from.name(), to = next.name(), destination = %destination, "answering quote");
        Some(match request {
            IlpV1Packet::BySourceRequest(r) => {
                let Some(source_hold_duration) = hold(r.destination_hold_duration) else {
                    return bad_request("hold duration too long");
                };
                match self.convert(from, &next, r.source_amount) {
                    Ok(destination_amount) => IlpV1Packet::BySourceResponse(BySourceResponse {
                        destination_amount,
                        source_hold_duration,
                    }),
                    Err(reason) => return bad_request(&reason),
                }
            }
            IlpV1Packet::ByDestinationRequest(r) => {
                let Some(source_hold_duration) = hold(r.destination_hold_duration) else {
                    return bad_request("hold duration too long");
                };
                match self.convert_back(from, &next, r.destination_amount) {
                    Ok(source_amount) => {
                        IlpV1Packet::ByDestinationResponse(ByDestinationResponse {
                            source_amount,
                            source_hold_duration,
                        })
                    }
                    Err(reason) => return bad_request(&reason),
                }
            }
            IlpV1Packet::LiquidityRequest(r) => {
                let Some(source_hold_duration) = hold(r.destination_hold_duration) else {
                    return bad_request("hold duration too long");
                };
                let (num, den) = match self.rate_between(from, &next) {
                    Ok(r) => r,
                    Err(reason) => return bad_request(&reason),
                };
                // The largest source amount whose conversion still fits in 64 bits.
                let max_x = (BigUint::from(u64::MAX) * &den / &num)
                    .to_u64()
                    .unwrap_or(u64::MAX);
                let max_y = (BigUint::from(max_x) * num / den)
                    .to_u64()
                    .unwrap_or(u64::MAX);
                let expires_at = Timestamp::now()
                    .checked_add(QUOTE_EXPIRY)
                    .unwrap_or(Timestamp::MAX);
                IlpV1Packet::LiquidityResponse(LiquidityResponse {
                    liquidity_curve: vec![
                        LiquidityPoint { x: 0, y: 0 },
                        LiquidityPoint { x: max_x, y: max_y },
                    ],
                    applies_to_prefix: next.prefix().unwrap_or_default(),
                    source_hold_duration,
                    expires_at,
                })
            }
            _ => return None,
        })
    }

    /// Forwards one incoming transfer (the hook calls this).
    async fn forward(&self, from: Trustline, transfer: Transfer) {
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
                ilp_error(b"F02", "Unreachable", me, "no route to destination"),
            )
            .await;
            return;
        };
        if !next.is_connected() {
            self.refuse(
                &from,
                transfer.id,
                ilp_error(
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
                ilp_error(
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
                    ilp_error(b"F00", "Bad Request", me, &reason),
                )
                .await;
                return;
            }
        };
        let final_hop = next
            .prefix()
            .is_some_and(|p| payment.account.starts_with(&p));
        if amount == 0 || (final_hop && amount < payment.amount) {
            self.refuse(
                &from,
                transfer.id,
                ilp_error(
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
        tracing::debug!(from = from.name(), to = next.name(), incoming = %transfer.id, outgoing = %out.id, amount, "forwarding");
        match next.send_transfer(out.clone()).await {
            Ok(()) => {}
            Err(PeerError::Rpc(
                btp::transport::RpcError::Timeout
                | btp::transport::RpcError::Disconnected
                | btp::transport::RpcError::Closed,
            )) => {
                // May be prepared there; its outcome (or expiry) settles the incoming one.
            }
            Err(e) => {
                self.lock_forwarded()
                    .remove(&(next.name().to_owned(), out.id));
                let err = match e {
                    PeerError::Remote(r) => ilp_error(
                        b"T04",
                        "Insufficient Liquidity",
                        me,
                        &format!("next peer refused: {} {}", r.code_str(), r.data),
                    ),
                    // Our own limit with the next peer (its balance, or its prepared transfers) is reached.
                    PeerError::Refused(w) if w.name == "NotAcceptedError" => ilp_error(
                        b"T04",
                        "Insufficient Liquidity",
                        me,
                        &format!("refused towards the next peer: {}", w.message),
                    ),
                    other => ilp_error(b"T01", "Ledger Unreachable", me, &other.to_string()),
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
                let err = ilp_error(
                    b"F02",
                    "Unreachable",
                    from.account().unwrap_or_default(),
                    &format!("{kind}: nothing on this node receives payments"),
                );
                self.refuse(from, id, err).await;
            }
        }
    }

    async fn refuse(&self, from: &Trustline, id: TransferId, err: IlpV1Error) {
        tracing::debug!(peer = from.name(), transfer = %id, code = err.code_str(), "refusing payment");
        if let Err(e) = from.reject_incoming_transfer(id, err).await {
            tracing::warn!(peer = from.name(), transfer = %id, error = %e, "reject failed");
        }
    }

    /// Fulfills the source transfer: at once when its peer is connected, else (and whenever the outcome is
    /// unknown) the source trustline delivers it itself, from a durable note, across reconnects and restarts.
    /// We have paid the next hop, so the Fulfill goes out even when the source is past its expiry by our clock:
    /// the payer decides whether it is late.
    async fn fulfill_back(&self, source: Source, fulfillment: [u8; 32], ilp: Option<Bytes>) {
        let result = match source
            .peer
            .fulfill_when_possible(source.id, fulfillment, ilp)
            .await
        {
            // The trustline re-sends a Fulfill whose outcome is unknown.
            Err(PeerError::Rpc(_)) => Ok(()),
            other => other,
        };
        if let Err(e) = result {
            tracing::warn!(peer = source.peer.name(), transfer = %source.id, error = %e, "fulfilling the source transfer failed");
        }
    }

    /// Waits (polling) until `ready` gives `Some` or the wall clock passes `until_ms`. `ready` should hold
    /// only weak references between polls, so a node that shuts down meanwhile is not kept alive (its
    /// database stays locked while anything holds it).
    async fn wait_for<T>(until_ms: i64, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
        loop {
            if let Some(t) = ready() {
                return Some(t);
            }
            if now_ms() >= until_ms {
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
    /// steps that need a connection wait for it. Call after the peers' [`Trustline::start`].
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
                        let err = ilp_error(
                            b"R00",
                            "Transfer Timed Out",
                            peer.account().unwrap_or_default(),
                            "forwarded transfer was cancelled",
                        );
                        let (peer, id) = (Arc::downgrade(&source.peer.inner), source.id);
                        drop(source);
                        tokio::spawn(async move {
                            // Without a connection the source simply expires; nothing was paid onwards.
                            let ready = || {
                                let peer = Trustline {
                                    inner: peer.upgrade()?,
                                };
                                let me = me.upgrade()?;
                                peer.is_connected().then_some((me, peer))
                            };
                            if let Some((me, peer)) = Self::wait_for(expires_at_ms, ready).await {
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
                        let (p, t) = (Arc::downgrade(&peer.inner), rec.transfer.clone());
                        tokio::spawn(async move {
                            // Forwarded once its next peer is reachable; a local one (decided by `forward`)
                            // once its own peer is, since a client learns its address only at connect.
                            let routable = || {
                                let p = Trustline {
                                    inner: p.upgrade()?,
                                };
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
                            if let Some((me, p)) = Self::wait_for(expires_at_ms, routable).await {
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

#[async_trait]
impl TransferHook for Router {
    async fn incoming_prepared(&self, peer: Trustline, transfer: Transfer) {
        self.forward(peer, transfer).await;
    }

    async fn quote_request(&self, peer: Trustline, request: IlpV1Packet) -> Option<Bytes> {
        self.quote(&peer, &request).map(|p| p.to_bytes())
    }

    /// Holds the expiry of a source whose forwarded transfer the next hop fulfilled, or is fulfilling right
    /// now (its Fulfill passed the expiry check and is being applied), and delivers the fulfillment. The
    /// forwarded transfer is found by its ID in the other peers' logs, as in [`Router::recover`], so this
    /// also covers a restart, where the expiry of a source can fire before recovery.
    ///
    /// Why this cannot miss a Fulfill that is being accepted: the next peer marks its transfer before it
    /// reads its clock to check the expiry, and the source's timer read the clock, at or after the source's
    /// expiry, before this looks for the mark. If the mark is not seen, the next peer's reading comes later,
    /// past the forwarded expiry (the margin is at least 1 ms), so it refuses that Fulfill.
    async fn hold_incoming_expiry(&self, peer: Trustline, transfer: Transfer) -> bool {
        let out_id = forward_id(peer.name(), &transfer.id);
        for next in self.peers().into_iter().filter(|p| p.name() != peer.name()) {
            if next.is_accepting_fulfill(&out_id) {
                return true;
            }
            match next.log().get(&out_id).await {
                Ok(Some(out)) => {
                    let TransferState::Fulfilled { fulfillment } = out.state else {
                        return false;
                    };
                    tracing::info!(peer = peer.name(), transfer = %transfer.id, next = next.name(), "source due to expire but its forwarded transfer was fulfilled; fulfilling it");
                    let source = Source {
                        peer,
                        id: transfer.id,
                    };
                    self.fulfill_back(source, fulfillment, None).await;
                    return true;
                }
                Ok(None) => {}
                Err(e) => {
                    // Unknown: hold, and look again at the next attempt.
                    tracing::warn!(peer = peer.name(), transfer = %transfer.id, next = next.name(), error = %e, "cannot read the forwarded transfer; source expiry held");
                    return true;
                }
            }
        }
        false
    }

    async fn outgoing_settled(
        &self,
        peer: Trustline,
        transfer: Transfer,
        outcome: TransferOutcome,
    ) {
        let Some(source) = self
            .lock_forwarded()
            .remove(&(peer.name().to_owned(), transfer.id))
        else {
            return;
        };
        match outcome {
            TransferOutcome::Fulfilled { fulfillment, ilp } => {
                self.fulfill_back(source, fulfillment, ilp).await
            }
            TransferOutcome::Rejected(mut err) | TransferOutcome::Expired(mut err) => {
                if let Some(me) = source.peer.account() {
                    err.forwarded_by.push(me);
                }
                self.refuse(&source.peer, source.id, err).await;
            }
        }
    }
}
