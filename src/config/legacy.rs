//! The legacy plugin options JSON (`ilp-plugin-payment-channel-framework` 1.1.3 / 1.3.x), parsed verbatim into a
//! typed [`PeerConfig`].
//!
//! An operator can paste the `options` object of an ILP Kit `CONNECTOR_LEDGERS` entry (or of a hand-written
//! plugin instantiation) and get the same peer: a server (`listener`) or a client (`server` URL), its limits, its
//! prefix and ledger info. Rules follow docs/legacy-btp.md §3 (authentication) and §9.1 (stateful and stateless
//! modes):
//!
//! * `listener: {port (default 4195), cert, key, ca}`: TLS needs all three files (legacy silently never listens
//!   without `ca`; we refuse the configuration instead).
//! * `server: "btp+ws[s]://[user]:secret@host:port/path"`: user and secret are percent-decoded and removed, the
//!   websocket URL is the rest minus `btp+`.
//! * `incomingSecret`: the token an inbound client must present (with an empty username).
//! * `maxBalance` / `minBalance`: decimal integer strings (`"Infinity"` / `"-Infinity"` allowed); numbers are
//!   accepted too, with a warning.
//! * Stateful vs stateless: legacy is stateful iff a store object is passed (`_store`), which JSON cannot carry.
//!   Here the `store` boolean decides (ILP Kit's ledger-level `store`); when absent, a peer is stateful iff
//!   `maxBalance` is given, since legacy ignores `maxBalance` in stateless mode anyway.
//! * Without `server`, `prefix` and `info` are required (legacy constructor error).
//!
//! An option name the plugin does not know is refused by name ([`PLUGIN_OPTIONS`], [`BRIDGE_OPTIONS`]); those it
//! knows and ilp-bridge does not apply ([`UNUSED_PLUGIN_OPTIONS`]) are accepted and logged by name (never by
//! value: they may be secrets). Bad values are refused with a [`ConfigError`] naming the field and the reason. Secrets are held in [`Secret`], whose `Debug` is
//! redacted.

use std::fmt;
use std::path::PathBuf;

use channel_modules::amount::LedgerBalance;
use channel_modules::store::Limit;

use serde_json::{Map, Value};

use super::error::{ConfigError, ParseError};
use super::legacy_options::check_option_names;
pub use super::legacy_options::{BRIDGE_OPTIONS, PLUGIN_OPTIONS, UNUSED_PLUGIN_OPTIONS};
pub use super::peer_set::{
    validate_peer_name, validate_peer_set, validate_prefix, PeerNameError, PrefixError,
    PREFIX_MAX_LEN,
};
use super::prepare_limits::PrepareLimits;
use super::redact::OptionNames;

/// Default listener port of the legacy plugin.
pub const DEFAULT_LISTENER_PORT: u16 = 4195;

/// A secret string (auth token, incoming secret). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; only for the authentication check and the auth message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The websocket listener of a server peer (`listener` option).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// TCP port (legacy default 4195). Port 0 asks the OS for a free port (tests).
    pub port: u16,
    /// TLS files, when `cert` is given (then `key` and `ca` are required too).
    pub tls: Option<TlsFiles>,
}

/// PEM file paths of a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// CA bundle (legacy requires it).
    pub ca: PathBuf,
}

/// The `server` option of a client peer, split as the legacy client does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    /// The websocket URL to dial (`ws://…` or `wss://…`), credentials removed.
    pub ws_url: String,
    /// `auth_username` (percent-decoded; must be empty for a legacy server to accept it).
    pub username: String,
    /// `auth_token` (percent-decoded).
    pub token: Secret,
    /// The URL as configured, credentials included (hence a [`Secret`]).
    pub url: Secret,
}

/// The ledger info (`info` option, and the `info` side-protocol reply).
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerInfo {
    /// Currency code (e.g. `USD`), if given.
    pub currency_code: Option<String>,
    /// Currency scale (digits after the decimal point of one ledger unit).
    pub currency_scale: Option<u8>,
    /// The whole object as configured (other fields are passed through to the peer unchanged).
    pub raw: Map<String, Value>,
}

