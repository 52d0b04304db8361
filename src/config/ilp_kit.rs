//! ILP Kit's `env.list`: start every `CONNECTOR_LEDGERS` entry that uses `ilp-plugin-payment-channel-framework`,
//! exactly as ILP Kit's connector (ilp-connector ^21.1.9) would (docs/ilp-kit.md §1–§4).
//!
//! * `env.list`: one `KEY=value` per line, split at the first `=`, key and value trimmed; quotes are *not*
//!   removed (Docker env-file rules); blank lines and lines starting with `#` are skipped. A variable set in the
//!   real process environment wins over the file.
//! * `CONNECTOR_LEDGERS`: one strict-JSON object `{"<ledgerPrefix>": {currency, plugin, options, store?,
//!   overrideInfo?}}`.
//! * For each entry whose `plugin` is [`LEGACY_PLUGIN_NAME`]: `options.prefix` is overwritten with the ledger key
//!   (as the connector does), and the entry's `store` (default `false`) decides stateful vs stateless, as the
//!   connector passes `_store` only when `store: true`. Other plugins are skipped (logged at info).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::error::{ConfigError, ParseError};
use super::legacy::PeerConfig;

/// The npm name of the legacy plugin in `CONNECTOR_LEDGERS`.
pub const LEGACY_PLUGIN_NAME: &str = "ilp-plugin-payment-channel-framework";

/// The variable holding the ledgers.
pub const CONNECTOR_LEDGERS: &str = "CONNECTOR_LEDGERS";

/// Parses the text of an `env.list` file into its variables (later lines win over earlier ones).
pub fn parse_env_list(text: &str) -> Result<HashMap<String, String>, ConfigError> {
    let mut vars = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((k, v)) = trimmed.split_once('=') else {
            return Err(ConfigError::field(
                format!("env.list line {}", n + 1),
                "expected KEY=value",
            ));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(ConfigError::field(
                format!("env.list line {}", n + 1),
                "empty variable name",
            ));
        }
        vars.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(vars)
}

/// Reads `env.list` at `path` (process environment variables win) and returns a [`PeerConfig`] for every
/// legacy-plugin ledger.
pub fn load_env(path: &Path) -> Result<Vec<PeerConfig>, ConfigError> {
    load_env_with(path, |k| std::env::var(k).ok())
}

/// [`load_env`] with an injected environment lookup (tests).
pub fn load_env_with(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<PeerConfig>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let file_vars = parse_env_list(&text)?;
    let ledgers = env(CONNECTOR_LEDGERS)
        .or_else(|| file_vars.get(CONNECTOR_LEDGERS).cloned())
        .ok_or_else(|| {
            ConfigError::field(
                CONNECTOR_LEDGERS,
                "not set in env.list nor in the environment",
            )
        })?;
    peers_from_connector_ledgers(&ledgers)
}

