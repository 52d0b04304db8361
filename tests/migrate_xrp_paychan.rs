//! `ilp-bridge migrate-ilp-kit` on an ILP Kit ledger run with the 2017 `ilp-plugin-xrp-paychan` (built on the
//! payment-channel framework). That plugin is no longer published (npm holds only its later versions, built on
//! ilp-plugin-btp), so its store table is written here row by row in the layout it used (docs/ilp-kit.md §6): the
//! framework's transfer log rows and its three trackers, `outgoing_channel` {"2", channel ID},
//! `incoming_claim` {drops, signature hex} and `incoming_claim_submitted` {drops}, in a real PostgreSQL table
//! shaped as ILP Kit's Sequelize store made it. The ledger is a fake rippled holding the two channels as the
//! plugins created them (ILP Kit's channel names the key the plugin derived per peer, not the account key).
//!
//! The CLI migrates it (dry run, run, rerun), and the node started on the generated configuration then pays the
//! peer through the old channel with claims the ledger accepts, and redeems the plugin's best incoming claim at
//! stop: no claim is lost. Ledgers whose records cannot be converted whole are refused with the reason.

mod legacy_common;
mod migrate_common;
mod pg_common;
mod poll_common;
mod xrp_common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use channel_modules::xrp::crypto::ChannelId;
use channel_modules::xrp::legacy::{legacy_channel_key_candidates, ChannelKeyDerivation};
use channel_modules::xrp::{MVT_INCOMING_CLAIM, RPC_CHANNEL_ID};
use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::node::NodeConfig;
use ilp_bridge::config::routing::{LocalPayments, RoutingConfig};
use ilp_bridge::peer::{NodeOptions, PeerNode};
use legacy_common::R;
use migrate_common::{assert_has, migrate};
use num_bigint::BigUint;
use pg_common::PgServer;
use serde_json::{json, Value};
use xrp_common::*;

/// ILP Kit's ledger prefix for its XRP peer.
const KIT: &str = "g.xrp.kit.";
const INCOMING_SECRET: &str = "kit-secret";
/// Drops of Bob's best claim the plugin kept, and of what it had redeemed.
const BEST_CLAIM: u64 = 700;
const REDEEMED: u64 = 200;

/// The table ILP Kit's store made for `prefix`, holding `rows` (key, value).
async fn write_table(sql: &tokio_postgres::Client, prefix: &str, rows: &[(&str, String)]) -> R<()> {
    let table = format!("\"plugin_store_{prefix}s\"");
    sql.batch_execute(&format!(
        "CREATE TABLE {table} (\"key\" TEXT, \"value\" TEXT, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL, \
         \"updatedAt\" TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (\"key\"))"
    ))
    .await?;
    for (key, value) in rows {
        sql.execute(
            &format!("INSERT INTO {table} VALUES ($1, $2, now(), now())"),
            &[key, value],
        )
        .await?;
    }
    Ok(())
}

/// ILP Kit's PostgreSQL (`None` where it cannot run outside CI), a client to its database, and the XRP ledger.
async fn ilp_kit_and_ledger() -> R<Option<(PgServer, tokio_postgres::Client, Ledger)>> {
    let Some(pg) = PgServer::start().await? else {
        return Ok(None);
    };
    let sql = pg.connect(pg_common::DATABASE).await?;
    Ok(Some((pg, sql, Ledger::start().await?)))
}

/// A tracker row as the framework wrote it.
fn mvt(value: &str, data: Value) -> String {
    json!({ "value": value, "data": data }).to_string()
}

