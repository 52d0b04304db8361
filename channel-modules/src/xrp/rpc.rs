//! A minimal rippled JSON-RPC client: exactly the calls the `xrp-paychan` module makes.
//!
//! rippled's JSON-RPC takes `POST /` with `{"method": m, "params": [{…}]}` and answers HTTP 200 with
//! `{"result": {…, "status": "success" | "error"}}`; failures carry `error` (a string code such as
//! `entryNotFound`) and `error_message`. Transaction results come back in `engine_result`
//! (`tesSUCCESS`, `tec…`, `tem…`).
//!
//! Calls used:
//! * `ledger_entry` with `payment_channel` (validated ledger): the facts of one channel;
//! * `submit` in sign-and-submit mode (`tx_json` + `secret`): rippled fills `Fee`/`Sequence` and signs. This
//!   avoids implementing the XRPL binary codec here, at the price of sending the secret to the rippled
//!   server: only use a rippled you run yourself.
//!
//! The family seed never travels in clear text: [`RippledClient::submit_with_secret`] refuses a URL that is
//! plain `http://` to a host other than loopback (`seed_may_travel_to`; the module refuses such a `rippled`
//! option at start already), the client never follows redirects (a 3xx answer would otherwise carry the
//! request body, seed included, to wherever `Location` points), and plain-http requests bypass any
//! environment proxy. `https://` URLs are checked against the Mozilla root set of `webpki-roots` (rustls).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde_json::{json, Value};

use super::crypto::{ChannelId, PublicKey};

/// Seconds between the Unix epoch and the Ripple epoch (2000-01-01T00:00:00Z).
pub const RIPPLE_EPOCH_OFFSET_SECS: u64 = 946_684_800;
/// Timeout of one rippled request.
pub const RIPPLED_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors talking to rippled.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RippledError {
    /// The request did not complete (connection refused, timeout).
    #[error("rippled unreachable: {0}")]
    Transport(String),
    /// rippled answered with a non-success HTTP status.
    #[error("rippled answered http status {0}")]
    HttpStatus(u16),
    /// The answer is not the JSON shape expected.
    #[error("unexpected rippled response: {0}")]
    Decode(String),
    /// The URL is not an absolute `http://` or `https://` URL.
    #[error("invalid rippled url {0}")]
    InvalidUrl(String),
    /// Sign-and-submit refused: the family seed would travel over plain http to a host that is not loopback.
    #[error(
        "refusing to send the family seed to {0}: plain http to a host that is not loopback (use https)"
    )]
    SeedInClearText(String),
    /// rippled answered `status: error`.
    #[error("rippled error {code}: {message}")]
    Rpc {
        /// The error code string (`entryNotFound`, `invalidParams`, …).
        code: String,
        /// `error_message`, if any.
        message: String,
    },
}

/// The facts of a payment channel, as a `PayChannel` ledger entry holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelFacts {
    /// Channel ID.
    pub id: ChannelId,
    /// Source (payer) address.
    pub account: String,
    /// Destination (payee) address.
    pub destination: String,
    /// Total drops deposited.
    pub amount: u64,
    /// Drops already paid out.
    pub balance: u64,
    /// Key that signs claims.
    pub public_key: PublicKey,
    /// Seconds the source must wait after requesting close.
    pub settle_delay: u32,
    /// Mutable expiry (Ripple-epoch seconds), set when the source asks to close.
    pub expiration: Option<u32>,
    /// Immutable expiry (Ripple-epoch seconds).
    pub cancel_after: Option<u32>,
}

impl ChannelFacts {
    /// When the channel can no longer be claimed from: the earlier of `Expiration` and `CancelAfter`.
    pub fn closes_at(&self) -> Option<SystemTime> {
        let earliest = match (self.expiration, self.cancel_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(ripple_time_to_system(earliest))
    }

    /// Whether the channel is closed for claims at `now` (rippled closes it once the parent ledger's close time
    /// is past the expiry; we treat reaching it as closed).
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.closes_at().is_some_and(|at| now >= at)
    }

