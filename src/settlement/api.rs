//! The RFC 38 engine API (the connector calls it; docs/modern.md §1.4), on axum. Parse, call [`Engine`], map the error: the only
//! place engine errors become HTTP statuses. Errors are RFC 7807 `application/problem+json`.
//!
//! | route | success |
//! |--|--|
//! | `POST /accounts` `{"id"?}` | 201 `{"id": …}` |
//! | `DELETE /accounts/{id}` | 204 (404 if unknown) |
//! | `POST /accounts/{id}/settlements` (`Idempotency-Key`, Quantity) | 201 Quantity accepted |
//! | `POST /accounts/{id}/messages` (octet-stream) | 201 octet-stream reply (maybe empty) |

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;

use super::engine::Engine;
use super::error::EngineError;

/// Largest body of `POST /accounts` and settle requests, in bytes.
pub const JSON_BODY_MAX_BYTES: usize = 4 * 1024;
/// Largest message body, in bytes (ILP Prepare data is at most 32 767 bytes).
pub const MESSAGE_BODY_MAX_BYTES: usize = 64 * 1024;
/// The problem-details media type (RFC 7807).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 7807 problem response.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable detail.
    pub detail: String,
}

impl Problem {
    /// A problem with a status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            status,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        (
            self.status,
            [(header::CONTENT_TYPE, PROBLEM_JSON)],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<EngineError> for Problem {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::BadRequest(_)
            | EngineError::Quantity(_)
            | EngineError::Message(_)
            | EngineError::UnknownMessage(_)
            | EngineError::Refused(_) => Problem::new(StatusCode::BAD_REQUEST, e.to_string()),
            EngineError::AccountNotFound(_) => Problem::new(StatusCode::NOT_FOUND, e.to_string()),
            EngineError::KeyConflict(_) => Problem::new(StatusCode::CONFLICT, e.to_string()),
            EngineError::Unavailable(_)
            | EngineError::Module(_)
            | EngineError::DisconnectFailed { .. }
            | EngineError::KeptAccountUnreadable { .. }
            | EngineError::Task { .. }
            | EngineError::Encode(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            EngineError::Store(error) => {
                tracing::error!(%error, "settlement engine store failure");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
            }
            other => {
                tracing::error!(error = %other, "settlement engine internal error");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

fn body_problem(r: BytesRejection) -> Problem {
    Problem::new(r.status(), r.body_text())
}

/// The engine API router.
pub fn router(engine: Engine) -> Router {
    let json_limit = DefaultBodyLimit::max(JSON_BODY_MAX_BYTES);
    Router::new()
        .route("/accounts", post(create_account).layer(json_limit))
        .route("/accounts/{id}", delete(delete_account))
        .route("/accounts/{id}/settlements", post(settle).layer(json_limit))
        .route(
            "/accounts/{id}/messages",
            post(message).layer(DefaultBodyLimit::max(MESSAGE_BODY_MAX_BYTES)),
        )
        .fallback(not_found)
        .with_state(engine)
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such route")
}

async fn create_account(
    State(engine): State<Engine>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(body_problem)?;
    let id = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Problem::new(StatusCode::BAD_REQUEST, "body is not a JSON object"))?;
        match obj.get("id") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "\"id\" must be a string",
                ))
            }
        }
    };
    let id = engine.create_account(id).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "id": id }).to_string(),
    )
        .into_response())
}

async fn delete_account(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    engine.delete_account(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn settle(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(body_problem)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "Idempotency-Key is not visible ASCII",
                    )
                })?
                .to_owned(),
        ),
    };
    let (status, body) = engine.accept_settlement(&id, key, body).await?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn message(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(body_problem)?;
    let reply = engine.handle_message(&id, body).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        reply,
    )
        .into_response())
}