impl LedgerInfo {
    /// Parses the `info` object.
    pub fn from_json(v: &Value) -> Result<Self, ConfigError> {
        let Value::Object(raw) = v else {
            return Err(ConfigError::field("info", "must be an object"));
        };
        let currency_code = match raw.get("currencyCode") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ConfigError::field("info.currencyCode", "must be a string")),
        };
        let currency_scale = match raw.get("currencyScale") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|s| u8::try_from(s).ok())
                    .ok_or_else(|| {
                        ConfigError::field("info.currencyScale", "must be an integer in 0..=255")
                    })?,
            ),
            Some(Value::String(s)) => Some(s.parse::<u8>().map_err(|_| {
                ConfigError::field("info.currencyScale", "must be an integer in 0..=255")
            })?),
            Some(_) => return Err(ConfigError::field("info.currencyScale", "must be a number")),
        };
        if let Some(c) = raw.get("connectors") {
            if !c.is_array() {
                return Err(ConfigError::field("info.connectors", "must be an array"));
            }
        }
        if let Some(p) = raw.get("prefix") {
            if !p.is_string() {
                return Err(ConfigError::field("info.prefix", "must be a string"));
            }
        }
        Ok(LedgerInfo {
            currency_code,
            currency_scale,
            raw: raw.clone(),
        })
    }

    /// The info as sent to the peer: the configured object with `prefix` filled in when it has none (legacy
    /// "autofill prefix from opts").
    pub fn to_json(&self, prefix: &str) -> Value {
        let mut m = self.raw.clone();
        if !matches!(m.get("prefix"), Some(Value::String(p)) if !p.is_empty()) {
            m.insert("prefix".to_owned(), Value::String(prefix.to_owned()));
        }
        Value::Object(m)
    }

    /// The `prefix` field inside the info object, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.raw.get("prefix").and_then(Value::as_str)
    }
}

/// A typed legacy peer configuration: everything ilp-bridge needs to run one BTP/1.0 trustline. Its `Debug`
/// shows the options object by option names only (see [`super::redact`]).
#[derive(Clone, PartialEq)]
pub struct PeerConfig {
    /// Name of the peer: keys its durable records and its logs. ILP Kit: the ledger key.
    pub name: String,
    /// Inbound websocket listener (server role).
    pub listener: Option<ListenerConfig>,
    /// Outbound URL (client role).
    pub server: Option<ServerUrl>,
    /// Token inbound clients must present (username `""`).
    pub incoming_secret: Option<Secret>,
    /// Most the peer may owe us (`maxBalance`); unbounded when stateless.
    pub max_balance: Limit,
    /// Least (most negative) balance we accept (`minBalance`, i.e. how much we may owe); default unbounded.
    pub min_balance: Limit,
    /// The ILP prefix of this ledger; a client without one learns it from the server's info at connect.
    pub prefix: Option<String>,
    /// Ledger info; a client without one learns it from the server at connect.
    pub info: Option<LedgerInfo>,
    /// Legacy stateful mode: account `prefix+"server"`, configured limits, expiry timers. Stateless: account
    /// `prefix+"client"`, limits ±Infinity. ilp-bridge keeps durable records in both modes.
    pub stateful: bool,
    /// Name of the channel module (`iou` or its alias `trustline`, `xrp-paychan`, `eth-payment`, `eth-channel`;
    /// `claim-test` only in builds with the `testing` feature); `None` runs without a module (legacy stub).
    pub module: Option<String>,
    /// The options object as given (module options are read from it, or from `moduleOptions` if present).
    pub raw: Value,
    /// How much the peer can make the node hold. ilp-bridge's own settings, not legacy options: the node TOML
    /// sets them per `[[peer]]` beside `options`; peers from legacy options alone (an ILP Kit `env.list`) get
    /// the defaults.
    pub limits: PrepareLimits,
    /// Extra CA certificates (a PEM file) trusted when dialing this peer's `btp+wss` server, beside the
    /// `webpki-roots` set. ilp-bridge's own setting (`[[peer]] ca_bundle`), not a legacy option: the legacy
    /// client took it from the process-wide `NODE_EXTRA_CA_CERTS`. Checked readable and valid at start.
    pub ca_bundle: Option<PathBuf>,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so a field added to PeerConfig does not compile until it is placed here, shown or hidden.
        let PeerConfig {
            name,
            listener,
            server,
            incoming_secret,
            max_balance,
            min_balance,
            prefix,
            info,
            stateful,
            module,
            raw,
            limits,
            ca_bundle,
        } = self;
        f.debug_struct("PeerConfig")
            .field("name", name)
            .field("listener", listener)
            .field("server", server)
            .field("incoming_secret", incoming_secret)
            .field("max_balance", max_balance)
            .field("min_balance", min_balance)
            .field("prefix", prefix)
            .field("info", info)
            .field("stateful", stateful)
            .field("module", module)
            .field("raw", &OptionNames(raw))
            .field("limits", limits)
            .field("ca_bundle", ca_bundle)
            .finish()
    }
}

