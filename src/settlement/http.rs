//! What the engine API and the admin API share as servers: the accept loop ([`serve`]) and the limits every
//! client is held to ([`HttpLimits`]): a request head and a body must arrive in time, a bounded number of
//! requests are handled at once (one more is answered 503 at once, not queued), and a bounded number of
//! connections are open (past that the loop stops accepting). Why the loop is ours and not `axum::serve`:
//! ARCHITECTURE.md, design decisions. HTTP/1.1 only: connectors speak HTTP/1.1 to engines.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::api::{Problem, MESSAGE_BODY_MAX_BYTES};
use crate::config::settlement::SeConfig;

/// Longest a client may take to send a request head (request line and headers), and longest a kept-alive
/// connection may sit idle before its next request: 10 s. A connector writes a head at once; a client slower
/// than this is broken or holding the connection on purpose.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a client may take to send a whole request body once its head is read: 10 s. Bodies are at most
/// 64 KiB ([`MESSAGE_BODY_MAX_BYTES`]), written at once by connectors.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most engine API requests handled at once: 128. One connector's settle requests and messages rarely number
/// more than a few at a time; a message may take up to ~10 s (a module waiting on its ledger), so this leaves
/// room for bursts while bounding the tasks, memory and store load one client can cause.
pub const ENGINE_MAX_CONCURRENT_REQUESTS: usize = 128;

/// Most engine API connections open at once: 512. Above [`ENGINE_MAX_CONCURRENT_REQUESTS`] so that idle
/// kept-alive connections never keep a request from being answered (503 or served), and far below the process's
/// file descriptor budget.
pub const ENGINE_MAX_CONNECTIONS: usize = 512;

/// Most admin API requests handled at once: 8. An operator or a monitoring probe makes one at a time.
pub const ADMIN_MAX_CONCURRENT_REQUESTS: usize = 8;

/// Most admin API connections open at once: 32 (above [`ADMIN_MAX_CONCURRENT_REQUESTS`], see
/// [`ENGINE_MAX_CONNECTIONS`]).
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// Largest admin API request body, in bytes: 4 KiB (the largest is `{"account": "<id>"}`).
pub const ADMIN_BODY_MAX_BYTES: usize = 4 * 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors) before the next, in place of a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What a server holds each client to (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`BODY_READ_TIMEOUT`].
    pub body_read_timeout: Duration,
    /// Largest body read, in bytes; a route may allow less.
    pub body_max_bytes: usize,
    /// Requests handled at once; one more gets 503.
    pub max_requests: usize,
    /// Connections open at once; one more waits to be accepted.
    pub max_connections: usize,
}

impl HttpLimits {
    /// The engine API's limits.
    pub const ENGINE: HttpLimits = HttpLimits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        body_read_timeout: BODY_READ_TIMEOUT,
        body_max_bytes: MESSAGE_BODY_MAX_BYTES,
        max_requests: ENGINE_MAX_CONCURRENT_REQUESTS,
        max_connections: ENGINE_MAX_CONNECTIONS,
    };

    /// The admin API's limits.
    pub const ADMIN: HttpLimits = HttpLimits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        body_read_timeout: BODY_READ_TIMEOUT,
        body_max_bytes: ADMIN_BODY_MAX_BYTES,
        max_requests: ADMIN_MAX_CONCURRENT_REQUESTS,
        max_connections: ADMIN_MAX_CONNECTIONS,
    };
}

/// Connections the engine's servers may hold open at once with `config`: the engine API's, plus the admin
/// API's when it runs (it runs only with an `admin_token`). The node's file descriptor budget keeps these.
pub fn connections_needed(config: &SeConfig) -> usize {
    let admin = if config.admin_token.is_some() {
        HttpLimits::ADMIN.max_connections
    } else {
        0
    };
    HttpLimits::ENGINE.max_connections + admin
}

/// Serves `router` on `listener` with `limits` until `shutdown` resolves, then stops accepting, lets every
/// connection finish the request it is in (idle ones close at once) and returns. `server` names it in logs.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    server: &'static str,
    shutdown: impl Future<Output = ()>,
) {
    let guard = Guard {
        requests: Arc::new(Semaphore::new(limits.max_requests)),
        limits,
        server,
    };
    let service = router.layer(middleware::from_fn_with_state(guard, guard_request));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(p) => p,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(server, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow with every connection ever served.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(serve_connection(
            stream,
            peer,
            service.clone(),
            limits.header_read_timeout,
            server,
            closing_rx.clone(),
            permit,
        ));
    }
    let _ = closing_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    service: Router,
    header_read_timeout: Duration,
    server: &'static str,
    mut closing: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    // `wait_for`'s guard is not `Send`, so it must be gone before the connection is awaited again.
    let finished = tokio::select! {
        served = conn.as_mut() => Some(served),
        _ = closing.wait_for(|closing| *closing) => None,
    };
    let served = match finished {
        Some(served) => served,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = served {
        // A head not sent in time ends here too; it is the client's doing, so not above debug.
        tracing::debug!(server, %peer, %error, "connection ended with an error");
    }
}

#[derive(Clone)]
struct Guard {
    requests: Arc<Semaphore>,
    limits: HttpLimits,
    server: &'static str,
}

/// Admits a request if fewer than `max_requests` are in progress, then reads its whole body under the body
/// deadline before the router sees it.
async fn guard_request(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let server = guard.server;
    let Ok(_permit) = Arc::clone(&guard.requests).try_acquire_owned() else {
        tracing::warn!(
            server,
            limit = guard.limits.max_requests,
            "request refused: too many in progress"
        );
        let mut resp = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "more than {} requests in progress; retry later",
                guard.limits.max_requests
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, guard.limits.body_max_bytes).collect();
    let body = match tokio::time::timeout(guard.limits.body_read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {} bytes", guard.limits.body_max_bytes),
            )
            .into_response();
        }
        Ok(Err(error)) => {
            tracing::debug!(server, %error, "request body unreadable");
            return closing(Problem::new(
                StatusCode::BAD_REQUEST,
                "request body unreadable",
            ));
        }
        Err(_) => {
            tracing::warn!(
                server,
                timeout_ms = guard.limits.body_read_timeout.as_millis() as u64,
                "request body not received in time; connection closed"
            );
            return closing(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ));
        }
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// `problem` with `Connection: close`: the rest of the body may never come, so the connection cannot be reused.
fn closing(problem: Problem) -> Response {
    let mut resp = problem.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
