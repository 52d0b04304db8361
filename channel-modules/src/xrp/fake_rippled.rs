//! A fake rippled for tests: an HTTP JSON-RPC server on `127.0.0.1:0` holding payment channels and account
//! balances, with real claim cryptography.
//!
//! It serves exactly what [`super::rpc::RippledClient`] calls, in rippled's response shapes:
//! * `ledger_entry` with `payment_channel`: the `PayChannel` node, or `entryNotFound`;
//! * `account_channels`: the source account's channels (for manual inspection);
//! * `submit` in sign-and-submit mode (`tx_json` + `secret`) of a `PaymentChannelClaim`, applied like
//!   rippled's `PayChanClaim` (preflight: `temMALFORMED`, `temBAD_AMOUNT`, `temBAD_SIGNATURE`; apply:
//!   `tecNO_TARGET`, an expired channel is closed, `tecNO_PERMISSION`, `temBAD_SIGNER`,
//!   `tecUNFUNDED_PAYMENT`), moving the claimed drops to the destination.
//!
//! It is not a ledger: there are no fees, sequences, reserves or validation, `tx_blob` is the hex of the JSON
//! (there is no binary codec here), every ledger is "validated", and `error_code` numbers are not reproduced
//! (clients key on the `error` strings). Dropping the [`FakeRippled`] stops the server; [`FakeRippled::set_down`]
//! and [`FakeRippled::set_up`] make it unreachable for a while, keeping its ledger.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::crypto::{decode_address, sha512_half, ChannelId, KeyPair, PublicKey};
use super::rpc::system_to_ripple_time;

/// Ledger namespace byte of payment channels in keylet hashing (`'x'`).
const PAYCHAN_NAMESPACE: u16 = 0x0078;

/// The source of "now" for expiry checks (share a test clock with the modules).
pub type FakeClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// One payment channel held by the fake ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeChannel {
    /// Channel ID.
    pub id: ChannelId,
    /// Source address.
    pub account: String,
    /// Key that must sign claims.
    pub public_key: PublicKey,
    /// Destination address.
    pub destination: String,
    /// Drops deposited.
    pub amount: u64,
    /// Drops paid out so far.
    pub balance: u64,
    /// Settle delay, seconds.
    pub settle_delay: u32,
    /// Mutable expiry, Ripple-epoch seconds.
    pub expiration: Option<u32>,
    /// Immutable expiry, Ripple-epoch seconds.
    pub cancel_after: Option<u32>,
}

impl FakeChannel {
    fn to_node(&self) -> Value {
        let mut node = json!({
            "LedgerEntryType": "PayChannel",
            "Account": self.account,
            "Destination": self.destination,
            "Amount": self.amount.to_string(),
            "Balance": self.balance.to_string(),
            "PublicKey": self.public_key.to_hex(),
            "SettleDelay": self.settle_delay,
            "Flags": 0,
            "OwnerNode": "0000000000000000",
            "index": self.id.to_string(),
        });
        if let Some(e) = self.expiration {
            node["Expiration"] = json!(e);
        }
        if let Some(c) = self.cancel_after {
            node["CancelAfter"] = json!(c);
        }
        node
    }

    fn closed_at(&self, now_ripple: u32) -> bool {
        [self.expiration, self.cancel_after]
            .into_iter()
            .flatten()
            .any(|at| now_ripple >= at)
    }
}

