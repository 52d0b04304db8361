//! ILP-over-HTTP in the mock node, as interledger-rs's `crates/interledger-http` (docs/modern.md §5.9).
//!
//! **Server**, `POST /accounts/{username}/ilp`:
//!
//! | request | answer |
//! |--|--|
//! | body over [`MAX_PACKET_BYTES`] | 413 (warp's body limit) |
//! | no `Authorization` header, a value shorter than 7 characters, an unknown username, an account without an incoming token, or `value[7..]` ≠ that token (the `Bearer ` prefix itself is not checked) | 401 problem JSON |
//! | body that is not an ILPv4 Prepare | 400 problem JSON, title `Invalid ILP packet` |
//! | otherwise | the incoming pipeline runs; 200, `Content-Type: application/octet-stream`, the Fulfill **or the Reject** |
//!
//! **Client** (accounts with `ilp_over_http_url`): `POST` the Prepare with `Content-Type:
//! application/octet-stream` and `Authorization: Bearer <ilp_over_http_outgoing_token>` (empty when unset),
//! timeout [`super::NodeConfig::http_client_timeout`] (30 s). Every Reject it makes up has `triggeredBy` = the
//! node's address:
//!
//! | outcome | result |
//! |--|--|
//! | 2xx with a Fulfill or Reject body | that packet |
//! | 4xx | Reject F02 |
//! | any other error status | Reject T01 |
//! | the request could not be sent (connection error, timeout) | Reject T01 `Error sending ILP over HTTP request: <error>` |
//! | body unreadable, or neither a Fulfill nor a Reject | Reject T01 |
//!
//! The messages of the status and body Rejects are not in docs/modern.md; the mock leaves them empty.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use btp::ilp_v4::{IlpV4Packet, Prepare};
use channel_modules::sync::lock;
use url::Url;

use super::accounts::Account;
use super::pipeline::{self, reject};
use super::records::{Direction, PacketRecord, Transport};
use super::{IlpResult, Node};

/// interledger-rs's `MAX_PACKET_SIZE`: the largest ILP-over-HTTP body accepted.
pub const MAX_PACKET_BYTES: usize = 40_000;
/// interledger-rs's `BEARER_TOKEN_START`: characters dropped from the `Authorization` value.
pub const BEARER_TOKEN_START: usize = 7;

/// The ILP-over-HTTP routes of the node's HTTP port.
pub(crate) fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/accounts/{username}/ilp", post(ilp_over_http))
        .layer(DefaultBodyLimit::max(MAX_PACKET_BYTES))
        .with_state(node)
}

/// An RFC 7807 body like interledger-rs's `ApiError`.
fn problem(status: StatusCode, title: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": status.as_u16(),
        })
        .to_string(),
    )
        .into_response()
}

async fn ilp_over_http(
    State(node): State<Arc<Node>>,
    Path(username): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(account) = authenticate(&node, &username, &headers) else {
        return problem(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let prepare = match IlpV4Packet::decode(&body) {
        Ok(IlpV4Packet::Prepare(p)) => p,
        _ => return problem(StatusCode::BAD_REQUEST, "Invalid ILP packet"),
    };
    node.record_packet(PacketRecord {
        account: account.username.clone(),
        direction: Direction::In,
        transport: Transport::Http,
        packet: IlpV4Packet::Prepare(prepare.clone()),
    });
    let reply = match pipeline::handle_incoming(&node, account.clone(), prepare).await {
        Ok(f) => IlpV4Packet::Fulfill(f),
        Err(r) => IlpV4Packet::Reject(r),
    };
    node.record_packet(PacketRecord {
        account: account.username,
        direction: Direction::Out,
        transport: Transport::Http,
        packet: reply.clone(),
    });
    (
        StatusCode::OK,
        [("content-type", "application/octet-stream")],
        reply.to_bytes(),
    )
        .into_response()
}

/// interledger-rs's `get_account`: the header value minus its first 7 characters must be the account's incoming
/// token.
fn authenticate(node: &Node, username: &str, headers: &HeaderMap) -> Option<Account> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let token = value.get(BEARER_TOKEN_START..)?;
    let state = lock(&node.state);
    let account = state.account_by_name(username)?;
    (account.ilp_over_http_incoming_token.as_deref() == Some(token)).then(|| account.clone())
}

/// The HTTP client: sends `prepare` to `to` at `url`.
pub(crate) async fn send_prepare(
    node: &Arc<Node>,
    to: &Account,
    url: &Url,
    prepare: Prepare,
) -> IlpResult {
    let address = node.address();
    let packet = IlpV4Packet::Prepare(prepare);
    node.record_packet(PacketRecord {
        account: to.username.clone(),
        direction: Direction::Out,
        transport: Transport::Http,
        packet: packet.clone(),
    });
    let token = to.ilp_over_http_outgoing_token.clone().unwrap_or_default();
    let sent = node
        .http
        .post(url.as_str())
        .header("content-type", "application/octet-stream")
        .header("authorization", format!("Bearer {token}"))
        .timeout(node.config.http_client_timeout)
        .body(packet.to_bytes())
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            return Err(reject(
                b"T01",
                &format!("Error sending ILP over HTTP request: {e}"),
                Some(&address),
                Bytes::new(),
            ))
        }
    };
    let status = response.status();
    if status.is_client_error() {
        return Err(reject(b"F02", "", Some(&address), Bytes::new()));
    }
    if !status.is_success() {
        return Err(reject(b"T01", "", Some(&address), Bytes::new()));
    }
    let Ok(body) = response.bytes().await else {
        return Err(reject(b"T01", "", Some(&address), Bytes::new()));
    };
    let reply = IlpV4Packet::decode(&body);
    if let Ok(reply) = &reply {
        node.record_packet(PacketRecord {
            account: to.username.clone(),
            direction: Direction::In,
            transport: Transport::Http,
            packet: reply.clone(),
        });
    }
    match reply {
        Ok(IlpV4Packet::Fulfill(f)) => Ok(f),
        Ok(IlpV4Packet::Reject(r)) => Err(r),
        _ => Err(reject(b"T01", "", Some(&address), Bytes::new())),
    }
}
