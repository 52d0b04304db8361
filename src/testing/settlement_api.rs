//! The connector side of RFC 38 (the "accounting API" a settlement engine calls, docs/modern.md §1.5), as
//! interledger-rs 1.0 serves it on `--settlement_api_bind_address` (§5.5): `POST /accounts/{id}/settlements`
//! (credit) and `POST /accounts/{id}/messages` (message to the peer's engine).
//!
//! Two accounting systems share it: [`super::mock_connector::MockConnector`] (credits are only recorded; messages
//! are handed straight to a linked connector's engine) and the mock node [`super::ilp_node`] (credits change the
//! balance; messages travel to the peer as `peer.settle` Prepares). Each implements [`AccountingSystem`]; the
//! routes and the interledger-rs answers both use ([`received`], [`conflict`], [`relayed`]) live here.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

/// What an accounting system does with the two RFC 38 calls.
#[async_trait]
pub(crate) trait AccountingSystem: Send + Sync + 'static {
    /// `POST /accounts/{id}/settlements`, with the request's `Idempotency-Key` if any.
    async fn credit(&self, id: String, key: Option<String>, body: Bytes) -> Response;
    /// `POST /accounts/{id}/messages`, with the request's `Idempotency-Key` if any.
    async fn message(&self, id: String, key: Option<String>, body: Bytes) -> Response;
}

/// The two routes, served by `system`.
pub(crate) fn router<A: AccountingSystem>(system: Arc<A>) -> Router {
    Router::new()
        .route("/accounts/{id}/settlements", post(credit::<A>))
        .route("/accounts/{id}/messages", post(message::<A>))
        .with_state(system)
}

async fn credit<A: AccountingSystem>(
    State(system): State<Arc<A>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    system.credit(id, idempotency_key(&headers), body).await
}

async fn message<A: AccountingSystem>(
    State(system): State<Arc<A>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    system.message(id, idempotency_key(&headers), body).await
}

/// The `Idempotency-Key` header, if present and text.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// interledger-rs's answer to an accepted credit: `201` with the text `RECEIVED` (\[live\], docs/modern.md §5.5).
pub(crate) fn received() -> Response {
    (StatusCode::CREATED, "RECEIVED").into_response()
}

/// interledger-rs's answer to a credit whose key was used before: `409 Store idempotency error`
/// (docs/modern.md §5.7 (a)).
pub(crate) fn conflict() -> Response {
    (
        StatusCode::CONFLICT,
        [("content-type", "application/problem+json")],
        r#"{"type":"about:blank","title":"Store idempotency error","status":409}"#,
    )
        .into_response()
}

/// interledger-rs's answer to a delivered message: `201` with the peer engine's reply and **no Content-Type**
/// (\[live\], docs/modern.md §5.5).
pub(crate) fn relayed(reply: Bytes) -> Response {
    let mut response = (StatusCode::CREATED, reply).into_response();
    response.headers_mut().remove("content-type");
    response
}

/// An RFC 7807 problem body (interledger-rs `ApiError`).
pub(crate) fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        })
        .to_string(),
    )
        .into_response()
}
