//! Measures the heap held per idle, authenticated BTP connection: N dialer sessions connect to one listener in
//! the same process, then the net heap growth is divided by N (it covers both ends of each socket, plus the
//! two sessions). Run with `cargo run --release -p btp --example transport_idle_memory -- 1000`.

use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use btp::packet::Packet;
use btp::transport::{
    Authenticator, BtpEndpoint, BtpSession, BtpUrl, ClientOptions, EndpointConfig, PeerKey, Reply,
    RequestHandler, ServerConfig, SessionFactory,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct Idle;

#[async_trait]
impl RequestHandler for Idle {
    async fn handle_request(&self, _: &BtpSession, _: u32, _: Packet) -> Option<Reply> {
        None
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let auth: Arc<dyn Authenticator> =
        Arc::new(|username: &str, token: &str| (token == "secret").then(|| PeerKey::new(username)));
    let factory: Arc<dyn SessionFactory> =
        Arc::new(|_: &PeerKey| Some(Arc::new(Idle) as Arc<dyn RequestHandler>));
    let server_ep = BtpEndpoint::new(EndpointConfig::default());
    let serving = server_ep.clone();
    tokio::spawn(async move {
        serving
            .serve(
                listener,
                ServerConfig::default(),
                auth,
                factory,
                std::future::pending(),
            )
            .await
    });
    // Warm up one connection so one-time allocations (TLS roots, tracing callsites) are not counted.
    let client_ep = BtpEndpoint::new(EndpointConfig::default());
    let warm = client_ep.connect(
        PeerKey::new("warm"),
        &BtpUrl::parse(&format!("btp+ws://warm:secret@{addr}"))?,
        ClientOptions::default(),
        Arc::new(Idle),
    );
    while !warm.is_connected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let region = Region::new(GLOBAL);
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let url = BtpUrl::parse(&format!("btp+ws://peer{i}:secret@{addr}"))?;
        sessions.push(client_ep.connect(
            PeerKey::new(format!("peer{i}")),
            &url,
            ClientOptions::default(),
            Arc::new(Idle),
        ));
    }
    while sessions.iter().any(|s| !s.is_connected()) || server_ep.all_sessions().len() < n + 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = region.change();
    let net = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    println!(
        "{n} idle connections: net heap {} KiB, {} bytes per connection (both ends)",
        net / 1024,
        net / n as i64
    );
    Ok(())
}