struct Ledger {
    channels: HashMap<ChannelId, FakeChannel>,
    /// Drops received per address through claims and refunds.
    received: HashMap<String, u64>,
    /// Every submitted `tx_json` (never the secret), in order.
    submissions: Vec<Value>,
    /// Per-source sequence used to derive channel IDs.
    sequences: HashMap<String, u32>,
    clock: FakeClock,
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The running fake; see the module docs.
pub struct FakeRippled {
    addr: SocketAddr,
    ledger: Arc<Mutex<Ledger>>,
    /// The HTTP server, while it is up (see [`FakeRippled::set_down`]).
    server: Option<Server>,
}

/// One run of the HTTP server.
struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves the ledger's JSON-RPC on `listener` until stopped.
    fn spawn(listener: tokio::net::TcpListener, ledger: Arc<Mutex<Ledger>>) -> Server {
        let app = Router::new().route("/", post(handle)).with_state(ledger);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(%err, "fake rippled stopped with an error");
            }
        });
        Server { shutdown: tx, task }
    }

    /// Stops at once (open connections may linger until the runtime drops them).
    fn abort(self) {
        let _ = self.shutdown.send(());
        self.task.abort();
    }

    /// Stops gracefully: open (keep-alive) connections are closed, so clients see the fake as down.
    async fn stop(mut self) {
        let _ = self.shutdown.send(());
        if tokio::time::timeout(GRACEFUL_STOP_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// How long [`FakeRippled::set_down`] waits for open connections to close.
const GRACEFUL_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl std::fmt::Debug for FakeRippled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRippled")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeRippled {
    /// Starts on `127.0.0.1:0` with the system clock.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_clock(Arc::new(SystemTime::now)).await
    }

    /// Starts on `127.0.0.1:0` with an injected clock for expiry checks.
    pub async fn start_with_clock(clock: FakeClock) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let ledger = Arc::new(Mutex::new(Ledger {
            channels: HashMap::new(),
            received: HashMap::new(),
            submissions: Vec::new(),
            sequences: HashMap::new(),
            clock,
        }));
        let server = Server::spawn(listener, Arc::clone(&ledger));
        Ok(FakeRippled {
            addr,
            ledger,
            server: Some(server),
        })
    }

    /// Stops answering (connections are refused) until [`FakeRippled::set_up`]; the ledger is kept.
    pub async fn set_down(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    /// Serves again on the same address, with the same ledger.
    pub async fn set_up(&mut self) -> std::io::Result<()> {
        if self.server.is_none() {
            let listener = tokio::net::TcpListener::bind(self.addr).await?;
            self.server = Some(Server::spawn(listener, Arc::clone(&self.ledger)));
        }
        Ok(())
    }

    /// The JSON-RPC URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Opens a channel from `owner`'s master account to `destination` (like `PaymentChannelCreate`), with an ID
    /// derived as rippled does: SHA-512Half(`0x0078` ‖ source ID ‖ destination ID ‖ sequence).
    pub fn create_channel(
        &self,
        owner: &KeyPair,
        destination: &str,
        amount: u64,
        settle_delay: u32,
        cancel_after: Option<u32>,
    ) -> ChannelId {
        let public_key = owner.public_key();
        self.create_channel_with_key(
            &public_key.address(),
            public_key,
            destination,
            amount,
            settle_delay,
            cancel_after,
        )
    }

    /// As [`FakeRippled::create_channel`], from the account `source` with claims signed by `public_key`, another
    /// key than the account's (as the 2017 `ilp-plugin-xrp-paychan` created its channels).
    pub fn create_channel_with_key(
        &self,
        source: &str,
        public_key: PublicKey,
        destination: &str,
        amount: u64,
        settle_delay: u32,
        cancel_after: Option<u32>,
    ) -> ChannelId {
        let account = source.to_owned();
        let mut ledger = lock(&self.ledger);
        let sequence = ledger.sequences.entry(account.clone()).or_insert(1);
        let mut preimage = Vec::with_capacity(2 + 20 + 20 + 4);
        preimage.extend_from_slice(&PAYCHAN_NAMESPACE.to_be_bytes());
        preimage.extend_from_slice(&decode_address(&account).unwrap_or([0u8; 20]));
        preimage.extend_from_slice(&decode_address(destination).unwrap_or([0u8; 20]));
        preimage.extend_from_slice(&sequence.to_be_bytes());
        *sequence += 1;
        let id = ChannelId(sha512_half(&preimage));
        ledger.channels.insert(
            id,
            FakeChannel {
                id,
                account,
                public_key,
                destination: destination.to_owned(),
                amount,
                balance: 0,
                settle_delay,
                expiration: None,
                cancel_after,
            },
        );
        id
    }

    /// The channel as the ledger holds it now (`None` once closed).
    pub fn channel(&self, id: &ChannelId) -> Option<FakeChannel> {
        lock(&self.ledger).channels.get(id).cloned()
    }

    /// Adds drops to a channel (like `PaymentChannelFund`).
    pub fn fund_channel(&self, id: &ChannelId, drops: u64) {
        if let Some(channel) = lock(&self.ledger).channels.get_mut(id) {
            channel.amount += drops;
        }
    }

    /// Sets the drops a channel has paid out (as if claims had been redeemed before the test).
    pub fn set_balance(&self, id: &ChannelId, drops: u64) {
        if let Some(channel) = lock(&self.ledger).channels.get_mut(id) {
            channel.balance = drops;
        }
    }

    /// Sets or clears a channel's `Expiration` (Ripple-epoch seconds).
    pub fn set_expiration(&self, id: &ChannelId, expiration: Option<u32>) {
        if let Some(channel) = lock(&self.ledger).channels.get_mut(id) {
            channel.expiration = expiration;
        }
    }

    /// Drops received by `address` through claims.
    pub fn received(&self, address: &str) -> u64 {
        lock(&self.ledger)
            .received
            .get(address)
            .copied()
            .unwrap_or(0)
    }

    /// Every `tx_json` submitted so far (secrets are never kept).
    pub fn submissions(&self) -> Vec<Value> {
        lock(&self.ledger).submissions.clone()
    }
}

