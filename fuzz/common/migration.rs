//! The migration round trip, shared by the configuration targets (`node_config`, `ilp_kit_env`,
//! `legacy_options`): `ilp-bridge migrate-ilp-kit` writes the peers it takes over as node TOML
//! (`migrate::config_out::node_toml`) and loads that text with the node's own loader before writing anything, so
//! a set of peers that can run together must come back from the written text as the same peers. Otherwise the
//! migration refuses a valid `env.list` ("the generated configuration does not load"), or the node would run
//! peers other than the ones migrated.

use std::path::Path;

use ilp_bridge::config::legacy::{validate_peer_set, PeerConfig};
use ilp_bridge::config::node::NodeConfig;
use ilp_bridge::migrate::config_out::node_toml;
use serde_json::Value;

/// Writes `peers` as the migration does and loads the text with [`NodeConfig::parse`]: when the peers can run
/// together (`validate_peer_set`) and TOML can hold their options (`node_toml` refuses JSON integers beyond
/// i64 and nulls inside arrays), the text loads and gives back `data_dir` and every peer, equal field by field.
/// Two differences are expected: null option values are left out (TOML has no null; the plugin reads a null
/// option as absent, so the peer is the one its options without them give), and the node TOML's own per-peer
/// settings (`max_hold_ms` and the other limits, `ca_bundle`), which are not plugin options, are not written,
/// so they come back as their defaults.
pub fn assert_round_trip(peers: &[PeerConfig], data_dir: &Path) {
    if validate_peer_set(peers).is_err() {
        return;
    }
    let refs: Vec<&PeerConfig> = peers.iter().collect();
    let Ok(text) = node_toml(Path::new("env.list"), data_dir, &refs, &[]) else {
        return;
    };
    let node = match NodeConfig::parse(&text) {
        Ok(node) => node,
        Err(e) => panic!("the written configuration does not load: {e}\n{text}"),
    };
    assert_eq!(node.data_dir, data_dir, "{text}");
    assert_eq!(node.peers.len(), peers.len(), "{text}");
    for (loaded, peer) in node.peers.iter().zip(peers) {
        let expected = without_null_options(peer);
        // The options first: PeerConfig's Debug shows them by name only.
        assert_eq!(loaded.raw, expected.raw, "{text}");
        assert_eq!(loaded, &expected, "{text}");
    }
}

/// `peer` as its options without their null members give it (with the default limits and no `ca_bundle`, as
/// the written TOML has them). Leaving the nulls out changes nothing but the options kept, and the `info`
/// object passed through to the peer: the plugin reads a null option as absent.
fn without_null_options(peer: &PeerConfig) -> PeerConfig {
    let stripped = match PeerConfig::from_legacy_json(&peer.name, &without_nulls(&peer.raw)) {
        Ok(p) => p,
        Err(e) => panic!(
            "peer {:?}: refused once its null options are left out: {e}",
            peer.name
        ),
    };
    let mut same = stripped.clone();
    same.raw = peer.raw.clone();
    if let (Some(info), Some(original)) = (&mut same.info, &peer.info) {
        info.raw = original.raw.clone();
    }
    same.limits = peer.limits;
    same.ca_bundle = peer.ca_bundle.clone();
    assert_eq!(&same, peer, "leaving null options out changed the peer");
    stripped
}

/// `v` without the object members whose value is null, at any depth (arrays keep their elements).
pub fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, item)| !item.is_null())
                .map(|(k, item)| (k.clone(), without_nulls(item)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}
