//! interledger-rs's `SettlementClient` (docs/modern.md §5.4): how a connector calls its settlement engine.
//! Shared by [`super::mock_connector::MockConnector::settle`] and the mock node's settle trigger
//! ([`super::ilp_node`]).
//!
//! | behaviour | interledger-rs 1.0 |
//! |--|--|
//! | settle | `POST <se>/accounts/<id>/settlements`, body `{"amount":"<u64>","scale":<asset scale>}` |
//! | key | a UUIDv4 `Idempotency-Key`, **new on every attempt** (\[live\], docs/modern.md §5.4) |
//! | timeout | 5 s per attempt ([`SETTLE_TIMEOUT`]) |
//! | retries | up to 10 after the first attempt ([`SETTLE_RETRIES`]); 5xx and timeouts wait 5 s, connection errors 1 s; 4xx is final |
//! | after the last failure | the caller refunds (the node adds the amount back to the balance) |
//!
//! URLs are built by appending path segments to the engine URL, as interledger-rs does with
//! `path_segments_mut().push(..)` ([`engine_url`]), so an engine URL with a path (`http://h:3000/bridge/kit`) works.
//! A trailing slash is *kept* as an empty segment, as in interledger-rs: `http://h/kit/` gives `http://h/kit//accounts`.

use std::time::Duration;

use url::Url;

/// Timeout of one settle request (interledger-rs `SettlementClient`, `DEFAULT_HTTP_TIMEOUT`).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries after the first settle attempt (interledger-rs `MAX_RETRIES`).
pub const SETTLE_RETRIES: u32 = 10;
/// Wait before retrying after a 5xx answer or a timeout.
pub const SETTLE_WAIT_AFTER_ERROR: Duration = Duration::from_secs(5);
/// Wait before retrying after a connection error (the engine may not have started yet).
pub const SETTLE_WAIT_AFTER_CONNECT_ERROR: Duration = Duration::from_secs(1);

/// Retry waits of the settlement client (interledger-rs defaults; tests may shorten them).
#[derive(Debug, Clone, Copy)]
pub struct SettlePolicy {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait after a 5xx or a timeout.
    pub wait_after_error: Duration,
    /// Wait after a connection error.
    pub wait_after_connect_error: Duration,
}

impl Default for SettlePolicy {
    fn default() -> Self {
        SettlePolicy {
            timeout: SETTLE_TIMEOUT,
            retries: SETTLE_RETRIES,
            wait_after_error: SETTLE_WAIT_AFTER_ERROR,
            wait_after_connect_error: SETTLE_WAIT_AFTER_CONNECT_ERROR,
        }
    }
}

/// What one settle call saw in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleOutcome {
    /// Status of the final answer.
    pub status: u16,
    /// The final body.
    pub body: String,
    /// Attempts made (each with its own key).
    pub attempts: u32,
    /// The key of the final attempt.
    pub key: String,
}

/// One attempt of a settle call, for observers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleAttempt {
    /// The Idempotency-Key sent.
    pub key: String,
    /// The HTTP status, or `None` for a timeout or connection error.
    pub status: Option<u16>,
    /// Why the attempt failed without an answer (timeout, connection error), when it did.
    pub error: Option<String>,
}

/// How a settle call ended without a 2xx or 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("settle gave up after {attempts} attempts: {last_error}")]
pub struct SettleGaveUp {
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: String,
}

/// A settlement engine URL that cannot take path segments (a `mailto:` or `data:` URL, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("settlement engine URL cannot have a path: {0}")]
pub struct EngineUrlError(pub Url);

/// `base` with `segments` appended as path segments, the way interledger-rs's `path_segments_mut().push()` does:
/// each segment is percent-encoded, and a trailing `/` of `base` stays as an empty segment (`kit/` + `accounts` is
/// `kit//accounts`).
pub fn engine_url(base: &Url, segments: &[&str]) -> Result<Url, EngineUrlError> {
    let mut url = base.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| EngineUrlError(base.clone()))?;
        for segment in segments {
            path.push(segment);
        }
    }
    Ok(url)
}

/// Sends one settle request per attempt with a fresh key, retrying per `policy`. A 2xx or 4xx answer ends the
/// call (`Ok`); the caller decides what a 4xx means (interledger-rs refunds). `observe` sees every attempt.
pub async fn settle_with_fresh_keys(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    policy: SettlePolicy,
    accept_json: bool,
    observe: &(dyn Fn(SettleAttempt) + Send + Sync),
) -> Result<SettleOutcome, SettleGaveUp> {
    let mut last_error = String::new();
    for attempt in 0..=policy.retries {
        let key = uuid::Uuid::new_v4().hyphenated().to_string();
        let mut request = http
            .post(url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &key)
            .timeout(policy.timeout)
            .body(body.to_owned());
        if accept_json {
            request = request.header("Accept", "application/json");
        }
        let sent = request.send().await;
        match sent {
            Ok(resp) if resp.status().is_success() || resp.status().is_client_error() => {
                let status = resp.status().as_u16();
                observe(SettleAttempt {
                    key: key.clone(),
                    status: Some(status),
                    error: None,
                });
                let body = resp.text().await.unwrap_or_default();
                return Ok(SettleOutcome {
                    status,
                    body,
                    attempts: attempt + 1,
                    key,
                });
            }
            Ok(resp) => {
                observe(SettleAttempt {
                    key,
                    status: Some(resp.status().as_u16()),
                    error: None,
                });
                last_error = format!("status {}", resp.status());
                tokio::time::sleep(policy.wait_after_error).await;
            }
            Err(e) if e.is_timeout() => {
                last_error = "timeout".to_owned();
                observe(SettleAttempt {
                    key,
                    status: None,
                    error: Some(last_error.clone()),
                });
                tokio::time::sleep(policy.wait_after_error).await;
            }
            Err(e) => {
                // The whole chain: reqwest's own message is only "error sending request".
                last_error = error_chain(&e);
                observe(SettleAttempt {
                    key,
                    status: None,
                    error: Some(last_error.clone()),
                });
                tokio::time::sleep(policy.wait_after_connect_error).await;
            }
        }
    }
    Err(SettleGaveUp {
        attempts: policy.retries + 1,
        last_error,
    })
}

/// `e` and its sources, joined with `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_appended_after_a_base_path() -> Result<(), Box<dyn std::error::Error>> {
        let base = Url::parse("http://127.0.0.1:3000/bridge/kit")?;
        assert_eq!(
            engine_url(&base, &["accounts"])?.as_str(),
            "http://127.0.0.1:3000/bridge/kit/accounts"
        );
        let slash = Url::parse("http://127.0.0.1:3000/bridge/kit/")?;
        assert_eq!(
            engine_url(&slash, &["accounts", "a b", "messages"])?.as_str(),
            "http://127.0.0.1:3000/bridge/kit//accounts/a%20b/messages"
        );
        let bare = Url::parse("http://127.0.0.1:3000")?;
        assert_eq!(
            engine_url(&bare, &["accounts"])?.as_str(),
            "http://127.0.0.1:3000/accounts"
        );
        Ok(())
    }
}
