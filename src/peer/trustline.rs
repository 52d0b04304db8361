//! [`Trustline`]: one BTP/1.0 trustline with a legacy peer, byte-compatible with
//! `ilp-plugin-payment-channel-framework` 1.1.3 / 1.3.x (`legacy-plugin.md` §3–§5).
//!
//! The core does no IO of its own: it answers the peer's requests ([`Trustline::handle_packet`]) and sends its
//! own through a [`PeerLink`]. Balances and limits live in the main [`TransferLog`]; the channel module's hooks
//! run where the legacy framework runs them:
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
//! Differences from legacy (bugs fixed, all deliberate):
//! * a repeated Prepare of a known transfer (identical contents) succeeds without re-running the module or
//!   re-emitting `incoming_prepare`; a repeated Fulfill with the right preimage succeeds idempotently;
//! * a limit failure leaves nothing behind (the log's fix); prepared transfers survive restarts and their
//!   expiry timers are re-armed ([`Trustline::start`]); expiries beyond 24.8 days never fire early;
//! * our own Fulfill is sent first and applied when the peer accepts it, so a peer that refuses it (e.g.
//!   already expired there) leaves both sides cancelled, never disagreeing. When its outcome is unknown (no
//!   reply in time, socket dropped, no socket), the transfer stays prepared, its expiry is held, and the
//!   Fulfill is re-sent with backoff (also after the transfer's expiry) until the peer answers: accepted (a
//!   bridge answers a repeat idempotently, legacy with F00 `TypeError` because it already finished it)
//!   → applied; refused (F02 unknown, F05 expired) → it expires here too. Legacy counted such a Fulfill
//!   whether or not the peer ever saw it. Before a Fulfill goes out its preimage is noted durably
//!   ([`TransferLog::note_fulfillment`], one synced write), so after a crash [`Trustline::start`] resumes
//!   sending it instead of letting a transfer the payer may already have paid expire here;
//! * a Prepare the peer refuses with an Error is cancelled locally (legacy left it prepared forever); one with
//!   no reply keeps its timer and expires normally;
//! * a Prepare over the peer's [`PrepareLimits`] (expiring too far ahead, too much `ilp`/`custom` data, too
//!   many prepared) is refused with `NotAcceptedError` before anything is stored; so is a `send_transfer`
//!   beyond the prepared count.
//!
//! Already-expired Prepares are accepted and then rejected at once with R00, as legacy does.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use btp::ilp_v1::{IlpV1Error, IlpV1Packet};
use btp::packet::{
    ContentType, Fulfill, Packet, Prepare, ProtocolData, ProtocolDataEntry, ProtocolName, Reject,
};
use btp::transport::{BtpSession, Reply, RequestHandler, RpcError, DEFAULT_REQUEST_TIMEOUT};
use btp::Timestamp;
use bytes::Bytes;
use channel_modules::store::{
    Direction, Limit, PrepareOutcome, Transfer, TransferId, TransferLog, TransferLogError,
    TransferRecord, TransferState,
};
use channel_modules::sync::lock;
use channel_modules::{ChannelContext, ChannelModule, Claim};
use num_bigint::BigUint;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::error::{PeerError, WireError};
use super::events::{PeerEvent, PeerMessage, RejectionMessage, EVENT_CHANNEL_CAPACITY};
use super::expiry::ExpiryQueue;
use super::host::{Clock, NodeIdentities, PeerStores, SystemClock, TrustlineHost};
use super::limits::{PrepareLimits, PreparedSet, Reservation};
use super::link::PeerLink;
use crate::config::legacy::PeerConfig;

/// Longest single timer sleep; longer expiries sleep in chunks and re-read the clock, so a far expiry never
/// fires early (legacy's `setTimeout` overflowed after 2^31−1 ms and fired at once).
pub const MAX_TIMER_CHUNK: Duration = Duration::from_secs(24 * 60 * 60);

/// How long an expiry waits when a Fulfill of the same transfer is in flight, before checking again.
pub const EXPIRY_RETRY_DELAY: Duration = Duration::from_millis(500);

/// First delay before re-sending a Fulfill whose outcome is unknown; doubles up to [`FULFILL_RETRY_MAX`].
pub const FULFILL_RETRY_MIN: Duration = Duration::from_millis(200);

/// Longest delay between two re-sends of an unacknowledged Fulfill.
pub const FULFILL_RETRY_MAX: Duration = Duration::from_secs(30);

/// `info` request byte asking for the full LedgerInfo (anything else asks for the account).
const INFO_REQUEST_FULL: u8 = 2;

/// Well-known sub-protocol names.
mod names {
    pub const ILP: &str = "ilp";
    pub const CUSTOM: &str = "custom";
    pub const INFO: &str = "info";
    pub const BALANCE: &str = "balance";
    pub const LIMIT: &str = "limit";
    pub const CLAIM: &str = "claim";
}

/// Answers `ilp`/`custom` requests from the peer (legacy `registerRequestHandler`).
#[async_trait]
pub trait IncomingRequestHandler: Send + Sync {
    /// Handles a request; an `Err` is answered with a Response carrying an ILP v1 Error F00 "Bad Request".
    async fn handle_request(&self, request: PeerMessage) -> Result<PeerMessage, PeerError>;
}

/// How an outgoing transfer ended.
#[derive(Debug, Clone)]
pub enum TransferOutcome {
    /// The peer fulfilled it.
    Fulfilled {
        /// The preimage.
        fulfillment: [u8; 32],
        /// `ilp` data that came with the Fulfill.
        ilp: Option<Bytes>,
    },
    /// The peer rejected it with this ILP v1 Error.
    Rejected(IlpV1Error),
    /// It expired here (we sent the R00 Reject).
    Expired(IlpV1Error),
}

/// Hooks for a router: told about new incoming transfers and about how outgoing transfers end (called on
/// their own tasks, never while a peer waits for our reply), and asked to answer ILQP quote requests (called
/// while the peer waits).
#[async_trait]
pub trait TransferHook: Send + Sync {
    /// A new incoming transfer was prepared (after the module accepted it).
    async fn incoming_prepared(&self, peer: Trustline, transfer: Transfer);
    /// An outgoing transfer was fulfilled, rejected or expired.
    async fn outgoing_settled(&self, peer: Trustline, transfer: Transfer, outcome: TransferOutcome);
    /// A Message whose `ilp` is an ILQP quote request (ILP v1 type 2, 4 or 6) arrived from `peer`. Returns the
    /// `ilp` of the Response (a quote response or an ILP v1 Error), or `None` to leave the request to the
    /// registered request handler. Unlike the other hooks this runs while the peer waits for the reply.
    async fn quote_request(&self, _peer: Trustline, _request: IlpV1Packet) -> Option<Bytes> {
        None
    }
    /// The expiry timer of `peer`'s incoming `transfer` fired and it is still prepared. `true` holds the
    /// expiry (checked again [`EXPIRY_RETRY_DELAY`] later): the hook has, or is about to have, the transfer's
    /// fulfillment (a router whose next hop fulfilled the transfer it forwarded) and delivers it itself (with
    /// [`Trustline::fulfill_when_possible`]), because the payer, not our clock, decides whether that Fulfill
    /// is late. Runs on the expiry's own task.
    async fn hold_incoming_expiry(&self, _peer: Trustline, _transfer: Transfer) -> bool {
        false
    }
}

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
pub struct TrustlineInner {
    name: String,
    stateful: bool,
    configured_prefix: Option<String>,
    prefix: RwLock<Option<String>>,
    info: RwLock<Option<Value>>,
    log: Arc<dyn TransferLog>,
    module: Option<Arc<dyn ChannelModule>>,
    ctx: ChannelContext,
    link: RwLock<Option<Arc<dyn PeerLink>>>,
    events: broadcast::Sender<PeerEvent>,
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
}

impl Drop for TrustlineInner {
    fn drop(&mut self) {
        self.expiries.abort();
    }
}

/// One BTP/1.0 trustline. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Trustline {
    pub(crate) inner: Arc<TrustlineInner>,
}

impl std::fmt::Debug for Trustline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trustline")
            .field("name", &self.inner.name)
            .field("stateful", &self.inner.stateful)
            .finish_non_exhaustive()
    }
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    match l.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn write<T>(l: &RwLock<T>, v: T) {
    match l.write() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

/// Base64url without padding (legacy's representation of conditions, fulfillments and ILP packets).
pub fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// ISO-8601 with milliseconds (`2030-01-02T03:04:05.678Z`), as JavaScript's `toISOString`.
pub fn iso_time(ms: i64) -> String {
    match Timestamp::from_unix_millis(ms) {
        Some(t) => {
            let p = t.to_parts();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                p.year, p.month, p.day, p.hour, p.minute, p.second, p.millisecond
            )
        }
        None => ms.to_string(),
    }
}

