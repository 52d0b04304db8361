//! The XRP family seed never travels in clear text: `xrp-paychan` redeems claims with
//! rippled's sign-and-submit mode, which sends the seed to rippled. So a `rippled` URL that is plain http to a
//! host other than loopback is refused at start (with the option's name) when the secret is a seed, the
//! client refuses it again right before sending, redirects are never followed, and `https://` really is TLS.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use channel_modules::xrp::crypto::ChannelId;
use channel_modules::xrp::rpc::RippledClient;
use channel_modules::xrp::XrpPaychan;
use channel_modules::ModuleError;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A family seed (ed25519): with it the module can redeem claims, so it sends it to rippled.
const SEED: &str = "sEdSKaCy2JT7JaM7v95H9SxkhP9wS2r";
/// A hex secp256k1 private key (the xrpl.js fixture's): enough to pay, never sent anywhere.
const PRIVATE_KEY: &str = "ACCD3309DB14D1A4FC9B1DAE608031F4408C85C73EE05E035B7DC8B25840107A";
/// The first byte of a TLS record carrying a handshake message (a ClientHello opens every TLS connection).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

fn build(rippled: &str, secret: &str) -> Result<XrpPaychan, ModuleError> {
    XrpPaychan::from_options(&json!({ "rippled": rippled, "secret": secret }))
}

fn a_claim_tx() -> Value {
    json!({
        "TransactionType": "PaymentChannelClaim",
        "Account": "rN7n7otQDd6FczFgLdSqtcsAUxDkw6fzRH",
        "Channel": "5DB01B7FFED6B67E6B0414DED11E051D2EE2B7619CE0EAA6286D67A3A4D5BDB3",
        "Balance": "1000",
        "Amount": "1000",
    })
}

#[test]
fn a_seed_with_plain_http_to_a_host_that_is_not_loopback_is_refused_at_start() {
    for url in [
        "http://example.invalid:5005/",
        "http://10.0.0.7:5005/",
        "http://[2001:db8::1]:5005/",
        // Names that merely start like loopback are not loopback.
        "http://127.0.0.1.example.invalid/",
        "http://localhost.example.invalid/",
    ] {
        match build(url, SEED) {
            Err(ModuleError::InvalidFields(message)) => {
                assert!(message.contains("option rippled"), "{url}: {message}");
                assert!(message.contains("https"), "{url}: {message}");
                assert!(!message.contains(SEED), "{url}: the seed leaked: {message}");
            }
            other => panic!("{url}: expected a refusal naming the option, got {other:?}"),
        }
    }
}

#[test]
fn loopback_http_and_any_https_are_accepted_and_a_private_key_is_never_sent() -> TestResult {
    for url in [
        "http://127.0.0.1:5005/",
        "http://127.0.0.1/",
        "http://127.10.20.30:5005/",
        "http://[::1]:5005/",
        "http://localhost:5005/",
        "http://LOCALHOST:5005/",
        "https://rippled.example.invalid/",
        "https://10.0.0.7:51234/",
    ] {
        build(url, SEED).map_err(|e| format!("{url}: {e}"))?;
    }
    // A hex private key cannot redeem (sign-and-submit needs the seed), so nothing secret crosses the wire.
    build("http://example.invalid:5005/", PRIVATE_KEY)?;
    Ok(())
}

#[test]
fn a_rippled_url_that_is_not_http_is_refused_at_start() {
    for url in ["ftp://127.0.0.1/", "127.0.0.1:5005", "not a url"] {
        match build(url, SEED) {
            Err(ModuleError::InvalidFields(message)) => {
                assert!(message.contains("option rippled"), "{url}: {message}")
            }
            other => panic!("{url}: expected a refusal naming the option, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_client_refuses_to_send_the_seed_over_plain_http_to_a_host_that_is_not_loopback(
) -> TestResult {
    // A client built directly (not through the module's options) checks again right before sending.
    let client = RippledClient::new("http://example.invalid:5005/")?;
    let err = client
        .submit_with_secret(a_claim_tx(), SEED)
        .await
        .err()
        .ok_or("submit to a plain-http host that is not loopback succeeded")?;
    assert!(
        err.to_string().contains("refusing to send the family seed"),
        "{err}"
    );
    assert!(!err.to_string().contains(SEED));
    Ok(())
}

/// Serves `app` on `127.0.0.1:0` until the test ends; returns its base URL.
async fn serve(app: Router) -> Result<String, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_the_seed_never_reaches_its_target() -> TestResult {
    // The target records every request body it is sent, and answers like a rippled would.
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let seen = Arc::clone(&received);
    let target = serve(Router::new().route(
        "/",
        post(move |body: Bytes| async move {
            seen.lock()
                .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
                .push(body);
            Ok::<_, StatusCode>(axum::Json(json!({ "result": {
                "status": "success", "engine_result": "tesSUCCESS", "engine_result_message": "ok"
            } })))
        }),
    ))
    .await?;
    for status in [
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ] {
        // 307 and 308 keep the method and the body: a client following them would post the seed on.
        let location = target.clone();
        let redirector = serve(Router::new().route(
            "/",
            post(move || async move { (status, [(header::LOCATION, location)]).into_response() }),
        ))
        .await?;
        let client = RippledClient::new(&redirector)?;
        let result = client.submit_with_secret(a_claim_tx(), SEED).await;
        let bodies = received.lock().map_err(|_| "poisoned")?.clone();
        assert!(
            !bodies
                .iter()
                .any(|b| String::from_utf8_lossy(b).contains(SEED)),
            "{status}: the seed reached the redirect target"
        );
        assert!(
            bodies.is_empty(),
            "{status}: the redirect was followed: {bodies:?}"
        );
        let err = result
            .err()
            .ok_or_else(|| format!("{status}: a redirect counted as success"))?;
        assert!(err.to_string().contains(status.as_str()), "{status}: {err}");
    }
    Ok(())
}

#[tokio::test]
async fn https_rippled_urls_are_spoken_to_over_tls() -> TestResult {
    // A plain TCP listener stands in for the server: the first byte the client sends tells TLS from HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://{}/", listener.local_addr()?);
    let client = RippledClient::new(&url)?;
    let channel: ChannelId =
        "5DB01B7FFED6B67E6B0414DED11E051D2EE2B7619CE0EAA6286D67A3A4D5BDB3".parse()?;
    let mut request = tokio::spawn(async move { client.payment_channel(&channel).await });
    tokio::select! {
        accepted = listener.accept() => {
            let (mut socket, _) = accepted?;
            let first = socket.read_u8().await?;
            assert_eq!(first, TLS_HANDSHAKE_RECORD, "the client did not open with a TLS handshake");
        }
        finished = &mut request => {
            return Err(format!("the client gave up without connecting: {:?}", finished?).into());
        }
    }
    request.abort();
    Ok(())
}
