//! The accounting-system client: the two calls the engine makes to its connector (RFC 38 "Accounting API",
//! docs/modern.md §1.5).
//!
//! * credit: `POST {connector}/accounts/{id}/settlements` with an `Idempotency-Key` and a Quantity. Any 2xx is
//!   success (interledger-rs answers the text `RECEIVED`, not a Quantity: docs/modern.md §8, known issue 1); 409
//!   means the key was already used; 404 means the account is not known (yet). Retrying is the caller's job.
//! * message: `POST {connector}/accounts/{id}/messages`, octet-stream both ways; the connector relays it to the
//!   peer's engine and returns its reply (interledger-rs: 201 with the bytes, 502 if the peer rejected).

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use super::quantity::Quantity;

/// Timeout of one credit call.
pub const CREDIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one message call (interledger-rs gives `peer.settle` Prepares 30 s).
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(35);
/// Longest reply body kept in an error message, in bytes.
const ERROR_BODY_MAX_BYTES: usize = 256;

/// Errors of a connector call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The HTTP client cannot be built.
    #[error("connector unreachable: {0}")]
    Build(#[source] reqwest::Error),
    /// A credit's Quantity cannot be encoded.
    #[error("connector unreachable: {0}")]
    Encode(#[source] serde_json::Error),
    /// No HTTP response (connection refused, timeout, reset); the message has the whole chain of causes.
    #[error("connector unreachable: {}", error_chain(.0))]
    Transport(#[source] reqwest::Error),
    /// An HTTP status that is not success.
    #[error("connector answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Start of the reply body.
        body: String,
    },
}

/// What the connector did with a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOutcome {
    /// Any 2xx: credited.
    Credited,
    /// 409: the key was already used (interledger-rs also answers this to a plain retry of a credit it took).
    AlreadyUsed,
    /// 404: the account is not known yet.
    UnknownAccount,
}

/// HTTP client for one connector.
#[derive(Clone, Debug)]
pub struct ConnectorClient {
    http: reqwest::Client,
    base: String,
}

impl ConnectorClient {
    /// A client for the connector at `base` (e.g. `http://127.0.0.1:7771`; a trailing `/` is ignored).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(ClientError::Build)?;
        Ok(ConnectorClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// The connector's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Credits an incoming settlement. Account IDs are URL-safe (checked at account creation).
    pub async fn credit(
        &self,
        account: &str,
        idempotency_key: &str,
        quantity: &Quantity,
    ) -> Result<CreditOutcome, ClientError> {
        let url = format!("{}/accounts/{account}/settlements", self.base);
        let body = serde_json::to_vec(quantity).map_err(ClientError::Encode)?;
        let resp = self
            .http
            .post(url)
            .header("Idempotency-Key", idempotency_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(CREDIT_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(ClientError::Transport)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(CreditOutcome::Credited);
        }
        match status {
            StatusCode::CONFLICT => Ok(CreditOutcome::AlreadyUsed),
            StatusCode::NOT_FOUND => Ok(CreditOutcome::UnknownAccount),
            _ => Err(status_error(resp).await),
        }
    }

    /// Sends a message to the peer's engine through the connector and returns the reply bytes.
    pub async fn send_message(
        &self,
        account: &str,
        message: Vec<u8>,
    ) -> Result<Bytes, ClientError> {
        let url = format!("{}/accounts/{account}/messages", self.base);
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::ACCEPT, "application/octet-stream")
            .timeout(MESSAGE_TIMEOUT)
            .body(message)
            .send()
            .await
            .map_err(ClientError::Transport)?;
        if resp.status().is_success() {
            resp.bytes().await.map_err(ClientError::Transport)
        } else {
            Err(status_error(resp).await)
        }
    }
}

async fn status_error(resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    let end = body.len().min(ERROR_BODY_MAX_BYTES);
    ClientError::Status {
        status,
        body: String::from_utf8_lossy(body.get(..end).unwrap_or_default()).into_owned(),
    }
}

/// `e` and its causes, joined by `: ` (reqwest's own message rarely says why a request failed).
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