impl Drop for FakeRippled {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn handle(State(ledger): State<Arc<Mutex<Ledger>>>, Json(body): Json<Value>) -> Json<Value> {
    let method = body.get("method").and_then(Value::as_str).unwrap_or("");
    let params = body
        .pointer("/params/0")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let result = match method {
        "ledger_entry" => ledger_entry(&lock(&ledger), &params),
        "account_channels" => account_channels(&lock(&ledger), &params),
        "submit" => submit(&mut lock(&ledger), &params),
        _ => rpc_error("unknownCmd", "Unknown method.", &params),
    };
    Json(json!({ "result": result }))
}

/// rippled's error shape. The request is echoed without any secret.
fn rpc_error(code: &str, message: &str, params: &Value) -> Value {
    let mut request = params.clone();
    if let Some(obj) = request.as_object_mut() {
        obj.remove("secret");
    }
    json!({
        "error": code,
        "error_message": message,
        "request": request,
        "status": "error",
    })
}

fn ledger_entry(ledger: &Ledger, params: &Value) -> Value {
    let Some(id) = params.get("payment_channel").and_then(Value::as_str) else {
        return rpc_error("invalidParams", "Invalid parameters.", params);
    };
    let Ok(id) = id.parse::<ChannelId>() else {
        return rpc_error("malformedRequest", "Malformed request.", params);
    };
    match ledger.channels.get(&id) {
        Some(channel) => json!({
            "index": id.to_string(),
            "ledger_index": 1,
            "node": channel.to_node(),
            "status": "success",
            "validated": true,
        }),
        None => rpc_error("entryNotFound", "Entry not found.", params),
    }
}

fn account_channels(ledger: &Ledger, params: &Value) -> Value {
    let Some(account) = params.get("account").and_then(Value::as_str) else {
        return rpc_error("invalidParams", "Missing field 'account'.", params);
    };
    let destination = params.get("destination_account").and_then(Value::as_str);
    let channels: Vec<Value> = ledger
        .channels
        .values()
        .filter(|c| c.account == account && destination.is_none_or(|d| d == c.destination))
        .map(|c| {
            let mut v = json!({
                "account": c.account,
                "amount": c.amount.to_string(),
                "balance": c.balance.to_string(),
                "channel_id": c.id.to_string(),
                "destination_account": c.destination,
                "public_key_hex": c.public_key.to_hex(),
                "settle_delay": c.settle_delay,
            });
            if let Some(e) = c.expiration {
                v["expiration"] = json!(e);
            }
            if let Some(ca) = c.cancel_after {
                v["cancel_after"] = json!(ca);
            }
            v
        })
        .collect();
    json!({
        "account": account,
        "channels": channels,
        "ledger_index": 1,
        "status": "success",
        "validated": true,
    })
}

/// A transaction engine result: (code, numeric code, message).
type Engine = (&'static str, i32, &'static str);

const TES_SUCCESS: Engine = (
    "tesSUCCESS",
    0,
    "The transaction was applied. Only final in a validated ledger.",
);
const TEM_MALFORMED: Engine = ("temMALFORMED", -299, "Malformed transaction.");
const TEM_BAD_AMOUNT: Engine = ("temBAD_AMOUNT", -298, "Can only send positive amounts.");
const TEM_BAD_SIGNATURE: Engine = ("temBAD_SIGNATURE", -282, "Malformed: Bad signature.");
const TEM_BAD_SIGNER: Engine = (
    "temBAD_SIGNER",
    -272,
    "Malformed: No signer may duplicate account or other signers.",
);
const TEC_UNFUNDED_PAYMENT: Engine = (
    "tecUNFUNDED_PAYMENT",
    104,
    "Insufficient XRP balance to send.",
);
const TEC_NO_TARGET: Engine = ("tecNO_TARGET", 138, "Target account does not exist.");
const TEC_NO_PERMISSION: Engine = (
    "tecNO_PERMISSION",
    139,
    "No permission to perform requested operation.",
);

fn submit(ledger: &mut Ledger, params: &Value) -> Value {
    let Some(tx) = params.get("tx_json").cloned() else {
        return rpc_error("invalidParams", "Missing field 'tx_json'.", params);
    };
    let Some(secret) = params.get("secret").and_then(Value::as_str) else {
        return rpc_error("invalidParams", "Missing field 'secret'.", params);
    };
    let Ok(keys) = KeyPair::from_seed(secret) else {
        return rpc_error("badSeed", "Disallowed seed.", params);
    };
    let account = tx.get("Account").and_then(Value::as_str).unwrap_or("");
    if keys.public_key().address() != account {
        return rpc_error("badSecret", "Secret does not match account.", params);
    }
    if tx.get("TransactionType").and_then(Value::as_str) != Some("PaymentChannelClaim") {
        return rpc_error(
            "invalidTransaction",
            "fake rippled only applies PaymentChannelClaim",
            params,
        );
    }
    ledger.submissions.push(tx.clone());
    let now = system_to_ripple_time((ledger.clock)());
    let engine = apply_claim(ledger, &tx, account, now);
    let applied = engine.0 == "tesSUCCESS" || engine.0.starts_with("tec");
    let mut tx_json = tx.clone();
    tx_json["Fee"] = json!("10");
    tx_json["SigningPubKey"] = json!(keys.public_key().to_hex());
    let hash = hex::encode_upper(sha512_half(tx.to_string().as_bytes()));
    tx_json["hash"] = json!(hash);
    json!({
        "accepted": applied,
        "applied": applied,
        "broadcast": applied,
        "engine_result": engine.0,
        "engine_result_code": engine.1,
        "engine_result_message": engine.2,
        "kept": applied,
        "queued": false,
        "status": "success",
        "tx_blob": hex::encode_upper(tx.to_string().as_bytes()),
        "tx_json": tx_json,
    })
}

fn drops_field(tx: &Value, field: &str) -> Result<Option<u64>, Engine> {
    match tx.get(field) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or(TEM_BAD_AMOUNT),
    }
}

