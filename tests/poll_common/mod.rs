//! Polling for integration tests: wait for a condition with a generous limit (a guard against hanging, never a
//! speed assertion). Included by the `*_common` test modules with `#[path]`.

use std::future::Future;
use std::time::Duration;

/// How often the condition is checked.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Calls `check` every 20 ms until it returns true; `Err` naming `what` once `limit` has passed.
pub(crate) async fn poll_until<F, Fut>(
    what: &str,
    limit: Duration,
    mut check: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("gave up waiting for: {what}"));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
