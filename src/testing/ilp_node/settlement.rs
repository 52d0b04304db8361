//! The mock node and its settlement engines (docs/modern.md §5.4, §5.5):
//!
//! * **SE account setup** (`set_up_engine_account`): `POST <se>/accounts` with `{"id":"<uuid>"}` (JSON, no
//!   key), the path appended as path segments. interledger-rs's `create_engine_account` does not turn an HTTP
//!   error into a retry: only transport errors are retried (timeouts wait 5 s, others 1 s, up to 10 retries, 5 s
//!   timeout each). A 2xx is followed by the prefund check: `process_fulfill` with amount 0, settling what it
//!   returns (a negative `settle_to` prefunds); a non-2xx is logged and the account stays.
//! * **Settling** (`spawn_settlement`): after a Fulfill that crosses the threshold, interledger-rs's
//!   `send_settlement` ([`super::super::settle_client`]: a fresh key per attempt, no `Accept` header); a 4xx or the
//!   last failure refunds the amount to the balance.
//! * **`peer.settle` from a peer** (`deliver_to_engine`): `POST <se>/accounts/<uuid>/messages`, octet-stream, a
//!   fresh UUID `Idempotency-Key` per attempt; transport errors retried as above, HTTP statuses not. 2xx →
//!   Fulfill (32 zero bytes, the SE's body); 4xx → Reject F00, any other status → Reject T00, both
//!   `Settlement engine rejected request with error code: <status>`; transport failure → Reject T00
//!   `Error sending message to settlement engine`; `triggeredBy` is `peer.settle` in all of them.
//! * **The settlement API** (`serve_api`, on its own port): credits and outgoing messages, below.
//!
//! **Credit** (`POST /accounts/{id}/settlements`), in interledger-rs's order: a reused `Idempotency-Key` →
//! 409 (any reuse, docs/modern.md §5.7 (a)); a non-UUID ID → 400; unknown account or no SE → 404; then the
//! Quantity is converted to the account's scale with `scale_with_precision_loss` (floor, the remainder kept as
//! a leftover at the engine's scale), the stored leftovers (summed at their highest scale) are converted the same
//! way and added, the total is clamped to `u64::MAX`, and `process_incoming_settlement` runs with the key; answer
//! `201 RECEIVED`. Because the leftovers are loaded before this credit's own remainder is saved, a remainder is
//! credited one credit late (905 then 95 at scale 11 on a scale-9 account credit 9, then 0; the unit the two
//! remainders make comes with the next credit). Two deviations, both documented defects of interledger-rs: a credit without a key gets 400 (it
//! panics, §5.7 (b)), and the body is checked before the key (warp's JSON filter runs first there too).
//!
//! **Message** (`POST /accounts/{id}/messages`): a `peer.settle` Prepare (amount 0, condition `66687aad…`, 30 s
//! expiry, the body as data) through the outgoing pipeline to the account; Fulfill → `201` with its data and no
//! Content-Type; Reject → 502.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use btp::ilp_v4::{Address, Fulfill, Prepare};
use btp::peer_protocol::{peer_fulfill, peer_prepare};
use btp::Timestamp;
use channel_modules::sync::lock;
use num_bigint::BigUint;
use num_traits::{ToPrimitive, Zero};
use tokio::net::TcpListener;
use tracing::{error, warn};
use url::Url;
use uuid::Uuid;

use super::accounts::Account;
use super::balances;
use super::pipeline::{self, reject};
use super::records::{CreditRecord, MessageRecord, SettleRecord, SetupRecord};
use super::{EngineSetupError, IlpResult, Node, NodeError};
use crate::settlement::quantity::{parse_quantity, pow10, Scaled};
use crate::testing::settle_client::{engine_url, settle_with_fresh_keys, SettlePolicy};
use crate::testing::settlement_api::{self, AccountingSystem};

/// The ILP address settlement engine messages travel to (interledger-rs `SE_ILP_ADDRESS`).
pub const SE_ILP_ADDRESS: &str = "peer.settle";
/// Expiry of the `peer.settle` Prepares the node sends for its SE.
pub const PEER_SETTLE_EXPIRY: Duration = Duration::from_secs(30);

/// Serves the connector-side settlement API until the node shuts down.
pub(crate) async fn serve_api(node: Arc<Node>, listener: TcpListener) {
    let router = settlement_api::router(Arc::new(Api(Arc::clone(&node))));
    let mut shutdown = node.shutdown.clone();
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
}

