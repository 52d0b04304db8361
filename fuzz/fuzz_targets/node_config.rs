//! The node TOML loader (`ilp_bridge::config::node::NodeConfig::parse`, what `ilp-bridge run --config` reads) on
//! UTF-8 text: never panics. A configuration it accepts is consistent: each peer is the one its own legacy options
//! give again (`PeerConfig::from_legacy_json` on the options kept, with the node TOML's per-peer limits and
//! `ca_bundle` beside them), its module options can be read, and its peers survive the migration round trip
//! (`common/migration.rs`: written as `migrate-ilp-kit` writes them, loaded again, equal).
#![no_main]

use ilp_bridge::config::legacy::PeerConfig;
use ilp_bridge::config::node::NodeConfig;
use libfuzzer_sys::fuzz_target;

#[path = "../common/migration.rs"]
mod migration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = NodeConfig::parse(text) else {
        return;
    };
    for peer in &config.peers {
        let mut again = match PeerConfig::from_legacy_json(&peer.name, &peer.raw) {
            Ok(p) => p,
            Err(e) => panic!("peer {:?}: its own options are refused: {e}", peer.name),
        };
        again.limits = peer.limits;
        again.ca_bundle = peer.ca_bundle.clone();
        assert_eq!(&again, peer);
        let _ = peer.module_options();
    }
    migration::assert_round_trip(&config.peers, &config.data_dir);
});