/// The env.list of an ILP Kit whose only ledger is `prefix`, run with the 2017 XRP plugin.
fn env_list(
    dir: &Path,
    prefix: &str,
    port: u16,
    rippled_ws: &str,
    pg_url: &str,
) -> R<std::path::PathBuf> {
    let ledgers = json!({ prefix: {
        "currency": "XRP", "plugin": "ilp-plugin-xrp-paychan", "store": true,
        "options": {
            "listener": {"port": port}, "incomingSecret": INCOMING_SECRET, "maxBalance": "10000000",
            "rippledServer": rippled_ws, "secret": ALICE_SEED, "peerAddress": Keys::new()?.bob_address(),
            "maxAmount": "1000000", "maxUnsecured": "5000", "incomingChannel": true, "fundThreshold": "0.9",
        }
    }});
    let path = dir.join(format!("{prefix}env.list"));
    std::fs::write(
        &path,
        format!("DB_URI={pg_url}\nCONNECTOR_LEDGERS={ledgers}\n"),
    )?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xrp_paychan_ledger_migrates_and_no_claim_is_lost() -> TestResult {
    let Some((pg, sql, ledger)) = ilp_kit_and_ledger().await? else {
        return Ok(());
    };
    let keys = &ledger.keys;
    let (kit_address, bob_address) = (keys.alice.public_key().address(), keys.bob_address());

    // The channels as the two 2017 plugins created them: ILP Kit's to Bob names the key it derived for Bob.
    let candidates = legacy_channel_key_candidates(ALICE_SEED, &bob_address)?;
    let (derivation, channel_key) = &candidates[0];
    assert_eq!(*derivation, ChannelKeyDerivation::PeerHmac);
    let kit_to_bob = ledger.fake.create_channel_with_key(
        &kit_address,
        channel_key.public_key(),
        &bob_address,
        DEPOSIT_DROPS,
        SETTLE_DELAY_SECS,
        None,
    );
    let bob_to_kit = ledger.fake.create_channel(
        &keys.bob,
        &kit_address,
        DEPOSIT_DROPS,
        SETTLE_DELAY_SECS,
        None,
    );
    ledger.fake.set_balance(&bob_to_kit, REDEEMED);
    // Bob's best claim as the plugin kept it: its signature only, lowercase hex.
    let signature = hex::encode(keys.bob.sign_claim(&bob_to_kit, BEST_CLAIM)?);
    write_table(
        &sql,
        KIT,
        &[
            (":tl:balance:if", BEST_CLAIM.to_string()),
            (":tl:balance:of", "0".to_owned()),
            (
                "outgoing_channel:mvt:maximum",
                mvt("2", json!(kit_to_bob.to_string())),
            ),
            (
                "incoming_claim:mvt:maximum",
                mvt(&BEST_CLAIM.to_string(), json!(signature)),
            ),
            (
                "incoming_claim_submitted:mvt:maximum",
                mvt(&REDEEMED.to_string(), Value::Null),
            ),
        ],
    )
    .await?;

    let dir = tempfile::tempdir()?;
    let port = legacy_common::free_port()?;
    // The plugin spoke websocket to rippled; the same host and port answer JSON-RPC here.
    let rippled_ws = ledger.fake.url().replacen("http://", "ws://", 1);
    let env = env_list(dir.path(), KIT, port, &rippled_ws, &pg.url())?;
    let (data, config) = (dir.path().join("data"), dir.path().join("ilp-bridge.toml"));

    let out = migrate(&env, &data, &config, &["--dry-run"]).await?;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_has(&out, &format!("paychan: outgoing channel {kit_to_bob}"));
    assert!(!data.exists() && !config.exists());

    let out = migrate(&env, &data, &config, &[]).await?;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_has(
        &out,
        "signed with the ed25519 key the plugin derived from the secret and the peer's address",
    );
    assert_has(&out, &format!("best incoming claim {BEST_CLAIM} drops: its signature verifies on the peer's channel {bob_to_kit}"));
    assert_has(&out, "option not carried: maxAmount");
    assert_has(&out, "everything balances: yes");
    let node_config = NodeConfig::load(&config)?;
    let [peer] = node_config.peers.as_slice() else {
        return Err("expected one peer".into());
    };
    assert_eq!(peer.module.as_deref(), Some("xrp-paychan"));
    let module = peer.module_options();
    assert_eq!(module["channel"], json!(kit_to_bob.to_string()));
    assert_eq!(module["peerChannel"], json!(bob_to_kit.to_string()));
    assert_eq!(
        module["channelSecret"],
        json!(channel_key.private_key_hex())
    );
    assert_eq!(module["rippled"], json!(ledger.fake.url()));

    // A second run changes nothing.
    let written = std::fs::read_to_string(&config)?;
    let out = migrate(&env, &data, &config, &[]).await?;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_has(&out, "already migrated, nothing changed");
    assert_eq!(std::fs::read_to_string(&config)?, written);

    // The node takes ILP Kit's place; Bob's node (the peer) dials it and pays through his channel as before.
    let kit_db = open_db(&data).await?;
    let node_options = || NodeOptions {
        bind_host: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        routing: RoutingConfig {
            local_payments: LocalPayments::Embedder,
            ..RoutingConfig::default()
        },
        ..NodeOptions::default()
    };
    let kit = PeerNode::start(node_config.peers.clone(), kit_db, node_options()).await?;
    let bob_dir = tempfile::tempdir()?;
    let bob_peer = PeerConfig::from_legacy_json(
        "kit",
        &json!({
            "server": format!("btp+ws://:{INCOMING_SECRET}@127.0.0.1:{port}"),
            "maxBalance": "10000000", "store": true, "module": "xrp-paychan",
            "moduleOptions": {"rippled": ledger.fake.url(), "secret": BOB_SEED,
                "channel": bob_to_kit.to_string(), "maxUnsecured": "1000000"},
        }),
    )?;
    let bob = PeerNode::start(
        vec![bob_peer],
        open_db(bob_dir.path()).await?,
        node_options(),
    )
    .await?;
    let kit_tl = kit
        .trustline(KIT)
        .ok_or("no trustline on the kit node")?
        .clone();
    let bob_tl = bob
        .trustline("kit")
        .ok_or("no trustline on bob's node")?
        .clone();
    let (k, b) = (kit_tl.clone(), bob_tl.clone());
    let (to_bob, to_kit) = (bob_to_kit.to_string(), kit_to_bob.to_string());
    eventually("both sides connected and each names its channel", move || {
        let (k, b, to_bob, to_kit) = (k.clone(), b.clone(), to_bob.clone(), to_kit.clone());
        async move {
            k.is_connected()
                && b.is_connected()
                && matches!(k.module_rpc(RPC_CHANNEL_ID, json!([])).await, Ok(Value::String(s)) if s == to_bob)
                && matches!(b.module_rpc(RPC_CHANNEL_ID, json!([])).await, Ok(Value::String(s)) if s == to_kit)
        }
    })
    .await?;
    // The migrated balance and claims are what the module works from.
    assert_eq!(
        kit_tl
            .module_context()
            .max_value_tracker(MVT_INCOMING_CLAIM)?
            .get_max()
            .await?
            .value,
        BigUint::from(BEST_CLAIM)
    );

    // ILP Kit's node pays Bob through the old channel: its claim is signed with the derived key, and Bob's module
    // accepts it only because it verifies against the key the ledger holds for that channel.
    let (t, fulfillment) = transfer_to(1, 300, "g.xrp.kit.client.bob");
    kit_tl.send_transfer(t.clone()).await?;
    bob_tl.fulfill_condition(t.id, fulfillment, None).await?;
    let bob_best = bob_tl
        .module_context()
        .max_value_tracker(MVT_INCOMING_CLAIM)?;
    eventually(
        "bob holds a claim for 300 drops on ILP Kit's channel",
        || {
            let t = bob_best.clone();
            async move { matches!(t.get_max().await, Ok(v) if v.value == BigUint::from(300u32)) }
        },
    )
    .await?;
    let claim = bob_best.get_max().await?.data;
    assert_eq!(claim["channel"], json!(kit_to_bob.to_string()));
    let on_ledger = ledger.fake.channel(&kit_to_bob).ok_or("channel gone")?;
    let sig = hex::decode(claim["signature"].as_str().ok_or("no signature")?)?;
    assert!(on_ledger.public_key.verify_claim(&kit_to_bob, 300, &sig));

    // Stopping the node redeems the plugin's best incoming claim: the 500 drops not yet paid out arrive.
    drop((kit_tl, bob_tl));
    kit.shutdown().await;
    bob.shutdown().await;
    let channel = ledger
        .fake
        .channel(&bob_to_kit)
        .ok_or("bob's channel gone")?;
    assert_eq!(channel.balance, BEST_CLAIM);
    assert_eq!(ledger.fake.received(&kit_address), BEST_CLAIM - REDEEMED);
    // And Bob's node redeemed its claim on ILP Kit's channel, signed with the derived key.
    assert_eq!(ledger.fake.received(&bob_address), 300);
    Ok(())
}

/// A refused ledger: its prefix, its table's rows, and what the report says about it.
type Case = (&'static str, Vec<(&'static str, String)>, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xrp_paychan_records_that_cannot_be_converted_whole_are_refused() -> TestResult {
    let Some((pg, sql, ledger)) = ilp_kit_and_ledger().await? else {
        return Ok(());
    };
    let keys = &ledger.keys;
    let kit_address = keys.alice.public_key().address();
    let bob_to_kit = ledger.fake.create_channel(
        &keys.bob,
        &kit_address,
        DEPOSIT_DROPS,
        SETTLE_DELAY_SECS,
        None,
    );
    let dir = tempfile::tempdir()?;
    let rippled = ledger.fake.url();

    let cases: [Case; 3] = [
        (
            "g.xrp.creating.",
            vec![(
                "outgoing_channel:mvt:maximum",
                mvt("1", json!("5f0c9a52-1d0e-4b8e-9c55-0a7b7f2b1c11")),
            )],
            "was creating the outgoing channel when the plugin stopped",
        ),
        (
            "g.xrp.forged.",
            vec![(
                "incoming_claim:mvt:maximum",
                // Signed by Carol: it verifies on none of Bob's channels to ILP Kit.
                mvt(
                    "900",
                    json!(hex::encode(keys.carol.sign_claim(&bob_to_kit, 900)?)),
                ),
            )],
            "the best incoming claim (900 drops) verifies on none of the 1 open channels",
        ),
        (
            "g.xrp.gone.",
            vec![(
                "outgoing_channel:mvt:maximum",
                mvt("2", json!(ChannelId([7; 32]).to_string())),
            )],
            "does not exist on the ledger",
        ),
    ];
    for (prefix, rows, reason) in cases {
        write_table(&sql, prefix, &rows).await?;
        let env = env_list(
            dir.path(),
            prefix,
            legacy_common::free_port()?,
            &rippled,
            &pg.url(),
        )?;
        let (data, config) = (
            dir.path().join(format!("{prefix}data")),
            dir.path().join(format!("{prefix}toml")),
        );
        let out = migrate(&env, &data, &config, &[]).await?;
        assert_ne!(out.code, Some(0), "{}", out.stdout);
        assert_has(
            &out,
            &format!("ledger {prefix} (ilp-plugin-xrp-paychan): CANNOT BE MIGRATED"),
        );
        assert_has(&out, reason);
        assert_has(&out, "REFUSED, nothing written");
        assert!(
            !data.exists() && !config.exists(),
            "{prefix}: something was written"
        );
    }
    Ok(())
}
