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

/// A lookup in the real process environment (injected by tests).
type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The variables of an `env.list`, looked up as ILP Kit does: the real process environment first, then the file.
pub struct EnvList {
    file: HashMap<String, String>,
    env: EnvLookup,
}

impl std::fmt::Debug for EnvList {
    // Values are not shown: they hold passwords (database URLs, secrets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.file.keys().collect();
        names.sort();
        f.debug_struct("EnvList")
            .field("file_names", &names)
            .finish()
    }
}

impl EnvList {
    /// Reads `env.list` at `path`; `env` looks up the process environment (injected by tests).
    pub fn read_with(
        path: &Path,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<EnvList, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(EnvList {
            file: parse_env_list(&text)?,
            env: Box::new(env),
        })
    }

    /// Reads `env.list` at `path`, with the real process environment.
    pub fn read(path: &Path) -> Result<EnvList, ConfigError> {
        Self::read_with(path, |k| std::env::var(k).ok())
    }

    /// The value of `name`: the environment's when set there, else the file's. An empty value counts as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.env)(name)
            .or_else(|| self.file.get(name).cloned())
            .filter(|v| !v.is_empty())
    }

    /// The `CONNECTOR_LEDGERS` entries, all of them (those of other plugins too).
    pub fn ledgers(&self) -> Result<Vec<LedgerEntry>, ConfigError> {
        let ledgers = self.get(CONNECTOR_LEDGERS).ok_or_else(|| {
            ConfigError::field(
                CONNECTOR_LEDGERS,
                "not set in env.list nor in the environment",
            )
        })?;
        ledger_entries(&ledgers)
    }
}

/// Reads `env.list` at `path` (process environment variables win) and returns a [`PeerConfig`] for every
/// legacy-plugin ledger.
pub fn load_env(path: &Path) -> Result<Vec<PeerConfig>, ConfigError> {
    load_env_with(path, |k| std::env::var(k).ok())
}

/// [`load_env`] with an injected environment lookup (tests).
pub fn load_env_with(
    path: &Path,
    env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> Result<Vec<PeerConfig>, ConfigError> {
    peers_of(EnvList::read_with(path, env)?.ledgers()?)
}

/// One `CONNECTOR_LEDGERS` entry.
#[derive(Clone)]
pub struct LedgerEntry {
    /// The ledger prefix (the entry's key).
    pub prefix: String,
    /// The entry's `currency`, if a string.
    pub currency: Option<String>,
    /// The npm name of the plugin.
    pub plugin: String,
    /// The entry's `store` (default `false`): whether the plugin kept a persistent store.
    pub store: bool,
    /// For a [`LEGACY_PLUGIN_NAME`] entry: the options as the connector hands them to the plugin (`prefix`
    /// overwritten with the key, `store` set to the entry's `store`). For other plugins: `options` as written.
    pub options: Value,
}

impl std::fmt::Debug for LedgerEntry {
    // The options hold secrets: shown by option names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerEntry")
            .field("prefix", &self.prefix)
            .field("currency", &self.currency)
            .field("plugin", &self.plugin)
            .field("store", &self.store)
            .field("options", &super::redact::OptionNames(&self.options))
            .finish()
    }
}

impl LedgerEntry {
    /// Whether ilp-bridge takes this ledger over (its plugin is [`LEGACY_PLUGIN_NAME`]).
    pub fn is_legacy(&self) -> bool {
        self.plugin == LEGACY_PLUGIN_NAME
    }

    /// The peer this entry runs as; errors name the field inside `CONNECTOR_LEDGERS`.
    pub fn peer(&self) -> Result<PeerConfig, ConfigError> {
        PeerConfig::from_legacy_json(&self.prefix, &self.options)
            .map_err(|err| err.within(&format!("{CONNECTOR_LEDGERS}.{}.options", self.prefix)))
    }
}

/// Parses a `CONNECTOR_LEDGERS` JSON text into its entries, in the order written.
pub fn ledger_entries(json: &str) -> Result<Vec<LedgerEntry>, ConfigError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| ConfigError::value(CONNECTOR_LEDGERS, ParseError::StrictJson(e)))?;
    let Value::Object(entries) = v else {
        return Err(ConfigError::field(
            CONNECTOR_LEDGERS,
            "must be a JSON object",
        ));
    };
    let mut out = Vec::with_capacity(entries.len());
    for (prefix, entry) in &entries {
        let path = format!("{CONNECTOR_LEDGERS}.{prefix}");
        let Value::Object(e) = entry else {
            return Err(ConfigError::field(path, "must be an object"));
        };
        let plugin = match e.get("plugin") {
            Some(Value::String(p)) => p.clone(),
            _ => {
                return Err(ConfigError::field(
                    format!("{path}.plugin"),
                    "must be a string",
                ))
            }
        };
        let currency = e.get("currency").and_then(Value::as_str).map(str::to_owned);
        if plugin != LEGACY_PLUGIN_NAME {
            out.push(LedgerEntry {
                prefix: prefix.clone(),
                currency,
                store: matches!(e.get("store"), Some(Value::Bool(true))),
                options: e.get("options").cloned().unwrap_or(Value::Null),
                plugin,
            });
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
        out.push(LedgerEntry {
            prefix: prefix.clone(),
            currency,
            plugin,
            store,
            options: Value::Object(options),
        });
    }
    Ok(out)
}

/// Builds the peers of a `CONNECTOR_LEDGERS` JSON text.
pub fn peers_from_connector_ledgers(json: &str) -> Result<Vec<PeerConfig>, ConfigError> {
    peers_of(ledger_entries(json)?)
}

fn peers_of(entries: Vec<LedgerEntry>) -> Result<Vec<PeerConfig>, ConfigError> {
    let mut peers = Vec::new();
    for entry in entries {
        if !entry.is_legacy() {
            tracing::info!(ledger = %entry.prefix, plugin = %entry.plugin, "ledger skipped: not ilp-plugin-payment-channel-framework");
            continue;
        }
        peers.push(entry.peer()?);
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
        let peers = load_env_with(&path, move |k| {
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