fn system_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Legacy `protocolDataToIlpAndCustom` for one entry: JSON for type 2, text for type 1, bytes otherwise.
enum EntryValue {
    Json(Value),
    Text(String),
    Bytes(Bytes),
}

fn entry_value(e: &ProtocolDataEntry) -> Result<EntryValue, WireError> {
    match e.content_type {
        ContentType::APPLICATION_JSON => serde_json::from_slice(&e.data)
            .map(EntryValue::Json)
            .map_err(|err| WireError::new("SyntaxError", format!("{err}"))),
        ContentType::TEXT_PLAIN_UTF8 => Ok(EntryValue::Text(
            String::from_utf8_lossy(&e.data).into_owned(),
        )),
        _ => Ok(EntryValue::Bytes(e.data.clone())),
    }
}

fn entry_json(e: &ProtocolDataEntry) -> Result<Value, WireError> {
    Ok(match entry_value(e)? {
        EntryValue::Json(v) => v,
        EntryValue::Text(t) => Value::String(t),
        EntryValue::Bytes(b) => Value::String(b64url(&b)),
    })
}

fn claim_entry(claim: &Claim) -> ProtocolDataEntry {
    let name = ProtocolName::from_static(names::CLAIM);
    match claim {
        Claim::Json(v) => ProtocolDataEntry::json(name, v.to_string()),
        Claim::Text(t) => ProtocolDataEntry::text(name, t.clone()),
        Claim::Binary(b) => ProtocolDataEntry::octets(name, b.clone()),
    }
}

fn entry_claim(e: &ProtocolDataEntry) -> Option<Claim> {
    match e.content_type {
        ContentType::APPLICATION_JSON => serde_json::from_slice(&e.data).ok().map(Claim::Json),
        ContentType::TEXT_PLAIN_UTF8 => {
            Some(Claim::Text(String::from_utf8_lossy(&e.data).into_owned()))
        }
        _ => Some(Claim::Binary(e.data.to_vec())),
    }
}

/// `ilp` first, then `custom` (legacy `ilpAndCustomToProtocolData`).
fn ilp_and_custom(ilp: Option<&[u8]>, custom: Option<&Value>) -> ProtocolData {
    let mut pd = ProtocolData::new();
    if let Some(ilp) = ilp.filter(|i| !i.is_empty()) {
        pd.push(ProtocolDataEntry::octets(
            ProtocolName::from_static(names::ILP),
            Bytes::copy_from_slice(ilp),
        ));
    }
    if let Some(c) = custom {
        pd.push(ProtocolDataEntry::json(
            ProtocolName::from_static(names::CUSTOM),
            c.to_string(),
        ));
    }
    pd
}

/// Negates a decimal string as legacy `_stringNegate` does (`"0"` becomes `"-0"`).
pub fn string_negate(s: &str) -> String {
    match s.strip_prefix('-') {
        Some(rest) => rest.to_owned(),
        None => format!("-{s}"),
    }
}

/// Digits from which bignumber.js (legacy's number type) switches to exponent notation: its `EXPONENTIAL_AT`
/// upper bound is 20, so 10^21 prints as `1e+21`.
const BIGNUMBER_EXPONENT_FROM_DIGITS: usize = 22;

/// A whole number as legacy's bignumber.js `toString()` prints it: plain decimal below 10^21, else exponent
/// notation with every significant digit (`1e+21`, `1.23e+21`, `-1.2345678901234567890123e+22`).
pub fn bignumber_string(v: i128) -> String {
    let digits = v.unsigned_abs().to_string();
    if digits.len() < BIGNUMBER_EXPONENT_FROM_DIGITS {
        return v.to_string();
    }
    let sign = if v < 0 { "-" } else { "" };
    let exponent = digits.len() - 1;
    let significant = digits.trim_end_matches('0');
    let (first, rest) = significant.split_at(1);
    if rest.is_empty() {
        format!("{sign}{first}e+{exponent}")
    } else {
        format!("{sign}{first}.{rest}e+{exponent}")
    }
}

/// A limit as legacy prints it (`"Infinity"` when unbounded).
pub fn limit_string(limit: Limit) -> String {
    match limit {
        Limit::Finite(v) => bignumber_string(v),
        Limit::Unbounded => "Infinity".to_owned(),
    }
}

/// Encodes a balance as the `balance` reply: 8-byte big-endian two's complement.
pub fn balance_to_int64(balance: i128) -> Option<[u8; 8]> {
    i64::try_from(balance).ok().map(i64::to_be_bytes)
}

