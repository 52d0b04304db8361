//! Configuration checks that span peers or protect the store's key space: peer names that could reach another
//! namespace, and listener ports shared by peers that the port could not tell apart (duplicate `incomingSecret`)
//! or could not serve both ways (differing TLS files). Each is refused before anything starts, by the config
//! loader and by [`PeerNode::start_with_stores`] alike, with an error naming both peers.

use std::sync::Arc;

use channel_modules::memory::MemoryStores;
use channel_modules::store::Limit;
use ilp_bridge::config::error::ConfigError;
use ilp_bridge::config::legacy::{validate_peer_set, PeerConfig};
use ilp_bridge::config::node::NodeConfig;
use ilp_bridge::peer::{NodeOptions, PeerError, PeerNode, PeerStores};
use serde_json::{json, Value};

fn server_options(port: u16, secret: &str) -> Value {
    json!({
        "listener": {"port": port},
        "incomingSecret": secret,
        "maxBalance": "1000",
        "prefix": "test.bridge.",
        "info": {"currencyCode": "USD", "currencyScale": 9}
    })
}

fn server(name: &str, port: u16, secret: &str) -> PeerConfig {
    PeerConfig::from_legacy_json(name, &server_options(port, secret)).expect("valid peer")
}

fn tls_server(name: &str, port: u16, secret: &str, cert: &str) -> PeerConfig {
    let mut o = server_options(port, secret);
    o["listener"] = json!({"port": port, "cert": cert, "key": "key.pem", "ca": "ca.pem"});
    PeerConfig::from_legacy_json(name, &o).expect("valid peer")
}

fn message(r: Result<(), ConfigError>) -> String {
    match r {
        Ok(()) => "accepted".to_owned(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn peer_names_that_could_reach_another_namespace_are_refused() {
    for bad in ["se/acct", "a/b", "/", "tab\tname", "nul\0", ""] {
        let r = PeerConfig::from_legacy_json(bad, &server_options(4195, "s"));
        assert!(
            matches!(&r, Err(e) if e.field_path() == Some("name")),
            "{bad:?}: {r:?}"
        );
    }
    let long = "x".repeat(ilp_bridge::store::codec::NAME_MAX_BYTES + 1);
    assert!(PeerConfig::from_legacy_json(&long, &server_options(4195, "s")).is_err());
    let slash = PeerConfig::from_legacy_json("se/acct", &server_options(4195, "s"));
    assert!(
        matches!(&slash, Err(e) if e.to_string().contains("se/<account>")),
        "{slash:?}"
    );
    // A name used twice is refused too (it would share one store namespace).
    let twice = message(validate_peer_set(&[
        server("alice", 4195, "a"),
        server("alice", 4196, "b"),
    ]));
    assert!(twice.contains("configured twice"), "{twice}");
    // ILP Kit names its peers by ledger prefix; those and plain names stay valid.
    for good in ["g.eur.mytrustline.", "usd-ledger", "se", "Peer_1~"] {
        assert!(
            PeerConfig::from_legacy_json(good, &server_options(4195, "s")).is_ok(),
            "{good:?}"
        );
    }
}

#[test]
fn a_toml_peer_named_like_an_engine_namespace_is_refused() {
    let r = NodeConfig::parse(
        "[[peer]]\nname = \"se/acct\"\noptions_json = '{\"server\":\"btp+ws://:s@127.0.0.1:9000\"}'\n",
    );
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("peer \"se/acct\".name")),
        "{r:?}"
    );
}

#[test]
fn a_duplicate_secret_on_one_port_is_refused_naming_both_peers() {
    let r = message(validate_peer_set(&[
        server("alice", 4195, "s3cr3t-token"),
        server("bob", 4195, "s3cr3t-token"),
    ]));
    assert!(
        r.contains("\"alice\"") && r.contains("\"bob\"") && r.contains("incomingSecret"),
        "{r}"
    );
    assert!(!r.contains("s3cr3t"), "the secret is not printed: {r}");
    // Distinct secrets on one port, or one secret on two ports, are fine.
    assert_eq!(
        message(validate_peer_set(&[
            server("alice", 4195, "a-secret"),
            server("bob", 4195, "b-secret"),
        ])),
        "accepted"
    );
    assert_eq!(
        message(validate_peer_set(&[
            server("alice", 4195, "same"),
            server("bob", 4196, "same"),
        ])),
        "accepted"
    );
}

#[test]
fn differing_tls_on_one_port_is_refused_naming_both_peers() {
    let r = message(validate_peer_set(&[
        server("plain", 4195, "a"),
        tls_server("secure", 4195, "b", "cert.pem"),
    ]));
    assert!(
        r.contains("\"plain\"") && r.contains("\"secure\"") && r.contains("TLS"),
        "{r}"
    );
    let r = message(validate_peer_set(&[
        tls_server("one", 4195, "a", "one.pem"),
        tls_server("two", 4195, "b", "two.pem"),
    ]));
    assert!(
        r.contains("\"one\"") && r.contains("\"two\"") && r.contains("two.pem"),
        "{r}"
    );
    // The same TLS files on one port, or different TLS on different ports, are fine.
    assert_eq!(
        message(validate_peer_set(&[
            tls_server("one", 4195, "a", "cert.pem"),
            tls_server("two", 4195, "b", "cert.pem"),
        ])),
        "accepted"
    );
    assert_eq!(
        message(validate_peer_set(&[
            server("plain", 4195, "a"),
            tls_server("secure", 4196, "b", "cert.pem"),
        ])),
        "accepted"
    );
}

#[test]
fn the_toml_loader_refuses_a_shared_port_with_one_secret() {
    let peer = |name: &str| {
        format!(
            "[[peer]]\nname = \"{name}\"\noptions = {{ listener = {{ port = 4195 }}, incomingSecret = \"s\", \
             maxBalance = \"10\", prefix = \"a.\", info = {{}} }}\n"
        )
    };
    let r = NodeConfig::parse(&format!("{}{}", peer("alice"), peer("bob")));
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("\"alice\"") && e.to_string().contains("\"bob\"")),
        "{r:?}"
    );
}

