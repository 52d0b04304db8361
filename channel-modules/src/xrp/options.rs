//! The options of `xrp-paychan` (legacy plugin options JSON or the module section of the TOML config), parsed
//! into [`Options`] with errors that name the option. The table of options is on
//! [`XrpPaychan::from_options`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::crypto::{self, ChannelId, KeyPair};
use super::rpc::{self, RippledClient};
use super::{
    invalid, Inner, State, XrpPaychan, DEFAULT_EXPIRY_CHECK_INTERVAL, DEFAULT_EXPIRY_MARGIN_SECS,
    DEFAULT_MIN_SETTLE_DELAY_SECS, MIN_EXPIRY_CHECK_INTERVAL,
};
use crate::error::ModuleError;

/// Parsed options (secrets kept only inside [`KeyPair`]).
pub(super) struct Options {
    pub(super) address: String,
    pub(super) keys: KeyPair,
    /// The key that signs claims on our outgoing channel, when it is not `keys` (option `channelSecret`).
    pub(super) channel_keys: Option<KeyPair>,
    pub(super) channel: Option<ChannelId>,
    pub(super) peer_channel: Option<ChannelId>,
    pub(super) max_unsecured: u128,
    pub(super) claim_interval: Option<Duration>,
    pub(super) min_settle_delay_secs: u32,
    pub(super) expiry_margin: Duration,
    pub(super) expiry_check_interval: Duration,
}

/// The watcher interval: `configured` (or [`DEFAULT_EXPIRY_CHECK_INTERVAL`]), but at most half of each of
/// `expiryMargin`, `minSettleDelay` and `minSettleDelay − expiryMargin` (those that are positive), so that a
/// check always falls inside the margin before the peer's channel closes; never below
/// [`MIN_EXPIRY_CHECK_INTERVAL`] unless configured lower.
fn watcher_interval(
    configured: Option<Duration>,
    min_settle_delay_secs: u32,
    expiry_margin: Duration,
) -> Duration {
    let settle_delay = Duration::from_secs(u64::from(min_settle_delay_secs));
    let mut bound = DEFAULT_EXPIRY_CHECK_INTERVAL;
    for window in [
        expiry_margin,
        settle_delay,
        settle_delay.saturating_sub(expiry_margin),
    ] {
        if !window.is_zero() {
            bound = bound.min(window / 2);
        }
    }
    match configured {
        Some(interval) => interval.min(bound.max(MIN_EXPIRY_CHECK_INTERVAL)),
        None => bound.max(MIN_EXPIRY_CHECK_INTERVAL),
    }
}

fn opt_str<'a>(options: &'a Value, name: &str) -> Result<Option<&'a str>, ModuleError> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(format!(
            "xrp-paychan option {name} must be a string"
        ))),
    }
}

/// An unsigned integer given as a JSON number or a decimal string.
fn opt_uint(options: &Value, name: &str) -> Result<Option<u128>, ModuleError> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(|v| Some(u128::from(v))).ok_or_else(|| {
            invalid(format!(
                "xrp-paychan option {name} must be a non-negative integer"
            ))
        }),
        Some(Value::String(s)) => s.trim().parse::<u128>().map(Some).map_err(|_| {
            invalid(format!(
                "xrp-paychan option {name} must be a non-negative integer"
            ))
        }),
        Some(_) => Err(invalid(format!(
            "xrp-paychan option {name} must be an integer"
        ))),
    }
}

/// Reads the secret from exactly one of `secret`, `secretFile` (a path) or `secretEnv` (a variable name).
fn read_secret(options: &Value) -> Result<KeyPair, ModuleError> {
    let inline = opt_str(options, "secret")?;
    let file = opt_str(options, "secretFile")?;
    let env = opt_str(options, "secretEnv")?;
    let secret = match (inline, file, env) {
        (Some(s), None, None) => s.to_owned(),
        (None, Some(path), None) => std::fs::read_to_string(Path::new(path))
            .map_err(|e| invalid(format!("xrp-paychan secretFile {path:?}: {e}")))?,
        (None, None, Some(var)) => std::env::var(var).map_err(|_| {
            invalid(format!(
                "xrp-paychan secretEnv: variable {var:?} is not set"
            ))
        })?,
        (None, None, None) => {
            return Err(invalid(
                "xrp-paychan needs one of secret, secretFile, secretEnv",
            ));
        }
        _ => {
            return Err(invalid(
                "xrp-paychan takes only one of secret, secretFile, secretEnv",
            ))
        }
    };
    KeyPair::from_secret(secret.trim()).map_err(|e| invalid(format!("xrp-paychan: {e}")))
}

fn parse_channel(options: &Value, name: &str) -> Result<Option<ChannelId>, ModuleError> {
    opt_str(options, name)?
        .map(|s| {
            s.parse()
                .map_err(|e| invalid(format!("xrp-paychan option {name}: {e}")))
        })
        .transpose()
}

impl Options {
    /// The key that signs claims on our outgoing channel: `channelSecret`, else the account key.
    pub(super) fn claim_keys(&self) -> &KeyPair {
        self.channel_keys.as_ref().unwrap_or(&self.keys)
    }
}

/// Reads `channelSecret`: a hex private key or a family seed that signs claims on our outgoing channel.
fn read_channel_secret(options: &Value) -> Result<Option<KeyPair>, ModuleError> {
    opt_str(options, "channelSecret")?
        .map(|s| {
            KeyPair::from_secret(s.trim())
                .map_err(|e| invalid(format!("xrp-paychan option channelSecret: {e}")))
        })
        .transpose()
}

