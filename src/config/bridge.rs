//! The modern side of a bridged peer: `[peer.modern]` under a `[[peer]]` (docs/bridge.md). A peer with this
//! table is bridged: what its legacy peer sends goes to the modern connector and back, not to the router.
//!
//! ```toml
//! [[peer]]
//! name = "kit"
//! options = { listener = { port = 4195 }, incomingSecret = "…", maxBalance = "…", prefix = "g.kit.",
//!             info = { currencyCode = "USD", currencyScale = 9 } }
//! [peer.modern]
//! link = "btp-client"                  # btp-client | btp-server | http
//! url = "btp+ws://:token@127.0.0.1:7770/accounts/kit/ilp/btp"
//! relation = "child"                   # what the modern connector is to us: child | parent | peer
//! asset_code = "USD"                   # default: the legacy ledger's currencyCode
//! asset_scale = 9                      # default: the legacy ledger's currencyScale
//! ilp_address = "g.kit.server"         # our ILPv4 address (a parent's IL-DCP answer replaces it)
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, ParseError};
use super::legacy::{PeerConfig, Secret};

/// Default [`ModernConfig::expiry_margin`].
pub const DEFAULT_BRIDGE_EXPIRY_MARGIN: Duration = Duration::from_millis(1_000);
/// Default [`ModernConfig::min_window`].
pub const DEFAULT_BRIDGE_MIN_WINDOW: Duration = Duration::from_millis(500);
/// Default path of our ILP-over-HTTP endpoint.
pub const DEFAULT_HTTP_PATH: &str = "/ilp";

/// How ILPv4 packets travel between us and the modern connector.
#[derive(Clone, PartialEq, Eq)]
pub enum ModernTransport {
    /// We dial the connector's BTP/2.0 endpoint (interledger-rs: `/accounts/<username>/ilp/btp`), and redial
    /// after every drop (interledger-rs never redials).
    BtpClient {
        /// `btp+ws://:<token>@host:port/path` or `btp+wss://…`.
        url: Secret,
    },
    /// The connector dials us over BTP/2.0.
    BtpServer {
        /// Where we listen.
        listen: SocketAddr,
        /// The token it must present (`auth_token`).
        incoming_token: Option<Secret>,
    },
    /// ILP-over-HTTP both ways.
    Http {
        /// The connector's endpoint for this account (interledger-rs: `http://<node>/accounts/<username>/ilp`).
        url: String,
        /// Our bearer token towards it.
        token: Option<Secret>,
        /// Where we listen for its Prepares.
        listen: SocketAddr,
        /// Path of our endpoint.
        path: String,
        /// The bearer token it must present.
        incoming_token: Option<Secret>,
    },
}

impl std::fmt::Debug for ModernTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModernTransport::BtpClient { .. } => f.write_str("BtpClient { url: <redacted> }"),
            ModernTransport::BtpServer {
                listen,
                incoming_token,
            } => f
                .debug_struct("BtpServer")
                .field("listen", listen)
                .field(
                    "incoming_token",
                    &incoming_token.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
            ModernTransport::Http {
                url,
                listen,
                path,
                token,
                incoming_token,
            } => f
                .debug_struct("Http")
                .field("url", url)
                .field("token", &token.as_ref().map(|_| "<redacted>"))
                .field("listen", listen)
                .field("path", path)
                .field(
                    "incoming_token",
                    &incoming_token.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
        }
    }
}

/// What the modern connector is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModernRelation {
    /// Our child (its account for us says `Parent`).
    Child,
    /// Our parent (its account for us says `Child`).
    Parent,
    /// Our peer.
    Peer,
}

/// The modern side of one bridged peer, validated.
#[derive(Debug, Clone)]
pub struct ModernConfig {
    /// How packets travel.
    pub transport: ModernTransport,
    /// What the connector is to us.
    pub relation: ModernRelation,
    /// The modern account's asset code.
    pub asset_code: String,
    /// The modern account's asset scale.
    pub asset_scale: u8,
    /// The legacy ledger's scale (its `currencyScale`).
    pub legacy_scale: u8,
    /// Our ILPv4 address; `None`: learned from a parent by IL-DCP, else our address on the legacy ledger.
    pub ilp_address: Option<String>,
    /// The address a child connector is given (IL-DCP); `None`: `<our address>.<peer name>`.
    pub child_address: Option<String>,
    /// Taken off a packet's expiry when it crosses.
    pub expiry_margin: Duration,
    /// Least time a crossing packet must have left after the margin.
    pub min_window: Duration,
    /// Listening off loopback without an incoming token (only behind something that authenticates).
    pub allow_unauthenticated: bool,
    /// Settlement through the node: `None` when the pair settles out of band only.
    pub settlement: Option<ModernSettlement>,
}

