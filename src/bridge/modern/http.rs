//! ILP-over-HTTP (RFC 0035 as interledger-rs speaks it, docs/modern.md §5.9): one `POST` per Prepare, the body
//! the Prepare's bytes, the answer `200 application/octet-stream` with the Fulfill's or Reject's bytes, and a
//! bearer token each way.
//!
//! * [`HttpLink`] posts our Prepares to the connector's URL for this account (interledger-rs:
//!   `http://<node>/accounts/<username>/ilp`, with the account's incoming token). Redirects are not followed
//!   (the token would go with them).
//! * [`router`] takes the connector's Prepares (interledger-rs posts to the account's `ilp_over_http_url` with
//!   its outgoing token) and is served with the engine's accept loop ([`serve`]), so slow clients and floods
//!   are held to [`ILP_HTTP_LIMITS`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes as BodyBytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use btp::ilp_v4::{self, IlpV4Packet};
use tokio::net::TcpListener;

use super::{decode_reply, encode_reply, IlpHandler, IlpReply, LinkError, ModernLink};
use crate::settlement::api::Problem;
use crate::settlement::auth::{require_bearer, BearerToken};
use crate::settlement::http::{HttpLimits, BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT};

/// Largest request body the server reads, in bytes: interledger-rs's limit (a Prepare with the most data
/// ILPv4 allows is well under it).
pub const ILP_HTTP_BODY_MAX_BYTES: usize = 40_000;

/// Prepares handled at once by one bridged pair's ILP-over-HTTP server: each waits for the legacy peer's answer
/// (up to its expiry), so this bounds the transfers one connector can hold in flight through HTTP; one more is
/// answered 503 at once.
pub const ILP_HTTP_MAX_CONCURRENT_REQUESTS: usize = 512;

/// Connections open at once to one bridged pair's ILP-over-HTTP server (above the request limit, so idle
/// kept-alive connections never block an answer).
pub const ILP_HTTP_MAX_CONNECTIONS: usize = 1024;

/// The limits of an ILP-over-HTTP server.
pub const ILP_HTTP_LIMITS: HttpLimits = HttpLimits {
    header_read_timeout: HEADER_READ_TIMEOUT,
    body_read_timeout: BODY_READ_TIMEOUT,
    body_max_bytes: ILP_HTTP_BODY_MAX_BYTES,
    max_requests: ILP_HTTP_MAX_CONCURRENT_REQUESTS,
    max_connections: ILP_HTTP_MAX_CONNECTIONS,
};

/// Why an [`HttpLink`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpLinkError {
    /// The URL is not an `http` or `https` URL.
    #[error("invalid ILP-over-HTTP URL {url:?}: {reason}")]
    Url {
        /// The URL as configured.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The modern connector reached with ILP-over-HTTP.
#[derive(Clone)]
pub struct HttpLink {
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<String>,
}

impl std::fmt::Debug for HttpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLink")
            .field("url", &self.url.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HttpLink {
    /// Posts to `url`, with `Authorization: Bearer <token>` when a token is given.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, HttpLinkError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| HttpLinkError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(HttpLinkError::Url {
                url: url.to_owned(),
                reason: "the scheme must be http or https".to_owned(),
            });
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(HttpLinkError::Client)?;
        Ok(HttpLink {
            client,
            url: parsed,
            token,
        })
    }
}

#[async_trait]
impl ModernLink for HttpLink {
    async fn send(&self, prepare: &ilp_v4::Prepare, wait: Duration) -> Result<IlpReply, LinkError> {
        let body = IlpV4Packet::Prepare(prepare.clone()).to_bytes();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .timeout(wait)
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(r) => r,
            // No connection was made: the Prepare cannot have arrived.
            Err(e) if e.is_connect() => return Err(LinkError::NotSent(e.to_string())),
            Err(e) => return Err(LinkError::NoAnswer(e.to_string())),
        };
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| LinkError::NoAnswer(e.to_string()))?;
        if status != reqwest::StatusCode::OK {
            return Err(LinkError::InvalidAnswer(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )));
        }
        decode_reply(&bytes)
    }

    fn is_connected(&self) -> bool {
        true
    }
}

/// The router of one bridged pair's ILP-over-HTTP server: `POST <path>` with the Prepare; `token` is the
/// bearer token the connector must present (`None`: none, for loopback set-ups only; the configuration refuses
/// that on other addresses).
pub fn router(path: &str, handler: Arc<dyn IlpHandler>, token: Option<&str>) -> Router {
    let routes = Router::new()
        .route(path, post(take_prepare))
        .with_state(handler);
    match token {
        Some(token) => routes.layer(middleware::from_fn_with_state(
            BearerToken::new(token),
            require_bearer,
        )),
        None => routes,
    }
}

async fn take_prepare(State(handler): State<Arc<dyn IlpHandler>>, body: BodyBytes) -> Response {
    let prepare = match IlpV4Packet::decode(&body) {
        Ok(IlpV4Packet::Prepare(p)) => p,
        _ => {
            return Problem::new(StatusCode::BAD_REQUEST, "the body is not an ILPv4 Prepare")
                .into_response()
        }
    };
    let reply = handler.handle_prepare(prepare).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        encode_reply(&reply),
    )
        .into_response()
}

/// Serves `router` on `listener` with [`ILP_HTTP_LIMITS`] until `shutdown`.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    crate::settlement::http::serve(listener, router, ILP_HTTP_LIMITS, "ILP-over-HTTP", shutdown)
        .await
}