impl PeerConfig {
    /// Parses the legacy options JSON of the peer `name`.
    pub fn from_legacy_json(name: &str, options: &Value) -> Result<Self, ConfigError> {
        let Value::Object(obj) = options else {
            return Err(ConfigError::field("options", "must be a JSON object"));
        };
        validate_peer_name(name).map_err(|r| ConfigError::value("name", r))?;
        check_option_names(name, obj)?;

        let listener = match obj.get("listener") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_listener(v)?),
        };
        let server = match obj.get("server") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_server_url(s)?),
            Some(_) => return Err(ConfigError::field("server", "must be a string")),
        };
        let incoming_secret = match obj.get("incomingSecret") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => {
                return Err(ConfigError::field(
                    "incomingSecret",
                    "must not be empty: a client sending no token at all would log in",
                ))
            }
            Some(Value::String(s)) => Some(Secret::new(s.clone())),
            Some(_) => return Err(ConfigError::field("incomingSecret", "must be a string")),
        };
        let prefix = match obj.get("prefix") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                validate_prefix(s).map_err(|r| ConfigError::value("prefix", r))?;
                Some(s.clone())
            }
            Some(_) => return Err(ConfigError::field("prefix", "must be a string")),
        };
        let info = match obj.get("info") {
            None | Some(Value::Null) => None,
            Some(v) => Some(LedgerInfo::from_json(v)?),
        };
        let max = match obj.get("maxBalance") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_limit(name, "maxBalance", v)?),
        };
        let min = match obj.get("minBalance") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_limit(name, "minBalance", v)?),
        };
        let stateful = match obj.get("store") {
            None | Some(Value::Null) => max.is_some(),
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ConfigError::field("store", "must be true or false")),
        };
        let module = match obj.get("module") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => return Err(ConfigError::field("module", "must be a non-empty string")),
        };

        if listener.is_none() && server.is_none() {
            return Err(ConfigError::field(
                "listener",
                "either \"listener\" (server) or \"server\" (client) is required",
            ));
        }
        if server.is_none() && (prefix.is_none() || info.is_none()) {
            return Err(ConfigError::field(
                if prefix.is_none() { "prefix" } else { "info" },
                "when running in server mode, the 'prefix' and 'info' config parameters are required",
            ));
        }
        if listener.is_some() && incoming_secret.is_none() {
            return Err(ConfigError::field(
                "incomingSecret",
                "required with \"listener\": no client could authenticate without it",
            ));
        }
        if stateful && max.is_none() {
            return Err(ConfigError::field(
                "maxBalance",
                "required for a stateful peer (store: true)",
            ));
        }
        if module.is_some() && !stateful {
            return Err(ConfigError::field(
                "module",
                "a payment-channel module needs a stateful peer (store: true and maxBalance)",
            ));
        }
        let (max_balance, min_balance) = if stateful {
            (
                max.unwrap_or(Limit::Unbounded),
                min.unwrap_or(Limit::Unbounded),
            )
        } else {
            (Limit::Unbounded, Limit::Unbounded)
        };
        if let (Limit::Finite(max), Limit::Finite(min)) = (max_balance, min_balance) {
            if min > max {
                return Err(ConfigError::field(
                    "minBalance",
                    format!("must not be greater than maxBalance ({min} > {max})"),
                ));
            }
        }
        if let (Some(p), Some(i)) = (&prefix, &info) {
            if let Some(ip) = i.prefix() {
                if !ip.is_empty() && ip != p {
                    return Err(ConfigError::field(
                        "info.prefix",
                        format!("{ip:?} differs from prefix {p:?}"),
                    ));
                }
            }
        }

        Ok(PeerConfig {
            name: name.to_owned(),
            listener,
            server,
            incoming_secret,
            max_balance,
            min_balance,
            prefix,
            info,
            stateful,
            module,
            raw: options.clone(),
            limits: PrepareLimits::default(),
            ca_bundle: None,
        })
    }

    /// Parses a legacy options JSON text (as pasted into a config file).
    pub fn from_legacy_str(name: &str, json: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| ConfigError::value("options", ParseError::Json(e)))?;
        Self::from_legacy_json(name, &v)
    }

    /// The options handed to the channel module: `moduleOptions` when present, else the whole options object.
    pub fn module_options(&self) -> Value {
        self.raw
            .get("moduleOptions")
            .cloned()
            .unwrap_or_else(|| self.raw.clone())
    }
}

