//! The node's TOML configuration (`ilp-bridge run --config <file>`): where data lives, logging, the BTP/1.0 peers
//! (each given as the legacy plugin options, verbatim), routing, and the optional settlement engine.
//!
//! ```toml
//! data_dir = "ilp-bridge-data"        # RocksDB folder (created if missing)
//! min_free_mib = 64                   # free space kept on its filesystem; below it the node stops writing
//! keep_finished_secs = 2592000        # drop finished transfers' records 30 days after they expired (default: keep)
//! worker_threads = 1                  # runtime threads (default: one per core)
//!
//! [log]
//! filter = "info"                     # tracing EnvFilter syntax; RUST_LOG wins when set
//! format = "text"                     # or "json"
//!
//! [routing]
//! expiry_margin_ms = 1000             # forwarded transfers expire this much earlier
//! rates = [{ from = "usd-ledger", to = "eur-ledger", rate = "0.9" }]
//!
//! [[peer]]
//! name = "alice"
//! # the legacy plugin options, as a TOML table ...
//! options = { listener = { port = 4195 }, incomingSecret = "secret", maxBalance = "1000000",
//!             prefix = "g.alice.", info = { currencyCode = "USD", currencyScale = 9 } }
//! # ilp-bridge's own limits for this peer (see `config::prepare_limits`; defaults when absent)
//! max_hold_ms = 60000                 # refuse Prepares expiring further ahead; forward to it no further
//! max_prepare_data_bytes = 32768      # ilp + custom bytes per Prepare
//! max_prepared_transfers = 1000       # prepared at once, each direction
//!
//! [[peer]]
//! name = "bob"
//! # ... or verbatim as JSON text
//! options_json = '{"server":"btp+ws://:secret@127.0.0.1:4196","maxBalance":"1000000"}'
//! # a btp+wss server signed by a private CA: trust its CA (PEM file) too, beside the Mozilla roots
//! # ca_bundle = "upstream-ca.pem"
//!
//! [settlement-engine]                 # optional: run the RFC 38 engine (see `settlement::SeConfig`)
//! listen = "127.0.0.1:3000"
//! connector = "http://127.0.0.1:7771"
//! module = "trustline"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::bridge::{ModernConfig, RawModern};
use super::error::{ConfigError, ParseError};
use super::legacy::{validate_peer_set, PeerConfig};
use super::prepare_limits::PrepareLimits;
use super::routing::{RawRouting, RoutingConfig};
use super::settlement::SeConfig;

/// Default data folder, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "ilp-bridge-data";

/// Largest configuration file accepted, so a wrong path (a log file, a device) fails fast.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Log output settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing_subscriber::EnvFilter` directives; the `RUST_LOG` environment variable wins when set.
    pub filter: String,
    /// `text` (human) or `json` (one object per line).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON objects, one per line.
    Json,
}

// No Debug: the options hold the peer's secrets verbatim (PeerConfig's Debug shows them by name only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    options: Option<toml::Value>,
    options_json: Option<String>,
    /// [`PrepareLimits::max_hold`], in ms.
    max_hold_ms: Option<u64>,
    /// [`PrepareLimits::max_prepare_data_bytes`].
    max_prepare_data_bytes: Option<u64>,
    /// [`PrepareLimits::max_prepared_transfers`].
    max_prepared_transfers: Option<u64>,
    /// The modern side of a bridged peer.
    modern: Option<RawModern>,
    /// [`PeerConfig::ca_bundle`].
    ca_bundle: Option<PathBuf>,
}

impl RawPeer {
    /// The peer's limits: the defaults, with the ones given here instead. `field` names this peer.
    fn limits(&self, field: &str) -> Result<PrepareLimits, ConfigError> {
        let mut limits = PrepareLimits::default();
        if let Some(ms) = self.max_hold_ms {
            limits.max_hold = Duration::from_millis(ms);
        }
        let size = |name: &str, v: u64| {
            usize::try_from(v).map_err(|_| {
                ConfigError::field(format!("{field}.{name}"), "too large for this machine")
            })
        };
        if let Some(n) = self.max_prepare_data_bytes {
            limits.max_prepare_data_bytes = size("max_prepare_data_bytes", n)?;
        }
        if let Some(n) = self.max_prepared_transfers {
            limits.max_prepared_transfers = size("max_prepared_transfers", n)?;
        }
        limits.validate(field)?;
        Ok(limits)
    }
}

