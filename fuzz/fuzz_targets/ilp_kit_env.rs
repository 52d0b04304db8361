//! ILP Kit's configuration (`ilp_bridge::config::ilp_kit`, read by `ilp-bridge run --ilp-kit-env` and
//! `migrate-ilp-kit`) on UTF-8 text, taken both as an `env.list` (`parse_env_list`, then its `CONNECTOR_LEDGERS`
//! if set) and as a `CONNECTOR_LEDGERS` JSON text itself (`ledger_entries`, `peers_from_connector_ledgers`).
//! Never panics, and:
//! * every variable read has a non-empty name without `=` and, like its value, no surrounding white space;
//! * every legacy-plugin entry hands the plugin its options with `prefix` set to the ledger key and `store` to
//!   the entry's `store`, and runs as a peer named by the key, stateful exactly when `store` is true;
//! * `peers_from_connector_ledgers` succeeds exactly when every legacy entry's peer does, and gives those peers
//!   in the order written;
//! * the peers survive the migration round trip (`common/migration.rs`).
#![no_main]

use std::path::Path;

use ilp_bridge::config::ilp_kit::{
    ledger_entries, parse_env_list, peers_from_connector_ledgers, CONNECTOR_LEDGERS,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[path = "../common/migration.rs"]
mod migration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(vars) = parse_env_list(text) {
        for (name, value) in &vars {
            assert!(!name.is_empty() && !name.contains('='), "{name:?}");
            assert_eq!(name.trim(), name);
            assert_eq!(value.trim(), value);
        }
        if let Some(ledgers) = vars.get(CONNECTOR_LEDGERS) {
            check_ledgers(ledgers);
        }
    }
    check_ledgers(text);
});

fn check_ledgers(json: &str) {
    let Ok(entries) = ledger_entries(json) else {
        assert!(peers_from_connector_ledgers(json).is_err());
        return;
    };
    let mut peers = Vec::new();
    let mut all_run = true;
    for entry in entries.iter().filter(|e| e.is_legacy()) {
        assert_eq!(
            entry.options.get("prefix"),
            Some(&Value::String(entry.prefix.clone()))
        );
        assert_eq!(entry.options.get("store"), Some(&Value::Bool(entry.store)));
        match entry.peer() {
            Ok(peer) => {
                assert_eq!(peer.name, entry.prefix);
                assert_eq!(peer.prefix.as_deref(), Some(entry.prefix.as_str()));
                assert_eq!(peer.stateful, entry.store);
                peers.push(peer);
            }
            Err(_) => all_run = false,
        }
    }
    match peers_from_connector_ledgers(json) {
        Ok(all) => {
            assert!(
                all_run,
                "peers_from_connector_ledgers took a ledger whose peer is refused"
            );
            assert_eq!(all, peers);
        }
        Err(e) => assert!(
            !all_run,
            "peers_from_connector_ledgers refused although every legacy ledger runs as a peer: {e}"
        ),
    }
    migration::assert_round_trip(&peers, Path::new("/var/lib/ilp-bridge"));
}
