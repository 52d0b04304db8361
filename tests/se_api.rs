//! RFC 38 engine API: accounts, bad input (problem JSON, nothing changes), idempotency replays and 409,
//! messages, and the admin API's authentication.

mod poll_common;
mod se_common;

use std::time::Duration;

use ilp_bridge::testing::mock_connector::MockConnector;
use se_common::*;

const PROBLEM: &str = "application/problem+json";

async fn post_json(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &str,
) -> Result<(u16, String, String), reqwest::Error> {
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok((status, ct, resp.text().await?))
}

#[tokio::test]
async fn accounts_are_created_and_deleted() -> TestResult {
    let mock = MockConnector::start().await?;
    let backing = Backing::memory();
    let se = start_engine(
        config(&mock.url(), "trustline", serde_json::json!({})),
        &backing,
    )
    .await?;
    let c = reqwest::Client::new();
    let base = url(&se);

    let (s, ct, body) =
        post_json(&c, &format!("{base}/accounts"), None, r#"{"id":"acct-1"}"#).await?;
    assert_eq!((s, ct.as_str()), (201, "application/json"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)?,
        serde_json::json!({"id": "acct-1"})
    );
    // Again: still 201, same account.
    let (s, _, _) = post_json(&c, &format!("{base}/accounts"), None, r#"{"id":"acct-1"}"#).await?;
    assert_eq!(s, 201);
    // No id (Java connector): a UUID is generated.
    let (s, _, body) = post_json(&c, &format!("{base}/accounts"), None, r#"{"id":null}"#).await?;
    assert_eq!(s, 201);
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let generated = v["id"].as_str().ok_or("no id")?.to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok());
    let (s, _, _) = post_json(&c, &format!("{base}/accounts"), None, "").await?;
    assert_eq!(s, 201);
    assert_eq!(se.engine.account_ids().len(), 3);

    // Bad ids and bodies.
    for bad in [
        r#"{"id":"a:b"}"#,
        r#"{"id":"a/b"}"#,
        r#"{"id":""}"#,
        r#"{"id":5}"#,
        "nope",
        "[1]",
    ] {
        let (s, ct, _) = post_json(&c, &format!("{base}/accounts"), None, bad).await?;
        assert_eq!((s, ct.as_str()), (400, PROBLEM), "{bad}");
    }
    assert_eq!(se.engine.account_ids().len(), 3);

    let del = c
        .delete(format!("{base}/accounts/{generated}"))
        .send()
        .await?;
    assert_eq!(del.status().as_u16(), 204);
    let del = c
        .delete(format!("{base}/accounts/{generated}"))
        .send()
        .await?;
    assert_eq!(del.status().as_u16(), 404);
    assert_eq!(
        del.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(PROBLEM)
    );
    assert_eq!(se.engine.account_ids().len(), 2);

    // Accounts survive a restart.
    se.stop().await;
    let se = start_engine(
        config(&mock.url(), "trustline", serde_json::json!({})),
        &backing,
    )
    .await?;
    let mut ids = se.engine.account_ids();
    ids.sort();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"acct-1".to_owned()));
    se.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_settle_requests_get_problem_json_and_change_nothing() -> TestResult {
    let mock = MockConnector::start().await?;
    let backing = Backing::memory();
    let se = start_engine(
        config(&mock.url(), "trustline", serde_json::json!({})),
        &backing,
    )
    .await?;
    let c = reqwest::Client::new();
    let base = url(&se);
    post_json(&c, &format!("{base}/accounts"), None, r#"{"id":"acct"}"#).await?;
    let Backing::Memory(store, ..) = &backing else {
        return Err("memory backing expected".into());
    };
    let before = store.len();

    let oversized = format!(
        r#"{{"amount":"1","scale":2,"pad":"{}"}}"#,
        "x".repeat(8 * 1024)
    );
    let cases: Vec<(&str, String, u16)> = vec![
        ("acct", "not json".to_owned(), 400),
        ("acct", r#"{"amount":100,"scale":2}"#.to_owned(), 400),
        ("acct", r#"{"amount":"-100","scale":2}"#.to_owned(), 400),
        ("acct", r#"{"amount":"1.5","scale":2}"#.to_owned(), 400),
        ("acct", r#"{"amount":"abc","scale":2}"#.to_owned(), 400),
        ("acct", r#"{"amount":"1e5","scale":2}"#.to_owned(), 400),
        ("acct", r#"{"amount":"100","scale":256}"#.to_owned(), 400),
        ("acct", r#"{"amount":"100","scale":-1}"#.to_owned(), 400),
        ("acct", r#"{"amount":"100"}"#.to_owned(), 400),
        ("acct", r#"["100",2]"#.to_owned(), 400),
        ("acct", oversized, 413),
        ("unknown", r#"{"amount":"100","scale":2}"#.to_owned(), 404),
    ];
    for (acct, body, want) in cases {
        let (s, ct, text) = post_json(
            &c,
            &format!("{base}/accounts/{acct}/settlements"),
            Some("k-bad"),
            &body,
        )
        .await?;
        assert_eq!((s, ct.as_str()), (want, PROBLEM), "{body}: {text}");
        let problem: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(problem["status"], serde_json::json!(want));
        assert!(problem["title"].is_string() && problem["detail"].is_string());
    }
    // Bad idempotency keys.
    let (s, ct, _) = post_json(
        &c,
        &format!("{base}/accounts/acct/settlements"),
        Some(&"k".repeat(300)),
        r#"{"amount":"1","scale":2}"#,
    )
    .await?;
    assert_eq!((s, ct.as_str()), (400, PROBLEM));

    // Nothing was stored, queued or settled.
    assert_eq!(store.len(), before);
    let view = se.engine.account_view("acct")?;
    assert_eq!(view.queued_requests, 0);
    assert_eq!(view.requested.amount, "0");
    // The same key still works for a good request (a refused request does not burn the key).
    let (s, _, body) = post_json(
        &c,
        &format!("{base}/accounts/acct/settlements"),
        Some("k-bad"),
        r#"{"amount":"100","scale":2}"#,
    )
    .await?;
    assert_eq!(s, 201);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)?,
        serde_json::json!({"amount": "100", "scale": 2})
    );
    se.stop().await;
    Ok(())
}

#[tokio::test]
async fn idempotency_replays_and_conflicts() -> TestResult {
    let mock = MockConnector::start().await?;
    let backing = Backing::memory();
    // The connector is not linked to a peer: claims cannot be delivered, so everything stays queued/in flight
    // and the counts below are exact.
    let se = start_engine(
        config(&mock.url(), "trustline", serde_json::json!({"scale": 2})),
        &backing,
    )
    .await?;
    let c = reqwest::Client::new();
    let base = url(&se);
    post_json(&c, &format!("{base}/accounts"), None, r#"{"id":"acct"}"#).await?;
    let settle = format!("{base}/accounts/acct/settlements");

    let first = post_json(&c, &settle, Some("key-1"), r#"{"amount":"0500","scale":2}"#).await?;
    assert_eq!(first.0, 201);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first.2)?,
        serde_json::json!({"amount":"500","scale":2})
    );
    // Same key, same body (also written differently): replayed, not settled twice.
    for body in [
        r#"{"amount":"0500","scale":2}"#,
        r#"{"scale":2,"amount":"500"}"#,
    ] {
        let again = post_json(&c, &settle, Some("key-1"), body).await?;
        assert_eq!((again.0, again.2.as_str()), (first.0, first.2.as_str()));
    }
    // Same key, other body: 409.
    let conflict = post_json(&c, &settle, Some("key-1"), r#"{"amount":"501","scale":2}"#).await?;
    assert_eq!((conflict.0, conflict.1.as_str()), (409, PROBLEM));
    // Concurrent requests with one key: exactly one is taken.
    let mut joins = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        let settle = settle.clone();
        joins.push(tokio::spawn(async move {
            post_json(&c, &settle, Some("key-2"), r#"{"amount":"7","scale":2}"#).await
        }));
    }
    for j in joins {
        assert_eq!(j.await??.0, 201);
    }
    // Without a key: accepted every time (documented duplicate risk).
    for _ in 0..2 {
        assert_eq!(
            post_json(&c, &settle, None, r#"{"amount":"1","scale":2}"#)
                .await?
                .0,
            201
        );
    }
    eventually("requests taken", Duration::from_secs(10), || async {
        se.engine
            .account_view("acct")
            .map(|v| v.requested.amount == "509")
            .unwrap_or(false)
    })
    .await?;
    let history = se.engine.account_history("acct")?;
    assert_eq!(history.settlements.len(), 4);
    let keys: Vec<Option<String>> = history
        .settlements
        .iter()
        .map(|s| s.idempotency_key.clone())
        .collect();
    assert_eq!(
        keys.iter()
            .filter(|k| k.as_deref() == Some("key-1"))
            .count(),
        1
    );
    assert_eq!(
        keys.iter()
            .filter(|k| k.as_deref() == Some("key-2"))
            .count(),
        1
    );

    // Keys survive a restart: the replay still answers, the conflict still conflicts.
    se.stop().await;
    let se = start_engine(
        config(&mock.url(), "trustline", serde_json::json!({"scale": 2})),
        &backing,
    )
    .await?;
    let settle = format!("{}/accounts/acct/settlements", url(&se));
    let again = post_json(&c, &settle, Some("key-1"), r#"{"amount":"500","scale":2}"#).await?;
    assert_eq!((again.0, again.2.as_str()), (201, first.2.as_str()));
    assert_eq!(
        post_json(&c, &settle, Some("key-1"), r#"{"amount":"5","scale":2}"#)
            .await?
            .0,
        409
    );
    eventually("state reloaded", Duration::from_secs(10), || async {
        se.engine
            .account_view("acct")
            .map(|v| v.requested.amount == "509")
            .unwrap_or(false)
    })
    .await?;
    se.stop().await;
    Ok(())
}

#[tokio::test]
async fn messages_and_admin_auth() -> TestResult {
    let mock = MockConnector::start().await?;
    let backing = Backing::memory();
    let se = start_engine(
        config(&mock.url(), "trustline", serde_json::json!({})),
        &backing,
    )
    .await?;
    let c = reqwest::Client::new();
    let base = url(&se);
    post_json(&c, &format!("{base}/accounts"), None, r#"{"id":"acct"}"#).await?;

    let resp = c
        .post(format!("{base}/accounts/acct/messages"))
        .header("Content-Type", "application/octet-stream")
        .body(Vec::new())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/octet-stream")
    );
    assert!(resp.bytes().await?.is_empty());

    for (acct, body, want) in [
        ("acct", &b"\xff\x00garbage"[..], 400u16),
        ("acct", br#"{"type":"nonsense"}"#, 400),
        ("acct", br#"{"type":"claim","claim":{"amount":"-1"}}"#, 400),
        ("nobody", br#"{"type":"claim","claim":{"amount":"1"}}"#, 404),
    ] {
        let resp = c
            .post(format!("{base}/accounts/{acct}/messages"))
            .header("Content-Type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await?;
        assert_eq!(
            resp.status().as_u16(),
            want,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // A valid IOU once setup is done is credited (the connector has the account registered).
    mock.register_account("acct", &base);
    eventually("setup", Duration::from_secs(10), || async {
        se.engine
            .account_view("acct")
            .map(|v| v.connected)
            .unwrap_or(false)
    })
    .await?;
    let resp = c
        .post(format!("{base}/accounts/acct/messages"))
        .body(r#"{"type":"claim","claim":{"amount":"42"}}"#)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 201);
    let ack: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
    assert_eq!(ack["credited"], "42");

    // Admin: token required.
    let admin = admin_url(&se);
    assert_eq!(
        c.get(format!("{admin}/accounts"))
            .send()
            .await?
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        c.get(format!("{admin}/accounts"))
            .bearer_auth("wrong")
            .send()
            .await?
            .status()
            .as_u16(),
        401
    );
    let view = admin_get(&se, "/accounts/acct").await?;
    assert_eq!(view["id"], "acct");
    assert_eq!(view["received"]["amount"], "42");
    let all = admin_get(&se, "/accounts").await?;
    assert_eq!(all.as_array().map(Vec::len), Some(1));
    let resp = c
        .post(format!("{admin}/accounts/acct/retry"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 202);
    let resp = c
        .get(format!("{admin}/accounts/nobody"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 404);
    let doc = c
        .get(format!("{admin}/openapi.yaml"))
        .send()
        .await?
        .text()
        .await?;
    assert!(doc.starts_with("openapi: 3"));
    assert!(doc.contains("/accounts/{id}/settlements") && doc.contains("/alerts"));
    se.stop().await;
    Ok(())
}

/// Only recent idempotency keys stay in memory; an older one is read back from the store, so it still replays
/// (and still conflicts) after leaving the cache — on RocksDB as in memory. Keys past their 25 h are purged
/// from the store by paging through it, also those that expired while the engine was down, and an expired key
/// is taken as new.
#[tokio::test]
async fn idempotency_keys_leave_memory_but_not_the_store() -> TestResult {
    use ilp_bridge::settlement::store::{keys, Family, IdempotencyRecord, SeBatch, SeStore};
    let mock = MockConnector::start().await?;
    for backing in [Backing::memory(), Backing::rocks()?] {
        let se = start_engine(
            config(&mock.url(), "trustline", serde_json::json!({"scale": 2})),
            &backing,
        )
        .await?;
        let c = reqwest::Client::new();
        let base = url(&se);
        post_json(&c, &format!("{base}/accounts"), None, r#"{"id":"acct"}"#).await?;
        let settle = format!("{base}/accounts/acct/settlements");
        let first = post_json(&c, &settle, Some("key-1"), r#"{"amount":"300","scale":2}"#).await?;
        assert_eq!(first.0, 201);
        assert!(se.engine.idempotency_keys_in_memory() >= 1);
        se.engine.forget_cached_idempotency_keys();
        assert_eq!(se.engine.idempotency_keys_in_memory(), 0);
        let again = post_json(&c, &settle, Some("key-1"), r#"{"amount":"300","scale":2}"#).await?;
        assert_eq!((again.0, again.2.as_str()), (201, first.2.as_str()));
        se.engine.forget_cached_idempotency_keys();
        let conflict =
            post_json(&c, &settle, Some("key-1"), r#"{"amount":"301","scale":2}"#).await?;
        assert_eq!(conflict.0, 409);
        eventually("one request taken", Duration::from_secs(10), || async {
            se.engine
                .account_view("acct")
                .map(|v| v.requested.amount == "300")
                .unwrap_or(false)
        })
        .await?;
        se.stop().await;

        // Two keys whose last request was 26 h ago, as if they expired while the engine was down.
        if let Backing::Memory(store, ..) = &backing {
            let old_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64
                - 26 * 3600 * 1000;
            let mut batch = SeBatch::new();
            for key in ["old-1", "old-2"] {
                let rec = IdempotencyRecord {
                    input_hash: "stale".to_owned(),
                    status: 201,
                    body: r#"{"amount":"1","scale":2}"#.to_owned(),
                    first_ms: old_ms,
                    last_ms: old_ms,
                };
                batch.put_json(Family::Main, keys::idempotency("acct", key), &rec)?;
            }
            store.submit(batch)?.await?;
            let se = start_engine(
                config(&mock.url(), "trustline", serde_json::json!({"scale": 2})),
                &backing,
            )
            .await?;
            let settle = format!("{}/accounts/acct/settlements", url(&se));
            // An expired key is new again: accepted with this body, not a conflict with the stale one.
            let reused =
                post_json(&c, &settle, Some("old-2"), r#"{"amount":"7","scale":2}"#).await?;
            assert_eq!(reused.0, 201);
            se.engine.purge_expired().await?;
            assert!(store
                .get_main(&keys::idempotency("acct", "old-1"))?
                .is_none());
            assert!(store
                .get_main(&keys::idempotency("acct", "old-2"))?
                .is_some());
            assert!(store
                .get_main(&keys::idempotency("acct", "key-1"))?
                .is_some());
            se.stop().await;
        }
    }
    Ok(())
}

/// A contested ledger identity is settled by the operator: `GET /identities` shows the contest, `PUT
/// /identities/{identity}` gives it to one account, which is then the only one whose claims are granted.
#[tokio::test]
async fn the_operator_settles_a_contested_identity() -> TestResult {
    use channel_modules::identity::IdentityOrigin;

    let mock = MockConnector::start().await?;
    let backing = Backing::memory();
    let Backing::Memory(_, _, identities) = &backing else {
        unreachable!("a memory backing")
    };
    let se = start_engine(
        config(&mock.url(), "trustline", serde_json::json!({})),
        &backing,
    )
    .await?;
    let c = reqwest::Client::new();
    let base = url(&se);
    for id in ["rightful", "squatter"] {
        post_json(
            &c,
            &format!("{base}/accounts"),
            None,
            &format!(r#"{{"id":"{id}"}}"#),
        )
        .await?;
    }
    let identity = "eth:1:0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
    // Both accounts prove the same address (a relayed proof): contested, both refused.
    identities
        .hold_identity(identity, "rightful", IdentityOrigin::Proven)
        .await?;
    assert!(identities
        .hold_identity(identity, "squatter", IdentityOrigin::Proven)
        .await
        .is_err());
    assert!(identities
        .hold_identity(identity, "rightful", IdentityOrigin::Proven)
        .await
        .is_err());
    let listed = admin_get(&se, "/identities").await?;
    assert_eq!(listed[0]["identity"], identity);
    let contested: Vec<&str> = listed[0]["record"]["contested"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(contested, ["rightful", "squatter"]);

    let admin = admin_url(&se);
    let assign = |account: &'static str, token: &'static str| {
        c.put(format!("{admin}/identities/{identity}"))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(format!(r#"{{"account":"{account}"}}"#))
            .send()
    };
    assert_eq!(assign("rightful", "wrong").await?.status().as_u16(), 401);
    assert_eq!(assign("nobody", ADMIN_TOKEN).await?.status().as_u16(), 404);
    // An identity nobody claimed (here: the address in mixed case) is refused, not recorded.
    let unknown = c
        .put(format!(
            "{admin}/identities/{}",
            identity.replace("0x7099", "0x7099".to_uppercase().as_str())
        ))
        .bearer_auth(ADMIN_TOKEN)
        .header("Content-Type", "application/json")
        .body(r#"{"account":"rightful"}"#)
        .send()
        .await?;
    assert_eq!(unknown.status().as_u16(), 400);
    assert_eq!(
        assign("rightful", ADMIN_TOKEN).await?.status().as_u16(),
        204
    );
    identities
        .hold_identity(identity, "rightful", IdentityOrigin::Proven)
        .await?;
    assert!(identities
        .hold_identity(identity, "squatter", IdentityOrigin::Proven)
        .await
        .is_err());
    let listed = admin_get(&se, "/identities").await?;
    assert_eq!(listed[0]["record"]["account"], "rightful");
    assert_eq!(listed[0]["record"]["origin"], "configured");
    se.stop().await;
    Ok(())
}