    /// Parses a `PayChannel` ledger entry object (`ledger_entry`'s `node`).
    pub fn from_ledger_node(node: &Value) -> Result<Self, RippledError> {
        let text = |field: &str| -> Result<&str, RippledError> {
            node.get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| RippledError::Decode(format!("PayChannel has no string {field}")))
        };
        let drops = |field: &str| -> Result<u64, RippledError> {
            text(field)?
                .parse()
                .map_err(|_| RippledError::Decode(format!("PayChannel {field} is not drops")))
        };
        let seconds = |field: &str| -> Result<Option<u32>, RippledError> {
            match node.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|s| u32::try_from(s).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        RippledError::Decode(format!("PayChannel {field} is not a UInt32"))
                    }),
            }
        };
        if node.get("LedgerEntryType").and_then(Value::as_str) != Some("PayChannel") {
            return Err(RippledError::Decode(
                "ledger entry is not a PayChannel".to_owned(),
            ));
        }
        let id = node
            .get("index")
            .and_then(Value::as_str)
            .ok_or_else(|| RippledError::Decode("PayChannel has no index".to_owned()))?
            .parse()
            .map_err(|e| RippledError::Decode(format!("PayChannel index: {e}")))?;
        Ok(ChannelFacts {
            id,
            account: text("Account")?.to_owned(),
            destination: text("Destination")?.to_owned(),
            amount: drops("Amount")?,
            balance: drops("Balance")?,
            public_key: PublicKey::parse(text("PublicKey")?)
                .map_err(|e| RippledError::Decode(format!("PayChannel PublicKey: {e}")))?,
            settle_delay: seconds("SettleDelay")?
                .ok_or_else(|| RippledError::Decode("PayChannel has no SettleDelay".to_owned()))?,
            expiration: seconds("Expiration")?,
            cancel_after: seconds("CancelAfter")?,
        })
    }
}

/// Converts Ripple-epoch seconds to a `SystemTime`.
pub fn ripple_time_to_system(seconds: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(RIPPLE_EPOCH_OFFSET_SECS + u64::from(seconds))
}

/// Converts a `SystemTime` to Ripple-epoch seconds (saturating at the ends of the UInt32 range).
pub fn system_to_ripple_time(at: SystemTime) -> u32 {
    let unix = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(unix.saturating_sub(RIPPLE_EPOCH_OFFSET_SECS)).unwrap_or(u32::MAX)
}

/// What rippled said about a submitted transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitOutcome {
    /// `engine_result`, e.g. `tesSUCCESS`, `tecUNFUNDED_PAYMENT`, `temBAD_SIGNATURE`.
    pub engine_result: String,
    /// `engine_result_message`.
    pub engine_result_message: String,
    /// The transaction hash (`tx_json.hash`), if given.
    pub hash: Option<String>,
}

impl SubmitOutcome {
    /// Whether the transaction was applied or queued (`tesSUCCESS`, `terQUEUED`). Final only once validated.
    pub fn is_success(&self) -> bool {
        self.engine_result == "tesSUCCESS" || self.engine_result == "terQUEUED"
    }
}

/// Parses a rippled JSON-RPC URL: absolute, `http` or `https`, with a host.
pub(crate) fn parse_rippled_url(url: &str) -> Result<Url, RippledError> {
    let parsed = Url::parse(url).map_err(|e| RippledError::InvalidUrl(format!("{url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(RippledError::InvalidUrl(format!(
            "{url:?}: not an http:// or https:// url"
        )));
    }
    Ok(parsed)
}

/// Whether the family seed may be sent to `url` for sign-and-submit: over `https` to any host, or over plain
/// `http` only to a loopback host (`127.0.0.0/8`, `::1`, `localhost`), where it never leaves the machine.
pub(crate) fn seed_may_travel_to(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => is_loopback_host(url),
        _ => false,
    }
}

/// Whether the URL's host is loopback: an IPv4 address in `127.0.0.0/8`, `::1`, or the name `localhost`
/// (which the resolver answers from the hosts file with a loopback address).
fn is_loopback_host(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed (`[::1]`); domains come lowercased.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare == "localhost",
    }
}

/// Most `account_channels` pages [`RippledClient::account_channels`] reads.
pub const ACCOUNT_CHANNELS_MAX_PAGES: usize = 1_000;

/// A rippled JSON-RPC endpoint.
#[derive(Clone, Debug)]
pub struct RippledClient {
    url: Url,
    http: reqwest::Client,
}