/// Checks a fulfillment against a condition (SHA-256).
pub fn fulfillment_matches(fulfillment: &[u8; 32], condition: &[u8; 32]) -> bool {
    let digest: [u8; 32] = Sha256::digest(fulfillment).into();
    digest == *condition
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
        let inner = Arc::new_cyclic(|weak| {
            let host = TrustlineHost {
                trustline: weak.clone(),
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
            }
        });
        Ok(Trustline { inner })
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
        system_ms(self.now())
    }

    /// Whether the trustline runs in legacy stateful mode.
    pub fn is_stateful(&self) -> bool {
        self.inner.stateful
    }

    /// The channel-module context of this trustline (its stores by key, RPC to the peer's module).
    pub fn module_context(&self) -> &ChannelContext {
        &self.inner.ctx
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
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.events.subscribe()
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

    /// Legacy `getAccount()`.
    pub fn get_account(&self) -> Result<String, PeerError> {
        self.assert_connected("getAccount")?;
        self.account().ok_or(PeerError::NotConnected("getAccount"))
    }

    /// Legacy `getPeerAccount()`.
    pub fn get_peer_account(&self) -> Result<String, PeerError> {
        self.assert_connected("getPeerAccount")?;
        self.peer_account()
            .ok_or(PeerError::NotConnected("getPeerAccount"))
    }

    /// Legacy `getInfo()`: the LedgerInfo JSON (with module extras, if any).
    pub fn get_info(&self) -> Option<Value> {
        let mut info = read(&self.inner.info)?;
        if let (Some(m), Value::Object(obj)) = (&self.inner.module, &mut info) {
            if let Some(Value::Object(extra)) = m.info() {
                for (k, v) in extra {
                    obj.entry(k).or_insert(v);
                }
            }
        }
        Some(info)
    }

    /// Legacy `getBalance()`: our balance (IF − OF) when stateful; the negated peer balance when stateless.
    pub async fn get_balance(&self) -> Result<String, PeerError> {
        self.assert_connected("getBalance")?;
        if self.inner.stateful {
            Ok(bignumber_string(self.inner.log.balance()))
        } else {
            self.get_peer_balance().await
        }
    }

    /// Our balance from our own records (IF − OF), in any mode.
    pub fn local_balance(&self) -> i128 {
        self.inner.log.balance()
    }

    /// Legacy `getPeerBalance()`: the peer's balance, negated as a string (`"-0"` for 0).
    pub async fn get_peer_balance(&self) -> Result<String, PeerError> {
        self.assert_connected("getPeerBalance")?;
        let pd = ProtocolData::new().with(ProtocolDataEntry::octets(
            ProtocolName::from_static(names::BALANCE),
            Bytes::from_static(&[0]),
        ));
        let reply = self.request_response(Packet::Message(pd)).await?;
        let b = reply
            .data(names::BALANCE)
            .ok_or_else(|| PeerError::InvalidReply("Could not get peer balance.".to_owned()))?;
        let arr: [u8; 8] = b[..]
            .try_into()
            .map_err(|_| PeerError::InvalidReply("balance is not 8 bytes".to_owned()))?;
        Ok(string_negate(&i64::from_be_bytes(arr).to_string()))
    }

    /// Legacy `getLimit()`: the peer's maxBalance, negated as a string.
    pub async fn get_limit(&self) -> Result<String, PeerError> {
        self.assert_connected("getLimit")?;
        let pd = ProtocolData::new().with(ProtocolDataEntry::octets(
            ProtocolName::from_static(names::LIMIT),
            Bytes::from_static(&[0]),
        ));
        let reply = self.request_response(Packet::Message(pd)).await?;
        let e = reply
            .get(names::LIMIT)
            .ok_or_else(|| PeerError::InvalidReply("Failed to get limit of peer.".to_owned()))?;
        let v = entry_json(e).map_err(|e| PeerError::InvalidReply(e.message))?;
        let s = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => return Err(PeerError::InvalidReply(format!("limit is {other}"))),
        };
        Ok(string_negate(&s))
    }

    fn assert_connected(&self, what: &'static str) -> Result<(), PeerError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(PeerError::NotConnected(what))
        }
    }

    fn link(&self) -> Result<Arc<dyn PeerLink>, RpcError> {
        read(&self.inner.link).ok_or(RpcError::NotConnected)
    }

    fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    fn now_ts(&self) -> Timestamp {
        Timestamp::from_system_time(self.now()).unwrap_or_else(Timestamp::now)
    }

    fn emit(&self, event: PeerEvent) {
        tracing::debug!(peer = %self.inner.name, event = event.name(), "event");
        // No subscriber is fine.
        let _ = self.inner.events.send(event);
    }

    async fn request(&self, packet: Packet) -> Result<Reply, RpcError> {
        let link = self.link()?;
        link.request(packet, self.inner.request_timeout).await
    }

    async fn request_response(&self, packet: Packet) -> Result<ProtocolData, PeerError> {
        match self.request(packet).await? {
            Reply::Response(pd) => Ok(pd),
            Reply::Error(e) => Err(PeerError::Remote(e)),
        }
    }

    /// After a restart: resumes sending the Fulfills we had started (noted fulfillments of transfers still
    /// prepared: the peer may have them already) and re-arms the expiry timers of every prepared transfer.
    /// Call once before serving.
    pub async fn start(&self) -> Result<usize, PeerError> {
        let prepared = self.inner.log.prepared().await.map_err(log_err_to_peer)?;
        let notes = self
            .inner
            .log
            .noted_fulfillments()
            .await
            .map_err(log_err_to_peer)?;
        let mut resumed = 0;
        for note in notes {
            let Some(rec) = prepared.iter().find(|r| r.transfer.id == note.id) else {
                continue;
            };
            let ilp = (!note.ilp.is_empty()).then(|| Bytes::from(note.ilp));
            // Noted before it was sent: it may have reached the peer before the restart.
            self.resend_fulfill_later(rec.clone(), note.fulfillment, ilp, true);
            resumed += 1;
        }
        let n = prepared.len();
        {
            let mut counted = lock(&self.inner.prepared);
            for r in &prepared {
                counted.insert(r.direction, r.transfer.id);
            }
        }
        for r in prepared {
            self.arm_expiry(r.transfer.id, r.transfer.expires_at_ms);
        }
        tracing::info!(peer = %self.inner.name, prepared = n, fulfills_resumed = resumed, "trustline started; expiry timers re-armed");
        Ok(n)
    }

    /// Legacy `connect()`: learns prefix and info from the peer if not configured, runs the module's
    /// `connect`, emits `connect`. Concurrent calls share one attempt.
    pub async fn connect(&self) -> Result<(), PeerError> {
        let _guard = self.inner.connect_lock.lock().await;
        if self.is_connected() {
            return Ok(());
        }
        if read(&self.inner.info).is_none() || self.prefix().is_none() {
            let pd = ProtocolData::new().with(ProtocolDataEntry::octets(
                ProtocolName::from_static(names::INFO),
                Bytes::from_static(&[INFO_REQUEST_FULL]),
            ));
            let reply = self.request_response(Packet::Message(pd)).await?;
            let info = match reply.get(names::INFO) {
                Some(e) => entry_json(e).map_err(|e| PeerError::InvalidReply(e.message))?,
                None => Value::Object(serde_json::Map::new()),
            };
            let remote_prefix = info
                .get("prefix")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match (&self.inner.configured_prefix, remote_prefix) {
                (Some(p), Some(r)) if *p != r => {
                    return Err(PeerError::refused(
                        "Error",
                        "Remote prefix does not match configured prefix",
                    ))
                }
                (Some(p), None) => {
                    return Err(PeerError::refused(
                        "Error",
                        format!("Remote prefix does not match configured prefix ({p} vs none)"),
                    ))
                }
                (_, Some(r)) => write(&self.inner.prefix, Some(r)),
                (None, None) => {
                    return Err(PeerError::InvalidReply(
                        "peer info has no prefix".to_owned(),
                    ))
                }
            }
            write(&self.inner.info, Some(info));
        }
        if let Some(m) = &self.inner.module {
            m.connect(&self.inner.ctx).await?;
        }
        self.inner.connected.store(true, Ordering::SeqCst);
        tracing::info!(peer = %self.inner.name, account = ?self.account(), "trustline connected");
        self.emit(PeerEvent::Connect);
        Ok(())
    }

    /// Legacy `disconnect()`: runs the module's `disconnect` and emits `disconnect`. The link stays (the
    /// transport owns sockets).
    pub async fn disconnect(&self) -> Result<(), PeerError> {
        if !self.inner.connected.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(m) = &self.inner.module {
            if let Err(e) = m.disconnect(&self.inner.ctx).await {
                tracing::warn!(peer = %self.inner.name, error = %e, "module disconnect failed");
            }
        }
        self.emit(PeerEvent::Disconnect);
        Ok(())
    }

    // ---------------------------------------------------------------- outgoing calls

    /// Legacy `sendTransfer`: prepares the transfer locally (outgoing limit), sends the Prepare and returns
    /// once the peer accepted it (then `outgoing_prepare` is emitted and the expiry timer armed).
    pub async fn send_transfer(&self, transfer: Transfer) -> Result<(), PeerError> {
        self.assert_connected("sendTransfer")?;
        if transfer.amount == 0 {
            return Err(PeerError::refused(
                "InvalidFieldsError",
                "amount (0) must be positive",
            ));
        }
        let expires_at = Timestamp::from_unix_millis(transfer.expires_at_ms)
            .ok_or_else(|| PeerError::refused("InvalidFieldsError", "expiresAt is out of range"))?;
        let reservation = self
            .reserve_prepared(Direction::Outgoing, transfer.id)
            .map_err(PeerError::Refused)?;
        match self.inner.log.prepare(&transfer, Direction::Outgoing).await {
            Ok(PrepareOutcome::Prepared) => {}
            // Same contents and direction (anything else is DuplicateId from the log).
            Ok(PrepareOutcome::AlreadyExists(rec)) => {
                if rec.state != TransferState::Prepared {
                    // Legacy: re-preparing a finished ID silently succeeds.
                    self.unreserve(reservation, &transfer.id);
                    return Ok(());
                }
            }
            Err(e) => {
                self.unreserve(reservation, &transfer.id);
                return Err(log_err_to_peer(e));
            }
        }
        let packet = Packet::Prepare(Prepare {
            transfer_id: transfer.id.0,
            amount: transfer.amount,
            execution_condition: transfer.execution_condition,
            expires_at,
            protocol_data: ilp_and_custom(Some(&transfer.ilp), transfer.custom.as_ref()),
        });
        match self.request(packet).await {
            Ok(Reply::Response(_)) => {
                self.emit(PeerEvent::OutgoingPrepare(transfer.clone()));
                self.arm_expiry(transfer.id, transfer.expires_at_ms);
                Ok(())
            }
            Ok(Reply::Error(e)) => {
                // The peer refused it, so it is not prepared there: release our reservation.
                match self.inner.log.cancel(&transfer.id, "refused by peer").await {
                    Ok(_) => self.finished(&transfer.id),
                    Err(err) => {
                        tracing::warn!(peer = %self.inner.name, transfer = %transfer.id, error = %err, "cancel after refusal failed")
                    }
                }
                Err(PeerError::Remote(e))
            }
            Err(e @ (RpcError::Timeout | RpcError::Disconnected | RpcError::Closed)) => {
                // It may have arrived (`Closed` also fails requests already written): keep it prepared until it
                // expires.
                self.arm_expiry(transfer.id, transfer.expires_at_ms);
                Err(PeerError::Rpc(e))
            }
            Err(e) => {
                // Never sent.
                match self.inner.log.cancel(&transfer.id, "not sent").await {
                    Ok(_) => self.finished(&transfer.id),
                    Err(err) => {
                        tracing::warn!(peer = %self.inner.name, transfer = %transfer.id, error = %err, "cancel of unsent transfer failed")
                    }
                }
                Err(PeerError::Rpc(e))
            }
        }
    }

    /// Legacy `fulfillCondition(id, fulfillment, ilp)`: we are the payee. Checks the transfer and the
    /// preimage, sends the Fulfill, applies it when the peer accepts, then hands the `claim` in the Response
    /// to the module's `handle_incoming_claim`.
    pub async fn fulfill_condition(
        &self,
        id: TransferId,
        fulfillment: [u8; 32],
        ilp: Option<Bytes>,
    ) -> Result<(), PeerError> {
        self.assert_connected("fulfillCondition")?;
        // Taken before the expiry check and held until the outcome is known: an expiry (or Reject) that has
        // not begun now waits for us, and one that has begun makes us refuse, so the preimage never goes out
        // for a transfer being cancelled here.
        let Some(_claim) = FulfillClaim::take(&self.inner, id) else {
            return Err(PeerError::refused(
                "AlreadyRolledBackError",
                format!("{id} is being cancelled"),
            ));
        };
        let rec = self.stored(&id).await.map_err(log_err_to_peer)?;
        if matches!(rec.state, TransferState::Cancelled { .. }) {
            return Err(PeerError::refused(
                "AlreadyRolledBackError",
                format!(
                    "{id} has already been cancelled: {}",
                    self.legacy_json(&rec)
                ),
            ));
        }
        if rec.direction != Direction::Incoming {
            return Err(PeerError::refused(
                "Error",
                format!("{id} is outgoing; cannot fulfill"),
            ));
        }
        let already = matches!(rec.state, TransferState::Fulfilled { .. });
        if !already && rec.transfer.expires_at_ms < system_ms(self.now()) {
            return Err(PeerError::refused(
                "AlreadyRolledBackError",
                format!("{id} has already expired: {}", self.legacy_json(&rec)),
            ));
        }
        if !fulfillment_matches(&fulfillment, &rec.transfer.execution_condition) {
            return Err(PeerError::refused(
                "NotAcceptedError",
                "Fulfillment does not match the condition",
            ));
        }
        if !already {
            // Write-ahead: once the preimage is out the payer may apply it at any moment, so a crash from here
            // on must not let this transfer silently expire here (see `start`).
            let ilp_bytes = ilp.as_deref().unwrap_or_default();
            self.inner
                .log
                .note_fulfillment(&id, &fulfillment, ilp_bytes)
                .await
                .map_err(log_err_to_peer)?;
        }
        self.fulfill_inner(&rec, fulfillment, ilp, already).await
    }

    /// Hands a Fulfill to the trustline to deliver whenever it can: checks the transfer and the preimage,
    /// notes the preimage durably, sends it at once when connected, and otherwise (or when its outcome is
    /// unknown) re-sends it, also across reconnects and restarts, until the peer answers. Unlike
    /// [`Trustline::fulfill_condition`] it needs no connection and does not refuse a transfer past its expiry
    /// by our clock: the payer decides whether it is late (if the payer refuses it and the transfer is past its
    /// expiry here, it is cancelled here too). Used by a router that has already paid the next hop. `Ok` if the
    /// transfer is already fulfilled, or our Fulfill of it is already on its way.
    pub async fn fulfill_when_possible(
        &self,
        id: TransferId,
        fulfillment: [u8; 32],
        ilp: Option<Bytes>,
    ) -> Result<(), PeerError> {
        let (rec, refused) = {
            let claim = FulfillClaim::take_unless_delivering(&self.inner, id).map_err(|()| {
                PeerError::refused("AlreadyRolledBackError", format!("{id} is being cancelled"))
            })?;
            if claim.is_none() {
                return Ok(());
            }
            let rec = self.stored(&id).await.map_err(log_err_to_peer)?;
            match rec.state {
                TransferState::Fulfilled { .. } => return Ok(()),
                TransferState::Cancelled { .. } => {
                    return Err(PeerError::refused(
                        "AlreadyRolledBackError",
                        format!("{id} has already been cancelled"),
                    ))
                }
                TransferState::Prepared => {}
            }
            if rec.direction != Direction::Incoming
                || !fulfillment_matches(&fulfillment, &rec.transfer.execution_condition)
            {
                return Err(PeerError::refused(
                    "NotAcceptedError",
                    "not an incoming transfer with this condition",
                ));
            }
            self.inner
                .log
                .note_fulfillment(&id, &fulfillment, ilp.as_deref().unwrap_or_default())
                .await
                .map_err(log_err_to_peer)?;
            if !self.is_connected() {
                // Nothing was sent for it by this call: a TypeError to the first send is not an earlier one's
                // echo.
                self.resend_fulfill_later(rec, fulfillment, ilp, false);
                return Ok(());
            }
            match self.fulfill_inner(&rec, fulfillment, ilp, false).await {
                Err(PeerError::Remote(e)) => (rec, e),
                other => return other,
            }
        };
        // The payer refused it. Past its expiry here too, the transfer ends cancelled on both sides.
        if rec.transfer.expires_at_ms <= system_ms(self.now()) {
            self.expire_unheld(id).await;
        }
        Err(PeerError::Remote(refused))
    }

    async fn fulfill_inner(
        &self,
        rec: &TransferRecord,
        fulfillment: [u8; 32],
        ilp: Option<Bytes>,
        already: bool,
    ) -> Result<(), PeerError> {
        let packet = fulfill_packet(&rec.transfer.id, fulfillment, ilp.as_ref());
        let reply = self.request(packet).await;
        match self
            .settle_fulfill_reply(rec, fulfillment, already, reply, false)
            .await
        {
            FulfillAttempt::Done(result) => result,
            FulfillAttempt::Unknown(e) => {
                self.resend_fulfill_later(rec.clone(), fulfillment, ilp, reply_may_have_arrived(e));
                Err(PeerError::Rpc(e))
            }
        }
    }

    /// Applies the peer's answer to one of our Fulfills. `retry`: an earlier attempt's outcome was unknown,
    /// so the peer may already have finished the transfer.
    async fn settle_fulfill_reply(
        &self,
        rec: &TransferRecord,
        fulfillment: [u8; 32],
        already: bool,
        reply: Result<Reply, RpcError>,
        retry: bool,
    ) -> FulfillAttempt {
        let id = rec.transfer.id;
        let accepted_pd = match reply {
            Ok(Reply::Response(pd)) => Some(pd),
            // Legacy answers a repeated Fulfill of a transfer it already finished with F00 TypeError (it reads
            // its stored record as a string): after an unknown outcome that means our first one arrived.
            Ok(Reply::Error(e)) if retry && e.name == "TypeError" => {
                // Ambiguous by legacy's own bug: a legacy peer that restarted before applying our first Fulfill
                // answers the same way for a transfer it still holds prepared. The likelier case wins; say so.
                tracing::warn!(peer = %self.inner.name, transfer = %id, "legacy peer answered a re-sent Fulfill with TypeError (it has finished the transfer or lost it in a restart); counted as fulfilled: compare balances if the peer restarted");
                None
            }
            Ok(Reply::Error(e)) => return FulfillAttempt::Done(Err(PeerError::Remote(e))),
            // No answer, whatever the reason (a closed session fails requests already written too): the payer
            // may have it, so only its answer to a re-send decides.
            Err(e) => return FulfillAttempt::Unknown(e),
        };
        if !already {
            // Deferred durability: the fulfillment was noted durably before it was sent, so if a power cut loses
            // this change, `start` re-sends the Fulfill and applies the peer's answer then.
            match self.inner.log.fulfill_deferred(&id, &fulfillment).await {
                Ok(_) => {
                    self.finished(&id);
                    self.emit(PeerEvent::IncomingFulfill {
                        transfer: rec.transfer.clone(),
                        fulfillment,
                    });
                }
                Err(e) => {
                    tracing::error!(peer = %self.inner.name, transfer = %id, error = %e, "fulfill accepted by peer but not applied locally");
                    return FulfillAttempt::Done(Err(log_err_to_peer(e)));
                }
            }
        }
        if let (Some(pd), Some(m)) = (accepted_pd, &self.inner.module) {
            let claim = pd.get(names::CLAIM).and_then(entry_claim);
            match m
                .handle_incoming_claim(&self.inner.ctx, claim.as_ref())
                .await
            {
                Ok(Some(credit)) => {
                    tracing::debug!(peer = %self.inner.name, increase = %credit.amount, "incoming claim accepted")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(peer = %self.inner.name, error = %e, "error handling incoming claim")
                }
            }
        }
        FulfillAttempt::Done(Ok(()))
    }

    /// Re-sends a Fulfill whose outcome is unknown until the peer answers it (see the module docs). Holds the
    /// transfer's expiry meanwhile; one task per transfer; stops when the trustline is dropped.
    /// `may_have_arrived`: an earlier send of it may have reached the peer; only then is a legacy `TypeError`
    /// (its answer to a Fulfill of a transfer it already finished) taken as accepted.
    fn resend_fulfill_later(
        &self,
        rec: TransferRecord,
        fulfillment: [u8; 32],
        ilp: Option<Bytes>,
        may_have_arrived: bool,
    ) {
        let id = rec.transfer.id;
        if !lock(&self.inner.settling).unacked.insert(id) {
            return; // a task already re-sends it
        }
        tracing::warn!(peer = %self.inner.name, transfer = %id, "fulfill outcome unknown; re-sending until the peer answers");
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut delay = FULFILL_RETRY_MIN;
            let mut sent_before = may_have_arrived;
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(FULFILL_RETRY_MAX);
                let Some(inner) = weak.upgrade() else { return };
                let tl = Trustline { inner };
                let already = matches!(
                    tl.inner.log.get(&id).await,
                    Ok(Some(TransferRecord {
                        state: TransferState::Fulfilled { .. },
                        ..
                    }))
                );
                let reply = tl
                    .request(fulfill_packet(&id, fulfillment, ilp.as_ref()))
                    .await;
                match tl
                    .settle_fulfill_reply(&rec, fulfillment, already, reply, sent_before)
                    .await
                {
                    FulfillAttempt::Unknown(e) => {
                        sent_before |= reply_may_have_arrived(e);
                        continue;
                    }
                    FulfillAttempt::Done(result) => {
                        lock(&tl.inner.settling).unacked.remove(&id);
                        match result {
                            Ok(()) => {
                                tracing::info!(peer = %tl.inner.name, transfer = %id, "re-sent fulfill accepted")
                            }
                            Err(e) => {
                                tracing::warn!(peer = %tl.inner.name, transfer = %id, error = %e, "re-sent fulfill refused; the transfer expires here too");
                                if rec.transfer.expires_at_ms <= system_ms(tl.now()) {
                                    tl.expire_unheld(id).await;
                                }
                            }
                        }
                        return;
                    }
                }
            }
        });
    }

    /// Our Fulfills whose outcome is unknown and that are being re-sent.
    pub fn unacknowledged_fulfills(&self) -> Vec<TransferId> {
        lock(&self.inner.settling).unacked.iter().copied().collect()
    }

    /// Legacy `rejectIncomingTransfer(id, reason)`: cancels an incoming transfer and sends a Reject carrying
    /// the ILP v1 Error `reason`.
    pub async fn reject_incoming_transfer(
        &self,
        id: TransferId,
        reason: IlpV1Error,
    ) -> Result<(), PeerError> {
        self.assert_connected("rejectIncomingTransfer")?;
        let Some(_claim) = CancelClaim::take(&self.inner, id) else {
            // Our Fulfill is out (or going out): the preimage decides, not a Reject.
            return Err(PeerError::refused(
                "Error",
                format!("{id} is being fulfilled; cannot reject"),
            ));
        };
        let rec = self.stored(&id).await.map_err(log_err_to_peer)?;
        if matches!(rec.state, TransferState::Fulfilled { .. }) {
            return Err(PeerError::refused(
                "AlreadyFulfilledError",
                format!(
                    "{id} has already been fulfilled: {}",
                    self.legacy_json(&rec)
                ),
            ));
        }
        if rec.direction != Direction::Incoming {
            return Err(PeerError::refused(
                "Error",
                format!("{id} is outgoing; cannot reject."),
            ));
        }
        let was_prepared = rec.state == TransferState::Prepared;
        self.inner
            .log
            .cancel(&id, "rejected")
            .await
            .map_err(log_err_to_peer)?;
        self.finished(&id);
        if was_prepared {
            self.emit(PeerEvent::IncomingReject {
                transfer: rec.transfer.clone(),
                reason: reason.clone(),
            });
        }
        let bytes = IlpV1Packet::Error(reason).to_bytes();
        let packet = Packet::Reject(Reject {
            transfer_id: id.0,
            protocol_data: ProtocolData::new().with(ProtocolDataEntry::octets(
                ProtocolName::from_static(names::ILP),
                bytes,
            )),
        });
        self.request_response(packet).await.map(|_| ())
    }

    /// Legacy `sendRequest({ilp, custom})`: sends a Message and returns the peer's `{ilp, custom}`.
    pub async fn send_request(&self, message: PeerMessage) -> Result<PeerMessage, PeerError> {
        self.assert_connected("sendRequest")?;
        self.emit(PeerEvent::OutgoingRequest(message.clone()));
        let pd = ilp_and_custom(message.ilp.as_deref(), message.custom.as_ref());
        let reply = self.request_response(Packet::Message(pd)).await?;
        let custom = match reply.get(names::CUSTOM) {
            Some(e) => Some(entry_json(e).map_err(|e| PeerError::InvalidReply(e.message))?),
            None => None,
        };
        let response = PeerMessage {
            ilp: reply.data(names::ILP).cloned(),
            custom,
        };
        self.emit(PeerEvent::IncomingResponse(response.clone()));
        Ok(response)
    }

    /// A module RPC to the peer's module (legacy `CustomRpc.call`): a Message with one JSON entry named after
    /// the method; the reply entry of the same name is parsed as JSON (`{}` when absent).
    pub async fn module_rpc(
        &self,
        method: &str,
        args: Value,
    ) -> Result<Value, channel_modules::ModuleError> {
        use channel_modules::ModuleError;
        let name = ProtocolName::new(method.to_owned())
            .map_err(|e| ModuleError::InvalidFields(format!("bad rpc method name: {e}")))?;
        let pd = ProtocolData::new().with(ProtocolDataEntry::json(name, args.to_string()));
        let reply = match self.request(Packet::Message(pd)).await {
            Ok(Reply::Response(pd)) => pd,
            Ok(Reply::Error(e)) => {
                return Err(ModuleError::Rpc(format!(
                    "{} {}: {}",
                    e.code_str(),
                    e.name,
                    e.data
                )))
            }
            Err(e) => return Err(ModuleError::Rpc(e.to_string())),
        };
        let matching: Vec<_> = reply.iter().filter(|e| e.name == *method).collect();
        match matching.as_slice() {
            [] => Ok(Value::Object(serde_json::Map::new())),
            [one] => serde_json::from_slice(&one.data)
                .map_err(|e| ModuleError::Rpc(format!("reply is not JSON: {e}"))),
            _ => Err(ModuleError::Rpc(format!("Ambigious response for {method}"))),
        }
    }

    // ---------------------------------------------------------------- expiry

    fn arm_expiry(&self, id: TransferId, expires_at_ms: i64) {
        if self.inner.expiries.arm(id, expires_at_ms) {
            let task = tokio::spawn(run_expiries(
                Arc::downgrade(&self.inner),
                Arc::clone(&self.inner.expiries),
                Arc::clone(&self.inner.clock),
            ));
            self.inner.expiries.set_task(task.abort_handle());
        }
    }

    /// Transfer `id` is finished (fulfilled or cancelled): no expiry, and it no longer counts as prepared.
    fn finished(&self, id: &TransferId) {
        self.inner.expiries.disarm(id);
        lock(&self.inner.prepared).release(id);
    }

    /// Reserves a place for a new prepared transfer `id` in `direction`; a legacy `NotAcceptedError` when the
    /// peer's [`PrepareLimits::max_prepared_transfers`] are prepared already.
    fn reserve_prepared(
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
    fn unreserve(&self, reservation: Reservation, id: &TransferId) {
        if reservation == Reservation::New {
            lock(&self.inner.prepared).release(id);
        }
    }

    /// Whether the peer's Fulfill of our outgoing transfer `id` passed its checks in time and is being applied
    /// (a router holds the transfer it was forwarded from meanwhile).
    pub(crate) fn is_accepting_fulfill(&self, id: &TransferId) -> bool {
        lock(&self.inner.settling).accepting.contains_key(id)
    }

    /// Number of prepared transfers with an armed expiry (tests check that finished ones leave).
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
    /// it is being applied, or while the hook holds a fulfillment for it ([`TransferHook::hold_incoming_expiry`]).
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
    async fn expire_unheld(&self, id: TransferId) -> bool {
        let Some(_claim) = CancelClaim::take(&self.inner, id) else {
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

    fn notify_settled(&self, transfer: Transfer, outcome: TransferOutcome) {
        if let Some(hook) = read(&self.inner.hook) {
            let tl = self.clone();
            tokio::spawn(async move { hook.outgoing_settled(tl, transfer, outcome).await });
        }
    }

    // ---------------------------------------------------------------- incoming requests

    /// Answers one request from the peer. `None` for packets that get no reply (Response, Error, Transfer).
    pub async fn handle_packet(&self, packet: Packet) -> Option<Reply> {
        let result = match packet {
            Packet::Prepare(p) => self.handle_prepare(p).await,
            Packet::Fulfill(f) => self.handle_fulfill(f).await,
            Packet::Reject(r) => self.handle_reject(r).await,
            Packet::Message(pd) => self.handle_message(pd).await,
            Packet::Response(_) | Packet::Error(_) | Packet::Transfer(_) => return None,
        };
        Some(match result {
            Ok(pd) => Reply::Response(pd),
            Err(e) => {
                tracing::debug!(peer = %self.inner.name, error = %e, "replying with error");
                Reply::Error(e.to_btp(self.now_ts()))
            }
        })
    }

    /// The stored record of `id`; an unknown ID is the log's `NotFound` (legacy F02 TransferNotFoundError).
    async fn stored(&self, id: &TransferId) -> Result<TransferRecord, TransferLogError> {
        self.inner
            .log
            .get(id)
            .await?
            .ok_or(TransferLogError::NotFound(*id))
    }

    /// A JSON rendering of a record shaped like the legacy `transferWithInfo`, for error messages.
    fn legacy_json(&self, rec: &TransferRecord) -> String {
        let (to, from) = match rec.direction {
            Direction::Incoming => (self.account(), self.peer_account()),
            Direction::Outgoing => (self.peer_account(), self.account()),
        };
        let t = &rec.transfer;
        let mut transfer = serde_json::json!({
            "id": t.id.to_uuid_string(),
            "amount": t.amount.to_string(),
            "executionCondition": b64url(&t.execution_condition),
            "expiresAt": iso_time(t.expires_at_ms),
            "to": to,
            "from": from,
            "ledger": self.prefix(),
        });
        if !t.ilp.is_empty() {
            transfer["ilp"] = Value::String(b64url(&t.ilp));
        }
        if let Some(c) = &t.custom {
            transfer["custom"] = c.clone();
        }
        let mut v = serde_json::json!({
            "transfer": transfer,
            "isIncoming": rec.direction == Direction::Incoming,
            "state": match rec.state {
                TransferState::Prepared => "prepared",
                TransferState::Fulfilled { .. } => "fulfilled",
                TransferState::Cancelled { .. } => "cancelled",
            },
        });
        if let TransferState::Fulfilled { fulfillment } = &rec.state {
            v["fulfillment"] = Value::String(b64url(fulfillment));
        }
        v.to_string()
    }

    /// The peer's [`PrepareLimits`] on one Prepare: its `ilp` and `custom` data, and how far ahead it expires
    /// (by our clock). A legacy `NotAcceptedError` over a limit; exactly at it is fine.
    fn check_prepare_limits(&self, p: &Prepare) -> Result<(), WireError> {
        let limits = self.inner.limits;
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
        let ahead_ms = expires_at_ms.saturating_sub(system_ms(self.now()));
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

    async fn handle_prepare(&self, p: Prepare) -> Result<ProtocolData, WireError> {
        if self.prefix().is_none() {
            return Err(WireError::new("Error", "not connected"));
        }
        if p.amount == 0 {
            return Err(WireError::new(
                "InvalidFieldsError",
                "amount (0) must be positive",
            ));
        }
        // Before the data is parsed or anything is stored.
        self.check_prepare_limits(&p)?;
        let custom = match p.protocol_data.get(names::CUSTOM) {
            Some(e) => Some(entry_json(e)?),
            None => None,
        };
        let transfer = Transfer {
            id: TransferId(p.transfer_id),
            amount: p.amount,
            execution_condition: p.execution_condition,
            expires_at_ms: p.expires_at.unix_millis(),
            ilp: p
                .protocol_data
                .data(names::ILP)
                .map(|b| b.to_vec())
                .unwrap_or_default(),
            custom,
        };
        let record = TransferRecord {
            transfer: transfer.clone(),
            direction: Direction::Incoming,
            state: TransferState::Prepared,
        };
        let reservation = self.reserve_prepared(Direction::Incoming, transfer.id)?;
        // Deferred durability: if a power cut loses this record, the payer's copy simply expires, and before
        // anything consequential happens to it here (noting a fulfillment, forwarding it, cancelling it) a
        // synced write of this node's database makes it durable too.
        let prepared = self
            .inner
            .log
            .prepare_deferred(&transfer, Direction::Incoming)
            .await;
        if !matches!(prepared, Ok(PrepareOutcome::Prepared)) {
            self.unreserve(reservation, &transfer.id);
        }
        match prepared {
            Ok(PrepareOutcome::Prepared) => {}
            Ok(PrepareOutcome::AlreadyExists(_)) => {
                // The peer repeated a Prepare we already have (same contents and direction; anything else is
                // DuplicateId from the log): nothing to do (legacy: silent success).
                return Ok(ProtocolData::new());
            }
            Err(TransferLogError::DuplicateId(_)) => {
                let existing = self.inner.log.get(&transfer.id).await.ok().flatten();
                return Err(WireError::new(
                    "DuplicateIdError",
                    format!(
                        "transfer {} matches the id of {} but not the contents.",
                        self.legacy_json(&record),
                        existing.map(|e| self.legacy_json(&e)).unwrap_or_default()
                    ),
                ));
            }
            Err(TransferLogError::IncomingLimitExceeded { .. }) => {
                return Err(WireError::new(
                    "NotAcceptedError",
                    format!(
                        "balanceIncomingFulfilledAndPrepared exceeds greatest allowed value after: {}",
                        self.legacy_json(&record)
                    ),
                ));
            }
            Err(e) => return Err(log_err_to_wire(e)),
        }
        if let Some(m) = &self.inner.module {
            if let Err(e) = m.handle_incoming_prepare(&self.inner.ctx, &record).await {
                tracing::debug!(peer = %self.inner.name, transfer = %transfer.id, error = %e, "module rejected incoming prepare");
                match self
                    .inner
                    .log
                    .cancel(&transfer.id, "refused by module")
                    .await
                {
                    Ok(_) => self.finished(&transfer.id),
                    Err(err) => {
                        tracing::warn!(peer = %self.inner.name, transfer = %transfer.id, error = %err, "cancel after module refusal failed")
                    }
                }
                return Err(WireError::from_module(&e));
            }
        }
        self.emit(PeerEvent::IncomingPrepare(transfer.clone()));
        self.arm_expiry(transfer.id, transfer.expires_at_ms);
        if let Some(hook) = read(&self.inner.hook) {
            let tl = self.clone();
            tokio::spawn(async move { hook.incoming_prepared(tl, transfer).await });
        }
        Ok(ProtocolData::new())
    }

    async fn handle_fulfill(&self, f: Fulfill) -> Result<ProtocolData, WireError> {
        let id = TransferId(f.transfer_id);
        let rec = self.stored(&id).await.map_err(log_err_to_wire)?;
        if matches!(rec.state, TransferState::Cancelled { .. }) {
            return Err(WireError::new(
                "AlreadyRolledBackError",
                format!(
                    "{id} has already been cancelled: {}",
                    self.legacy_json(&rec)
                ),
            ));
        }
        if rec.direction == Direction::Incoming {
            return Err(WireError::new(
                "Error",
                format!("{id} is incoming; refusing to fulfill."),
            ));
        }
        let already = matches!(rec.state, TransferState::Fulfilled { .. });
        // Marked before the clock is read, and held until the Fulfill is applied: whoever does not see the
        // mark (our expiry of this transfer, or a router deciding whether the transfer it was forwarded from
        // may expire) looked before this clock reading, so if the transfer had expired by then we refuse.
        let _accepting = if already {
            None
        } else {
            Some(AcceptClaim::take(&self.inner, id).ok_or_else(|| {
                WireError::new("AlreadyRolledBackError", format!("{id} is being cancelled"))
            })?)
        };
        if !already && rec.transfer.expires_at_ms < system_ms(self.now()) {
            return Err(WireError::new(
                "AlreadyRolledBackError",
                format!("{id} has already expired: {}", self.legacy_json(&rec)),
            ));
        }
        if !fulfillment_matches(&f.fulfillment, &rec.transfer.execution_condition) {
            return Err(WireError::new(
                "NotAcceptedError",
                "Fulfillment does not match the condition",
            ));
        }
        let ilp = f.protocol_data.data(names::ILP).cloned();
        if !already {
            match self.inner.log.fulfill(&id, &f.fulfillment).await {
                Ok(_) => {}
                Err(TransferLogError::AlreadyRolledBack(_)) => {
                    return Err(WireError::new(
                        "AlreadyRolledBackError",
                        format!("{id} has already been cancelled"),
                    ))
                }
                Err(e) => return Err(log_err_to_wire(e)),
            }
            self.finished(&id);
            self.emit(PeerEvent::OutgoingFulfill {
                transfer: rec.transfer.clone(),
                fulfillment: f.fulfillment,
                ilp: ilp.clone(),
            });
            self.notify_settled(
                rec.transfer.clone(),
                TransferOutcome::Fulfilled {
                    fulfillment: f.fulfillment,
                    ilp,
                },
            );
        }
        let mut pd = ProtocolData::new();
        if let Some(m) = &self.inner.module {
            // Durable sums only: a claim leaves the node, and must not cover a concurrent fulfill that a crash
            // could still undo here.
            let total = match self.inner.log.durable_sums().await {
                Ok(sums) => BigUint::from(sums.outgoing_fulfilled),
                Err(e) => return Err(log_err_to_wire(e)),
            };
            match m.create_outgoing_claim(&self.inner.ctx, &total).await {
                Ok(Some(claim)) => pd.push(claim_entry(&claim)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(peer = %self.inner.name, error = %e, "error creating outgoing claim")
                }
            }
        }
        Ok(pd)
    }

    async fn handle_reject(&self, r: Reject) -> Result<ProtocolData, WireError> {
        let id = TransferId(r.transfer_id);
        let ilp_error = match r.protocol_data.data(names::ILP).map(IlpV1Packet::decode) {
            Some(Ok(IlpV1Packet::Error(e))) => e,
            Some(Ok(_)) => {
                return Err(WireError::new(
                    "TypeError",
                    "Cannot read properties of undefined (reading 'length')",
                ))
            }
            Some(Err(e)) => return Err(WireError::new("TypeError", e.to_string())),
            None => {
                return Err(WireError::new(
                    "TypeError",
                    "The first argument must be of type string or an instance of Buffer, ArrayBuffer, or Array or an Array-like Object. Received undefined",
                ))
            }
        };
        let rec = self.stored(&id).await.map_err(log_err_to_wire)?;
        if matches!(rec.state, TransferState::Fulfilled { .. }) {
            return Err(WireError::new(
                "AlreadyFulfilledError",
                format!(
                    "{id} has already been fulfilled: {}",
                    self.legacy_json(&rec)
                ),
            ));
        }
        if rec.direction == Direction::Incoming {
            return Err(WireError::new(
                "Error",
                format!("{id} is incoming; peer cannot reject."),
            ));
        }
        if rec.state != TransferState::Prepared {
            return Err(WireError::new(
                "TransferNotFoundError",
                format!("No prepared transfer with ID {id}"),
            ));
        }
        self.inner
            .log
            .cancel(&id, "rejected by peer")
            .await
            .map_err(log_err_to_wire)?;
        self.finished(&id);
        let additional_info = serde_json::from_slice(&ilp_error.data)
            .unwrap_or_else(|_| Value::String("not JSON".to_owned()));
        let reason = RejectionMessage {
            code: ilp_error.code_str().to_owned(),
            name: ilp_error.name.clone(),
            triggered_by: ilp_error.triggered_by.clone(),
            forwarded_by: ilp_error.forwarded_by.last().cloned(),
            triggered_at_ms: ilp_error.triggered_at.unix_millis(),
            additional_info,
            ilp_error: ilp_error.clone(),
        };
        self.emit(PeerEvent::OutgoingReject {
            transfer: rec.transfer.clone(),
            reason,
        });
        self.notify_settled(rec.transfer, TransferOutcome::Rejected(ilp_error));
        Ok(ProtocolData::new())
    }

    async fn handle_message(&self, pd: ProtocolData) -> Result<ProtocolData, WireError> {
        let ilp = pd.data(names::ILP).cloned();
        let custom = match pd.get(names::CUSTOM) {
            Some(e) => Some(entry_json(e)?),
            None => None,
        };
        if ilp.is_none() {
            if let Some(e) = pd.get(names::INFO) {
                let full = e.content_type == ContentType::OCTET_STREAM
                    && e.data.first() == Some(&INFO_REQUEST_FULL);
                return Ok(if full {
                    let info = self.get_info().unwrap_or(Value::Null);
                    ProtocolData::new().with(ProtocolDataEntry::json(
                        ProtocolName::from_static(names::INFO),
                        info.to_string(),
                    ))
                } else {
                    ProtocolData::new().with(ProtocolDataEntry::text(
                        ProtocolName::from_static(names::INFO),
                        self.account().unwrap_or_default(),
                    ))
                });
            }
            if pd.get(names::BALANCE).is_some() {
                let bytes = balance_to_int64(self.inner.log.balance()).ok_or_else(|| {
                    WireError::new("Error", "balance does not fit in a 64-bit integer")
                })?;
                return Ok(ProtocolData::new().with(ProtocolDataEntry::octets(
                    ProtocolName::from_static(names::BALANCE),
                    Bytes::copy_from_slice(&bytes),
                )));
            }
            if pd.get(names::LIMIT).is_some() {
                let max = if self.inner.stateful {
                    self.inner.log.maximum()
                } else {
                    Limit::Unbounded
                };
                return Ok(ProtocolData::new().with(ProtocolDataEntry::json(
                    ProtocolName::from_static(names::LIMIT),
                    Value::String(limit_string(max)).to_string(),
                )));
            }
            if custom.is_none() {
                return self.handle_module_protocols(&pd).await;
            }
        }
        let message = PeerMessage { ilp, custom };
        self.emit(PeerEvent::IncomingRequest(message.clone()));
        if let Some(answer) = self.answer_quote(message.ilp.as_ref()).await {
            let response = PeerMessage {
                ilp: Some(answer),
                custom: None,
            };
            self.emit(PeerEvent::OutgoingResponse(response.clone()));
            return Ok(ilp_and_custom(response.ilp.as_deref(), None));
        }
        let Some(handler) = read(&self.inner.request_handler) else {
            return Err(WireError::new(
                "NotAcceptedError",
                "no request handler registered",
            ));
        };
        let response = match handler.handle_request(message).await {
            Ok(r) => r,
            Err(e) => PeerMessage {
                ilp: Some(
                    IlpV1Packet::Error(IlpV1Error {
                        code: *b"F00",
                        name: "Bad Request".to_owned(),
                        triggered_by: self.account().unwrap_or_default(),
                        forwarded_by: Vec::new(),
                        triggered_at: self.now_ts(),
                        data: Bytes::from(
                            serde_json::json!({ "message": e.to_string() }).to_string(),
                        ),
                    })
                    .to_bytes(),
                ),
                custom: None,
            },
        };
        self.emit(PeerEvent::OutgoingResponse(response.clone()));
        Ok(ilp_and_custom(
            response.ilp.as_deref(),
            response.custom.as_ref(),
        ))
    }

    /// Hands an ILQP quote request (ILP v1 types 2, 4, 6) to the routing hook; `None` when there is no hook,
    /// the packet is something else, or the hook leaves it to the request handler.
    async fn answer_quote(&self, ilp: Option<&Bytes>) -> Option<Bytes> {
        let hook = read(&self.inner.hook)?;
        let request = match IlpV1Packet::decode(ilp?) {
            Ok(
                p @ (IlpV1Packet::LiquidityRequest(_)
                | IlpV1Packet::BySourceRequest(_)
                | IlpV1Packet::ByDestinationRequest(_)),
            ) => p,
            _ => return None,
        };
        hook.quote_request(self.clone(), request).await
    }

    /// Side protocols that are not built in: the module's RPC methods (legacy `CustomRpc.handleProtocols`),
    /// plus a `claim` Message handed to `handle_incoming_claim`.
    async fn handle_module_protocols(&self, pd: &ProtocolData) -> Result<ProtocolData, WireError> {
        let Some(m) = &self.inner.module else {
            return Err(WireError::new(
                "TypeError",
                "Cannot read properties of undefined (reading 'handleProtocols')",
            ));
        };
        let mut out = ProtocolData::new();
        for e in pd.iter() {
            if e.name == *names::CLAIM {
                let claim = entry_claim(e);
                m.handle_incoming_claim(&self.inner.ctx, claim.as_ref())
                    .await
                    .map_err(|err| WireError::from_module(&err))?;
                continue;
            }
            let args = entry_json(e)?;
            let result = m
                .handle_rpc(&self.inner.ctx, e.name.as_str(), args)
                .await
                .map_err(|err| WireError::from_module(&err))?;
            out.push(ProtocolDataEntry::json(e.name.clone(), result.to_string()));
        }
        Ok(out)
    }
}

/// Who may finish an incoming transfer right now (see [`FulfillClaim`], [`CancelClaim`]).
#[derive(Default)]
struct Settling {
    /// Our `fulfill_condition` calls in progress, per transfer.
    fulfilling: HashMap<TransferId, u32>,
    /// Our Fulfills whose outcome is unknown, being re-sent (the transfer may not be cancelled meanwhile).
    unacked: HashSet<TransferId>,
    /// Transfers being cancelled by their expiry or our Reject (a Fulfill may not start).
    cancelling: HashSet<TransferId>,
    /// Our outgoing transfers whose Fulfill from the peer passed its checks in time and is being applied
    /// ([`AcceptClaim`]): not cancelled meanwhile.
    accepting: HashMap<TransferId, u32>,
}

impl Settling {
    /// Whether our Fulfill of `id` is in flight or being re-sent.
    fn delivering(&self, id: &TransferId) -> bool {
        self.fulfilling.contains_key(id) || self.unacked.contains(id)
    }
}

/// Held by the handling of the peer's Fulfill of our outgoing transfer, from before its expiry check until it
/// is applied (or refused).
struct AcceptClaim<'a> {
    inner: &'a TrustlineInner,
    id: TransferId,
}

impl<'a> AcceptClaim<'a> {
    /// `None` if the transfer is being cancelled.
    fn take(inner: &'a TrustlineInner, id: TransferId) -> Option<Self> {
        let mut settling = lock(&inner.settling);
        if settling.cancelling.contains(&id) {
            return None;
        }
        *settling.accepting.entry(id).or_insert(0) += 1;
        Some(AcceptClaim { inner, id })
    }
}

impl Drop for AcceptClaim<'_> {
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
struct FulfillClaim<'a> {
    inner: &'a TrustlineInner,
    id: TransferId,
}

impl<'a> FulfillClaim<'a> {
    /// `None` if the transfer is being cancelled.
    fn take(inner: &'a TrustlineInner, id: TransferId) -> Option<Self> {
        let mut settling = lock(&inner.settling);
        if settling.cancelling.contains(&id) {
            return None;
        }
        *settling.fulfilling.entry(id).or_insert(0) += 1;
        Some(FulfillClaim { inner, id })
    }

    /// As [`FulfillClaim::take`], but `Ok(None)` when our Fulfill of the transfer is already in flight or
    /// being re-sent (whoever sends it delivers it), and `Err(())` if the transfer is being cancelled.
    fn take_unless_delivering(
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
        Ok(Some(FulfillClaim { inner, id }))
    }
}

impl Drop for FulfillClaim<'_> {
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
struct CancelClaim<'a> {
    inner: &'a TrustlineInner,
    id: TransferId,
}

