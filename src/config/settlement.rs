//! [`SeConfig`]: the `settlement-engine` section of the node's configuration.
//!
//! ```toml
//! [settlement-engine]
//! listen = "127.0.0.1:3000"            # RFC 38 engine API (the connector calls it)
//! connector = "http://127.0.0.1:7771"  # the connector's settlement API (credits, messages)
//! api_token = "change-me-too"         # optional bearer token of the engine API (required off loopback)
//! admin_listen = "127.0.0.1:3001"      # operator API; off unless admin_token is set
//! admin_token = "change-me"
//! module = "trustline"                 # a stock channel module
//! module_options = { scale = 6, trustLimit = "1000000" }  # trustline: credit IOUs up to this (default 0)
//! connector_scale = 9                  # optional: credit at this scale before the first settle request
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::redact::{OptionNames, SecretSet, UrlWithoutPassword};

/// Default engine API address (settlement-core and the Ethereum engine use port 3000).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
/// Default connector settlement API (interledger-rs `settlement_api_bind_address`).
pub const DEFAULT_CONNECTOR: &str = "http://127.0.0.1:7771";
/// Default admin API address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:3001";

/// Configuration of the settlement engine. It has no folder of its own: the engine keeps its records in the node's
/// database (the top-level `data_dir`, keys under `se/`), so a `data_dir` here is refused as an unknown key.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SeConfig {
    /// Address of the RFC 38 engine API. Off loopback it needs `api_token` (or `allow_unauthenticated`).
    pub listen: SocketAddr,
    /// Bearer token the engine API requires on every request, when set (never logged). interledger-rs and the
    /// Java connector send none, so it is optional; see [`SeConfig::check_listen`].
    pub api_token: Option<String>,
    /// Serve the engine API on a non-loopback `listen` without `api_token` anyway (logged at warn): for a
    /// network that only trusted hosts can reach.
    pub allow_unauthenticated: bool,
    /// Base URL of the connector's settlement API.
    pub connector: String,
    /// Address of the admin (operator) API. It only runs when `admin_token` is set.
    pub admin_listen: SocketAddr,
    /// Bearer token of the admin API (never logged).
    pub admin_token: Option<String>,
    /// Stock channel module name (`iou` or its alias `trustline`, `xrp-paychan`, `eth-payment`, `eth-channel`;
    /// `claim-test` only in builds with the `testing` feature).
    pub module: String,
    /// The module's options (legacy plugin options JSON).
    pub module_options: serde_json::Value,
    /// Scale at which incoming settlements are credited to the connector until a settle request tells the
    /// account's scale. Unset: credit at the module's scale (exact; the connector converts).
    pub connector_scale: Option<u8>,
    /// Per-account override of `connector_scale` (account ID → scale); beats what settle requests tell.
    pub account_connector_scales: HashMap<String, u8>,
    /// First retry delay of failed settlements, credits and account setup, in milliseconds.
    pub retry_initial_ms: u64,
    /// Longest retry delay, in milliseconds (RFC 38: at most 1 h).
    pub retry_max_ms: u64,
}

impl std::fmt::Debug for SeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so a field added to SeConfig does not compile until it is placed here, shown or hidden.
        let SeConfig {
            listen,
            api_token,
            allow_unauthenticated,
            connector,
            admin_listen,
            admin_token,
            module,
            module_options,
            connector_scale,
            account_connector_scales,
            retry_initial_ms,
            retry_max_ms,
        } = self;
        f.debug_struct("SeConfig")
            .field("listen", listen)
            .field("api_token", &SecretSet(api_token.as_deref()))
            .field("allow_unauthenticated", allow_unauthenticated)
            .field("connector", &UrlWithoutPassword(connector))
            .field("admin_listen", admin_listen)
            .field("admin_token", &SecretSet(admin_token.as_deref()))
            .field("module", module)
            .field("module_options", &OptionNames(module_options))
            .field("connector_scale", connector_scale)
            .field("account_connector_scales", account_connector_scales)
            .field("retry_initial_ms", retry_initial_ms)
            .field("retry_max_ms", retry_max_ms)
            .finish()
    }
}

/// Default first retry delay.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Default and largest retry delay (RFC 38).
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(3600);

impl Default for SeConfig {
    fn default() -> Self {
        SeConfig {
            listen: parse_addr(DEFAULT_LISTEN),
            api_token: None,
            allow_unauthenticated: false,
            connector: DEFAULT_CONNECTOR.to_owned(),
            admin_listen: parse_addr(DEFAULT_ADMIN_LISTEN),
            admin_token: None,
            module: "trustline".to_owned(),
            module_options: serde_json::Value::Object(serde_json::Map::new()),
            connector_scale: None,
            account_connector_scales: HashMap::new(),
            retry_initial_ms: DEFAULT_RETRY_INITIAL.as_millis() as u64,
            retry_max_ms: MAX_RETRY_INTERVAL.as_millis() as u64,
        }
    }
}

fn parse_addr(s: &str) -> SocketAddr {
    // The defaults above are literal, valid socket addresses.
    s.parse().expect("default socket address literal is valid")
}

impl SeConfig {
    /// Checks what the engine needs before it starts: no empty token ([`SeConfig::check_secrets`]) and no
    /// unauthenticated engine API off loopback ([`SeConfig::check_listen`] on `listen`). Errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_secrets()?;
        if let serde_json::Value::Object(options) = &self.module_options {
            super::legacy_options::check_module_option_names(
                "module_options",
                &self.module,
                options,
            )?;
        }
        self.check_listen(self.listen)
    }

    /// Refuses an empty (or blank) `admin_token` or `api_token`: a token a client can present by sending nothing.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        for (field, token) in [
            ("admin_token", &self.admin_token),
            ("api_token", &self.api_token),
        ] {
            if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(ConfigError::field(
                    field,
                    "must not be empty: leave it out to turn it off",
                ));
            }
        }
        Ok(())
    }

    /// Refuses to serve the engine API on `addr` when other hosts could reach it without a token: the API
    /// settles and credits money, so on a non-loopback address it needs `api_token`, unless
    /// `allow_unauthenticated = true` says the network is trusted.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        if addr.ip().is_loopback() || self.api_token.is_some() || self.allow_unauthenticated {
            return Ok(());
        }
        Err(ConfigError::field(
            "listen",
            format!(
                "{addr} is not a loopback address and api_token is not set, so anyone who can reach it could settle \
                 and credit; set api_token (and have the connector or a proxy in front of it send \
                 \"Authorization: Bearer <api_token>\"), listen on 127.0.0.1, or set allow_unauthenticated = true \
                 if only trusted hosts can reach it"
            ),
        ))
    }

    /// First retry delay.
    pub fn retry_initial(&self) -> Duration {
        Duration::from_millis(self.retry_initial_ms.max(1))
    }

    /// Longest retry delay, never above 1 h.
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms.max(1)).min(MAX_RETRY_INTERVAL)
    }
}
