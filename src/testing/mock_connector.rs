//! A mock accounting system (connector side of RFC 38) that behaves like interledger-rs `ilp-node`, for tests and
//! benchmarks of the settlement engine (docs/modern.md §5.4, §5.5, §10.3).
//!
//! Behaviour reproduced:
//! * account IDs are UUIDs; [`MockConnector::add_account`] creates the account on the engine with
//!   `POST /accounts {"id": "<uuid>"}` (no Idempotency-Key);
//! * settle requests ([`MockConnector::settle`]) carry a **fresh** UUID `Idempotency-Key` on every attempt, a 5 s
//!   timeout and up to 10 retries (5xx and timeouts wait 5 s, connection errors 1 s, 4xx are not retried);
//! * credits (`POST /accounts/{id}/settlements`) are answered `201` with the text `RECEIVED`; a credit retried
//!   with a key already seen gets **409** (interledger-rs defect (a)); a non-UUID account 400, an unknown one 404;
//!   a credit without a key gets 400 (interledger-rs panics and hangs instead);
//! * messages (`POST /accounts/{id}/messages`) are relayed to the linked peer connector's engine
//!   (`/accounts/{peer account}/messages`) and its reply returned with 201 and no Content-Type; 502 if the peer
//!   connector is down or its engine fails;
//! * [`MockConnector::set_down`] / [`MockConnector::set_up`] stop and restart the HTTP server on the same
//!   address (connection refused meanwhile), to test "connector down for a while".
//!
//! Every credit is recorded for assertions ([`MockConnector::credits`], [`MockConnector::credited_total`]).
//!
//! The settle client ([`super::settle_client`]) and the RFC 38 routes (`settlement_api`) are shared with
//! the mock interledger-rs node ([`super::ilp_node`]), which also keeps balances and speaks ILP.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use channel_modules::sync::lock;
use num_bigint::BigUint;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::settle_client::settle_with_fresh_keys;
pub use super::settle_client::{SettleOutcome, SettlePolicy, SETTLE_RETRIES, SETTLE_TIMEOUT};
use super::settlement_api::{self, AccountingSystem};
use crate::settlement::quantity::{parse_quantity, Scaled};

/// Errors of the mock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// Socket trouble.
    #[error("mock connector io: {0}")]
    Io(#[from] std::io::Error),
    /// An HTTP call failed.
    #[error("http: {0}")]
    Http(String),
    /// The engine answered with an unexpected status.
    #[error("engine answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
    },
    /// Unknown account.
    #[error("unknown account {0}")]
    UnknownAccount(String),
}

/// A credit the engine made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockCredit {
    /// Account ID.
    pub account: String,
    /// The Idempotency-Key.
    pub key: String,
    /// Amount and scale.
    pub amount: Scaled,
}

struct PeerLink {
    connector: Weak<Inner>,
    account: String,
}

struct AccountEntry {
    engine_url: String,
    peer: Option<PeerLink>,
}

struct Inner {
    addr: SocketAddr,
    up: AtomicBool,
    http: reqwest::Client,
    accounts: Mutex<HashMap<String, AccountEntry>>,
    credits: Mutex<Vec<MockCredit>>,
    used_keys: Mutex<HashSet<String>>,
    credit_override: Mutex<Option<u16>>,
    policy: Mutex<SettlePolicy>,
}