impl<'a> CancelClaim<'a> {
    /// `None` while our Fulfill of the transfer is in flight or unacknowledged, or the peer's Fulfill of it is
    /// being applied.
    fn take(inner: &'a TrustlineInner, id: TransferId) -> Option<Self> {
        let mut settling = lock(&inner.settling);
        if settling.delivering(&id) || settling.accepting.contains_key(&id) {
            return None;
        }
        settling.cancelling.insert(id);
        Some(CancelClaim { inner, id })
    }
}

impl Drop for CancelClaim<'_> {
    fn drop(&mut self) {
        lock(&self.inner.settling).cancelling.remove(&self.id);
    }
}

/// What one attempt to deliver our Fulfill came to.
enum FulfillAttempt {
    /// The peer answered (accepted → applied, or refused), or the request could not be made at all.
    Done(Result<(), PeerError>),
    /// No answer: the Fulfill may or may not have arrived.
    Unknown(RpcError),
}

/// The Fulfill packet for transfer `id` (with the `ilp` entry when there is one).
fn fulfill_packet(id: &TransferId, fulfillment: [u8; 32], ilp: Option<&Bytes>) -> Packet {
    let mut pd = ProtocolData::new();
    if let Some(ilp) = ilp.filter(|i| !i.is_empty()) {
        pd.push(ProtocolDataEntry::octets(
            ProtocolName::from_static(names::ILP),
            ilp.clone(),
        ));
    }
    Packet::Fulfill(Fulfill {
        transfer_id: id.0,
        fulfillment,
        protocol_data: pd,
    })
}

