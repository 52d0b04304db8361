//! A mock interledger-rs 1.0 `ilp-node` for tests and benchmarks, for the bridge's modern side: the bridge is an
//! ordinary account of this node, over BTP/2.0 or ILP-over-HTTP, and its settlement engine API is the account's
//! `settlement_engine_url`. interledger-rs itself cannot run here (docs/modern.md §10.1), so this reproduces its
//! documented behaviour, byte for byte where a peer can see it. Every row cites docs/modern.md.
//!
//! | concern | behaviour reproduced | where | docs |
//! |--|--|--|--|
//! | accounts | UUID IDs; admin `POST /accounts` fields as [`AccountDetails`]; address defaults to `<node>.<username>`; asset code upper-cased; NonRoutingAccount by default | [`accounts`] | §5.2 |
//! | SE account | after creation, `POST <se>/accounts {"id":"<uuid>"}` with path segments appended to the SE URL; transport errors retried (10×, 1 s / 5 s after a timeout, 5 s timeout each); HTTP errors not retried; a 2xx triggers the prefund check | [`settlement`] | §5.4 |
//! | one HTTP port | `POST /accounts/{username}/ilp` (ILP-over-HTTP) and `GET /accounts/{username}/ilp/btp` (BTP websocket) | [`server`] | §5.8, §5.9 |
//! | ILP-over-HTTP server | Bearer token = header minus its first 7 characters; 40,000-byte body limit (413 above); 401 on bad auth; 400 problem JSON when the body is not a Prepare; 200 `application/octet-stream` with the Fulfill **or** Reject | [`http`] | §5.9 |
//! | ILP-over-HTTP client | `Authorization: Bearer <outgoing token>`, 30 s timeout; 4xx → F02, 5xx → T01, transport error → T01 `Error sending ILP over HTTP request: …`, unreadable body → T01 | [`http`] | §5.9 |
//! | BTP server | first binary frame within 10 s (pings before it skipped) must be a Message with `auth_token`; `auth_username` ignored; success = empty Response with the same request ID; failure = socket dropped, no BTP Error | [`btp_server`] | §5.8 |
//! | BTP client | dials `ilp_over_btp_url` (`btp+` stripped), sends `auth` + `auth_token` with a random request ID, does not wait, never reconnects | [`btp_client`] | §5.8 |
//! | BTP frames | Prepares **sent in Response (1)** frames with a random u32 request ID; Fulfill/Reject **sent in Message (6)** frames; either type accepted on input, dispatched on the ILP type byte; Transfer (7) and Error frames dropped; undecodable frames dropped (strict codec: no bytes after the envelope, timestamps `YYYYMMDDHHMMSS[.f{1,3}]Z`); websocket ping every 30 s, no pong by the next ping closes | [`btp_connection`] | §5.8 |
//! | incoming pipeline | expired → R00; amount > `max_packet_amount` → F08 with `(received, max)` data; `peer.config` (exact condition) answered; `peer.settle` relayed to the SE; `peer.route.*` to CCP; else routed | [`pipeline`] | §5.11 |
//! | outgoing pipeline | same asset code rate 1 with scale conversion (f64, floor); balance check (`T04` on `min_balance`); local receiver; expiry shortened by 500 + 500 ms and capped at 30 s; timeout at expiry → R00; fulfillment checked → F09; HTTP, else BTP, else F02 `No outgoing route for account: …` | [`pipeline`] | §5.11 |
//! | routing | exact match, else longest string prefix, over `routes:current` (account addresses, then CCP's table), the default route and static routes (which win) | [`routing`] | §5.12 |
//! | IL-DCP | answers `peer.config` from any account with its address and asset; on a new Parent account: asks it, takes the default route, takes the address, renames children, sends a route control request | [`ildcp`] | §4.1 |
//! | CCP | sends routes to Child/Peer, accepts them from Parent/Peer; control and update handling, filters, epochs, best-route choice, broadcasts on an interval (configurable), 30 s hold-down, backoff for unreachable children | [`ccp`] | §4.3, §5.10 |
//! | peer.settle in | from an account with an SE: `POST <se>/accounts/<uuid>/messages` (octet-stream, fresh UUID `Idempotency-Key`); 2xx → Fulfill (zeros, SE body); 4xx → F00; 5xx or transport → T00; `triggeredBy` `peer.settle` | [`settlement`] | §5.5 |
//! | balances | the Redis Lua scripts: prepare, fulfill + settle trigger, reject, incoming settlement, refund | [`balances`] | §5.3 |
//! | settling | fresh key per attempt, 5 s timeout, 10 retries, refund after a 4xx or the last failure | [`super::settle_client`] | §5.4 |
//! | settlement API (SE → node) | `201 RECEIVED`; 409 on any reused key; 400 for a non-UUID ID or bad Quantity or no key; 404 unknown account or no SE; scale conversion with leftovers and `u64` clamping; messages → `peer.settle` Prepare (30 s) → 201 body without Content-Type, or 502 | [`settlement`] | §5.5, §5.7 |
//! | local receiver | a test registers preimages on a local account; a Prepare for that account's address with a registered condition is fulfilled, anything else falls through to F02 as interledger-rs's STREAM receiver does for packets it cannot decrypt | [`pipeline`] | §5.11 |
//!
//! Not reproduced: STREAM (payments are Prepares the test builds), rate limits, the echo protocol, the admin and
//! user HTTP API (accounts and routes are set through Rust calls), Redis persistence. The mock applies the
//! balance scripts before it relays a Fulfill or Reject (interledger-rs runs them in a task spawned right after):
//! the end state is the same, and tests need not wait for it. It reads the system clock
//! (`Timestamp::now()`) where interledger-rs does: it stands for another node, whose clock the bridge's does not
//! control, so no [`Clock`](channel_modules::clock::Clock) is injected into it.
//!
//! Observability for assertions: [`IlpNode::balance`], [`IlpNode::packets`], [`IlpNode::settle_requests`],
//! [`IlpNode::engine_setups`], [`IlpNode::engine_messages`], [`IlpNode::credits`], [`IlpNode::routes`].

