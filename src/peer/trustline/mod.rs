//! [`Trustline`]: one BTP/1.0 peer relationship with a legacy `ilp-plugin-payment-channel-framework` 1.1.3 /
//! 1.3.x, byte-compatible with it (docs/legacy-btp.md §5–§9, §13–§15).
//!
//! The core does no IO of its own: it answers the peer's requests (`incoming`) and sends its own through a
//! [`PeerLink`]. Balances and limits live in the main [`TransferLog`]. The channel module's hooks run where the
//! legacy framework runs them (docs/legacy-btp.md §13):
//!
//! | when | hook | an `Err` |
//! |--|--|--|
//! | [`Trustline::connect`] | `connect` | `connect` fails |
//! | [`Trustline::disconnect`] | `disconnect` | logged |
//! | received Prepare, after its amount is applied to IFP | `handle_incoming_prepare` | the transfer is cancelled; the peer gets an Error with the module error's legacy name/code |
//! | received Fulfill of our transfer, after it is applied | `create_outgoing_claim(total OF)` | logged; the Response carries no claim |
//! | after our Fulfill gets its Response | `handle_incoming_claim(claim or None)` | logged |
//! | Message whose entries are not built-in side protocols | `handle_rpc(name, args)` per entry | Error reply with its legacy name |
//!
//! Where ilp-bridge deliberately differs from legacy (a legacy bug it does not reproduce, docs/legacy-btp.md
//! §16), the file of that behaviour says so. Files: `api` (the library API mirroring the legacy plugin),
//! `incoming` (the peer's requests), `fulfill` (our Fulfill), `guards` (who may finish a transfer), `expiry`,
//! `limits` (the peer's [`PrepareLimits`]), `hooks` (router and request handler), `side_protocols`
//! (protocolData entries), [`legacy_format`] (JavaScript-compatible text).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use btp::packet::{Packet, ProtocolData};
use btp::transport::{Reply, RpcError, DEFAULT_REQUEST_TIMEOUT};
use btp::Timestamp;
use channel_modules::amount::{LedgerBalance, ModuleUnits};
use channel_modules::clock::{unix_ms, Clock, SystemClock};
use channel_modules::store::{TransferId, TransferLog, TransferLogError, TransferRecord};
use channel_modules::sync::lock;
use channel_modules::{ChannelContext, ChannelModule, Claim, ModuleError};
use serde_json::Value;
use tokio::sync::broadcast;

use super::error::PeerError;
use super::events::{EventReceiver, PeerEvent, EVENT_CHANNEL_CAPACITY};
use super::host::{ModuleRpc, PeerStores, TrustlineHost};
use super::identities::NodeIdentities;
use super::link::PeerLink;
#[cfg(any(test, feature = "testing"))]
use super::link::{LinkEnd, PacketHandler};
use crate::config::legacy::PeerConfig;
use crate::config::prepare_limits::PrepareLimits;

mod api;
mod expiry;
mod fulfill;
mod guards;
mod hooks;
mod incoming;
pub mod legacy_format;
mod limits;
mod side_protocols;
mod unsure_fulfill;

use expiry::ExpiryQueue;
pub use expiry::{EXPIRY_RETRY_DELAY, MAX_TIMER_CHUNK};
pub use fulfill::{fulfillment_matches, FULFILL_RETRY_MAX, FULFILL_RETRY_MIN};
use guards::Settling;
pub use hooks::{IncomingRequestHandler, TransferHook, TransferOutcome};
pub use incoming::TrustlineHandler;
use limits::PreparedSet;

/// Tunables of a trustline.
#[derive(Clone)]
pub struct TrustlineOptions {
    /// The clock (wall clock in production).
    pub clock: Arc<dyn Clock>,
    /// How long a request waits for the peer's reply (legacy 5000 ms).
    pub request_timeout: Duration,
    /// The node's ledger identity registry, shared by all its trustlines (a fresh in-memory one by default;
    /// [`PeerNode::start`](super::PeerNode::start) puts the durable one of the node's database here).
    pub identities: Arc<NodeIdentities>,
}

impl Default for TrustlineOptions {
    fn default() -> Self {
        TrustlineOptions {
            clock: Arc::new(SystemClock),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            identities: NodeIdentities::memory(),
        }
    }
}