impl XrpPaychan {
    /// Builds the module from its options:
    ///
    /// | option | meaning |
    /// |--|--|
    /// | `rippled` | rippled JSON-RPC URL (required); `https://`, or `http://` to a loopback host when the secret is a family seed (it is sent to rippled to redeem claims) |
    /// | `secret` / `secretFile` / `secretEnv` | our key: a family seed `s…` (needed to submit claims), or a hex private key (`ED`+64 hex: ed25519; 64 hex or `00`+64 hex: secp256k1), given inline, in a file, or in an environment variable (exactly one) |
    /// | `address` | our classic address (default: the key's master address) |
    /// | `channel` | our outgoing channel ID (we are its source); without it we cannot pay |
    /// | `channelSecret` | the key that signs claims on `channel`, when the channel names another key than the account's (hex private key or family seed; channels of the 2017 `ilp-plugin-xrp-paychan` use a key derived per peer, written here by `migrate-ilp-kit`); default: the account key |
    /// | `peerChannel` | the peer's channel to us; default: asked with the `ripple_channel_id` RPC |
    /// | `maxUnsecured` | drops the peer may owe us beyond its best claim (string or number, default `0`) |
    /// | `claimInterval` | if set, milliseconds between submissions of the best incoming claim (default: none) |
    /// | `minSettleDelay` | seconds; the peer's channel must have at least this settle delay (default 3600) |
    /// | `expiryMargin` | seconds before the peer's channel expires at which we submit (default 1800) |
    /// | `expiryCheckInterval` | milliseconds between re-reads of the peer's channel, submitting the best claim once it closes within `expiryMargin` (default 60000; capped at half of `expiryMargin`, `minSettleDelay` and their difference) |
    pub fn from_options(options: &Value) -> Result<Self, ModuleError> {
        if !options.is_object() {
            return Err(invalid("xrp-paychan options must be an object"));
        }
        let rippled = opt_str(options, "rippled")?
            .ok_or_else(|| invalid("xrp-paychan needs option rippled"))?;
        let keys = read_secret(options)?;
        // Redeeming claims sends the family seed to rippled (sign-and-submit): refuse at start a URL it would
        // cross in clear text, rather than at the first redemption. A hex private key is never sent.
        if keys.seed().is_some() {
            let url = rpc::parse_rippled_url(rippled)
                .map_err(|e| invalid(format!("xrp-paychan option rippled: {e}")))?;
            if !rpc::seed_may_travel_to(&url) {
                return Err(invalid(format!(
                    "xrp-paychan option rippled: {url} is plain http to a host that is not loopback, and the \
                     family seed is sent to rippled to redeem claims: use https (or a rippled on 127.0.0.1, \
                     [::1] or localhost)"
                )));
            }
        }
        let address = match opt_str(options, "address")? {
            Some(a) => {
                if crypto::decode_address(a).is_none() {
                    return Err(invalid(format!(
                        "xrp-paychan option address {a:?} is not a classic address"
                    )));
                }
                a.to_owned()
            }
            None => keys.public_key().address(),
        };
        let max_unsecured = opt_uint(options, "maxUnsecured")?.unwrap_or(0);
        let claim_interval = opt_uint(options, "claimInterval")?
            .map(|ms| {
                u64::try_from(ms)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        invalid("xrp-paychan option claimInterval must be a positive number of ms")
                    })
            })
            .transpose()?;
        let min_settle_delay_secs = match opt_uint(options, "minSettleDelay")? {
            Some(v) => u32::try_from(v)
                .map_err(|_| invalid("xrp-paychan option minSettleDelay is too large"))?,
            None => DEFAULT_MIN_SETTLE_DELAY_SECS,
        };
        let expiry_margin = match opt_uint(options, "expiryMargin")? {
            Some(v) => Duration::from_secs(
                u64::try_from(v)
                    .map_err(|_| invalid("xrp-paychan option expiryMargin is too large"))?,
            ),
            None => Duration::from_secs(DEFAULT_EXPIRY_MARGIN_SECS),
        };
        let configured_check = opt_uint(options, "expiryCheckInterval")?
            .map(|ms| {
                u64::try_from(ms)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        invalid(
                            "xrp-paychan option expiryCheckInterval must be a positive number of ms",
                        )
                    })
            })
            .transpose()?;
        let expiry_check_interval =
            watcher_interval(configured_check, min_settle_delay_secs, expiry_margin);
        let client = RippledClient::new(rippled)
            .map_err(|e| invalid(format!("xrp-paychan option rippled: {e}")))?;
        Ok(XrpPaychan {
            inner: Arc::new(Inner {
                opts: Options {
                    address,
                    keys,
                    channel_keys: read_channel_secret(options)?,
                    channel: parse_channel(options, "channel")?,
                    peer_channel: parse_channel(options, "peerChannel")?,
                    max_unsecured,
                    claim_interval,
                    min_settle_delay_secs,
                    expiry_margin,
                    expiry_check_interval,
                },
                client,
                state: Mutex::new(State::default()),
                submit_lock: tokio::sync::Mutex::new(()),
                claim_task: Mutex::new(None),
                watch_task: Mutex::new(None),
            }),
        })
    }
}