/// Where the pair's settlement meets the modern connector (docs/bridge.md §7).
#[derive(Debug, Clone)]
pub struct ModernSettlement {
    /// Where the node serves the RFC 38 settlement-engine API for this pair (the connector account's
    /// `settlement_engine_url` is `http://<listen>`).
    pub listen: SocketAddr,
    /// The connector's settlement API, where what P paid is credited (interledger-rs:
    /// `http://127.0.0.1:7771`).
    pub connector_url: String,
}

/// `[peer.modern]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModern {
    link: String,
    url: Option<String>,
    token: Option<String>,
    listen: Option<SocketAddr>,
    path: Option<String>,
    incoming_token: Option<String>,
    relation: Option<ModernRelation>,
    asset_code: Option<String>,
    asset_scale: Option<u8>,
    legacy_scale: Option<u8>,
    ilp_address: Option<String>,
    child_address: Option<String>,
    expiry_margin_ms: Option<u64>,
    min_window_ms: Option<u64>,
    #[serde(default)]
    allow_unauthenticated: bool,
    settlement_listen: Option<SocketAddr>,
    settlement_connector_url: Option<String>,
}

fn secret(field: &str, value: Option<&String>) -> Result<Option<Secret>, ConfigError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(ConfigError::field(field, "must not be empty")),
        Some(v) => Ok(Some(Secret::new(v.clone()))),
        None => Ok(None),
    }
}

fn address(field: &str, value: Option<&String>) -> Result<Option<String>, ConfigError> {
    match value {
        Some(a) => btp::ilp_v4::Address::new(a)
            .map(|_| Some(a.clone()))
            .map_err(|e| ConfigError::value(field, ParseError::IlpAddress(e))),
        None => Ok(None),
    }
}