fn parse_listener(v: &Value) -> Result<ListenerConfig, ConfigError> {
    let Value::Object(o) = v else {
        return Err(ConfigError::field("listener", "must be an object"));
    };
    let port = match o.get("port") {
        None | Some(Value::Null) => DEFAULT_LISTENER_PORT,
        Some(Value::Number(n)) => {
            n.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| {
                    ConfigError::field("listener.port", "must be an integer in 0..=65535")
                })?
        }
        Some(Value::String(s)) => s
            .parse::<u16>()
            .map_err(|_| ConfigError::field("listener.port", "must be an integer in 0..=65535"))?,
        Some(_) => return Err(ConfigError::field("listener.port", "must be a number")),
    };
    let path = |name: &str| -> Result<Option<PathBuf>, ConfigError> {
        match o.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
            Some(_) => Err(ConfigError::field(
                format!("listener.{name}"),
                "must be a file path string",
            )),
        }
    };
    let (cert, key, ca) = (path("cert")?, path("key")?, path("ca")?);
    let tls =
        match (cert, key, ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
            (None, _, _) => {
                return Err(ConfigError::field(
                    "listener.cert",
                    "required when listener.key or listener.ca is set",
                ))
            }
            (Some(_), None, _) => {
                return Err(ConfigError::field(
                    "listener.key",
                    "required when listener.cert is set",
                ))
            }
            (Some(_), Some(_), None) => return Err(ConfigError::field(
                "listener.ca",
                "required when listener.cert is set (the legacy listener never starts without it)",
            )),
        };
    Ok(ListenerConfig { port, tls })
}