/// One request with transport-level retries (interledger-rs's `RequestErrorHandler` for calls that do not check
/// the status): returns the first HTTP answer, or the last transport error. With `with_key`, every attempt
/// carries a fresh UUID `Idempotency-Key` (messages do; account setup does not).
async fn post_with_transport_retries(
    node: &Node,
    policy: SettlePolicy,
    with_key: bool,
    build: impl Fn() -> reqwest::RequestBuilder,
    observe: impl Fn(Option<u16>, &str),
) -> Result<reqwest::Response, reqwest::Error> {
    let mut attempt = 0;
    loop {
        let key = if with_key {
            Uuid::new_v4().hyphenated().to_string()
        } else {
            String::new()
        };
        let mut request = build().timeout(policy.timeout);
        if with_key {
            request = request.header("Idempotency-Key", &key);
        }
        let sent = request.send().await;
        match sent {
            Ok(response) => {
                observe(Some(response.status().as_u16()), &key);
                return Ok(response);
            }
            Err(e) => {
                observe(None, &key);
                let wait = if e.is_timeout() {
                    policy.wait_after_error
                } else {
                    policy.wait_after_connect_error
                };
                let mut shutdown = node.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Err(e),
                }
                if attempt >= policy.retries {
                    return Err(e);
                }
                attempt += 1;
            }
        }
    }
}

/// `POST <se>/accounts {"id": "<uuid>"}`, then the prefund check.
pub(crate) async fn set_up_engine_account(
    node: &Arc<Node>,
    account: &Account,
) -> Result<(), NodeError> {
    let Some(se) = &account.settlement_engine_url else {
        return Ok(());
    };
    let url = engine_url(se, &["accounts"])
        .map_err(|e| NodeError::EngineSetup(EngineSetupError::Url(e)))?;
    let body = serde_json::json!({ "id": account.id.to_string() }).to_string();
    let response = post_with_transport_retries(
        node,
        node.config.settle_policy,
        false,
        || {
            node.http
                .post(url.as_str())
                .header("content-type", "application/json")
                .body(body.clone())
        },
        |status, _key| {
            lock(&node.records).setups.push(SetupRecord {
                account_id: account.id,
                url: url.to_string(),
                status,
            })
        },
    )
    .await
    .map_err(|e| NodeError::EngineSetup(EngineSetupError::Transport(e)))?;
    if !response.status().is_success() {
        error!(account = %account.username, status = %response.status(), "settlement engine refused the account");
        return Ok(());
    }
    let prefund = {
        let mut state = lock(&node.state);
        let balance = state.balances.entry(account.id).or_default();
        balances::process_fulfill(balance, account, 0)
    };
    match prefund {
        Ok(amount) if amount > 0 => {
            // interledger-rs awaits this one and does not refund it when it fails.
            let outcome = settle_once(node, account, se, amount).await;
            match outcome {
                Some(true) => Ok(()),
                _ => Err(NodeError::EngineSetup(EngineSetupError::PrefundRefused(
                    amount,
                ))),
            }
        }
        Ok(_) => Ok(()),
        Err(e) => Err(NodeError::EngineSetup(EngineSetupError::Prefund(e))),
    }
}

