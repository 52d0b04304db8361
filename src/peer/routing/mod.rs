//! [`Router`]: forwards prepared transfers between trustlines, as an ILP v1 connector would, and passes their
//! outcomes back. It is a trustline's [`TransferHook`]: told of each new incoming transfer (`forward`), of how
//! each forwarded transfer ended (`settle`), asked to hold a source's expiry while it has the fulfillment
//! (`settle`) and to answer quotes (`quote`). Amounts are converted by `convert`; after a restart `recover`
//! finds every forwarded pair again. Its settings are [`RoutingConfig`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use btp::ilp_v1::{IlpV1Error, IlpV1Packet};
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::clock::{unix_ms, Clock};
use channel_modules::store::{Transfer, TransferId};
use sha2::{Digest, Sha256};

use super::trustline::{TransferHook, TransferOutcome, Trustline};
use crate::config::routing::RoutingConfig;

mod convert;
mod forward;
mod quote;
mod recover;
mod settle;

pub use convert::ConvertError;
pub use quote::QUOTE_EXPIRY;

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
    /// Where the router reads the time: when it refuses a transfer (the ILP v1 Error's `triggeredAt`), until
    /// when a quote is valid, how long recovery waits for a peer. Forwarding reads the source trustline's
    /// clock instead ([`Trustline`]'s own, which decided the source's expiry).
    clock: Arc<dyn Clock>,
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

/// `clock`'s time in Unix milliseconds.
fn now_ms(clock: &dyn Clock) -> i64 {
    unix_ms(clock.now())
}

impl Router {
    /// A router with no peers, reading the time from `clock` (the system clock in a node: the trustlines').
    pub fn new(config: RoutingConfig, clock: Arc<dyn Clock>) -> Arc<Router> {
        Arc::new(Router {
            config,
            clock,
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

    /// Every peer added.
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

    /// An ILP v1 Error triggered by `triggered_by` now (by the router's clock), data `{"message": …}`.
    fn ilp_error(
        &self,
        code: &[u8; 3],
        name: &str,
        triggered_by: String,
        message: &str,
    ) -> IlpV1Error {
        IlpV1Error {
            code: *code,
            name: name.to_owned(),
            triggered_by,
            forwarded_by: Vec::new(),
            triggered_at: Timestamp::from_system_time_clamped(self.clock.now()),
            data: Bytes::from(serde_json::json!({ "message": message }).to_string()),
        }
    }

    /// The forwarded transfers in flight (a poisoned lock is taken as is: the map stays consistent).
    fn lock_forwarded(&self) -> std::sync::MutexGuard<'_, HashMap<(String, TransferId), Source>> {
        self.forwarded.lock().unwrap_or_else(|p| p.into_inner())
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

    async fn hold_incoming_expiry(&self, peer: Trustline, transfer: Transfer) -> bool {
        self.hold_source_expiry(peer, transfer).await
    }

    async fn outgoing_settled(
        &self,
        peer: Trustline,
        transfer: Transfer,
        outcome: TransferOutcome,
    ) {
        self.settle_source(peer, transfer, outcome).await;
    }
}