/// Parses a `btp+ws[s]://user:secret@host:port/path` URL as the legacy client does.
pub fn parse_server_url(s: &str) -> Result<ServerUrl, ConfigError> {
    let mut url =
        url::Url::parse(s).map_err(|e| ConfigError::value("server", ParseError::NotUrl(e)))?;
    let ws_scheme = match url.scheme() {
        "btp+ws" => "ws",
        "btp+wss" => "wss",
        _ => {
            return Err(ConfigError::field(
                "server",
                "server protocol must be \"btp+wss:\" or \"btp+ws:\"",
            ))
        }
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::field("server", "has no host"));
    }
    let username = percent_decode(url.username()).ok_or_else(|| {
        ConfigError::field("server", "username is not valid percent-encoded UTF-8")
    })?;
    let token = percent_decode(url.password().unwrap_or(""))
        .ok_or_else(|| ConfigError::field("server", "secret is not valid percent-encoded UTF-8"))?;
    // Removing credentials cannot fail on a URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let rest = url.as_str();
    let Some(after_scheme) = rest.strip_prefix(url.scheme()) else {
        return Err(ConfigError::field("server", "unexpected URL form"));
    };
    let ws_url = format!("{ws_scheme}{after_scheme}");
    if !username.is_empty() {
        tracing::warn!(
            "server URL has a non-empty username; a legacy server accepts only an empty username"
        );
    }
    Ok(ServerUrl {
        ws_url,
        username,
        token: Secret::new(token),
        url: Secret::new(s),
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // As decodeURIComponent: a % must be followed by exactly two hex digits.
            let high = hex(*bytes.get(i + 1)?)?;
            let low = hex(*bytes.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `maxBalance`/`minBalance`: a decimal integer string, `"Infinity"`/`"-Infinity"`, or (with a warning)
/// a JSON integer.
fn parse_limit(peer: &str, field: &str, v: &Value) -> Result<Limit, ConfigError> {
    match v {
        Value::String(s) => parse_limit_str(s).map_err(|r| ConfigError::value(field, r)),
        Value::Number(n) => {
            tracing::warn!(
                peer,
                option = field,
                "legacy expects a string; number accepted"
            );
            n.as_i64()
                .map(|i| Limit::Finite(LedgerBalance(i128::from(i))))
                .ok_or_else(|| ConfigError::field(field, "must be an integer"))
        }
        _ => Err(ConfigError::field(
            field,
            "must be a decimal integer string",
        )),
    }
}

/// Parses a limit string: optional sign and decimal digits, or `Infinity` / `-Infinity` (unbounded).
pub fn parse_limit_str(s: &str) -> Result<Limit, LimitError> {
    let t = s.trim();
    match t {
        "Infinity" | "+Infinity" | "-Infinity" => return Ok(Limit::Unbounded),
        _ => {}
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LimitError::NotDecimal(s.to_owned()));
    }
    t.parse::<i128>()
        .map(|v| Limit::Finite(LedgerBalance(v)))
        .map_err(|_| LimitError::OutOfRange(s.to_owned()))
}

/// Why [`parse_limit_str`] refused a limit (the text as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// Not a decimal integer.
    #[error("{0:?} is not a decimal integer (fractions and exponents are refused)")]
    NotDecimal(String),
    /// Beyond what a limit can hold.
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_options_as_ilp_kit_writes_them() -> Result<(), ConfigError> {
        let c = PeerConfig::from_legacy_json(
            "g.eur.mytrustline.",
            &json!({
                "listener": {"port": 9000},
                "incomingSecret": "pass",
                "maxBalance": "10000",
                "minBalance": "-500",
                "prefix": "g.eur.mytrustline.",
                "info": {"currencyCode": "EUR", "currencyScale": 9, "connectors": []},
                "store": true
            }),
        )?;
        assert_eq!(
            c.listener,
            Some(ListenerConfig {
                port: 9000,
                tls: None
            })
        );
        assert!(c.stateful);
        assert_eq!(c.max_balance, Limit::Finite(LedgerBalance(10000)));
        assert_eq!(c.min_balance, Limit::Finite(LedgerBalance(-500)));
        let info = c.info.as_ref().map(|i| i.to_json("g.eur.mytrustline."));
        assert_eq!(
            info,
            Some(
                json!({"currencyCode": "EUR", "currencyScale": 9, "connectors": [], "prefix": "g.eur.mytrustline."})
            )
        );
        assert_eq!(c.info.and_then(|i| i.currency_scale), Some(9));
        assert_eq!(
            c.incoming_secret.map(|s| s.expose().to_owned()),
            Some("pass".to_owned())
        );
        Ok(())
    }

    #[test]
    fn client_url_is_split_and_decoded() -> Result<(), ConfigError> {
        let c = PeerConfig::from_legacy_json(
            "x",
            &json!({"server": "btp+ws://:tok%20en@localhost:9000"}),
        )?;
        let s = c
            .server
            .ok_or_else(|| ConfigError::field("server", "missing"))?;
        assert_eq!(s.ws_url, "ws://localhost:9000");
        assert_eq!(s.username, "");
        assert_eq!(s.token.expose(), "tok en");
        assert!(!c.stateful, "no maxBalance, no store: stateless");
        assert_eq!(c.max_balance, Limit::Unbounded);
        let s = parse_server_url("btp+wss://bob:s%40cret@example.com/some/path")?;
        assert_eq!(s.ws_url, "wss://example.com/some/path");
        assert_eq!(s.username, "bob");
        assert_eq!(s.token.expose(), "s@cret");
        Ok(())
    }

    /// The secret is decoded as the legacy client decodes it (`decodeURIComponent`), which throws on a `%` not
    /// followed by two hex digits: such a URL is refused, not read some other way. Found by the fuzz campaign's
    /// `legacy_options` target: `%+1` was read as the byte 1 (Rust's `from_str_radix` takes a sign).
    #[test]
    fn malformed_percent_escapes_in_the_secret_are_refused() -> Result<(), ConfigError> {
        for bad in ["%+1", "%-1", "a%4", "%", "%g0", "tok%"] {
            let r = parse_server_url(&format!("btp+ws://:{bad}@localhost:9000"));
            assert!(
                matches!(&r, Err(e) if e.to_string().contains("percent-encoded")),
                "{bad:?}: {r:?}"
            );
        }
        let s = parse_server_url("btp+ws://:%41%2b@localhost:9000")?;
        assert_eq!(s.token.expose(), "A+");
        Ok(())
    }

    #[test]
    fn secrets_are_not_printed() -> Result<(), ConfigError> {
        let c = PeerConfig::from_legacy_json(
            "x",
            &json!({"server": "btp+ws://:hunter2@localhost:9000", "listener": {"port": 1},
                    "incomingSecret": "hunter3", "prefix": "a.", "info": {}}),
        )?;
        let dbg = format!("{:?}", (c.server, c.incoming_secret));
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("hunter3"),
            "{dbg}"
        );
        Ok(())
    }

    fn field_of(r: Result<PeerConfig, ConfigError>) -> String {
        match r {
            Err(e) => e
                .field_path()
                .map_or_else(|| format!("unexpected: {e:?}"), str::to_owned),
            other => format!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let base =
            json!({"listener": {"port": 9000}, "incomingSecret": "p", "prefix": "a.", "info": {}});
        let with = |k: &str, v: Value| {
            let mut o = base.clone();
            o[k] = v;
            PeerConfig::from_legacy_json("p", &o)
        };
        assert_eq!(field_of(with("maxBalance", json!("1.5"))), "maxBalance");
        assert_eq!(field_of(with("maxBalance", json!("1e3"))), "maxBalance");
        assert_eq!(field_of(with("minBalance", json!("abc"))), "minBalance");
        assert_eq!(
            field_of(with("listener", json!({"port": 70000}))),
            "listener.port"
        );
        assert_eq!(
            field_of(with(
                "listener",
                json!({"port": 1, "cert": "c", "key": "k"})
            )),
            "listener.ca"
        );
        assert_eq!(field_of(with("server", json!("http://x:1"))), "server");
        assert_eq!(field_of(with("prefix", json!("a b."))), "prefix");
        assert_eq!(
            field_of(with("info", json!({"currencyScale": 300}))),
            "info.currencyScale"
        );
        assert_eq!(field_of(with("store", json!(true))), "maxBalance");
        assert_eq!(field_of(with("store", json!("yes"))), "store");
        let mut o = base.clone();
        o.as_object_mut().map(|m| m.remove("info"));
        assert_eq!(field_of(PeerConfig::from_legacy_json("p", &o)), "info");
        let mut o = base.clone();
        o.as_object_mut().map(|m| m.remove("incomingSecret"));
        assert_eq!(
            field_of(PeerConfig::from_legacy_json("p", &o)),
            "incomingSecret"
        );
        assert_eq!(
            field_of(PeerConfig::from_legacy_json("p", &json!({"prefix": "a."}))),
            "listener"
        );
        let mut o = base;
        o["maxBalance"] = json!("10");
        o["minBalance"] = json!("20");
        assert_eq!(
            field_of(PeerConfig::from_legacy_json("p", &o)),
            "minBalance"
        );
    }

    #[test]
    fn stateless_limits_are_unbounded() -> Result<(), ConfigError> {
        let c = PeerConfig::from_legacy_json(
            "p",
            &json!({"server": "btp+ws://:s@h:1", "maxBalance": "100", "store": false}),
        )?;
        assert!(!c.stateful);
        assert_eq!(c.max_balance, Limit::Unbounded);
        assert_eq!(c.min_balance, Limit::Unbounded);
        assert_eq!(parse_limit_str("Infinity"), Ok(Limit::Unbounded));
        assert_eq!(
            parse_limit_str("-42"),
            Ok(Limit::Finite(LedgerBalance(-42)))
        );
        Ok(())
    }
}