/// Sends one settlement (with interledger-rs's retries); `Some(true)` for a 2xx, `Some(false)` for a 4xx, `None`
/// when every attempt failed.
async fn settle_once(node: &Arc<Node>, account: &Account, se: &Url, amount: u64) -> Option<bool> {
    let id = account.id.to_string();
    let url = engine_url(se, &["accounts", &id, "settlements"]).ok()?;
    let body = format!(r#"{{"amount":"{amount}","scale":{}}}"#, account.asset_scale);
    let username = account.username.clone();
    let scale = account.asset_scale;
    let records = &node.records;
    let observe = move |attempt: crate::testing::settle_client::SettleAttempt| {
        lock(records).settles.push(SettleRecord {
            account: username.clone(),
            amount,
            scale,
            key: attempt.key,
            status: attempt.status,
        });
    };
    let outcome = settle_with_fresh_keys(
        &node.http,
        url.as_str(),
        &body,
        node.config.settle_policy,
        false,
        &observe,
    )
    .await;
    match outcome {
        Ok(o) => Some((200..300).contains(&o.status)),
        Err(_) => None,
    }
}

/// Settles `amount` for `account` in the background; refunds it when the engine refuses or cannot be reached.
pub(crate) fn spawn_settlement(node: &Arc<Node>, account: &Account, amount: u64) {
    let Some(se) = account.settlement_engine_url.clone() else {
        return;
    };
    let node = Arc::clone(node);
    let account = account.clone();
    tokio::spawn(async move {
        if settle_once(&node, &account, &se, amount).await != Some(true) {
            let mut state = lock(&node.state);
            let balance = state.balances.entry(account.id).or_default();
            if let Err(err) = balances::refund_settlement(balance, amount) {
                warn!(account = %account.username, %err, "refund failed");
            }
        }
    });
}

/// A `peer.settle` Prepare from `from` (which has an SE): deliver its data to that SE.
pub(crate) async fn deliver_to_engine(
    node: &Arc<Node>,
    from: &Account,
    prepare: Prepare,
) -> IlpResult {
    let se_address = Address::new(SE_ILP_ADDRESS).ok();
    let Some(se) = &from.settlement_engine_url else {
        return Err(reject(b"F02", "", se_address.as_ref(), Bytes::new()));
    };
    let id = from.id.to_string();
    let url = match engine_url(se, &["accounts", &id, "messages"]) {
        Ok(url) => url,
        Err(_) => {
            return Err(reject(
                b"T00",
                "Error sending message to settlement engine",
                se_address.as_ref(),
                Bytes::new(),
            ))
        }
    };
    let data = prepare.data;
    let sent = post_with_transport_retries(
        node,
        node.config.settle_policy,
        true,
        || {
            node.http
                .post(url.as_str())
                .header("content-type", "application/octet-stream")
                .body(data.clone())
        },
        |status, key| {
            lock(&node.records).messages.push(MessageRecord {
                account: from.username.clone(),
                url: url.to_string(),
                key: key.to_owned(),
                status,
            })
        },
    )
    .await;
    let response = match sent {
        Ok(r) => r,
        Err(_) => {
            return Err(reject(
                b"T00",
                "Error sending message to settlement engine",
                se_address.as_ref(),
                Bytes::new(),
            ))
        }
    };
    let status = response.status();
    if status.is_success() {
        return match response.bytes().await {
            Ok(body) => Ok(peer_fulfill(body)),
            Err(_) => Err(reject(
                b"T00",
                "Error getting settlement engine response",
                se_address.as_ref(),
                Bytes::new(),
            )),
        };
    }
    let code = if status.is_client_error() {
        b"F00"
    } else {
        b"T00"
    };
    Err(reject(
        code,
        &format!("Settlement engine rejected request with error code: {status}"),
        se_address.as_ref(),
        Bytes::new(),
    ))
}

/// interledger-rs's `scale_with_precision_loss(amount, local_scale, remote_scale)`: the amount at the local
/// scale (floored) and what flooring lost, at the remote scale.
pub fn scale_with_precision_loss(amount: &BigUint, local: u8, remote: u8) -> (BigUint, BigUint) {
    if local < remote {
        let divisor = pow10(remote - local);
        let scaled = amount / &divisor;
        let loss = amount - &scaled * &divisor;
        (scaled, loss)
    } else {
        (amount * pow10(local - remote), BigUint::zero())
    }
}

/// Converts a credit of `amount` at `remote` scale to `local` units, adding and updating the stored
/// leftovers as interledger-rs's `do_receive_settlement` and `load_uncredited_settlement_amount` do. Returns
/// the units to credit, clamped to `u64::MAX`.
pub fn credit_units(
    leftovers: &mut Vec<(BigUint, u8)>,
    amount: &BigUint,
    remote: u8,
    local: u8,
) -> u64 {
    let (scaled, loss) = scale_with_precision_loss(amount, local, remote);
    // Load (and delete) the leftovers: summed at the highest scale among them.
    let stored = std::mem::take(leftovers);
    let max_scale = stored.iter().map(|(_, s)| *s).max().unwrap_or(0);
    let sum = stored.iter().fold(BigUint::zero(), |acc, (a, s)| {
        acc + a * pow10(max_scale - s)
    });
    let (leftover_units, leftover_loss) = scale_with_precision_loss(&sum, local, max_scale);
    if !leftover_loss.is_zero() {
        leftovers.push((leftover_loss, local.max(max_scale)));
    }
    // Save this credit's precision loss (interledger-rs saves it even when it is zero).
    leftovers.push((loss, remote));
    (scaled + leftover_units).to_u64().unwrap_or(u64::MAX)
}

/// The node's side of the settlement API.
struct Api(Arc<Node>);

#[async_trait]
impl AccountingSystem for Api {
    async fn credit(&self, id: String, key: Option<String>, body: Bytes) -> Response {
        let node = &self.0;
        if let Some(status) = lock(&node.state).credit_override {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return settlement_api::problem(status, "Overridden", "credit_override is set");
        }
        let quantity: Scaled = match parse_quantity(&body) {
            Ok(q) => q,
            Err(e) => {
                return settlement_api::problem(
                    StatusCode::BAD_REQUEST,
                    "Invalid Quantity",
                    &e.to_string(),
                )
            }
        };
        let Some(key) = key else {
            return settlement_api::problem(
                StatusCode::BAD_REQUEST,
                "Missing Idempotency-Key",
                "interledger-rs panics on a credit without a key; the mock answers 400",
            );
        };
        let mut state = lock(&node.state);
        if !state.api_keys.insert(key.clone()) {
            return settlement_api::conflict();
        }
        let Ok(uuid) = Uuid::parse_str(&id) else {
            return settlement_api::problem(
                StatusCode::BAD_REQUEST,
                "Invalid account id",
                &format!("{id} is not a UUID"),
            );
        };
        let Some(account) = state.accounts.get(&uuid).cloned() else {
            return settlement_api::problem(
                StatusCode::NOT_FOUND,
                "Account not found",
                &format!("Account {uuid} was not found"),
            );
        };
        if account.settlement_engine_url.is_none() {
            return settlement_api::problem(
                StatusCode::NOT_FOUND,
                "Account not found",
                &format!("Account {uuid} has no settlement engine details configured"),
            );
        }
        let leftovers = state.leftovers.entry(uuid).or_default();
        let units = credit_units(
            leftovers,
            &quantity.amount,
            quantity.scale,
            account.asset_scale,
        );
        let state = &mut *state;
        let balance = state.balances.entry(uuid).or_default();
        if let Err(err) =
            balances::process_incoming_settlement(balance, &mut state.settlement_keys, units, &key)
        {
            return settlement_api::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Balance update error",
                &err.to_string(),
            );
        }
        lock(&node.records).credits.push(CreditRecord {
            account: account.username,
            key,
            quantity,
            credited: units,
        });
        settlement_api::received()
    }

    async fn message(&self, id: String, key: Option<String>, body: Bytes) -> Response {
        let node = &self.0;
        if let Some(key) = key {
            if !lock(&node.state).api_keys.insert(key) {
                return settlement_api::conflict();
            }
        }
        let Ok(uuid) = Uuid::parse_str(&id) else {
            return settlement_api::problem(
                StatusCode::BAD_REQUEST,
                "Invalid account id",
                &format!("{id} is not a UUID"),
            );
        };
        let Some(account) = node.account(uuid) else {
            return settlement_api::problem(
                StatusCode::NOT_FOUND,
                "Account not found",
                &format!("Account {uuid} was not found"),
            );
        };
        if account.settlement_engine_url.is_none() {
            return settlement_api::problem(
                StatusCode::NOT_FOUND,
                "Account not found",
                &format!("Account {uuid} has no settlement engine details configured"),
            );
        }
        let destination = btp::ilp_v4::Address::new(SE_ILP_ADDRESS);
        let Ok(destination) = destination else {
            return settlement_api::problem(StatusCode::INTERNAL_SERVER_ERROR, "Internal", "");
        };
        let prepare = peer_prepare(destination, body, Timestamp::now(), PEER_SETTLE_EXPIRY);
        match pipeline::send_outgoing(node, &account, &account, prepare, 0).await {
            Ok(Fulfill { data, .. }) => settlement_api::relayed(data),
            Err(r) => settlement_api::problem(
                StatusCode::BAD_GATEWAY,
                "Error sending message to peer engine",
                &format!(
                    "Error sending message to peer settlement engine. Packet rejected with code: {}, message: {}",
                    r.code_str(),
                    r.message
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_loss_matches_interledger_rs() {
        // The cases of interledger-rs's `precision_loss` test (crates/interledger-settlement/src/api/node_api.rs).
        let b = |n: u32| BigUint::from(n);
        assert_eq!(scale_with_precision_loss(&b(905), 9, 11), (b(9), b(5)));
        assert_eq!(scale_with_precision_loss(&b(8053), 9, 12), (b(8), b(53)));
        assert_eq!(scale_with_precision_loss(&b(1), 9, 6), (b(1000), b(0)));
    }

    #[test]
    fn leftovers_are_credited_one_credit_late() {
        let mut leftovers = Vec::new();
        // 905 at scale 11 into scale 9: 9 units, 5 left at scale 11.
        assert_eq!(
            credit_units(&mut leftovers, &BigUint::from(905u32), 11, 9),
            9
        );
        // 95 at scale 11: 0 units; the stored 5 are loaded *before* this credit's 95 are saved, so they stay
        // below one unit and go back, and the 95 are saved beside them.
        assert_eq!(
            credit_units(&mut leftovers, &BigUint::from(95u32), 11, 9),
            0
        );
        let total: BigUint = leftovers.iter().map(|(a, _)| a.clone()).sum();
        assert_eq!(total, BigUint::from(100u32));
        // The next credit, however small, picks up the unit the leftovers now make.
        assert_eq!(credit_units(&mut leftovers, &BigUint::from(5u32), 11, 9), 1);
        let total: BigUint = leftovers.iter().map(|(a, _)| a.clone()).sum();
        assert_eq!(total, BigUint::from(5u32));
    }

    #[test]
    fn clamped_to_u64_max() {
        let huge = BigUint::from(u64::MAX) * BigUint::from(10u32);
        assert_eq!(credit_units(&mut Vec::new(), &huge, 0, 0), u64::MAX);
    }
}