impl RawModern {
    /// Validates the table of peer `peer` (whose legacy options give the defaults for the asset).
    pub(crate) fn into_config(
        self,
        peer: &PeerConfig,
        field: &str,
    ) -> Result<ModernConfig, ConfigError> {
        let f = |name: &str| format!("{field}.modern.{name}");
        let need = |name: &str, v: Option<String>| {
            v.ok_or_else(|| {
                ConfigError::field(f(name), format!("required when link = {:?}", self.link))
            })
        };
        let transport = match self.link.as_str() {
            "btp-client" => {
                let url = need("url", self.url.clone())?;
                btp::transport::BtpUrl::parse(&url)
                    .map_err(|e| ConfigError::value(f("url"), ParseError::BtpUrl(e)))?;
                ModernTransport::BtpClient {
                    url: Secret::new(url),
                }
            }
            "btp-server" => ModernTransport::BtpServer {
                listen: self.listen.ok_or_else(|| {
                    ConfigError::field(f("listen"), "required when link = \"btp-server\"")
                })?,
                incoming_token: secret(&f("incoming_token"), self.incoming_token.as_ref())?,
            },
            "http" => {
                let url = need("url", self.url.clone())?;
                let parsed = url::Url::parse(&url)
                    .map_err(|e| ConfigError::value(f("url"), ParseError::Url(e)))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::field(f("url"), "must be an http or https URL"));
                }
                let path = self
                    .path
                    .clone()
                    .unwrap_or_else(|| DEFAULT_HTTP_PATH.to_owned());
                if !path.starts_with('/') {
                    return Err(ConfigError::field(f("path"), "must start with /"));
                }
                ModernTransport::Http {
                    url,
                    token: secret(&f("token"), self.token.as_ref())?,
                    listen: self.listen.ok_or_else(|| {
                        ConfigError::field(f("listen"), "required when link = \"http\"")
                    })?,
                    path,
                    incoming_token: secret(&f("incoming_token"), self.incoming_token.as_ref())?,
                }
            }
            other => {
                return Err(ConfigError::field(
                    f("link"),
                    format!("{other:?} is not one of \"btp-client\", \"btp-server\", \"http\""),
                ))
            }
        };
        // A listener open to other hosts must authenticate the connector.
        let open = match &transport {
            ModernTransport::BtpServer {
                listen,
                incoming_token,
            } => (!listen.ip().is_loopback() && incoming_token.is_none()).then_some(listen),
            ModernTransport::Http {
                listen,
                incoming_token,
                ..
            } => (!listen.ip().is_loopback() && incoming_token.is_none()).then_some(listen),
            ModernTransport::BtpClient { .. } => None,
        };
        if let Some(listen) = open {
            if !self.allow_unauthenticated {
                return Err(ConfigError::field(
                    f("listen"),
                    format!(
                        "{listen} is not a loopback address and no incoming_token is set: set incoming_token, \
                         or allow_unauthenticated = true if something in front authenticates the connector"
                    ),
                ));
            }
            tracing::warn!(peer = %peer.name, %listen, "the modern side listens off loopback without a token (allow_unauthenticated)");
        }
        let info = peer.info.as_ref();
        let asset_code = match (self.asset_code, info.and_then(|i| i.currency_code.clone())) {
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => {
                return Err(ConfigError::field(
                    f("asset_code"),
                    "required: the legacy options give no info.currencyCode",
                ))
            }
        };
        let asset_scale = match (self.asset_scale, info.and_then(|i| i.currency_scale)) {
            (Some(s), _) => s,
            (None, Some(s)) => s,
            (None, None) => {
                return Err(ConfigError::field(
                    f("asset_scale"),
                    "required: the legacy options give no info.currencyScale",
                ))
            }
        };
        let legacy_scale = match (self.legacy_scale, info.and_then(|i| i.currency_scale)) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => {
                return Err(ConfigError::field(
                    f("legacy_scale"),
                    "required: the legacy options give no info.currencyScale",
                ))
            }
        };
        let settlement = match (
            self.settlement_listen,
            self.settlement_connector_url.clone(),
        ) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::field(
                    f("settlement_connector_url"),
                    "required when settlement_listen is set",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::field(
                    f("settlement_listen"),
                    "required when settlement_connector_url is set",
                ))
            }
            (Some(listen), Some(url)) => {
                let parsed = url::Url::parse(&url).map_err(|e| {
                    ConfigError::value(f("settlement_connector_url"), ParseError::Url(e))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::field(
                        f("settlement_connector_url"),
                        "must be an http or https URL",
                    ));
                }
                // The RFC 38 API moves money and interledger-rs calls it without credentials.
                if !listen.ip().is_loopback() && !self.allow_unauthenticated {
                    return Err(ConfigError::field(
                        f("settlement_listen"),
                        format!(
                            "{listen} is not a loopback address: the settlement-engine API has no \
                             authentication (interledger-rs sends none); keep it on loopback, or set \
                             allow_unauthenticated = true if something in front authenticates the connector"
                        ),
                    ));
                }
                Some(ModernSettlement {
                    listen,
                    connector_url: url,
                })
            }
        };
        let relation = self.relation.unwrap_or(ModernRelation::Child);
        if self.ilp_address.is_none() && peer.prefix.is_none() && relation != ModernRelation::Parent
        {
            return Err(ConfigError::field(
                f("ilp_address"),
                "required: the legacy options give no prefix to derive it from, and only a parent tells it",
            ));
        }
        let positive = |name: &str, ms: Option<u64>, default: Duration| match ms {
            Some(0) => Err(ConfigError::field(f(name), "must be more than 0")),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok(default),
        };
        Ok(ModernConfig {
            transport,
            relation,
            asset_code,
            asset_scale,
            legacy_scale,
            ilp_address: address(&f("ilp_address"), self.ilp_address.as_ref())?,
            child_address: address(&f("child_address"), self.child_address.as_ref())?,
            expiry_margin: positive(
                "expiry_margin_ms",
                self.expiry_margin_ms,
                DEFAULT_BRIDGE_EXPIRY_MARGIN,
            )?,
            min_window: positive(
                "min_window_ms",
                self.min_window_ms,
                DEFAULT_BRIDGE_MIN_WINDOW,
            )?,
            allow_unauthenticated: self.allow_unauthenticated,
            settlement,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::node::NodeConfig;

    const LEGACY: &str = r#"
        [[peer]]
        name = "kit"
        options = { listener = { port = 4195 }, incomingSecret = "s", maxBalance = "100", prefix = "g.kit.", info = { currencyCode = "USD", currencyScale = 9 } }
    "#;

    fn parse(modern: &str) -> Result<NodeConfig, super::ConfigError> {
        NodeConfig::parse(&format!("{LEGACY}\n[peer.modern]\n{modern}"))
    }

    #[test]
    fn a_btp_client_bridge_takes_its_asset_from_the_legacy_info() -> Result<(), super::ConfigError>
    {
        let c = parse(
            r#"link = "btp-client"
            url = "btp+ws://:tok@127.0.0.1:7770/accounts/kit/ilp/btp""#,
        )?;
        let m = c
            .modern
            .get("kit")
            .ok_or_else(|| super::ConfigError::field("test", "no modern side"))?;
        assert!(matches!(
            m.transport,
            super::ModernTransport::BtpClient { .. }
        ));
        assert_eq!((m.asset_code.as_str(), m.asset_scale), ("USD", 9));
        assert_eq!(m.relation, super::ModernRelation::Child);
        assert_eq!(m.expiry_margin, super::DEFAULT_BRIDGE_EXPIRY_MARGIN);
        assert!(
            !format!("{m:?}").contains("tok"),
            "the URL's token is not printed"
        );
        Ok(())
    }

    #[test]
    fn bad_modern_sides_are_refused_naming_the_field() {
        let err = |modern: &str| {
            parse(modern)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(r#"link = "smoke-signals""#).contains("peer[0].modern.link"));
        assert!(err(r#"link = "btp-client""#).contains("peer[0].modern.url"));
        assert!(err(r#"link = "btp-server""#).contains("peer[0].modern.listen"));
        assert!(err(r#"link = "http"
            url = "ftp://x/""#)
        .contains("http or https"));
        // Off loopback without a token.
        assert!(err(r#"link = "btp-server"
            listen = "0.0.0.0:7780""#)
        .contains("incoming_token"));
        assert!(err(r#"link = "btp-server"
            listen = "0.0.0.0:7780"
            incoming_token = " ""#)
        .contains("must not be empty"));
        assert!(err(r#"link = "btp-server"
            listen = "127.0.0.1:7780"
            expiry_margin_ms = 0"#)
        .contains("expiry_margin_ms"));
        assert!(err(r#"link = "btp-server"
            listen = "127.0.0.1:7780"
            ilp_address = "not an address""#)
        .contains("ilp_address"));
        assert!(err(r#"link = "btp-server"
            listen = "127.0.0.1:7780"
            colour = "blue""#)
        .contains("colour"));
        assert!(parse(
            r#"link = "btp-server"
            listen = "0.0.0.0:7780"
            allow_unauthenticated = true"#
        )
        .is_ok());
    }

    #[test]
    fn settlement_keys_come_together_and_stay_on_loopback() {
        let err = |extra: &str| {
            parse(&format!(
                "link = \"btp-client\"\nurl = \"btp+ws://:t@127.0.0.1:7770/x\"\n{extra}"
            ))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(err(r#"settlement_listen = "127.0.0.1:3100""#)
            .contains("peer[0].modern.settlement_connector_url"));
        assert!(err(r#"settlement_connector_url = "http://127.0.0.1:7771""#)
            .contains("peer[0].modern.settlement_listen"));
        assert!(err(
            "settlement_listen = \"127.0.0.1:3100\"\nsettlement_connector_url = \"redis://x\""
        )
        .contains("http or https"));
        let off = err(
            "settlement_listen = \"0.0.0.0:3100\"\nsettlement_connector_url = \"http://127.0.0.1:7771\"",
        );
        assert!(
            off.contains("peer[0].modern.settlement_listen") && off.contains("loopback"),
            "{off}"
        );
        assert_eq!(
            err("settlement_listen = \"127.0.0.1:3100\"\nsettlement_connector_url = \"http://127.0.0.1:7771\""),
            ""
        );
    }
}