/// Default `min_free_mib`: the free space the node keeps on its data folder's filesystem (it stops writing below
/// it; see the store's `DbOptions::min_free_bytes`).
pub const DEFAULT_MIN_FREE_MIB: u64 = 64;
/// Largest `min_free_mib` taken (1 TiB): a larger value is almost surely a byte count.
pub const MAX_MIN_FREE_MIB: u64 = 1 << 20;
/// Shortest `keep_finished_secs` taken: a transfer's record is kept at least this long after it expired, longer
/// than any peer's retry of it or clock difference with it.
pub const MIN_KEEP_FINISHED_SECS: u64 = 60;
/// Most `worker_threads` taken.
pub const MAX_WORKER_THREADS: u64 = 1024;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawNode {
    data_dir: Option<PathBuf>,
    min_free_mib: Option<u64>,
    keep_finished_secs: Option<u64>,
    worker_threads: Option<u64>,
    log: LogConfig,
    routing: RawRouting,
    #[serde(rename = "peer")]
    peers: Vec<RawPeer>,
    #[serde(rename = "settlement-engine")]
    settlement_engine: Option<SeConfig>,
    admin: Option<super::admin::RawAdmin>,
}

/// The whole node configuration, validated.
#[derive(Debug)]
pub struct NodeConfig {
    /// RocksDB folder.
    pub data_dir: PathBuf,
    /// Free space kept on the data folder's filesystem (`min_free_mib`; see
    /// [`DbOptions::min_free_bytes`](crate::store::DbOptions::min_free_bytes)).
    pub min_free_bytes: u64,
    /// How long a finished transfer's record is kept after it expired (`keep_finished_secs`; `None`: for ever;
    /// see [`DbOptions::keep_finished`](crate::store::DbOptions::keep_finished)).
    pub keep_finished: Option<std::time::Duration>,
    /// Threads of the async runtime (`worker_threads`; `None`: one per core, tokio's default). One thread
    /// saves the cross-core hand-offs of a lightly loaded node (measured in BENCHMARKS.md), more use more
    /// cores under load.
    pub worker_threads: Option<usize>,
    /// Logging.
    pub log: LogConfig,
    /// Routing between peers.
    pub routing: RoutingConfig,
    /// BTP/1.0 peers.
    pub peers: Vec<PeerConfig>,
    /// The modern side of each bridged peer, by peer name (`[peer.modern]`).
    pub modern: BTreeMap<String, ModernConfig>,
    /// The settlement engine, if configured.
    pub settlement_engine: Option<SeConfig>,
    /// The node's admin listener (`[admin]`), if configured.
    pub admin: Option<super::admin::AdminConfig>,
}

impl Default for NodeConfig {
    /// What `ilp-bridge run` does without `--config`: a settlement engine with the `trustline` module on the
    /// ecosystem's default addresses, data in `./ilp-bridge-data`.
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            min_free_bytes: DEFAULT_MIN_FREE_MIB << 20,
            keep_finished: None,
            worker_threads: None,
            log: LogConfig::default(),
            routing: RoutingConfig::default(),
            peers: Vec::new(),
            modern: BTreeMap::new(),
            settlement_engine: Some(SeConfig::default()),
            admin: None,
        }
    }
}

/// The annotated example printed by `ilp-bridge example-config`.
pub const EXAMPLE_CONFIG: &str = r#"# ilp-bridge configuration (TOML). Every section is optional.
data_dir = "ilp-bridge-data"
min_free_mib = 64     # free space kept on the data folder's filesystem: below it the node stops writing
# keep_finished_secs = 2592000   # drop a finished transfer's record this long after it expired (at least 60,
                                 # and longer than routing.expiry_margin_ms);
                                 # absent: keep every one (the store grows with the history, as the legacy plugin's)
# worker_threads = 1   # async runtime threads; absent: one per core. One thread spends less CPU per transfer on a
                       # node with few transfers in flight (no cross-core hand-offs); more use more cores under load

[log]
filter = "info"       # RUST_LOG wins when set
format = "text"       # or "json"

