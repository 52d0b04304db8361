//! The RFC 38 settlement-engine API a pair serves its modern connector (docs/modern.md §1.4), on the pair's
//! `settlement_listen` address, plus the operator's view of the reconciliation ledger. Errors are RFC 7807
//! problems, as the engine's.
//!
//! | route | success |
//! |--|--|
//! | `POST /accounts` `{"id"}` | 201 `{"id": …}` |
//! | `DELETE /accounts/{id}` | 204 (404 if it is not the pair's account) |
//! | `POST /accounts/{id}/settlements` (`Idempotency-Key`, Quantity) | 201, the Quantity accepted |
//! | `POST /accounts/{id}/messages` | always 400: P has no settlement engine to talk to; it settles over BTP/1.0 |
//! | `GET /ledger` | 200, the [`SettlementView`](super::SettlementView) |

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use super::{PairSettlement, SettlementError};
use crate::settlement::api::{Problem, JSON_BODY_MAX_BYTES};

/// The API of one pair's settlement.
pub fn router(settlement: PairSettlement) -> Router {
    let json_limit = DefaultBodyLimit::max(JSON_BODY_MAX_BYTES);
    Router::new()
        .route("/accounts", post(create_account).layer(json_limit))
        .route("/accounts/{id}", delete(delete_account))
        .route("/accounts/{id}/settlements", post(settle).layer(json_limit))
        .route("/accounts/{id}/messages", post(message))
        .route("/ledger", get(ledger))
        .with_state(settlement)
}

fn problem(e: &SettlementError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Problem::new(status, e.to_string()).into_response()
}

async fn create_account(State(s): State<PairSettlement>, body: Bytes) -> Response {
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
    let Some(id) = id else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "body must be a JSON object with a string \"id\" (the connector's account ID)",
        )
        .into_response();
    };
    match s.set_up_account(&id).await {
        Ok(()) => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "id": id }).to_string(),
        )
            .into_response(),
        Err(e) => problem(&e),
    }
}

async fn delete_account(State(s): State<PairSettlement>, Path(id): Path<String>) -> Response {
    match s.delete_account(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => problem(&e),
    }
}

async fn settle(
    State(s): State<PairSettlement>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        Some(Ok(k)) if !k.is_empty() => Some(k.to_owned()),
        Some(_) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be non-empty visible ASCII",
            )
            .into_response()
        }
        None => None,
    };
    match s.settle(&id, key.as_deref(), &body).await {
        Ok((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => problem(&e),
    }
}

async fn message(Path(_id): Path<String>) -> Response {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "bridge mode: the legacy peer has no settlement engine; it settles with this node over BTP/1.0",
    )
    .into_response()
}

async fn ledger(State(s): State<PairSettlement>) -> Response {
    Json(s.view().await).into_response()
}
