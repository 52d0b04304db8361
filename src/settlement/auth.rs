//! The bearer token both servers may require ([`require_bearer`]), compared as a digest so the comparison
//! cannot leak the token.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::api::Problem;

/// A bearer token to check requests against, kept as its SHA-256 digest.
#[derive(Clone)]
pub(crate) struct BearerToken {
    digest: [u8; 32],
}

impl BearerToken {
    /// The token `token` (surrounding whitespace ignored, as in the presented one).
    pub(crate) fn new(token: &str) -> Self {
        BearerToken {
            digest: Sha256::digest(token.trim().as_bytes()).into(),
        }
    }

    /// Whether `Authorization` holds `Bearer <this token>`.
    fn admits(&self, req: &Request) -> bool {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| -> [u8; 32] { Sha256::digest(t.trim().as_bytes()).into() });
        // Comparing digests of equal length in full: no early exit that leaks the token's prefix.
        presented.is_some_and(|d| {
            d.iter()
                .zip(self.digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        })
    }
}

/// Middleware: passes requests with the right bearer token, answers the others 401 (problem JSON,
/// `WWW-Authenticate: Bearer`) without calling the handler.
pub(crate) async fn require_bearer(
    State(token): State<BearerToken>,
    req: Request,
    next: Next,
) -> Response {
    if token.admits(&req) {
        return next.run(req).await;
    }
    let mut resp =
        Problem::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}