/// The mock connector. Dropping it stops its server.
pub struct MockConnector {
    inner: Arc<Inner>,
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for MockConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConnector")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

fn bind_reuse(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl MockConnector {
    /// Starts a mock on 127.0.0.1 with a free port.
    pub async fn start() -> Result<MockConnector, MockError> {
        let listener = bind_reuse(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| MockError::Http(e.to_string()))?;
        let inner = Arc::new(Inner {
            addr,
            up: AtomicBool::new(false),
            http,
            accounts: Mutex::new(HashMap::new()),
            credits: Mutex::new(Vec::new()),
            used_keys: Mutex::new(HashSet::new()),
            credit_override: Mutex::new(None),
            policy: Mutex::new(SettlePolicy::default()),
        });
        let mock = MockConnector {
            inner,
            server: Mutex::new(None),
        };
        mock.serve(listener);
        Ok(mock)
    }

    fn serve(&self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let router = settlement_api::router(Arc::clone(&self.inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        self.inner.up.store(true, Ordering::SeqCst);
        *lock(&self.server) = Some((tx, task));
    }

    /// Base URL (`http://127.0.0.1:<port>`), stable across [`Self::set_down`]/[`Self::set_up`].
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// True while serving.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// Stops serving: connections to the address are refused until [`Self::set_up`].
    pub async fn set_down(&self) {
        self.inner.up.store(false, Ordering::SeqCst);
        let server = lock(&self.server).take();
        if let Some((tx, task)) = server {
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    /// Serves again on the same address.
    pub async fn set_up(&self) -> Result<(), MockError> {
        if self.is_up() {
            return Ok(());
        }
        let listener = bind_reuse(self.inner.addr)?;
        self.serve(listener);
        Ok(())
    }

    /// Replaces the settle retry policy.
    pub fn set_settle_policy(&self, policy: SettlePolicy) {
        *lock(&self.inner.policy) = policy;
    }

    /// Answers every credit with this status instead of processing it (`None` restores normal behaviour).
    pub fn override_credit_status(&self, status: Option<u16>) {
        *lock(&self.inner.credit_override) = status;
    }

    /// Creates an account like interledger-rs: a fresh UUID, then `POST {engine}/accounts {"id": uuid}`.
    pub async fn add_account(&self, engine_url: &str) -> Result<String, MockError> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let resp = self
            .inner
            .http
            .post(format!("{}/accounts", engine_url.trim_end_matches('/')))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "id": id }).to_string())
            .timeout(SETTLE_TIMEOUT)
            .send()
            .await
            .map_err(|e| MockError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        if status != 201 {
            let body = resp.text().await.unwrap_or_default();
            return Err(MockError::Status { status, body });
        }
        self.register_account(&id, engine_url);
        Ok(id)
    }

    /// Records an account without calling the engine.
    pub fn register_account(&self, id: &str, engine_url: &str) {
        lock(&self.inner.accounts).insert(
            id.to_owned(),
            AccountEntry {
                engine_url: engine_url.trim_end_matches('/').to_owned(),
                peer: None,
            },
        );
    }

    /// Points an account at another engine URL (an engine restarted on a new port).
    pub fn set_engine_url(&self, id: &str, engine_url: &str) -> Result<(), MockError> {
        let mut accounts = lock(&self.inner.accounts);
        let entry = accounts
            .get_mut(id)
            .ok_or_else(|| MockError::UnknownAccount(id.to_owned()))?;
        entry.engine_url = engine_url.trim_end_matches('/').to_owned();
        Ok(())
    }

    /// Links `a`'s account `a_id` with `b`'s account `b_id`: messages sent on either reach the other's engine.
    pub fn link(
        a: &MockConnector,
        a_id: &str,
        b: &MockConnector,
        b_id: &str,
    ) -> Result<(), MockError> {
        {
            let mut accounts = lock(&a.inner.accounts);
            let entry = accounts
                .get_mut(a_id)
                .ok_or_else(|| MockError::UnknownAccount(a_id.to_owned()))?;
            entry.peer = Some(PeerLink {
                connector: Arc::downgrade(&b.inner),
                account: b_id.to_owned(),
            });
        }
        let mut accounts = lock(&b.inner.accounts);
        let entry = accounts
            .get_mut(b_id)
            .ok_or_else(|| MockError::UnknownAccount(b_id.to_owned()))?;
        entry.peer = Some(PeerLink {
            connector: Arc::downgrade(&a.inner),
            account: a_id.to_owned(),
        });
        Ok(())
    }

    /// Asks the engine to settle, like interledger-rs: a fresh Idempotency-Key per attempt, retries per the
    /// [`SettlePolicy`]. Returns the final answer (a 4xx is returned, not retried), or an error after the last
    /// retry (interledger-rs would then refund).
    pub async fn settle(
        &self,
        account: &str,
        amount: &str,
        scale: u8,
    ) -> Result<SettleOutcome, MockError> {
        let engine_url = lock(&self.inner.accounts)
            .get(account)
            .map(|a| a.engine_url.clone())
            .ok_or_else(|| MockError::UnknownAccount(account.to_owned()))?;
        let body = format!(r#"{{"amount":"{amount}","scale":{scale}}}"#);
        self.settle_raw(&engine_url, account, body).await
    }

    /// [`Self::settle`] with a raw body (bad-input tests).
    pub async fn settle_raw(
        &self,
        engine_url: &str,
        account: &str,
        body: String,
    ) -> Result<SettleOutcome, MockError> {
        let policy = *lock(&self.inner.policy);
        let url = format!("{engine_url}/accounts/{account}/settlements");
        settle_with_fresh_keys(&self.inner.http, &url, &body, policy, true, &|_| {})
            .await
            .map_err(|e| MockError::Http(e.to_string()))
    }

    /// Every credit accepted, in order.
    pub fn credits(&self) -> Vec<MockCredit> {
        lock(&self.inner.credits).clone()
    }

    /// The total credited to `account`, at the finest scale credited (exact).
    pub fn credited_total(&self, account: &str) -> Scaled {
        lock(&self.inner.credits)
            .iter()
            .filter(|c| c.account == account)
            .fold(Scaled::zero(0), |acc, c| acc.add(&c.amount))
    }

    /// The total credited to `account` expressed at `scale`, if it is a whole number of units there.
    pub fn credited_at_scale(&self, account: &str, scale: u8) -> Option<BigUint> {
        let total = self.credited_total(account);
        if total.scale <= scale {
            return total.upscale(scale);
        }
        let d = crate::settlement::quantity::pow10(total.scale - scale);
        let (q, r) = num_integer::Integer::div_rem(&total.amount, &d);
        num_traits::Zero::is_zero(&r).then_some(q)
    }
}

impl Drop for MockConnector {
    fn drop(&mut self) {
        if let Some((tx, task)) = lock(&self.server).take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}

#[async_trait]
impl AccountingSystem for Inner {
    async fn credit(&self, id: String, key: Option<String>, body: Bytes) -> Response {
        if let Some(status) = *lock(&self.credit_override) {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, "overridden").into_response();
        }
        if uuid::Uuid::parse_str(&id).is_err() {
            return (StatusCode::BAD_REQUEST, "account id is not a UUID").into_response();
        }
        if !lock(&self.accounts).contains_key(&id) {
            return (StatusCode::NOT_FOUND, "account not found").into_response();
        }
        let Some(key) = key else {
            return (StatusCode::BAD_REQUEST, "no idempotency key").into_response();
        };
        let amount = match parse_quantity(&body) {
            Ok(a) => a,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        if !lock(&self.used_keys).insert(format!("{id}/{key}")) {
            // interledger-rs: a retried credit with the same key fails the input-hash decode.
            return settlement_api::conflict();
        }
        lock(&self.credits).push(MockCredit {
            account: id,
            key,
            amount,
        });
        settlement_api::received()
    }

    async fn message(&self, id: String, _key: Option<String>, body: Bytes) -> Response {
        let peer = {
            let accounts = lock(&self.accounts);
            match accounts.get(&id) {
                None => return (StatusCode::NOT_FOUND, "account not found").into_response(),
                Some(AccountEntry { peer: None, .. }) => {
                    return (StatusCode::BAD_GATEWAY, "no peer").into_response()
                }
                Some(AccountEntry { peer: Some(p), .. }) => {
                    (p.connector.upgrade(), p.account.clone())
                }
            }
        };
        let (Some(peer_inner), peer_account) = peer else {
            return (StatusCode::BAD_GATEWAY, "peer connector gone").into_response();
        };
        if !peer_inner.up.load(Ordering::SeqCst) {
            return (StatusCode::BAD_GATEWAY, "peer connector unreachable").into_response();
        }
        let engine_url = match lock(&peer_inner.accounts).get(&peer_account) {
            Some(a) => a.engine_url.clone(),
            None => return (StatusCode::BAD_GATEWAY, "peer account unknown").into_response(),
        };
        let sent = self
            .http
            .post(format!("{engine_url}/accounts/{peer_account}/messages"))
            .header("Content-Type", "application/octet-stream")
            .header(
                "Idempotency-Key",
                uuid::Uuid::new_v4().hyphenated().to_string(),
            )
            .timeout(Duration::from_secs(30))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                Ok(b) => (StatusCode::CREATED, b).into_response(),
                Err(_) => (StatusCode::BAD_GATEWAY, "peer reply lost").into_response(),
            },
            Ok(resp) => (
                StatusCode::BAD_GATEWAY,
                format!("peer engine answered {}", resp.status()),
            )
                .into_response(),
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                format!("peer engine unreachable: {e}"),
            )
                .into_response(),
        }
    }
}