pub mod accounts;
pub mod balances;
pub mod btp_client;
pub mod btp_connection;
pub mod btp_server;
pub mod ccp;
pub mod http;
pub mod ildcp;
pub mod pipeline;
pub mod records;
pub mod rewind;
pub mod routing;
pub mod server;
pub mod settlement;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btp::ilp_v4::{Address, Fulfill, Prepare, Reject};
use channel_modules::sync::lock;
use num_bigint::BigUint;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

pub use accounts::{Account, AccountDetails, RoutingRelation};
pub use balances::Balance;
pub use records::{
    CreditRecord, Direction, MessageRecord, PacketRecord, SettleRecord, SetupRecord, Transport,
};

use self::balances::SettlementKeys;
use self::btp_connection::Connection;
use self::routing::RoutingTable;
use super::settle_client::SettlePolicy;

/// The address of a node started without one (interledger-rs's `DEFAULT_ILP_ADDRESS`).
pub const DEFAULT_ILP_ADDRESS: &str = "local.host";
/// interledger-rs's default CCP broadcast interval (`--route_broadcast_interval`, 30000 ms).
pub const DEFAULT_ROUTE_BROADCAST_INTERVAL: Duration = Duration::from_secs(30);
/// interledger-rs's websocket ping interval; a pong must come before the next ping.
pub const BTP_PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long interledger-rs's BTP server waits for the auth frame.
pub const BTP_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of interledger-rs's ILP-over-HTTP client.
pub const HTTP_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of an ILP request: a Fulfill or a Reject.
pub type IlpResult = Result<Fulfill, Reject>;

