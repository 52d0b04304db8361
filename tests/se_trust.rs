//! The `trustline` module in engine mode extends only the credit its `trustLimit` option allows: an IOU is
//! unsecured, and in engine mode its credit reaches the connector as prepaid money.

mod poll_common;
mod se_common;

use std::time::Duration;

use ilp_bridge::config::settlement::SeConfig;
use ilp_bridge::settlement::quantity::Scaled;
use ilp_bridge::testing::mock_connector::MockConnector;
use se_common::*;

/// The largest amount a peer may name (78 digits, see `parse_amount`).
fn huge() -> String {
    "9".repeat(78)
}

/// The connector's account with the engine (the mock connector only credits UUID accounts).
const ACCT: &str = "0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3";

/// An engine with the module options `options` behind a mock connector, with the account [`ACCT`] set up.
async fn engine_with(
    options: serde_json::Value,
) -> Result<(MockConnector, ilp_bridge::settlement::SeHandle), BoxError> {
    let mock = MockConnector::start().await?;
    let cfg = SeConfig {
        module_options: options,
        ..config(&mock.url(), "trustline", serde_json::json!({}))
    };
    let se = start_engine(cfg, &Backing::memory()).await?;
    let base = url(&se);
    let resp = reqwest::Client::new()
        .post(format!("{base}/accounts"))
        .header("Content-Type", "application/json")
        .body(serde_json::json!({ "id": ACCT }).to_string())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 201);
    mock.register_account(ACCT, &base);
    eventually("setup", Duration::from_secs(10), || async {
        se.engine
            .account_view(ACCT)
            .map(|v| v.connected)
            .unwrap_or(false)
    })
    .await?;
    Ok((mock, se))
}

/// Sends the IOU `{"amount": amount}` to [`ACCT`] as the peer's engine does; returns the status and the body.
async fn send_iou(
    se: &ilp_bridge::settlement::SeHandle,
    amount: &str,
) -> Result<(u16, String), BoxError> {
    let body = serde_json::json!({"type": "claim", "claim": {"amount": amount}}).to_string();
    post_message_once_set_up(&url(se), ACCT, body.into_bytes()).await
}

fn total(mock: &MockConnector) -> Scaled {
    mock.credited_total(ACCT)
}

/// Waits until the connector has been credited `want` units (scale 0) for [`ACCT`] in all.
async fn wait_total(mock: &MockConnector, want: u32) -> TestResult {
    let want = Scaled::new(want.into(), 0);
    let waited = eventually("credited", Duration::from_secs(10), || async {
        value_eq(&total(mock), &want)
    })
    .await;
    waited.map_err(|e| format!("{e}: credited {}, want {want}", total(mock)).into())
}

/// `ilp-bridge run` without a config runs this engine: the `trustline` module with no options. A peer's IOU
/// for the largest amount it can name must credit nothing.
#[tokio::test]
async fn the_zero_config_engine_credits_no_iou() -> TestResult {
    let defaults = SeConfig::default();
    assert_eq!(defaults.module, "trustline");
    let (mock, se) = engine_with(defaults.module_options.clone()).await?;
    let (status, body) = send_iou(&se, &huge()).await?;
    assert_eq!(status, 400, "the IOU was accepted: {body}");
    assert!(body.contains("trustLimit"), "{body}");
    let (status, _) = send_iou(&se, "1").await?;
    assert_eq!(status, 400);
    assert!(
        value_eq(&total(&mock), &Scaled::zero(0)),
        "credited {:?}",
        total(&mock)
    );
    se.stop().await;
    Ok(())
}

/// With `trustLimit`, IOUs up to it are credited (their increase), an IOU past it is refused whole and
/// changes nothing, and the same IOU goes through once it fits.
#[tokio::test]
async fn iou_credit_stops_at_the_trust_limit() -> TestResult {
    let (mock, se) = engine_with(serde_json::json!({"scale": 0, "trustLimit": "1000"})).await?;
    assert_eq!(send_iou(&se, "600").await?.0, 201);
    wait_total(&mock, 600).await?;
    let (status, body) = send_iou(&se, "1001").await?;
    assert_eq!(status, 400, "{body}");
    let (status, _) = send_iou(&se, &huge()).await?;
    assert_eq!(status, 400);
    assert!(value_eq(&total(&mock), &Scaled::new(600u32.into(), 0)));
    // The best IOU is still 600: an IOU for exactly the limit credits the remaining 400.
    let (status, body) = send_iou(&se, "1000").await?;
    assert_eq!(status, 201, "{body}");
    let ack: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(ack["credited"], "400");
    wait_total(&mock, 1000).await?;
    se.stop().await;
    Ok(())
}