/// `PayChanClaim` preflight and apply, in rippled's order.
fn apply_claim(ledger: &mut Ledger, tx: &Value, sender: &str, now: u32) -> Engine {
    let Some(channel_id) = tx
        .get("Channel")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<ChannelId>().ok())
    else {
        return TEM_MALFORMED;
    };
    let balance = match drops_field(tx, "Balance") {
        Ok(b) => b,
        Err(e) => return e,
    };
    let amount = match drops_field(tx, "Amount") {
        Ok(a) => a,
        Err(e) => return e,
    };
    if balance == Some(0) || amount == Some(0) {
        return TEM_BAD_AMOUNT;
    }
    let signature = tx.get("Signature").and_then(Value::as_str);
    let public_key = tx.get("PublicKey").and_then(Value::as_str);
    // Preflight: a signed claim needs a key and a balance, and the signature must cover the authorised amount.
    let mut claim_key = None;
    if let Some(signature) = signature {
        let (Some(public_key), Some(balance)) = (public_key, balance) else {
            return TEM_MALFORMED;
        };
        let authorised = amount.unwrap_or(balance);
        if balance > authorised {
            return TEM_BAD_AMOUNT;
        }
        let Ok(key) = PublicKey::parse(public_key) else {
            return TEM_MALFORMED;
        };
        let Ok(sig) = hex::decode(signature) else {
            return TEM_MALFORMED;
        };
        if !key.verify_claim(&channel_id, authorised, &sig) {
            return TEM_BAD_SIGNATURE;
        }
        claim_key = Some(key);
    }
    // Apply.
    let Some(channel) = ledger.channels.get(&channel_id).cloned() else {
        return TEC_NO_TARGET;
    };
    if channel.closed_at(now) {
        // Any valid claim on an expired channel closes it, refunding the rest to the source.
        let refund = channel.amount - channel.balance;
        *ledger.received.entry(channel.account.clone()).or_insert(0) += refund;
        ledger.channels.remove(&channel_id);
        return TES_SUCCESS;
    }
    if sender != channel.account && sender != channel.destination {
        return TEC_NO_PERMISSION;
    }
    if let Some(requested) = balance {
        if sender == channel.destination && signature.is_none() {
            return TEM_BAD_SIGNATURE;
        }
        if let Some(key) = &claim_key {
            if *key != channel.public_key {
                return TEM_BAD_SIGNER;
            }
        }
        if requested > channel.amount || requested <= channel.balance {
            return TEC_UNFUNDED_PAYMENT;
        }
        let delta = requested - channel.balance;
        *ledger
            .received
            .entry(channel.destination.clone())
            .or_insert(0) += delta;
        if let Some(stored) = ledger.channels.get_mut(&channel_id) {
            stored.balance = requested;
        }
    }
    TES_SUCCESS
}