/// Builds the peers of a `CONNECTOR_LEDGERS` JSON text.
pub fn peers_from_connector_ledgers(json: &str) -> Result<Vec<PeerConfig>, ConfigError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| ConfigError::value(CONNECTOR_LEDGERS, ParseError::StrictJson(e)))?;
    let Value::Object(entries) = v else {
        return Err(ConfigError::field(
            CONNECTOR_LEDGERS,
            "must be a JSON object",
        ));
    };
    let mut peers = Vec::new();
    for (prefix, entry) in &entries {
        let path = format!("{CONNECTOR_LEDGERS}.{prefix}");
        let Value::Object(e) = entry else {
            return Err(ConfigError::field(path, "must be an object"));
        };
        let plugin = match e.get("plugin") {
            Some(Value::String(p)) => p.as_str(),
            _ => {
                return Err(ConfigError::field(
                    format!("{path}.plugin"),
                    "must be a string",
                ))
            }
        };
        if plugin != LEGACY_PLUGIN_NAME {
            tracing::info!(ledger = %prefix, plugin, "ledger skipped: not ilp-plugin-payment-channel-framework");
            continue;
        }
        let store = match e.get("store") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ConfigError::field(
                    format!("{path}.store"),
                    "must be true or false",
                ))
            }
        };
        let mut options = match e.get("options") {
            Some(Value::Object(o)) => o.clone(),
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(_) => {
                return Err(ConfigError::field(
                    format!("{path}.options"),
                    "must be an object",
                ))
            }
        };
        // The connector overwrites the plugin's prefix with the ledger key and passes `_store` only when the
        // entry says `store: true`.
        options.insert("prefix".to_owned(), Value::String(prefix.clone()));
        options.insert("store".to_owned(), Value::Bool(store));
        if let Some(over) = e.get("overrideInfo") {
            tracing::info!(ledger = %prefix, has_override = !over.is_null(), "overrideInfo is a connector-side setting; not applied to the peer");
        }
        let peer = PeerConfig::from_legacy_json(prefix, &Value::Object(options))
            .map_err(|err| err.within(&format!("{path}.options")))?;
        peers.push(peer);
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_modules::amount::LedgerBalance;
    use channel_modules::store::Limit;

    const LEDGERS: &str = r#"{"g.eur.mytrustline.":{"currency":"EUR","plugin":"ilp-plugin-payment-channel-framework","store":true,"options":{"listener":{"port":1801},"incomingSecret":"s3cr3t","maxBalance":"1000","prefix":"ignored.","info":{"currencyCode":"EUR","currencyScale":9,"connectors":[]}}},"g.usd.other.":{"currency":"USD","plugin":"ilp-plugin-bells","options":{}},"peer.usd.":{"currency":"USD","plugin":"ilp-plugin-payment-channel-framework","options":{"server":"btp+ws://:pw@localhost:1802"}}}"#;

    #[test]
    fn env_list_lines() -> Result<(), ConfigError> {
        let v = parse_env_list("# comment\n\n  A = b=c \nQ=\"quoted\"\n")?;
        assert_eq!(v.get("A").map(String::as_str), Some("b=c"));
        assert_eq!(v.get("Q").map(String::as_str), Some("\"quoted\""));
        assert!(parse_env_list("novalue\n").is_err());
        Ok(())
    }

    #[test]
    fn ledgers_become_peers_with_key_as_prefix() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("env.list");
        std::fs::write(
            &path,
            format!("API_HOSTNAME=example.com\nCONNECTOR_LEDGERS={LEDGERS}\n"),
        )?;
        let peers = load_env_with(&path, |_| None)?;
        assert_eq!(peers.len(), 2);
        let server = peers
            .iter()
            .find(|p| p.name == "g.eur.mytrustline.")
            .ok_or("server missing")?;
        assert_eq!(server.prefix.as_deref(), Some("g.eur.mytrustline."));
        assert!(server.stateful);
        assert_eq!(server.max_balance, Limit::Finite(LedgerBalance(1000)));
        let client = peers
            .iter()
            .find(|p| p.name == "peer.usd.")
            .ok_or("client missing")?;
        assert_eq!(client.prefix.as_deref(), Some("peer.usd."));
        assert!(!client.stateful);

        // A real environment variable wins over the file.
        let other = r#"{"x.":{"plugin":"ilp-plugin-payment-channel-framework","options":{"server":"btp+ws://:a@h:1"}}}"#;
        let peers = load_env_with(&path, |k| {
            (k == CONNECTOR_LEDGERS).then(|| other.to_owned())
        })?;
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].name, "x.");
        Ok(())
    }

    #[test]
    fn bad_entries_name_the_field() {
        let bad = r#"{"a.":{"plugin":"ilp-plugin-payment-channel-framework","store":true,"options":{"listener":{"port":1},"incomingSecret":"x","info":{}}}}"#;
        match peers_from_connector_ledgers(bad) {
            Err(ConfigError::Field { field, .. }) => {
                assert_eq!(field, "CONNECTOR_LEDGERS.a..options.maxBalance")
            }
            other => panic!("unexpected {other:?}"),
        }
        let not_json = peers_from_connector_ledgers("{'a':1}");
        assert!(
            matches!(
                &not_json,
                Err(ConfigError::Value { field, source }) if field == CONNECTOR_LEDGERS
                    && matches!(source.downcast_ref(), Some(ParseError::StrictJson(_)))
            ),
            "{not_json:?}"
        );
    }
}