[routing]
expiry_margin_ms = 1000
# rates = [{ from = "usd-ledger", to = "eur-ledger", rate = "0.9" }]

# A BTP/1.0 server peer: a legacy JS client connects with server "btp+ws://:secret@host:4195".
[[peer]]
name = "legacy-client"
options = { listener = { port = 4195 }, incomingSecret = "secret", maxBalance = "1000000", prefix = "test.bridge.", info = { currencyCode = "USD", currencyScale = 9 } }
# What this peer can make the node hold (ilp-bridge settings, not plugin options; these are the defaults).
max_hold_ms = 60000             # refuse a Prepare expiring further ahead; forward to this peer no further ahead
max_prepare_data_bytes = 32768  # ilp + custom bytes per Prepare
max_prepared_transfers = 1000   # transfers prepared at once, in each direction

# A BTP/1.0 client peer, options verbatim as the legacy plugin JSON:
# [[peer]]
# name = "legacy-server"
# options_json = '{"server":"btp+ws://:secret@127.0.0.1:9000","maxBalance":"1000000"}'
# For a btp+wss server signed by a private CA: its certificates (PEM), beside options.
# ca_bundle = "upstream-ca.pem"

# The node's operator listener: /health, /ready, /metrics (no token), the admin API of the BTP peers and of
# the engine, and the status page at / (README "Operating ilp-bridge").
# [admin]
# listen = "127.0.0.1:3002"
# token = "change-me"         # required; `ilp-bridge status` reads it from --token or ILP_BRIDGE_ADMIN_TOKEN

# The RFC 38 settlement engine for a modern connector.
[settlement-engine]
listen = "127.0.0.1:3000"   # off loopback, set api_token (or allow_unauthenticated = true)
# api_token = "..."         # requests must then carry "Authorization: Bearer <api_token>"
connector = "http://127.0.0.1:7771"
module = "trustline"
# The trustline module credits a peer's IOUs only up to trustLimit (module units, here scale 9: 1000 units);
# without it no IOU is credited.
# module_options = { scale = 9, trustLimit = "1000000000000" }

