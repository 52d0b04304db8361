//! The operator (admin) API of the settlement engine: a separate listener, `Authorization: Bearer <token>` on
//! every route except the OpenAPI document. JSON; errors are problem JSON like the engine API.
//!
//! | route | answer |
//! |--|--|
//! | `GET /accounts` | every account's [`AccountView`] |
//! | `GET /accounts/{id}` | one [`AccountView`]: settled, queued, in flight, leftover, uncredited, last error |
//! | `GET /accounts/{id}/history` | [`HistoryView`]: settle requests by Idempotency-Key with the claim that settled them, claims sent, credits |
//! | `POST /accounts/{id}/retry` | 202: retry pending settlement and credits now |
//! | `GET /alerts` | [`AlertView`]s: credits the connector refused with 409 |
//! | `GET /identities` | [`IdentityView`]s: the ledger identities accounts hold, and the contested ones |
//! | `PUT /identities/{identity}` | 204: `{"account": "<id>"}` gets the identity, as if configured for it (settles a contest) |
//! | `GET /openapi.yaml` | the OpenAPI 3 document of both APIs (no token needed) |

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use super::api::Problem;
use super::auth::{require_bearer, BearerToken};
use super::engine::Engine;
use super::views::{AccountView, AlertView, HistoryView, IdentityView};

/// The OpenAPI document of the engine and admin APIs.
pub const OPENAPI_YAML: &str = include_str!("openapi.yaml");

#[derive(Clone)]
struct AdminState {
    engine: Engine,
}

/// The admin router; every route but `/openapi.yaml` needs `Authorization: Bearer <token>`.
pub fn router(engine: Engine, token: &str) -> Router {
    let state = AdminState { engine };
    let protected = Router::new()
        .route("/accounts", get(list))
        .route("/accounts/{id}", get(one))
        .route("/accounts/{id}/history", get(history))
        .route("/accounts/{id}/retry", post(retry))
        .route("/alerts", get(alerts))
        .route("/identities", get(identities))
        .route("/identities/{identity}", put(assign_identity))
        .route_layer(middleware::from_fn_with_state(
            BearerToken::new(token),
            require_bearer,
        ))
        .with_state(state);
    Router::new()
        .route("/openapi.yaml", get(openapi))
        .merge(protected)
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such route") })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

async fn list(State(s): State<AdminState>) -> Result<Json<Vec<AccountView>>, Problem> {
    let mut out = Vec::new();
    for id in s.engine.account_ids() {
        // An account deleted between the two calls is skipped.
        if let Ok(v) = s.engine.account_view(&id) {
            out.push(v);
        }
    }
    Ok(Json(out))
}

async fn one(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, Problem> {
    Ok(Json(s.engine.account_view(&id)?))
}

async fn history(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<HistoryView>, Problem> {
    Ok(Json(s.engine.account_history(&id)?))
}

async fn retry(State(s): State<AdminState>, Path(id): Path<String>) -> Result<Response, Problem> {
    s.engine.retry_now(&id)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "account": id, "retrying": true })),
    )
        .into_response())
}

async fn alerts(State(s): State<AdminState>) -> Json<Vec<AlertView>> {
    Json(s.engine.alerts())
}

async fn identities(State(s): State<AdminState>) -> Result<Json<Vec<IdentityView>>, Problem> {
    Ok(Json(s.engine.identities()?))
}

/// Body of `PUT /identities/{identity}`.
#[derive(serde::Deserialize)]
struct Assignment {
    account: String,
}

async fn assign_identity(
    State(s): State<AdminState>,
    Path(identity): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, Problem> {
    let assignment: Assignment = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("body must be {{\"account\": \"<id>\"}}: {e}"),
        )
    })?;
    s.engine
        .assign_identity(&identity, &assignment.account)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