impl RippledClient {
    /// A client for the JSON-RPC URL (e.g. `http://127.0.0.1:5005/`). It follows no redirects, and plain-http
    /// requests go straight to the host, never through a proxy from the environment: both would carry the
    /// body (the seed, for [`RippledClient::submit_with_secret`]) to another server.
    pub fn new(url: &str) -> Result<Self, RippledError> {
        let url = parse_rippled_url(url)?;
        let mut builder = reqwest::Client::builder()
            .timeout(RIPPLED_REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if url.scheme() == "http" {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| RippledError::Transport(e.to_string()))?;
        Ok(RippledClient { url, http })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Calls `method` with one parameter object and returns its `result` object (status `success`).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RippledError> {
        let body = json!({ "method": method, "params": [params] });
        let response = self
            .http
            .post(self.url.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| RippledError::Transport(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(RippledError::HttpStatus(status.as_u16()));
        }
        let mut answer: Value = response
            .json()
            .await
            .map_err(|e| RippledError::Decode(e.to_string()))?;
        let result = answer
            .get_mut("result")
            .map(Value::take)
            .ok_or_else(|| RippledError::Decode("no result".to_owned()))?;
        if result.get("status").and_then(Value::as_str) == Some("error")
            || result.get("error").is_some()
        {
            let code = result
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned();
            let message = result
                .get("error_message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            return Err(RippledError::Rpc { code, message });
        }
        Ok(result)
    }

    /// The channel's facts from the latest validated ledger, or `None` if it does not exist (never created, or
    /// closed).
    pub async fn payment_channel(
        &self,
        id: &ChannelId,
    ) -> Result<Option<ChannelFacts>, RippledError> {
        let params = json!({ "payment_channel": id.to_string(), "ledger_index": "validated" });
        match self.call("ledger_entry", params).await {
            Ok(result) => {
                let node = result
                    .get("node")
                    .ok_or_else(|| RippledError::Decode("ledger_entry has no node".to_owned()))?;
                ChannelFacts::from_ledger_node(node).map(Some)
            }
            Err(RippledError::Rpc { code, .. }) if code == "entryNotFound" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The IDs of every channel from `account` to `destination` in the latest validated ledger
    /// (`account_channels`, following its `marker` across pages).
    pub async fn account_channels(
        &self,
        account: &str,
        destination: &str,
    ) -> Result<Vec<ChannelId>, RippledError> {
        let mut ids = Vec::new();
        let mut marker: Option<Value> = None;
        // rippled pages at most 400 channels; a bound on pages keeps a server that repeats its marker finite.
        for _ in 0..ACCOUNT_CHANNELS_MAX_PAGES {
            let mut params = json!({
                "account": account,
                "destination_account": destination,
                "ledger_index": "validated",
            });
            if let Some(m) = marker.take() {
                params["marker"] = m;
            }
            let result = self.call("account_channels", params).await?;
            let channels = result
                .get("channels")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    RippledError::Decode("account_channels has no channels".to_owned())
                })?;
            for c in channels {
                let id = c
                    .get("channel_id")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<ChannelId>().ok())
                    .ok_or_else(|| {
                        RippledError::Decode(
                            "account_channels entry without a channel_id".to_owned(),
                        )
                    })?;
                ids.push(id);
            }
            match result.get("marker") {
                None | Some(Value::Null) => return Ok(ids),
                Some(m) => marker = Some(m.clone()),
            }
        }
        Err(RippledError::Decode(format!(
            "account_channels still paging after {ACCOUNT_CHANNELS_MAX_PAGES} pages"
        )))
    }

    /// Submits `tx_json` in sign-and-submit mode with the account's family seed. Refused
    /// ([`RippledError::SeedInClearText`]) unless `seed_may_travel_to` the client's URL: the module checks
    /// its option at start, and this check stands right before the seed is sent in case a client was built
    /// some other way.
    pub async fn submit_with_secret(
        &self,
        tx_json: Value,
        seed: &str,
    ) -> Result<SubmitOutcome, RippledError> {
        if !seed_may_travel_to(&self.url) {
            return Err(RippledError::SeedInClearText(self.url.to_string()));
        }
        let result = self
            .call("submit", json!({ "tx_json": tx_json, "secret": seed }))
            .await?;
        let engine_result = result
            .get("engine_result")
            .and_then(Value::as_str)
            .ok_or_else(|| RippledError::Decode("submit has no engine_result".to_owned()))?
            .to_owned();
        Ok(SubmitOutcome {
            engine_result,
            engine_result_message: result
                .get("engine_result_message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            hash: result
                .pointer("/tx_json/hash")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}