# Bridge mode: a legacy peer P and a modern connector M (interledger-rs) paying each other through this node.
# The [[peer]] is P's legacy side, [peer.modern] the account M keeps for P (README "Bridge mode", docs/bridge.md).
# BRIDGE-EXAMPLE-BEGIN
# [[peer]]
# name = "kit"
# options = { listener = { port = 4196 }, incomingSecret = "kit-secret", maxBalance = "1000000000000", prefix = "g.kit.", store = true, info = { currencyCode = "USD", currencyScale = 9 } }
# [peer.modern]
# link = "btp-client"                      # btp-client (dial M) | btp-server (M dials) | http (ILP-over-HTTP)
# url = "btp+ws://:btp-token@127.0.0.1:7770/accounts/kit/ilp/btp"   # M's BTP endpoint, the account's incoming token
# relation = "peer"                        # what M is to this node: child | parent | peer
# asset_scale = 6                          # M's account scale (default: info.currencyScale); asset_code likewise
# expiry_margin_ms = 1000                  # taken off each Prepare's expiry as it crosses
# settlement_listen = "127.0.0.1:3100"     # RFC 38 API for M: settlement_engine_url = "http://127.0.0.1:3100"
# settlement_connector_url = "http://127.0.0.1:7771"   # M's settlement API, where P's payments are credited
# BRIDGE-EXAMPLE-END
"#;

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let read_error = |source| {
            ConfigError::value(
                "--config",
                ParseError::Read {
                    path: path.display().to_string(),
                    source,
                },
            )
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::field(
                "--config",
                format!(
                    "{} is {} bytes, more than the {MAX_CONFIG_BYTES} bytes a configuration may have",
                    path.display(),
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let raw: RawNode = toml::from_str(text).map_err(|source: toml::de::Error| {
            let line = source
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            ConfigError::value("config", ParseError::Toml { line, source })
        })?;
        let mut peers = Vec::with_capacity(raw.peers.len());
        let mut modern = BTreeMap::new();
        for (i, p) in raw.peers.into_iter().enumerate() {
            let field = |f: &str| format!("peer[{i}].{f}");
            let options: serde_json::Value = match (&p.options, &p.options_json) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::field(
                        field("options"),
                        "give either options or options_json, not both",
                    ))
                }
                (None, None) => return Err(ConfigError::field(
                    field("options"),
                    "missing: the legacy plugin options (options = {...} or options_json = '...')",
                )),
                (Some(t), None) => serde_json::to_value(t)
                    .map_err(|e| ConfigError::value(field("options"), ParseError::ToJson(e)))?,
                (None, Some(json)) => serde_json::from_str(json)
                    .map_err(|e| ConfigError::value(field("options_json"), ParseError::Json(e)))?,
            };
            let mut peer = PeerConfig::from_legacy_json(&p.name, &options)
                .map_err(|e| e.within(&format!("peer {:?}", p.name)))?;
            peer.limits = p.limits(&format!("peer[{i}]"))?;
            if let Some(path) = &p.ca_bundle {
                check_ca_bundle(&peer, path, &field("ca_bundle"))?;
                peer.ca_bundle = Some(path.clone());
            }
            if let Some(m) = p.modern {
                modern.insert(
                    peer.name.clone(),
                    m.into_config(&peer, &format!("peer[{i}]"))?,
                );
            }
            peers.push(peer);
        }
        validate_peer_set(&peers)?;
        let routing = raw.routing.into_config(&peers)?;
        if let Some(se) = &raw.settlement_engine {
            se.validate().map_err(|e| e.within("settlement-engine"))?;
        }
        let admin = raw
            .admin
            .map(super::admin::RawAdmin::validate)
            .transpose()?;
        if let (Some(admin), Some(se)) = (&admin, &raw.settlement_engine) {
            let engine_admin = se.admin_token.is_some().then_some(se.admin_listen);
            if engine_admin == Some(admin.listen) || se.listen == admin.listen {
                return Err(ConfigError::field(
                    "admin.listen",
                    format!(
                        "{} is also a [settlement-engine] listener; the node's admin listener serves the \
                         engine's admin routes too, so leave out admin_token there or pick another address",
                        admin.listen
                    ),
                ));
            }
        }
        let min_free_mib = raw.min_free_mib.unwrap_or(DEFAULT_MIN_FREE_MIB);
        if min_free_mib > MAX_MIN_FREE_MIB {
            return Err(ConfigError::field(
                "min_free_mib",
                format!("{min_free_mib} MiB is more than {MAX_MIN_FREE_MIB} (the value is in MiB, not bytes)"),
            ));
        }
        let keep_finished = match raw.keep_finished_secs {
            Some(secs) if secs < MIN_KEEP_FINISHED_SECS => {
                return Err(ConfigError::field(
                    "keep_finished_secs",
                    format!(
                        "{secs} s is less than {MIN_KEEP_FINISHED_SECS} s (a record must outlive every retry of its \
                         transfer); leave it out to keep every finished transfer"
                    ),
                ))
            }
            Some(secs) if u128::from(secs) * 1000 <= routing.expiry_margin.as_millis() => {
                return Err(ConfigError::field(
                    "keep_finished_secs",
                    format!(
                        "{secs} s is not longer than routing.expiry_margin_ms ({} ms): a forwarded transfer's \
                         record must outlive its source, which expires that much later and is settled from it",
                        routing.expiry_margin.as_millis()
                    ),
                ))
            }
            other => other.map(std::time::Duration::from_secs),
        };
        let worker_threads = match raw.worker_threads {
            Some(n) if n == 0 || n > MAX_WORKER_THREADS => {
                return Err(ConfigError::field(
                    "worker_threads",
                    format!(
                        "{n} is not between 1 and {MAX_WORKER_THREADS}; leave it out for one thread per core"
                    ),
                ))
            }
            other => other.map(|n| n as usize),
        };
        Ok(NodeConfig {
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            min_free_bytes: min_free_mib << 20,
            keep_finished,
            worker_threads,
            log: raw.log,
            routing,
            peers,
            modern,
            settlement_engine: raw.settlement_engine,
            admin,
        })
    }
}