/// Maps a transfer-log error to the legacy wire error.
fn log_err_to_wire(e: TransferLogError) -> WireError {
    match e {
        TransferLogError::DuplicateId(id) => WireError::new(
            "DuplicateIdError",
            format!("transfer {id} matches the id of an existing transfer but not the contents."),
        ),
        TransferLogError::NotFound(id) => WireError::new(
            "TransferNotFoundError",
            format!("No transfer found with ID {id}"),
        ),
        TransferLogError::AlreadyFulfilled(id) => WireError::new(
            "AlreadyFulfilledError",
            format!("{id} has already been fulfilled"),
        ),
        TransferLogError::AlreadyRolledBack(id) => WireError::new(
            "AlreadyRolledBackError",
            format!("{id} has already been rolled back"),
        ),
        TransferLogError::IncomingLimitExceeded { after, .. } => WireError::new(
            "NotAcceptedError",
            format!(
                "balanceIncomingFulfilledAndPrepared exceeds greatest allowed value after: {after}"
            ),
        ),
        TransferLogError::OutgoingLimitExceeded { after, .. } => WireError::new(
            "NotAcceptedError",
            format!(
                "balanceOutgoingFulfilledAndPrepared exceeds greatest allowed value after: {after}"
            ),
        ),
        other => WireError::new("Error", other.to_string()),
    }
}