fn memory_stores(c: &PeerConfig) -> Arc<dyn PeerStores> {
    Arc::new(MemoryStores::new(c.max_balance, Limit::Unbounded))
}

fn local() -> NodeOptions {
    NodeOptions {
        bind_host: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        ..NodeOptions::default()
    }
}

#[tokio::test]
async fn the_node_refuses_to_start_peers_it_could_not_tell_apart() {
    // Port 0: both peers would share one OS-chosen listener.
    let r = PeerNode::start_with_stores(
        vec![server("alice", 0, "same"), server("bob", 0, "same")],
        memory_stores,
        local(),
    )
    .await;
    match r {
        Err(PeerError::Config(e)) => {
            let m = e.to_string();
            assert!(m.contains("\"alice\"") && m.contains("\"bob\""), "{m}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(node) => {
            node.shutdown().await;
            panic!("two peers with one secret on one port were started");
        }
    }

    // A config built by hand (not through the parser) with a bad name is refused too.
    let mut bad = server("x", 0, "s");
    bad.name = "se/acct".to_owned();
    let r = PeerNode::start_with_stores(vec![bad], memory_stores, local()).await;
    assert!(matches!(r, Err(PeerError::Config(_))), "{:?}", r.err());

    // Distinct secrets start fine.
    let node = PeerNode::start_with_stores(
        vec![server("alice", 0, "a"), server("bob", 0, "b")],
        memory_stores,
        local(),
    )
    .await
    .expect("start");
    assert!(node.listen_addr(0).is_some());
    node.shutdown().await;
}

#[test]
fn a_settlement_engine_data_dir_is_refused_by_name() {
    // The engine keeps its records in the node's database (the top-level data_dir); a data_dir of its own
    // would be ignored, so it is refused rather than silently accepted.
    let r =
        NodeConfig::parse("[settlement-engine]\nmodule = \"iou\"\ndata_dir = \"engine-data\"\n");
    let message = match &r {
        Ok(c) => format!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    };
    assert!(r.is_err() && message.contains("data_dir"), "{message}");
    // A typo in the section is refused by its name too.
    let typo = NodeConfig::parse("[settlement-engine]\nmodul = \"iou\"\n");
    assert!(
        matches!(&typo, Err(e) if e.to_string().contains("modul")),
        "{typo:?}"
    );
}

/// The field path of a refused configuration, or why it was not refused.
fn refused_field<T: std::fmt::Debug>(r: Result<T, ConfigError>) -> String {
    match r {
        Ok(v) => format!("accepted: {v:?}"),
        Err(e) => e.field_path().unwrap_or("<no field>").to_owned(),
    }
}

#[test]
fn an_unknown_legacy_option_is_refused_by_name() {
    let mut typo = server_options(4195, "s");
    typo["maxBalence"] = json!("10");
    assert_eq!(
        refused_field(PeerConfig::from_legacy_json("p", &typo)),
        "maxBalence"
    );
    let mut listener = server_options(4195, "s");
    listener["listener"] = json!({"port": 4195, "prot": 4196});
    assert_eq!(
        refused_field(PeerConfig::from_legacy_json("p", &listener)),
        "listener.prot"
    );
    // With moduleOptions, the module reads those, so the top level holds plugin options only.
    let mut with_module = server_options(4195, "s");
    with_module["module"] = json!("iou");
    with_module["moduleOptions"] = json!({"trustLimit": "10"});
    with_module["trustLimit"] = json!("10");
    assert_eq!(
        refused_field(PeerConfig::from_legacy_json("p", &with_module)),
        "trustLimit"
    );
    // ilp-bridge's own per-peer limits sit beside `options`, not inside it.
    let toml = NodeConfig::parse(
        "[[peer]]\nname = \"alice\"\noptions_json = '{\"server\":\"btp+ws://:s@127.0.0.1:9000\",\"max_hold_ms\":1000}'\n",
    );
    assert_eq!(refused_field(toml), "peer \"alice\".max_hold_ms");
    // An ILP Kit ledger entry names the entry and the option.
    let ledgers = r#"{"g.kit.":{"plugin":"ilp-plugin-payment-channel-framework","options":{"server":"btp+ws://:s@h:1","incomingSecrets":"x"}}}"#;
    assert_eq!(
        refused_field(ilp_bridge::config::ilp_kit::peers_from_connector_ledgers(
            ledgers
        )),
        "CONNECTOR_LEDGERS.g.kit..options.incomingSecrets"
    );
}

#[test]
fn options_the_legacy_plugin_knows_and_ilp_bridge_does_not_use_are_accepted(
) -> Result<(), ConfigError> {
    // As ILP Kit wrote them: `token` (shown in the plugin's README, no effect), and the connector's `_store`,
    // `_backend`, `_log` and `authCheck` when options are copied from a JS instantiation.
    let mut o = server_options(4195, "s");
    for (name, value) in [
        ("token", json!("t")),
        ("_store", json!({})),
        ("_backend", json!({})),
        ("_log", json!({})),
        ("authCheck", json!(null)),
    ] {
        o[name] = value;
    }
    PeerConfig::from_legacy_json("p", &o)?;
    // With a module and no moduleOptions the module reads the whole object (as the legacy plugin hands it its
    // options), so names it reads sit beside the plugin's.
    let mut shared = server_options(4195, "s");
    shared["module"] = json!("iou");
    shared["trustLimit"] = json!("10");
    let c = PeerConfig::from_legacy_json("p", &shared)?;
    assert_eq!(c.module_options()["trustLimit"], json!("10"));
    Ok(())
}

#[test]
fn ilp_kit_ledgers_as_the_connector_writes_them_are_accepted() -> Result<(), ConfigError> {
    // A server and a client entry with every option docs/ilp-kit.md §4 lists (the connector sets `prefix`).
    let ledgers = r#"{"g.eur.kit.":{"currency":"EUR","plugin":"ilp-plugin-payment-channel-framework","store":true,"options":{"listener":{"port":1801},"incomingSecret":"s","token":"s","maxBalance":"1000","minBalance":"-10","prefix":"x.","info":{"currencyCode":"EUR","currencyScale":9,"connectors":[]}}},"peer.usd.":{"currency":"USD","plugin":"ilp-plugin-payment-channel-framework","options":{"server":"btp+ws://:pw@localhost:1802"}}}"#;
    let peers = ilp_bridge::config::ilp_kit::peers_from_connector_ledgers(ledgers)?;
    assert_eq!(peers.len(), 2);
    Ok(())
}

#[test]
fn an_option_no_module_reads_is_refused_by_name() {
    let err = |json: Value| {
        PeerConfig::from_legacy_json("alice", &json)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "accepted".to_owned())
    };
    // In moduleOptions.
    let e = err(
        json!({"server": "btp+ws://:s@127.0.0.1:1", "store": true, "maxBalance": "1000", "module": "iou",
        "moduleOptions": {"scale": 6, "trustLimt": "5"}}),
    );
    assert!(e.contains("moduleOptions.trustLimt"), "{e}");
    // Beside the plugin's options, where a module without moduleOptions reads its own.
    let e = err(
        json!({"server": "btp+ws://:s@127.0.0.1:1", "store": true, "maxBalance": "1000", "module": "iou", "trustLimt": "5"}),
    );
    assert!(e.contains("trustLimt") && e.contains("iou"), "{e}");
    // What the module reads is still accepted, in either place.
    assert_eq!(
        err(
            json!({"server": "btp+ws://:s@127.0.0.1:1", "store": true, "maxBalance": "1000", "module": "iou", "trustLimit": "5", "scale": 6})
        ),
        "accepted"
    );
    assert_eq!(
        err(
            json!({"server": "btp+ws://:s@127.0.0.1:1", "store": true, "maxBalance": "1000", "module": "iou",
            "moduleOptions": {"trustLimit": "5"}})
        ),
        "accepted"
    );
    // The engine's module_options.
    let e = NodeConfig::parse(
        "[settlement-engine]\nmodule = \"iou\"\nmodule_options = { trustLimt = \"5\" }\n",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_else(|| "accepted".to_owned());
    assert!(e.contains("module_options.trustLimt"), "{e}");
}

#[test]
fn keep_finished_secs_is_off_by_default_and_outlives_retries_and_the_expiry_margin(
) -> Result<(), ConfigError> {
    assert_eq!(NodeConfig::parse("")?.keep_finished, None);
    assert_eq!(
        NodeConfig::parse("keep_finished_secs = 2592000\n")?.keep_finished,
        Some(std::time::Duration::from_secs(2_592_000))
    );
    assert_eq!(
        refused_field(NodeConfig::parse("keep_finished_secs = 59\n")),
        "keep_finished_secs"
    );
    // A source expires expiry_margin_ms after its forwarded transfer and is settled from that one's record.
    assert_eq!(
        refused_field(NodeConfig::parse(
            "keep_finished_secs = 60\n[routing]\nexpiry_margin_ms = 60000\n"
        )),
        "keep_finished_secs"
    );
    assert!(
        NodeConfig::parse("keep_finished_secs = 61\n[routing]\nexpiry_margin_ms = 60000\n").is_ok()
    );
    Ok(())
}

#[test]
fn worker_threads_defaults_to_one_per_core_and_takes_1_to_1024() -> Result<(), ConfigError> {
    assert_eq!(NodeConfig::parse("")?.worker_threads, None);
    assert_eq!(
        NodeConfig::parse("worker_threads = 1\n")?.worker_threads,
        Some(1)
    );
    assert_eq!(
        NodeConfig::parse("worker_threads = 1024\n")?.worker_threads,
        Some(1024)
    );
    for bad in ["worker_threads = 0\n", "worker_threads = 1025\n"] {
        assert_eq!(
            refused_field(NodeConfig::parse(bad)),
            "worker_threads",
            "{bad}"
        );
    }
    Ok(())
}

#[test]
fn min_free_mib_is_read_in_mib_and_a_byte_count_is_refused_by_name() -> Result<(), ConfigError> {
    let default = NodeConfig::parse("")?;
    assert_eq!(
        default.min_free_bytes,
        ilp_bridge::store::DEFAULT_MIN_FREE_BYTES
    );
    let set = NodeConfig::parse("min_free_mib = 3\n")?;
    assert_eq!(set.min_free_bytes, 3 << 20);
    let off = NodeConfig::parse("min_free_mib = 0\n")?;
    assert_eq!(off.min_free_bytes, 0);
    // 64 MiB written as bytes.
    assert_eq!(
        refused_field(NodeConfig::parse("min_free_mib = 67108864\n")),
        "min_free_mib"
    );
    Ok(())
}