/// Shared state of a trustline (behind [`Trustline`]'s `Arc`).
struct TrustlineInner {
    name: String,
    stateful: bool,
    configured_prefix: Option<String>,
    prefix: RwLock<Option<String>>,
    info: RwLock<Option<Value>>,
    log: Arc<dyn TransferLog>,
    module: Option<Arc<dyn ChannelModule>>,
    ctx: ChannelContext,
    link: RwLock<Option<Arc<dyn PeerLink>>>,
    events: broadcast::Sender<Arc<PeerEvent>>,
    request_handler: RwLock<Option<Arc<dyn IncomingRequestHandler>>>,
    hook: RwLock<Option<Arc<dyn TransferHook>>>,
    /// Deadlines of the prepared transfers, for the trustline's one expiry task.
    expiries: Arc<ExpiryQueue>,
    /// Who may finish each incoming transfer right now: our Fulfill, or its expiry / our Reject.
    settling: Mutex<Settling>,
    /// How much the peer can make us hold.
    limits: PrepareLimits,
    /// The prepared transfers, counted against `limits.max_prepared_transfers`.
    prepared: Mutex<PreparedSet>,
    connected: AtomicBool,
    connect_lock: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    request_timeout: Duration,
    /// The least total the module is asked to settle on each received Fulfill (see
    /// [`Trustline::raise_claim_floor`]); zero unless the host raises it.
    claim_floor: Mutex<ModuleUnits>,
    /// The highest total the module settled since the process started (see [`Trustline::settled_total`]).
    settled: Mutex<ModuleUnits>,
    /// Our Fulfills the peer answered without saying whether it applied them (see `unsure_fulfill`).
    unsure: Mutex<unsure_fulfill::UnsureFulfills>,
    /// The last failure seen with this peer (see [`Trustline::last_error`]).
    last_error: Mutex<Option<String>>,
}

impl Drop for TrustlineInner {
    fn drop(&mut self) {
        self.expiries.abort();
    }
}

/// One BTP/1.0 trustline. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Trustline {
    inner: Arc<TrustlineInner>,
}

/// A handle to a [`Trustline`] that does not keep it alive (a task waiting for a peer holds one, so a node
/// shutting down meanwhile is not kept running).
#[derive(Clone)]
pub(crate) struct WeakTrustline(Weak<TrustlineInner>);

impl WeakTrustline {
    /// The trustline, if it still exists.
    pub(crate) fn upgrade(&self) -> Option<Trustline> {
        self.0.upgrade().map(|inner| Trustline { inner })
    }
}

impl std::fmt::Debug for Trustline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trustline")
            .field("name", &self.inner.name)
            .field("stateful", &self.inner.stateful)
            .finish_non_exhaustive()
    }
}

#[cfg(any(test, feature = "testing"))]
impl LinkEnd for Trustline {
    fn packet_handler(&self) -> Weak<dyn PacketHandler> {
        let inner: Weak<TrustlineInner> = Arc::downgrade(&self.inner);
        inner
    }

    fn set_link(&self, link: Arc<dyn PeerLink>) {
        Trustline::set_link(self, link);
    }
}