fn log_err_to_peer(e: TransferLogError) -> PeerError {
    match e {
        TransferLogError::Store(s) => PeerError::Store(s),
        other => PeerError::Refused(log_err_to_wire(other)),
    }
}

/// Adapts a [`Trustline`] to the transport's [`RequestHandler`].
#[derive(Clone, Debug)]
pub struct TrustlineHandler(pub Trustline);

#[async_trait]
impl RequestHandler for TrustlineHandler {
    async fn handle_request(
        &self,
        _session: &BtpSession,
        _request_id: u32,
        packet: Packet,
    ) -> Option<Reply> {
        self.0.handle_packet(packet).await
    }
}

/// Whether a request that failed with `e` may still have reached the peer (it was written, or may have been).
fn reply_may_have_arrived(e: RpcError) -> bool {
    !matches!(e, RpcError::NotConnected | RpcError::TooManyPending)
}

/// The expiry task of one trustline: sleeps until the earliest deadline (in chunks of at most
/// [`MAX_TIMER_CHUNK`], re-reading the clock, so a far expiry never fires early), then expires what is due,
/// each in its own task (an expiry sends a Reject and waits for the answer). Holds no strong reference to the
/// trustline while it sleeps; the trustline aborts it when dropped.
async fn run_expiries(weak: Weak<TrustlineInner>, queue: Arc<ExpiryQueue>, clock: Arc<dyn Clock>) {
    loop {
        let (due, next) = queue.take_due(system_ms(clock.now()));
        for id in due {
            tokio::spawn(expire_when_possible(weak.clone(), id));
        }
        let wait = next.map(|at| {
            let ms = u64::try_from(at - system_ms(clock.now())).unwrap_or(0);
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
        let retry_at = system_ms(tl.inner.clock.now())
            .saturating_add(i64::try_from(EXPIRY_RETRY_DELAY.as_millis()).unwrap_or(i64::MAX));
        tl.arm_expiry(id, retry_at);
    }
}
