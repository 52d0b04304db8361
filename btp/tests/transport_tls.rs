//! `btp+wss`: a listener with a self-signed certificate (PEM files, as in the legacy `listener.cert/key`) and a
//! dialer that trusts it through an extra CA file; an untrusted dialer never connects.

mod transport_support;

use std::time::Duration;

use btp::transport::{
    BtpEndpoint, BtpUrl, ClientOptions, EndpointConfig, PeerKey, Reply, RpcError, ServerConfig,
    TlsClientConfig, TlsServerConfig,
};
use tokio::net::TcpListener;
use transport_support::*;

#[tokio::test]
async fn wss_with_self_signed_certificate() -> TestResult {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let dir = std::env::temp_dir().join(format!("btp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem())?;
    std::fs::write(&key_path, certified.key_pair.serialize_pem())?;

    // `ca` is optional (legacy requires it); pass the cert again to check that duplicates are skipped.
    let tls = TlsServerConfig::from_pem_files(&cert_path, &key_path, Some(&cert_path))?;
    let handler = Recorder::new();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let config = ServerConfig {
        tls: Some(tls),
        ..ServerConfig::default()
    };
    let _server = start_server_on(
        listener,
        BtpEndpoint::new(EndpointConfig::default()),
        config,
        legacy_auth(),
        handler.clone(),
    )
    .await;
    let url = BtpUrl::parse(&format!("btp+wss://:s%40cret@localhost:{port}/btp"))?;

    let trusted = ClientOptions {
        tls: Some(TlsClientConfig::with_extra_ca_file(&cert_path)?),
        ..ClientOptions::default()
    };
    let session = btp::transport::connect(PeerKey::new("server"), &url, trusted, Recorder::new());
    let reply = session
        .request(message(b"over tls"), Duration::from_secs(10))
        .await?;
    assert_eq!(
        reply,
        Reply::Response(message(b"over tls").protocol_data().clone())
    );
    assert_eq!(handler.count(), 1);
    session.close();

    // The default trust store (webpki roots only) refuses the self-signed certificate.
    let untrusted = btp::transport::connect(
        PeerKey::new("server"),
        &url,
        ClientOptions::default(),
        Recorder::new(),
    );
    let result = untrusted
        .request(message(b"x"), Duration::from_millis(500))
        .await;
    assert_eq!(result, Err(RpcError::NotConnected));
    untrusted.close();
    assert_eq!(handler.count(), 1);

    // A plain ws client gets nowhere on the TLS port either.
    let plain = BtpUrl::parse(&format!("btp+ws://:s%40cret@127.0.0.1:{port}"))?;
    let plain = btp::transport::connect(
        PeerKey::new("server"),
        &plain,
        ClientOptions::default(),
        Recorder::new(),
    );
    assert_eq!(
        plain
            .request(message(b"x"), Duration::from_millis(500))
            .await,
        Err(RpcError::NotConnected)
    );
    plain.close();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn tls_config_errors_are_reported() {
    assert!(TlsServerConfig::from_pem(b"not pem", b"not pem", None).is_err());
    assert!(TlsClientConfig::with_extra_ca_pem(b"").is_err());
    assert!(TlsServerConfig::from_pem_files(
        std::path::Path::new("/nonexistent/cert.pem"),
        std::path::Path::new("/nonexistent/key.pem"),
        None
    )
    .is_err());
}

/// A PEM path is read with a bound: a file far larger than any CA bundle (here a 64 MiB sparse file) is refused
/// as such, without reading it whole, and a path that never ends (`/dev/zero`, as a configuration typo or a
/// fuzzed value could name) is refused instead of growing memory until the process dies.
#[test]
fn pem_files_are_read_with_a_size_bound() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let huge = dir.path().join("huge.pem");
    std::fs::File::create(&huge)?.set_len(64 << 20)?;
    let refusal = |result: Result<TlsClientConfig, btp::transport::TlsError>| match result {
        Err(e) => e.to_string(),
        Ok(_) => "accepted".to_owned(),
    };
    let message = refusal(TlsClientConfig::with_extra_ca_file(&huge));
    assert!(message.contains("larger than"), "{message}");
    let message = refusal(TlsClientConfig::with_extra_ca_file(std::path::Path::new(
        "/dev/zero",
    )));
    assert!(message.contains("larger than"), "{message}");
    Ok(())
}