/// Refuses a `ca_bundle` that would be ignored (no `btp+wss` server to dial) or that cannot be used (unreadable,
/// not PEM, no certificate, a certificate rustls refuses as a root), naming `field`.
fn check_ca_bundle(peer: &PeerConfig, path: &Path, field: &str) -> Result<(), ConfigError> {
    match &peer.server {
        Some(server) if server.ws_url.starts_with("wss://") => {}
        Some(_) => {
            return Err(ConfigError::field(
                field,
                "applies to a btp+wss server only; this peer's server is btp+ws",
            ))
        }
        None => {
            return Err(ConfigError::field(
                field,
                "applies to a peer that dials a btp+wss server; this peer has no server option",
            ))
        }
    }
    btp::transport::TlsClientConfig::with_extra_ca_file(path).map_err(|e| {
        let reason = match e {
            // Already names the file.
            btp::transport::TlsError::Read { .. } | btp::transport::TlsError::TooLarge { .. } => {
                e.to_string()
            }
            _ => format!("{}: {e}", path.display()),
        };
        ConfigError::field(field, reason)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() -> Result<(), ConfigError> {
        let c = NodeConfig::parse(EXAMPLE_CONFIG)?;
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].name, "legacy-client");
        assert_eq!(c.peers[0].prefix.as_deref(), Some("test.bridge."));
        let se = c.settlement_engine.as_ref().map(|s| s.listen.to_string());
        assert_eq!(se.as_deref(), Some("127.0.0.1:3000"));
        assert_eq!(c.routing.expiry_margin, Duration::from_millis(1000));
        assert_eq!(c.peers[0].limits, PrepareLimits::default());
        Ok(())
    }

    #[test]
    fn peer_limits_are_set_beside_the_options() -> Result<(), ConfigError> {
        let c = NodeConfig::parse(
            r#"
            [[peer]]
            name = "a"
            options_json = '{"server":"btp+ws://:s@127.0.0.1:9000"}'
            max_hold_ms = 10000
            max_prepare_data_bytes = 4096
            max_prepared_transfers = 7

            [[peer]]
            name = "b"
            options_json = '{"server":"btp+ws://:t@127.0.0.1:9001"}'
            "#,
        )?;
        assert_eq!(
            c.peers[0].limits,
            PrepareLimits {
                max_hold: Duration::from_secs(10),
                max_prepare_data_bytes: 4096,
                max_prepared_transfers: 7,
            }
        );
        assert_eq!(c.peers[1].limits, PrepareLimits::default());
        for key in [
            "max_hold_ms",
            "max_prepare_data_bytes",
            "max_prepared_transfers",
        ] {
            let zero = NodeConfig::parse(&format!(
                "[[peer]]\nname = \"a\"\noptions_json = '{{\"server\":\"btp+ws://:s@h:1\"}}'\n{key} = 0\n"
            ));
            assert!(
                matches!(&zero, Err(e) if e.to_string().contains(&format!("peer[0].{key}"))),
                "{key}: {zero:?}"
            );
        }
        // Not a legacy plugin option: inside `options` it is an unknown option, refused by name.
        let inside = NodeConfig::parse(
            "[[peer]]\nname = \"a\"\noptions = { server = \"btp+ws://:s@h:1\", max_hold_ms = 5 }\n",
        );
        assert!(
            matches!(&inside, Err(e) if e.field_path() == Some("peer \"a\".max_hold_ms")),
            "{inside:?}"
        );
        Ok(())
    }

    #[test]
    fn options_json_is_taken_verbatim() -> Result<(), ConfigError> {
        let c = NodeConfig::parse(
            r#"
            [[peer]]
            name = "b"
            options_json = '{"server":"btp+ws://:s3cret@127.0.0.1:9000","maxBalance":"500"}'
            "#,
        )?;
        assert_eq!(c.peers[0].name, "b");
        assert!(c.peers[0].server.is_some());
        assert!(c.settlement_engine.is_none());
        Ok(())
    }

    #[test]
    fn errors_name_the_field() {
        let both = NodeConfig::parse("[[peer]]\nname = \"x\"\noptions = {}\noptions_json = '{}'\n");
        assert!(matches!(both, Err(e) if e.to_string().contains("peer[0].options")));
        let bad_json = NodeConfig::parse("[[peer]]\nname = \"x\"\noptions_json = '{'\n");
        assert!(matches!(bad_json, Err(e) if e.to_string().contains("options_json")));
        let unknown = NodeConfig::parse("colour = \"blue\"\n");
        assert!(matches!(unknown, Err(e) if e.to_string().contains("colour")));
        let bad_rate =
            NodeConfig::parse("[routing]\nrates = [{ from = \"a\", to = \"b\", rate = \"1\" }]\n");
        assert!(matches!(bad_rate, Err(e) if e.to_string().contains("no peer named")));
        let bad_limit = NodeConfig::parse(
            "[[peer]]\nname = \"x\"\noptions = { listener = { port = 1 }, incomingSecret = \"s\", prefix = \"a.\", info = {}, maxBalance = \"ten\" }\n",
        );
        assert!(matches!(bad_limit, Err(e) if e.to_string().contains("maxBalance")));
        let no_margin = NodeConfig::parse("[routing]\nexpiry_margin_ms = 0\n");
        assert!(
            matches!(&no_margin, Err(e) if e.to_string().contains("routing.expiry_margin_ms")),
            "{no_margin:?}"
        );
        let no_window = NodeConfig::parse("[routing]\nmin_forward_window_ms = 0\n");
        assert!(
            matches!(&no_window, Err(e) if e.to_string().contains("routing.min_forward_window_ms")),
            "{no_window:?}"
        );
        assert!(
            NodeConfig::parse("[routing]\nexpiry_margin_ms = 1\nmin_forward_window_ms = 1\n")
                .is_ok()
        );
    }

    #[test]
    fn ca_bundle_is_checked_at_start_and_named() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ca = rcgen::generate_simple_self_signed(vec!["test ca".to_owned()])?;
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert.pem())?;
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello\n")?;
        let missing = dir.path().join("missing.pem");
        let peer = |server: &str, path: &Path| {
            format!(
                "[[peer]]\nname = \"a\"\noptions_json = '{{\"server\":\"{server}\"}}'\nca_bundle = {:?}\n",
                path.display().to_string()
            )
        };
        let c = NodeConfig::parse(&peer("btp+wss://:s@localhost:9000", &good))?;
        assert_eq!(c.peers[0].ca_bundle.as_deref(), Some(good.as_path()));
        let refused = |text: String, reason: &str| {
            let r = NodeConfig::parse(&text);
            assert!(
                matches!(&r, Err(e) if e.field_path() == Some("peer[0].ca_bundle")
                    && e.to_string().contains(reason)),
                "{reason}: {r:?}"
            );
        };
        refused(peer("btp+wss://:s@localhost:9000", &missing), "cannot read");
        refused(
            peer("btp+wss://:s@localhost:9000", &not_pem),
            "no certificate found",
        );
        // A path that never ends is refused after a bounded read, not read until memory runs out.
        refused(
            peer("btp+wss://:s@localhost:9000", Path::new("/dev/zero")),
            "is larger than",
        );
        refused(
            peer("btp+ws://:s@localhost:9000", &good),
            "btp+wss server only",
        );
        refused(
            format!(
                "[[peer]]\nname = \"a\"\noptions = {{ listener = {{ port = 1 }}, incomingSecret = \"s\", prefix = \"a.\", info = {{}} }}\nca_bundle = {:?}\n",
                good.display().to_string()
            ),
            "no server option",
        );
        // Not a legacy option: inside the options object it is refused as unknown.
        let inside = NodeConfig::parse(
            "[[peer]]\nname = \"a\"\noptions = { server = \"btp+wss://:s@h:1\", ca_bundle = \"x\" }\n",
        );
        assert!(
            matches!(&inside, Err(e) if e.field_path() == Some("peer \"a\".ca_bundle")),
            "{inside:?}"
        );
        Ok(())
    }

    #[test]
    fn the_example_s_bridge_block_configures_a_bridged_peer(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let block: String = EXAMPLE_CONFIG
            .lines()
            .skip_while(|l| !l.contains("BRIDGE-EXAMPLE-BEGIN"))
            .skip(1)
            .take_while(|l| !l.contains("BRIDGE-EXAMPLE-END"))
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let c = NodeConfig::parse(&block)?;
        let modern = c.modern.get("kit").ok_or("no bridged peer")?;
        assert_eq!(modern.asset_scale, 6);
        assert_eq!(modern.legacy_scale, 9);
        let settlement = modern.settlement.as_ref().ok_or("no settlement")?;
        assert_eq!(settlement.listen.port(), 3100);
        Ok(())
    }
}