/// Reads a lock that a panicking writer may have poisoned (the value is a plain replaceable setting).
fn read<T: Clone>(l: &RwLock<T>) -> T {
    match l.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Replaces the value behind a lock, poisoned or not.
fn write<T>(l: &RwLock<T>, v: T) {
    match l.write() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

impl Trustline {
    /// Builds a trustline for `config`, keeping its records in `stores` (namespaced for this peer), with an
    /// optional channel module. Call [`Trustline::set_link`], then [`Trustline::start`] and
    /// [`Trustline::connect`].
    pub fn new(
        config: &PeerConfig,
        stores: Arc<dyn PeerStores>,
        module: Option<Arc<dyn ChannelModule>>,
        options: TrustlineOptions,
    ) -> Result<Trustline, PeerError> {
        let log = stores.transfer_log("")?;
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let module_options = config.module_options();
        let prefix = config.prefix.clone();
        let info = match (&config.info, &prefix) {
            (Some(i), Some(p)) => Some(i.to_json(p)),
            (Some(i), None) => i.prefix().map(|p| i.to_json(p)),
            _ => None,
        };
        let inner = Arc::new_cyclic(|weak: &Weak<TrustlineInner>| {
            let rpc: Weak<dyn ModuleRpc> = weak.clone();
            let host = TrustlineHost {
                rpc,
                stores: Arc::clone(&stores),
                main_log: Arc::clone(&log),
                clock: Arc::clone(&options.clock),
                identities: Arc::clone(&options.identities),
            };
            TrustlineInner {
                name: config.name.clone(),
                stateful: config.stateful,
                configured_prefix: prefix.clone(),
                prefix: RwLock::new(prefix),
                info: RwLock::new(info),
                log,
                module,
                ctx: ChannelContext::new(Arc::new(host), module_options, config.name.clone()),
                link: RwLock::new(None),
                events,
                request_handler: RwLock::new(None),
                hook: RwLock::new(None),
                expiries: Arc::new(ExpiryQueue::default()),
                settling: Mutex::new(Settling::default()),
                limits: config.limits,
                prepared: Mutex::new(PreparedSet::default()),
                connected: AtomicBool::new(false),
                connect_lock: tokio::sync::Mutex::new(()),
                clock: options.clock,
                request_timeout: options.request_timeout,
                claim_floor: Mutex::new(ModuleUnits::default()),
                settled: Mutex::new(ModuleUnits::default()),
                unsure: Mutex::new(unsure_fulfill::UnsureFulfills::default()),
                last_error: Mutex::new(None),
            }
        });
        Ok(Trustline { inner })
    }

    /// A handle that does not keep the trustline alive.
    pub(crate) fn downgrade(&self) -> WeakTrustline {
        WeakTrustline(Arc::downgrade(&self.inner))
    }

    /// The peer's name (config key; ILP Kit: the ledger prefix).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How much the peer can make us hold ([`PeerConfig::limits`]).
    pub fn limits(&self) -> PrepareLimits {
        self.inner.limits
    }

    /// Now by the trustline's clock, in Unix milliseconds.
    pub(crate) fn clock_ms(&self) -> i64 {
        unix_ms(self.now())
    }

    /// Whether the trustline runs in legacy stateful mode.
    pub fn is_stateful(&self) -> bool {
        self.inner.stateful
    }

    /// The channel-module context of this trustline (its stores by key, RPC to the peer's module).
    pub fn module_context(&self) -> &ChannelContext {
        &self.inner.ctx
    }

    /// The channel module, if the trustline has one.
    pub fn module(&self) -> Option<&Arc<dyn ChannelModule>> {
        self.inner.module.as_ref()
    }

    /// Raises the least total the module settles: on every received Fulfill the module is asked for
    /// `max(total OF, floor)` instead of total OF, so a claim-based module's claim for the floor rides on the next
    /// Fulfill's Response (the only place the legacy wire carries one). The host that raises it (bridge mode:
    /// the modern connector's settle requests) keeps it durably and raises it again after a restart; a lower
    /// value is ignored.
    pub fn raise_claim_floor(&self, floor: ModuleUnits) {
        let mut f = lock(&self.inner.claim_floor);
        if floor > *f {
            *f = floor;
        }
    }

    /// The highest total the module settled with the peer since the process started: a claim for it went out on
    /// a Fulfill's Response, or the module answered it with no claim (a payment-based module paid it). Zero
    /// after a restart until the next settlement; the transfer log's outgoing fulfilled total is what the
    /// legacy flow settled in any case.
    pub fn settled_total(&self) -> ModuleUnits {
        lock(&self.inner.settled).clone()
    }

    /// Asks the module to settle `total` now, outside a Fulfill (with the module's usual idempotency: a total
    /// already covered has no new side effect). A payment-based module pays at once (`Ok(None)` counts as
    /// settled); a claim-based module's claim is returned and not sent: the legacy wire carries claims only on
    /// a Fulfill's Response, where the next one goes out with the [claim floor](Trustline::raise_claim_floor).
    /// `Ok(None)` also when there is no module.
    pub async fn settle_now(&self, total: &ModuleUnits) -> Result<Option<Claim>, ModuleError> {
        let Some(module) = &self.inner.module else {
            return Ok(None);
        };
        let claim = module.create_outgoing_claim(&self.inner.ctx, total).await?;
        if claim.is_none() {
            self.note_settled(total);
        }
        Ok(claim)
    }

    /// Notes that the module settled `total` (see [`Trustline::settled_total`]).
    pub(crate) fn note_settled(&self, total: &ModuleUnits) {
        let mut s = lock(&self.inner.settled);
        if *total > *s {
            *s = total.clone();
        }
    }

    /// The current claim floor (see [`Trustline::raise_claim_floor`]).
    pub fn claim_floor(&self) -> ModuleUnits {
        lock(&self.inner.claim_floor).clone()
    }

    /// The main transfer log.
    pub fn log(&self) -> &Arc<dyn TransferLog> {
        &self.inner.log
    }

    /// Sets (or replaces) the link to the peer.
    pub fn set_link(&self, link: Arc<dyn PeerLink>) {
        write(&self.inner.link, Some(link));
    }

    /// Registers the handler for `ilp`/`custom` requests (legacy `registerRequestHandler`; replaces any).
    pub fn register_request_handler(&self, handler: Arc<dyn IncomingRequestHandler>) {
        write(&self.inner.request_handler, Some(handler));
    }

    /// Removes the request handler.
    pub fn deregister_request_handler(&self) {
        write(&self.inner.request_handler, None);
    }

    /// Sets the routing hook.
    pub fn set_hook(&self, hook: Arc<dyn TransferHook>) {
        write(&self.inner.hook, Some(hook));
    }

    /// Drops the link (breaks the trustline ⇄ session reference cycle at shutdown).
    pub fn clear_link(&self) {
        write(&self.inner.link, None);
    }

    /// Removes the routing hook (breaks the router ⇄ trustline reference cycle at shutdown).
    pub fn clear_hook(&self) {
        write(&self.inner.hook, None);
    }

    /// Subscribes to the event stream.
    pub fn subscribe(&self) -> EventReceiver {
        EventReceiver::new(self.inner.events.subscribe())
    }

    /// Whether [`Trustline::connect`] succeeded (and no disconnect since).
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
    }

    /// The ledger prefix (configured, or learned from the peer's info at connect).
    pub fn prefix(&self) -> Option<String> {
        read(&self.inner.prefix)
    }

    /// Our ILP address on this ledger: `prefix+"server"` when stateful, `prefix+"client"` when stateless.
    pub fn account(&self) -> Option<String> {
        let role = if self.inner.stateful {
            "server"
        } else {
            "client"
        };
        self.prefix().map(|p| format!("{p}{role}"))
    }

    /// The peer's ILP address: `prefix+"client"` when stateful, `prefix+"server"` when stateless.
    pub fn peer_account(&self) -> Option<String> {
        let role = if self.inner.stateful {
            "client"
        } else {
            "server"
        };
        self.prefix().map(|p| format!("{p}{role}"))
    }

    /// The last failure seen with this peer, for operators: a request of the peer we refused (with the
    /// reason), or a failed attempt to connect. `None` until one happens.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Records `error` as the peer's [`Trustline::last_error`].
    pub(crate) fn note_error(&self, error: String) {
        *lock(&self.inner.last_error) = Some(error);
    }

    /// How many transfers are prepared now: (incoming, outgoing), as counted against
    /// [`PrepareLimits::max_prepared_transfers`].
    pub fn prepared_counts(&self) -> (usize, usize) {
        let set = lock(&self.inner.prepared);
        (
            set.len(channel_modules::store::Direction::Incoming),
            set.len(channel_modules::store::Direction::Outgoing),
        )
    }

    /// Our balance from our own records (IF − OF), in any mode.
    pub fn local_balance(&self) -> LedgerBalance {
        self.inner.log.balance()
    }

    fn assert_connected(&self, what: &'static str) -> Result<(), PeerError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(PeerError::NotConnected(what))
        }
    }

    fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    fn now_ts(&self) -> Timestamp {
        Timestamp::from_system_time_clamped(self.now())
    }

    fn emit(&self, event: PeerEvent) {
        tracing::debug!(peer = %self.inner.name, event = event.name(), "event");
        // No subscriber is fine (and costs no allocation).
        if self.inner.events.receiver_count() > 0 {
            let _ = self.inner.events.send(Arc::new(event));
        }
    }

    /// Sends `packet` to the peer over the current link.
    async fn request(&self, packet: Packet) -> Result<Reply, RpcError> {
        let link = read(&self.inner.link).ok_or(RpcError::NotConnected)?;
        link.request(packet, self.inner.request_timeout).await
    }

    /// [`Trustline::request`], with a BTP Error reply as [`PeerError::Remote`].
    async fn request_response(&self, packet: Packet) -> Result<ProtocolData, PeerError> {
        match self.request(packet).await? {
            Reply::Response(pd) => Ok(pd),
            Reply::Error(e) => Err(PeerError::Remote(e)),
        }
    }

    /// The stored record of `id`; an unknown ID is the log's `NotFound` (legacy F02 TransferNotFoundError).
    async fn stored(&self, id: &TransferId) -> Result<TransferRecord, TransferLogError> {
        self.inner
            .log
            .get(id)
            .await?
            .ok_or(TransferLogError::NotFound(*id))
    }

    /// Transfer `id` is finished (fulfilled or cancelled): no expiry, and it no longer counts as prepared.
    fn finished(&self, id: &TransferId) {
        self.inner.expiries.disarm(id);
        lock(&self.inner.prepared).release(id);
    }
}