/// Errors of the mock node's Rust API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Socket trouble.
    #[error("mock node io: {0}")]
    Io(#[from] std::io::Error),
    /// An account field interledger-rs would refuse.
    #[error("invalid account field {field}: {reason}")]
    InvalidAccount {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The username is taken.
    #[error("an account named {0} already exists")]
    DuplicateUsername(String),
    /// No such account.
    #[error("unknown account {0}")]
    UnknownAccount(String),
    /// Dialling an account's BTP URL failed (interledger-rs answers the account creation with an error; the
    /// account stays).
    #[error("cannot connect to {url} over BTP: {source}")]
    BtpConnect {
        /// The URL dialled.
        url: String,
        /// Why.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// Asking the parent for an address failed (the account stays).
    #[error("IL-DCP with the parent failed: {0}")]
    Ildcp(String),
    /// The settlement engine account setup failed at the transport level (the account stays).
    #[error("settlement engine account setup failed: {0}")]
    EngineSetup(#[source] EngineSetupError),
    /// A reqwest client could not be built.
    #[error("http client: {0}")]
    Http(#[source] reqwest::Error),
}

/// Why the settlement engine account setup failed ([`NodeError::EngineSetup`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineSetupError {
    /// The account's engine URL cannot take the `accounts` path.
    #[error(transparent)]
    Url(#[from] crate::testing::settle_client::EngineUrlError),
    /// Every attempt to reach the engine failed (the last attempt's error).
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// The engine did not accept the prefund settlement.
    #[error("prefund of {0} was not accepted")]
    PrefundRefused(u64),
    /// The prefund could not be applied to the balance.
    #[error(transparent)]
    Prefund(#[from] balances::BalanceError),
}

/// Settings of the mock node. [`Default`] is interledger-rs's defaults; tests shorten the timers.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `--ilp_address`; `None` starts as [`DEFAULT_ILP_ADDRESS`].
    pub ilp_address: Option<String>,
    /// `--route_broadcast_interval`; `None` runs no timer (no control requests at start, no broadcasts: tests call
    /// [`IlpNode::request_all_routes`] and [`IlpNode::broadcast_routes`] when they want them).
    pub route_broadcast_interval: Option<Duration>,
    /// Settlement client waits and retries (also used for SE account setup and peer.settle delivery).
    pub settle_policy: SettlePolicy,
    /// BTP ping interval.
    pub ping_interval: Duration,
    /// BTP auth timeout.
    pub auth_timeout: Duration,
    /// ILP-over-HTTP client timeout.
    pub http_client_timeout: Duration,
    /// Exchange-rate spread (interledger-rs `exchange_rate.spread`, 0 by default).
    pub spread: f64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            ilp_address: None,
            route_broadcast_interval: Some(DEFAULT_ROUTE_BROADCAST_INTERVAL),
            settle_policy: SettlePolicy::default(),
            ping_interval: BTP_PING_INTERVAL,
            auth_timeout: BTP_AUTH_TIMEOUT,
            http_client_timeout: HTTP_CLIENT_TIMEOUT,
            spread: 0.0,
        }
    }
}

/// Everything that changes under the node's one lock. Never held across an `.await`.
pub(crate) struct State {
    pub(crate) address: Address,
    pub(crate) accounts: HashMap<Uuid, Account>,
    pub(crate) usernames: HashMap<String, Uuid>,
    pub(crate) balances: HashMap<Uuid, Balance>,
    pub(crate) settlement_keys: SettlementKeys,
    /// Idempotency keys the settlement API has seen (any reuse is a 409, docs/modern.md §5.7 (a)).
    pub(crate) api_keys: HashSet<String>,
    /// `uncredited-amount:<id>`: leftovers of credits, as (amount, scale) pairs.
    pub(crate) leftovers: HashMap<Uuid, Vec<(BigUint, u8)>>,
    pub(crate) routing: RoutingTable,
    /// Local receivers: account → condition → preimage.
    pub(crate) receivers: HashMap<Uuid, HashMap<[u8; 32], [u8; 32]>>,
    /// Exchange rates by asset code (`rates:current`).
    pub(crate) rates: HashMap<String, f64>,
    /// Answer credits with this status instead of processing them.
    pub(crate) credit_override: Option<u16>,
}

impl State {
    pub(crate) fn account_by_name(&self, username: &str) -> Option<&Account> {
        self.usernames
            .get(username)
            .and_then(|id| self.accounts.get(id))
    }
}

/// The shared core; [`IlpNode`] is its handle.
pub(crate) struct Node {
    pub(crate) config: NodeConfig,
    pub(crate) http: reqwest::Client,
    pub(crate) http_addr: SocketAddr,
    pub(crate) settlement_addr: SocketAddr,
    pub(crate) state: Mutex<State>,
    /// Outgoing BTP requests awaiting a Fulfill or Reject, by request ID (one map for all connections, as in
    /// interledger-rs: a reply on any connection resolves it).
    pub(crate) pending: Mutex<HashMap<u32, oneshot::Sender<IlpResult>>>,
    pub(crate) connections: Mutex<HashMap<Uuid, Connection>>,
    pub(crate) next_connection_id: AtomicU64,
    pub(crate) ccp: ccp::RouteManager,
    pub(crate) records: Mutex<records::Records>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Node {
    pub(crate) fn address(&self) -> Address {
        lock(&self.state).address.clone()
    }

    pub(crate) fn account(&self, id: Uuid) -> Option<Account> {
        lock(&self.state).accounts.get(&id).cloned()
    }

    pub(crate) fn record_packet(&self, record: PacketRecord) {
        lock(&self.records).packets.push(record);
    }

    pub(crate) fn connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// How [`IlpNode::pay`] picks the outgoing account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Through the router, as any incoming Prepare.
    Routed,
    /// Straight to this account's outgoing pipeline (bypassing the router, like interledger-rs's own
    /// `peer.*` senders).
    Account(String),
}

/// A running mock node. Dropping it stops its listeners and connections.
pub struct IlpNode {
    node: Arc<Node>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for IlpNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IlpNode")
            .field("http", &self.node.http_addr)
            .field("settlement", &self.node.settlement_addr)
            .finish_non_exhaustive()
    }
}

impl IlpNode {
    /// Starts a node on two free loopback ports (the HTTP/BTP port and the settlement API port) and its CCP
    /// broadcast timer.
    pub async fn start(config: NodeConfig) -> Result<IlpNode, NodeError> {
        let address = Address::new(config.ilp_address.as_deref().unwrap_or(DEFAULT_ILP_ADDRESS))
            .map_err(|e| NodeError::InvalidAccount {
                field: "ilp_address",
                reason: e.to_string(),
            })?;
        let http_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let settlement_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(NodeError::Http)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let node = Arc::new(Node {
            http,
            http_addr: http_listener.local_addr()?,
            settlement_addr: settlement_listener.local_addr()?,
            state: Mutex::new(State {
                address,
                accounts: HashMap::new(),
                usernames: HashMap::new(),
                balances: HashMap::new(),
                settlement_keys: SettlementKeys::default(),
                api_keys: HashSet::new(),
                leftovers: HashMap::new(),
                routing: RoutingTable::default(),
                receivers: HashMap::new(),
                rates: HashMap::new(),
                credit_override: None,
            }),
            pending: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(0),
            ccp: ccp::RouteManager::new(),
            records: Mutex::new(records::Records::default()),
            shutdown: shutdown_rx,
            config,
        });
        tokio::spawn(server::serve(Arc::clone(&node), http_listener));
        tokio::spawn(settlement::serve_api(
            Arc::clone(&node),
            settlement_listener,
        ));
        if let Some(interval) = node.config.route_broadcast_interval {
            tokio::spawn(ccp::run_broadcasts(Arc::clone(&node), interval));
        }
        Ok(IlpNode {
            node,
            shutdown: shutdown_tx,
        })
    }

    /// `http://127.0.0.1:<port>`: ILP-over-HTTP and BTP.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.node.http_addr)
    }

    /// The ILP-over-HTTP URL of an account: `http://127.0.0.1:<port>/accounts/<username>/ilp`.
    pub fn ilp_over_http_url(&self, username: &str) -> String {
        format!("http://{}/accounts/{username}/ilp", self.node.http_addr)
    }

    /// The BTP URL of an account: `ws://127.0.0.1:<port>/accounts/<username>/ilp/btp`.
    pub fn btp_url(&self, username: &str) -> String {
        format!("ws://{}/accounts/{username}/ilp/btp", self.node.http_addr)
    }

    /// The connector-side settlement API (`--settlement_api_bind_address`): `http://127.0.0.1:<port>`.
    pub fn settlement_api_url(&self) -> String {
        format!("http://{}", self.node.settlement_addr)
    }

    /// The node's current address.
    pub fn ilp_address(&self) -> Address {
        self.node.address()
    }

    /// Creates an account as interledger-rs's `POST /accounts` does: store it, then dial its BTP URL, then (for
    /// a Parent) IL-DCP, then set up its SE account. A failure after the store step is returned, but the account
    /// stays, as in interledger-rs.
    pub async fn add_account(&self, details: AccountDetails) -> Result<Account, NodeError> {
        let account = {
            let mut state = lock(&self.node.state);
            if state.usernames.contains_key(&details.username) {
                return Err(NodeError::DuplicateUsername(details.username));
            }
            let account = Account::from_details(Uuid::new_v4(), details, &state.address)?;
            state.usernames.insert(account.username.clone(), account.id);
            state.balances.insert(account.id, Balance::default());
            state
                .routing
                .add_account_route(account.ilp_address.as_str(), account.id);
            state.accounts.insert(account.id, account.clone());
            account
        };
        if let Some(url) = &account.ilp_over_btp_url {
            btp_client::connect(&self.node, &account, url).await?;
        }
        if account.routing_relation == RoutingRelation::Parent {
            ildcp::ask_parent(&self.node, &account).await?;
        }
        if account.settlement_engine_url.is_some() {
            settlement::set_up_engine_account(&self.node, &account).await?;
        }
        Ok(self.node.account(account.id).unwrap_or(account))
    }

    /// The account called `username`.
    pub fn account(&self, username: &str) -> Option<Account> {
        lock(&self.node.state).account_by_name(username).cloned()
    }

    /// An account's balance and prepaid amount.
    pub fn balance(&self, username: &str) -> Result<Balance, NodeError> {
        let state = lock(&self.node.state);
        let id = state
            .usernames
            .get(username)
            .ok_or_else(|| NodeError::UnknownAccount(username.to_owned()))?;
        Ok(state.balances.get(id).copied().unwrap_or_default())
    }

    /// `PUT /routes/static/:prefix` with the account called `username`.
    pub fn set_static_route(&self, prefix: &str, username: &str) -> Result<(), NodeError> {
        let mut state = lock(&self.node.state);
        let id = *state
            .usernames
            .get(username)
            .ok_or_else(|| NodeError::UnknownAccount(username.to_owned()))?;
        state.routing.set_static_route(prefix, id);
        Ok(())
    }

    /// `PUT /routes/static`: replaces every static route (prefix → username).
    pub fn set_static_routes(&self, routes: &[(&str, &str)]) -> Result<(), NodeError> {
        let mut state = lock(&self.node.state);
        let mut map = HashMap::new();
        for (prefix, username) in routes {
            let id = *state
                .usernames
                .get(*username)
                .ok_or_else(|| NodeError::UnknownAccount((*username).to_owned()))?;
            map.insert((*prefix).to_owned(), id);
        }
        state.routing.set_static_routes(map);
        Ok(())
    }

    /// The router's merged table: prefix → username.
    pub fn routes(&self) -> HashMap<String, String> {
        let state = lock(&self.node.state);
        state
            .routing
            .merged()
            .into_iter()
            .filter_map(|(prefix, id)| {
                state
                    .accounts
                    .get(&id)
                    .map(|a| (prefix, a.username.clone()))
            })
            .collect()
    }

    /// Sets the exchange rate of an asset code (interledger-rs `PUT /rates`: value of one unit in a common base).
    pub fn set_exchange_rate(&self, asset_code: &str, rate: f64) {
        lock(&self.node.state)
            .rates
            .insert(asset_code.to_uppercase(), rate);
    }

    /// Makes the local account `username` a receiver that fulfills Prepares to its address carrying
    /// `sha256(preimage)` as condition.
    pub fn register_preimage(&self, username: &str, preimage: [u8; 32]) -> Result<(), NodeError> {
        use sha2::Digest;
        let mut state = lock(&self.node.state);
        let id = *state
            .usernames
            .get(username)
            .ok_or_else(|| NodeError::UnknownAccount(username.to_owned()))?;
        let condition: [u8; 32] = sha2::Sha256::digest(preimage).into();
        state
            .receivers
            .entry(id)
            .or_default()
            .insert(condition, preimage);
        Ok(())
    }

    /// Originates a payment from the local account `from`: the Prepare enters the incoming pipeline as if that
    /// account had sent it ([`Via::Routed`]) or goes straight to the outgoing pipeline of an account
    /// ([`Via::Account`]). Returns the Fulfill or Reject.
    pub async fn pay(
        &self,
        from: &str,
        via: Via,
        prepare: Prepare,
    ) -> Result<IlpResult, NodeError> {
        let from = self
            .account(from)
            .ok_or_else(|| NodeError::UnknownAccount(from.to_owned()))?;
        self.node.record_packet(PacketRecord {
            account: from.username.clone(),
            direction: Direction::In,
            transport: Transport::Local,
            packet: btp::ilp_v4::IlpV4Packet::Prepare(prepare.clone()),
        });
        Ok(match via {
            Via::Routed => pipeline::handle_incoming(&self.node, from, prepare).await,
            Via::Account(to) => {
                let to = self
                    .account(&to)
                    .ok_or_else(|| NodeError::UnknownAccount(to.clone()))?;
                let amount = prepare.amount;
                pipeline::send_outgoing(&self.node, &from, &to, prepare, amount).await
            }
        })
    }

    /// Runs one CCP broadcast now (what the interval does): recompute the best routes, send updates.
    pub async fn broadcast_routes(&self) {
        ccp::broadcast_routes(&self.node).await;
    }

    /// Sends a route control request (Sync, zero table ID, epoch 0) to every account the node accepts routes
    /// from (what interledger-rs does once at start).
    pub async fn request_all_routes(&self) {
        ccp::request_all_routes(&self.node).await;
    }

    /// The CCP forwarding table's ID and epoch.
    pub fn routing_table_epoch(&self) -> ([u8; 16], u32) {
        self.node.ccp.table_id_and_epoch()
    }

    /// True while an authenticated BTP connection to the account exists (either side dialled).
    pub fn is_connected(&self, username: &str) -> bool {
        match self.account(username) {
            Some(a) => lock(&self.node.connections).contains_key(&a.id),
            None => false,
        }
    }

    /// Answers every credit with this status instead of processing it (`None` restores normal behaviour).
    pub fn override_credit_status(&self, status: Option<u16>) {
        lock(&self.node.state).credit_override = status;
    }

    /// Every ILP packet seen, in order.
    pub fn packets(&self) -> Vec<PacketRecord> {
        lock(&self.node.records).packets.clone()
    }

    /// Every settle attempt, in order.
    pub fn settle_requests(&self) -> Vec<SettleRecord> {
        lock(&self.node.records).settles.clone()
    }

    /// Every SE account setup request, in order.
    pub fn engine_setups(&self) -> Vec<SetupRecord> {
        lock(&self.node.records).setups.clone()
    }

    /// Every peer.settle message delivered to an SE, in order.
    pub fn engine_messages(&self) -> Vec<MessageRecord> {
        lock(&self.node.records).messages.clone()
    }

    /// Every credit applied, in order.
    pub fn credits(&self) -> Vec<CreditRecord> {
        lock(&self.node.records).credits.clone()
    }

    /// Stops listeners, connections and timers.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for IlpNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}
