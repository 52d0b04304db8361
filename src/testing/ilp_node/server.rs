//! The node's HTTP port (`--http_bind_address`, docs/modern.md §5.1): like interledger-rs, one listener serves
//! both ILP-over-HTTP (`POST /accounts/{username}/ilp`, [`super::http`]) and the BTP websocket
//! (`GET /accounts/{username}/ilp/btp`, [`super::btp_server`]).
//!
//! Each connection's request head is read first (at most [`MAX_REQUEST_HEAD_BYTES`], within
//! [`REQUEST_HEAD_TIMEOUT`]); a websocket upgrade to the BTP path goes to the websocket handshake, anything else
//! to hyper with the ILP-over-HTTP router. Both see the head again through [`Rewind`].

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::rewind::Rewind;
use super::{btp_server, http, Node};

/// Largest request head read before dispatching (a websocket upgrade or an ILP-over-HTTP request head is a few
/// hundred bytes).
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// How long a client may take to send its request head.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the node shuts down.
pub(crate) async fn serve(node: Arc<Node>, listener: TcpListener) {
    let router = http::router(Arc::clone(&node));
    let mut shutdown = node.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let node = Arc::clone(&node);
                let router = router.clone();
                tokio::spawn(async move { handle(node, router, stream).await });
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(node: Arc<Node>, router: axum::Router, mut stream: TcpStream) {
    let head = match tokio::time::timeout(REQUEST_HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        _ => return,
    };
    let btp_username = btp_upgrade_username(&head);
    let stream = Rewind::new(head.freeze(), stream);
    match btp_username {
        Some(username) => btp_server::accept(node, username, stream).await,
        None => {
            let service = TowerToHyperService::new(router);
            let mut shutdown = node.shutdown.clone();
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Reads until the end of the request head (`\r\n\r\n`), the limit, or the end of the stream.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<BytesMut> {
    let mut head = BytesMut::with_capacity(1024);
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= MAX_REQUEST_HEAD_BYTES {
            return Ok(head);
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(head);
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

/// The username of a websocket upgrade `GET /accounts/{username}/ilp/btp`, if the head is one.
fn btp_upgrade_username(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target) = (request_line.next()?, request_line.next()?);
    if method != "GET" {
        return None;
    }
    let is_upgrade = lines.any(|line| {
        let mut parts = line.splitn(2, ':');
        let name = parts.next().unwrap_or_default().trim();
        let value = parts.next().unwrap_or_default().trim();
        name.eq_ignore_ascii_case("upgrade") && value.eq_ignore_ascii_case("websocket")
    });
    if !is_upgrade {
        return None;
    }
    let path = target.split('?').next()?;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["accounts", username, "ilp", "btp"] if !username.is_empty() => {
            Some((*username).to_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_detection() {
        let head = b"GET /accounts/bob/ilp/btp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(btp_upgrade_username(head), Some("bob".to_owned()));
        let plain = b"GET /accounts/bob/ilp/btp HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(btp_upgrade_username(plain), None);
        let post = b"POST /accounts/bob/ilp HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(btp_upgrade_username(post), None);
        let other = b"GET /accounts/bob/ilp HTTP/1.1\r\nupgrade: WebSocket\r\n\r\n";
        assert_eq!(btp_upgrade_username(other), None);
    }
}
