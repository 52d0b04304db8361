//! The node's `[admin]` section: the operator listener of the whole node (health and readiness probes,
//! Prometheus metrics, the BTP peers' admin API, the settlement engine's admin routes, the status page).
//!
//! ```toml
//! [admin]
//! listen = "127.0.0.1:3002"   # default
//! token = "change-me"         # required: every route but /health, /ready, /metrics and the page needs it
//! ```
//!
//! The engine's own `[settlement-engine] admin_listen` / `admin_token` keep working as before (a second
//! listener with the engine's routes only); see `README.md`, "Operating ilp-bridge".

use std::net::SocketAddr;

use serde::Deserialize;

use super::error::ConfigError;

/// Default address of the node's admin listener: loopback, next to the engine's 3000 (API) and 3001 (admin).
pub const DEFAULT_NODE_ADMIN_LISTEN: &str = "127.0.0.1:3002";

/// The environment variable `ilp-bridge status` and the other admin commands read the token from when
/// `--token` is not given.
pub const ADMIN_TOKEN_ENV: &str = "ILP_BRIDGE_ADMIN_TOKEN";

/// `[admin]` as written in the TOML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    listen: Option<String>,
    token: Option<String>,
}

/// The node's admin listener, validated.
#[derive(Clone)]
pub struct AdminConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Bearer token of every protected route (never logged).
    pub token: String,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl RawAdmin {
    /// Checks the section: a parseable `listen` and a token that is present and not blank.
    pub(crate) fn validate(self) -> Result<AdminConfig, ConfigError> {
        let listen_text = self
            .listen
            .unwrap_or_else(|| DEFAULT_NODE_ADMIN_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            ConfigError::field(
                "admin.listen",
                format!("{listen_text:?} is not an address:port ({e})"),
            )
        })?;
        let token = match self.token {
            Some(t) if !t.trim().is_empty() => t,
            Some(_) => {
                return Err(ConfigError::field(
                    "admin.token",
                    "must not be empty: a blank token would admit anyone who sends nothing",
                ))
            }
            None => {
                return Err(ConfigError::field(
                    "admin.token",
                    "is required: the admin API changes limits and sends payments, so it needs a bearer token",
                ))
            }
        };
        Ok(AdminConfig { listen, token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AdminConfig, ConfigError> {
        let raw: RawAdmin =
            toml::from_str(text).map_err(|e| ConfigError::field("toml", e.to_string()))?;
        raw.validate()
    }

    #[test]
    fn a_token_is_required_and_must_not_be_blank() -> Result<(), ConfigError> {
        let missing = parse("listen = \"127.0.0.1:1\"")
            .err()
            .map(|e| e.to_string());
        assert!(
            missing
                .as_deref()
                .is_some_and(|m| m.contains("admin.token") && m.contains("required")),
            "{missing:?}"
        );
        let blank = parse("token = \"  \"").err().map(|e| e.to_string());
        assert!(
            blank
                .as_deref()
                .is_some_and(|m| m.contains("admin.token") && m.contains("empty")),
            "{blank:?}"
        );
        let bad = parse("token = \"t\"\nlisten = \"nowhere\"")
            .err()
            .map(|e| e.to_string());
        assert!(
            bad.as_deref().is_some_and(|m| m.contains("admin.listen")),
            "{bad:?}"
        );
        let ok = parse("token = \"t\"")?;
        assert_eq!(ok.listen.to_string(), DEFAULT_NODE_ADMIN_LISTEN);
        assert_eq!(ok.token, "t");
        assert!(!format!("{ok:?}").contains("\"t\""));
        Ok(())
    }
}
