//! `xrp-paychan`: the claim-based XRP Ledger payment-channel module (the legacy `ilp-plugin-xrp-paychan` flow).
//!
//! Each side may pay through its own outgoing channel (configured as `channel`, source = us, destination = the
//! peer). Money moves off-ledger as **claims**: signatures over "`CLM\0` ‖ channel ‖ cumulative drops" (see
//! [`crypto`]). The payee keeps the best claim and redeems it on the ledger with a `PaymentChannelClaim`
//! transaction, at the latest when it disconnects or shortly before the channel expires.
//!
//! * **Payer** — [`ChannelModule::create_outgoing_claim`] signs a claim for the cumulative total (refusing more
//!   than the channel holds) and keeps the best claim sent in the max-value tracker `outgoing_claim`.
//! * **Payee** — learns the peer's channel at `connect` (option `peerChannel`, or the RPC `ripple_channel_id`
//!   to the peer), reads the channel's facts from rippled (`ledger_entry`), and in
//!   [`ChannelModule::handle_incoming_claim`] checks the claim (right channel, destination is us, signature by
//!   the channel's key, not above the deposit, channel not expired) before keeping it in `incoming_claim` and
//!   crediting the increase. The channel is claimed node-wide as identity `xrp:<channel id>` (so no two
//!   accounts of one node take claims on the same channel) only once a claim signed by the channel's key has
//!   verified, just before it is kept and credited, and re-checked before every credit: a peer merely
//!   *naming* someone else's channel in its `ripple_channel_id` reply cannot lock the rightful account out,
//!   since it cannot sign for that channel. Claims *can* be replayed, though (the payer's claims reach the
//!   ledger when redeemed): a second account presenting verified claims on a channel another account holds
//!   makes the identity *contested* and both accounts are refused until the operator configures
//!   `peerChannel` on the rightful one. A configured `peerChannel` is trusted, claimed at `connect`, and takes
//!   the identity over from accounts that only learned it. `handle_incoming_prepare` refuses transfers
//!   that would leave more than `maxUnsecured` drops not covered by the best claim, after asking the payer for
//!   its latest claim ([`RPC_LATEST_CLAIM`]) when fulfilled transfers are not covered yet. Submitted claims are
//!   recorded in `incoming_claim_submitted`.
//! * **Watcher** — while connected, the payee re-reads the peer's channel from rippled every
//!   `expiryCheckInterval` (default 60 s, capped below the margins) and redeems the best claim once the channel
//!   closes within `expiryMargin` (`Expiration` set by a closing payer, or `CancelAfter`): a payer that starts
//!   closing and stops sending claims cannot take back what it owes.
//!
//! Amounts are drops (asset scale 6). The module holds no durable state in memory: the three trackers are the
//! truth, the channel facts are a cache refreshed from rippled.

pub mod crypto;
#[cfg(feature = "testing")]
pub mod fake_rippled;
pub mod rpc;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use num_bigint::BigUint;
use num_traits::ToPrimitive;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::claim::{Claim, IncomingCredit};
use crate::context::ChannelContext;
use crate::error::ModuleError;
use crate::identity::IdentityOrigin;
use crate::module::ChannelModule;
use crate::store::{MaxValue, TransferRecord};
use crate::sync::lock;

use self::crypto::{ChannelId, KeyPair, PublicKey};
use self::rpc::{ChannelFacts, RippledClient, RippledError};

/// Configuration name of this module.
pub const XRP_PAYCHAN_MODULE_NAME: &str = "xrp-paychan";
/// Drops have 6 decimal places relative to XRP.
pub const XRP_ASSET_SCALE: u8 = 6;
/// RPC by which a payee asks the payer for its outgoing channel ID.
pub const RPC_CHANNEL_ID: &str = "ripple_channel_id";
/// RPC by which a payee asks the payer for the claim covering everything the payer's main log says it owes
/// (reply: the claim JSON, or `null`). Used before refusing a transfer over `maxUnsecured`, so a claim missing
/// from a Fulfill response (lost, or not signable at the time) cannot stall a trustline.
pub const RPC_LATEST_CLAIM: &str = "ripple_latest_claim";
/// Tracker holding the best claim we signed (value: drops, data: the claim JSON).
pub const MVT_OUTGOING_CLAIM: &str = "outgoing_claim";
/// Tracker holding the best claim received (value: drops, data: the claim JSON).
pub const MVT_INCOMING_CLAIM: &str = "incoming_claim";
/// Tracker holding the best claim submitted to the ledger (value: drops, data: submit outcome).
pub const MVT_INCOMING_CLAIM_SUBMITTED: &str = "incoming_claim_submitted";
/// Default minimum settle delay accepted on the peer's channel: the payer can close after this many seconds,
/// so the payee needs at least this long to redeem its best claim.
pub const DEFAULT_MIN_SETTLE_DELAY_SECS: u32 = 3600;
/// Default margin before the peer's channel expires at which the payee redeems its best claim.
pub const DEFAULT_EXPIRY_MARGIN_SECS: u64 = 1800;
/// Default interval of the payee's channel watcher (option `expiryCheckInterval`, ms): how often the peer's
/// channel is read again from rippled to catch a payer that started closing it and stopped sending claims.
pub const DEFAULT_EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest watcher interval the clamping in [`XrpPaychan::expiry_check_interval`] goes down to.
pub const MIN_EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long cached channel facts are trusted before they are read again from rippled.
pub const CHANNEL_FACTS_MAX_AGE: Duration = Duration::from_secs(60);

/// Parsed options (secrets kept only inside [`KeyPair`]).
struct Options {
    address: String,
    keys: KeyPair,
    channel: Option<ChannelId>,
    peer_channel: Option<ChannelId>,
    max_unsecured: u128,
    claim_interval: Option<Duration>,
    min_settle_delay_secs: u32,
    expiry_margin: Duration,
    expiry_check_interval: Duration,
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

/// Channel facts with the time they were read.
#[derive(Clone)]
struct Cached {
    facts: ChannelFacts,
    read_at: SystemTime,
}

#[derive(Default)]
struct State {
    /// Our outgoing channel, checked at connect.
    own: Option<Cached>,
    /// The peer's channel ID, once known.
    peer_channel: Option<ChannelId>,
    /// The peer's channel facts, once read and accepted.
    peer: Option<Cached>,
}

struct Inner {
    opts: Options,
    client: RippledClient,
    state: Mutex<State>,
    /// Serialises submissions so two triggers never race on the same claim.
    submit_lock: tokio::sync::Mutex<()>,
    /// The periodic claim-submission task (option `claimInterval`).
    claim_task: Mutex<Option<JoinHandle<()>>>,
    /// The channel watcher (always running while connected; option `expiryCheckInterval`).
    watch_task: Mutex<Option<JoinHandle<()>>>,
}

/// The `xrp-paychan` module; see the module docs. Cheap to clone (shared state).
#[derive(Clone)]
pub struct XrpPaychan {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for XrpPaychan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XrpPaychan")
            .field("address", &self.inner.opts.address)
            .field("channel", &self.inner.opts.channel)
            .field("rippled", &self.inner.client.url())
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> ModuleError {
    ModuleError::InvalidFields(message.into())
}

fn ledger_error(err: RippledError) -> ModuleError {
    match err {
        // Configuration, not the ledger: retrying cannot help.
        RippledError::SeedInClearText(_) | RippledError::InvalidUrl(_) => {
            ModuleError::InvalidFields(err.to_string())
        }
        other => ModuleError::Ledger(other.to_string()),
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

/// Checks that `channel` is the channel of the claims a tracker already holds (`best`), if any: the module
/// supports one channel per direction for the life of a peer (top it up with `PaymentChannelFund`).
fn same_channel_as_before(best: &MaxValue, channel: &ChannelId) -> Result<(), String> {
    let before = best
        .data
        .get("channel")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<ChannelId>().ok());
    match before {
        Some(before) if before != *channel => Err(format!(
            "xrp-paychan: claims so far are on channel {before}; moving to another channel ({channel}) is not \
             supported (fund {before} with PaymentChannelFund instead)"
        )),
        _ => Ok(()),
    }
}

/// The node-wide identity of the peer's channel `id` ([`ChannelContext::hold_identity`]): `xrp:<channel id>`.
pub fn channel_identity(id: &ChannelId) -> String {
    format!("xrp:{id}")
}

fn parse_channel(options: &Value, name: &str) -> Result<Option<ChannelId>, ModuleError> {
    opt_str(options, name)?
        .map(|s| {
            s.parse()
                .map_err(|e| invalid(format!("xrp-paychan option {name}: {e}")))
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

    /// Our public key (the one our outgoing channel must name).
    pub fn public_key(&self) -> PublicKey {
        self.inner.opts.keys.public_key()
    }

    /// How often the payee's watcher re-reads the peer's channel (see `expiryCheckInterval`).
    pub fn expiry_check_interval(&self) -> Duration {
        self.inner.opts.expiry_check_interval
    }

    /// The peer's channel ID, once known.
    pub fn peer_channel(&self) -> Option<ChannelId> {
        lock(&self.inner.state).peer_channel
    }

    /// Submits the best incoming claim to the ledger if it beats what was already redeemed. Returns the
    /// cumulative drops now redeemed (or `None` if there was nothing to submit).
    pub async fn submit_best_claim(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<u64>, ModuleError> {
        self.inner.submit_best_claim(ctx).await
    }
}

impl Inner {
    async fn fetch_channel(&self, id: &ChannelId) -> Result<Option<ChannelFacts>, ModuleError> {
        self.client.payment_channel(id).await.map_err(ledger_error)
    }

    /// Reads our outgoing channel and checks that it is ours.
    async fn load_own_channel(
        &self,
        ctx: &ChannelContext,
        id: &ChannelId,
    ) -> Result<Cached, ModuleError> {
        let facts = self.fetch_channel(id).await?.ok_or_else(|| {
            invalid(format!(
                "xrp-paychan: outgoing channel {id} does not exist on the ledger"
            ))
        })?;
        if facts.account != self.opts.address {
            return Err(invalid(format!(
                "xrp-paychan: outgoing channel {id} belongs to {}, not to us ({})",
                facts.account, self.opts.address
            )));
        }
        if facts.public_key != self.opts.keys.public_key() {
            return Err(invalid(format!(
                "xrp-paychan: outgoing channel {id} is signed by another key than ours"
            )));
        }
        let cached = Cached {
            facts,
            read_at: ctx.now(),
        };
        lock(&self.state).own = Some(cached.clone());
        Ok(cached)
    }

    /// Learns the peer's channel ID (option, else RPC). `Ok(None)` if the peer has none (yet).
    async fn learn_peer_channel(
        &self,
        ctx: &ChannelContext,
    ) -> Result<Option<ChannelId>, ModuleError> {
        if let Some(id) = lock(&self.state).peer_channel {
            return Ok(Some(id));
        }
        let id = match self.opts.peer_channel {
            Some(id) => Some(id),
            None => match ctx.rpc(RPC_CHANNEL_ID, json!([])).await {
                Ok(Value::String(s)) => Some(
                    s.parse::<ChannelId>()
                        .map_err(|e| invalid(format!("peer's {RPC_CHANNEL_ID} reply: {e}")))?,
                ),
                Ok(Value::Null) => None,
                Ok(other) => {
                    return Err(invalid(format!(
                        "peer's {RPC_CHANNEL_ID} reply is not a channel id: {other}"
                    )))
                }
                Err(err) => {
                    tracing::warn!(account = ctx.account_id(), %err, "could not learn the peer's xrp channel");
                    None
                }
            },
        };
        if let Some(id) = id {
            if self.opts.peer_channel.is_some() {
                // Configured: trusted (the operator said so), held now. A learned channel is only a name the
                // peer gave; it is held once a claim signed by its key verifies (`hold_peer_identity`).
                self.hold_peer_identity(ctx, &id).await?;
            }
            lock(&self.state).peer_channel = Some(id);
        }
        Ok(id)
    }

    /// Makes this account hold the node-wide identity of the peer's channel `id`, or re-checks that it still
    /// holds it (one registry read): called right before every credit, so an account whose channel identity
    /// became contested (another account of this node proved the same channel with a verified claim) or was
    /// taken over by an account with `peerChannel` configured is refused from then on. A configured
    /// `peerChannel` is held as [`IdentityOrigin::Configured`], a learned channel as [`IdentityOrigin::Proven`]
    /// (and only after a claim signed by its key verified).
    async fn hold_peer_identity(
        &self,
        ctx: &ChannelContext,
        id: &ChannelId,
    ) -> Result<(), ModuleError> {
        let origin = if self.opts.peer_channel == Some(*id) {
            IdentityOrigin::Configured
        } else {
            IdentityOrigin::Proven
        };
        ctx.hold_identity(&channel_identity(id), origin).await
    }

    /// The peer's channel facts, read again when older than [`CHANNEL_FACTS_MAX_AGE`] or when `needed_drops`
    /// exceeds the cached deposit; checks that the channel pays us and can be relied upon.
    async fn peer_channel_facts(
        &self,
        ctx: &ChannelContext,
        needed_drops: u64,
    ) -> Result<ChannelFacts, ModuleError> {
        let id = self.learn_peer_channel(ctx).await?.ok_or_else(|| {
            ModuleError::NotAccepted("the peer has no payment channel to us".to_owned())
        })?;
        let now = ctx.now();
        let cached = lock(&self.state).peer.clone();
        if let Some(c) = cached {
            let fresh = now
                .duration_since(c.read_at)
                .map(|age| age < CHANNEL_FACTS_MAX_AGE)
                .unwrap_or(true);
            if fresh && needed_drops <= c.facts.amount {
                return Ok(c.facts);
            }
        }
        let facts = self.fetch_channel(&id).await?.ok_or_else(|| {
            ModuleError::NotAccepted(format!(
                "the peer's channel {id} does not exist on the ledger"
            ))
        })?;
        if facts.destination != self.opts.address {
            return Err(ModuleError::NotAccepted(format!(
                "the peer's channel {id} pays {}, not us ({})",
                facts.destination, self.opts.address
            )));
        }
        if facts.settle_delay < self.opts.min_settle_delay_secs {
            return Err(ModuleError::NotAccepted(format!(
                "the peer's channel {id} has settle delay {} s, below the minimum {} s",
                facts.settle_delay, self.opts.min_settle_delay_secs
            )));
        }
        lock(&self.state).peer = Some(Cached {
            facts: facts.clone(),
            read_at: now,
        });
        Ok(facts)
    }

    /// [`Inner::redeem_best_claim`], a closed channel reported as an error.
    async fn submit_best_claim(&self, ctx: &ChannelContext) -> Result<Option<u64>, ModuleError> {
        match self.redeem_best_claim(ctx).await? {
            Redemption::Nothing => Ok(None),
            Redemption::Redeemed(drops) => Ok(Some(drops)),
            Redemption::ChannelClosed(message) => Err(ModuleError::Ledger(message)),
        }
    }

    async fn redeem_best_claim(&self, ctx: &ChannelContext) -> Result<Redemption, ModuleError> {
        let _guard = self.submit_lock.lock().await;
        let best = ctx.max_value_tracker(MVT_INCOMING_CLAIM)?.get_max().await?;
        let Some(best_drops) = best.value.to_u64().filter(|d| *d > 0) else {
            return Ok(Redemption::Nothing);
        };
        let submitted_tracker = ctx.max_value_tracker(MVT_INCOMING_CLAIM_SUBMITTED)?;
        if submitted_tracker.get_max().await?.value >= best.value {
            return Ok(Redemption::Nothing);
        }
        let claim = IncomingClaim::from_json(&best.data)?;
        let on_ledger = self.fetch_channel(&claim.channel).await?;
        let Some(on_ledger) = on_ledger else {
            return Ok(Redemption::ChannelClosed(format!(
                "channel {} is closed; the best claim ({best_drops} drops) can no longer be redeemed",
                claim.channel
            )));
        };
        if on_ledger.balance >= best_drops {
            submitted_tracker
                .set_if_max(MaxValue {
                    value: best.value.clone(),
                    data: json!({ "alreadyRedeemed": on_ledger.balance.to_string() }),
                })
                .await?;
            return Ok(Redemption::Redeemed(on_ledger.balance));
        }
        let seed = self.opts.keys.seed().ok_or_else(|| {
            invalid("xrp-paychan: submitting claims needs the secret as a family seed (s…), not a private key")
        })?;
        let tx_json = json!({
            "TransactionType": "PaymentChannelClaim",
            "Account": self.opts.address,
            "Channel": claim.channel.to_string(),
            "Balance": best_drops.to_string(),
            "Amount": best_drops.to_string(),
            "Signature": hex::encode_upper(&claim.signature),
            "PublicKey": on_ledger.public_key.to_hex(),
        });
        let outcome = self
            .client
            .submit_with_secret(tx_json, seed)
            .await
            .map_err(ledger_error)?;
        if !outcome.is_success() {
            tracing::error!(
                account = ctx.account_id(),
                channel = %claim.channel,
                drops = best_drops,
                engine_result = %outcome.engine_result,
                "payment channel claim submission failed"
            );
            return Err(ModuleError::Ledger(format!(
                "PaymentChannelClaim failed: {}: {}",
                outcome.engine_result, outcome.engine_result_message
            )));
        }
        tracing::info!(
            account = ctx.account_id(),
            channel = %claim.channel,
            drops = best_drops,
            hash = outcome.hash.as_deref().unwrap_or(""),
            "payment channel claim submitted"
        );
        submitted_tracker
            .set_if_max(MaxValue {
                value: best.value,
                data: json!({ "engineResult": outcome.engine_result, "hash": outcome.hash }),
            })
            .await?;
        Ok(Redemption::Redeemed(best_drops))
    }

    /// One round of the channel watcher: re-reads the peer's channel from rippled (bypassing the cache) and
    /// redeems the best claim if the channel closes within the expiry margin. Errors are logged.
    async fn watch_once(&self, ctx: &ChannelContext) {
        match self.learn_peer_channel(ctx).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(account = ctx.account_id(), %err, "channel watcher: peer channel unknown");
                return;
            }
        }
        // Asking for more than any deposit forces a fresh read.
        match self.peer_channel_facts(ctx, u64::MAX).await {
            Ok(facts) => self.submit_if_expiring(ctx, &facts).await,
            Err(err) => {
                tracing::warn!(account = ctx.account_id(), %err, "channel watcher: could not read the peer's channel")
            }
        }
    }

    /// Submits at once if the channel closes within the expiry margin.
    async fn submit_if_expiring(&self, ctx: &ChannelContext, facts: &ChannelFacts) {
        let Some(closes_at) = facts.closes_at() else {
            return;
        };
        if ctx.now() + self.opts.expiry_margin < closes_at {
            return;
        }
        if let Err(err) = self.submit_best_claim(ctx).await {
            tracing::warn!(account = ctx.account_id(), %err, "could not redeem claim before channel expiry");
        }
    }
}

/// What an attempt to redeem the best incoming claim came to.
enum Redemption {
    /// Nothing beyond what is already redeemed.
    Nothing,
    /// The channel's balance on the ledger now covers the best claim (cumulative drops).
    Redeemed(u64),
    /// The channel is gone from the ledger: the best claim can never be redeemed (the message says so).
    ChannelClosed(String),
}

/// A claim as carried on the wire: `{"channel","amount","signature","publicKey"}`.
struct IncomingClaim {
    channel: ChannelId,
    drops: u64,
    signature: Vec<u8>,
    public_key: Option<String>,
}

impl IncomingClaim {
    fn from_json(value: &Value) -> Result<Self, ModuleError> {
        let field = |name: &str| -> Result<&str, ModuleError> {
            value
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("claim has no string field {name}")))
        };
        Ok(IncomingClaim {
            channel: field("channel")?
                .parse()
                .map_err(|e| invalid(format!("claim channel: {e}")))?,
            drops: field("amount")?
                .parse()
                .map_err(|_| invalid("claim amount is not a drops integer"))?,
            signature: hex::decode(field("signature")?)
                .map_err(|_| invalid("claim signature is not hex"))?,
            public_key: value
                .get("publicKey")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    fn from_claim(claim: &Claim) -> Result<Self, ModuleError> {
        match claim {
            Claim::Json(v) => Self::from_json(v),
            Claim::Text(t) => {
                let v: Value =
                    serde_json::from_str(t).map_err(|_| invalid("claim text is not JSON"))?;
                Self::from_json(&v)
            }
            Claim::Binary(b) => {
                let v: Value =
                    serde_json::from_slice(b).map_err(|_| invalid("claim bytes are not JSON"))?;
                Self::from_json(&v)
            }
        }
    }
}

#[async_trait]
impl ChannelModule for XrpPaychan {
    fn name(&self) -> &str {
        XRP_PAYCHAN_MODULE_NAME
    }

    fn asset_scale(&self) -> u8 {
        XRP_ASSET_SCALE
    }

    /// Claims are cumulative `u64` drops: an account can never settle more than `u64::MAX` drops in all.
    fn max_cumulative_settlement(&self) -> Option<BigUint> {
        Some(BigUint::from(u64::MAX))
    }

    async fn connect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        let inner = &self.inner;
        if let Some(id) = inner.opts.channel {
            let best = ctx.max_value_tracker(MVT_OUTGOING_CLAIM)?.get_max().await?;
            same_channel_as_before(&best, &id).map_err(invalid)?;
            let own = inner.load_own_channel(ctx, &id).await?;
            tracing::info!(
                account = ctx.account_id(),
                channel = %id,
                deposit_drops = own.facts.amount,
                "xrp outgoing channel ready"
            );
        }
        match inner.learn_peer_channel(ctx).await {
            Ok(Some(id)) => match inner.peer_channel_facts(ctx, 0).await {
                Ok(facts) => tracing::info!(
                    account = ctx.account_id(),
                    channel = %id,
                    deposit_drops = facts.amount,
                    "xrp incoming channel ready"
                ),
                // A configured peer channel that is wrong is our misconfiguration; a learned one is the peer's.
                Err(err) if inner.opts.peer_channel.is_some() => return Err(err),
                Err(err) => {
                    tracing::warn!(account = ctx.account_id(), %err, "peer's xrp channel refused; claims will be refused")
                }
            },
            Ok(None) => tracing::info!(
                account = ctx.account_id(),
                "peer has no xrp channel to us yet"
            ),
            // A configured channel another account of this node holds (configured engine-wide): this account's
            // claims will be refused; the other account is unaffected.
            Err(err @ ModuleError::NotAccepted(_)) => {
                tracing::warn!(account = ctx.account_id(), %err, "peer's xrp channel refused; claims will be refused")
            }
            Err(err) => return Err(err),
        }
        {
            // The watcher: a payer that starts closing its channel and stops sending claims would otherwise
            // take back everything since the last redemption. Weak, so it never keeps a dropped module alive.
            let weak = Arc::downgrade(&self.inner);
            // Weak too: a sleeping task must not keep the host's stores (a database) open.
            let weak_ctx = ctx.downgrade();
            let interval = inner.opts.expiry_check_interval;
            let handle = tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    let (Some(inner), Some(task_ctx)) = (weak.upgrade(), weak_ctx.upgrade()) else {
                        return;
                    };
                    inner.watch_once(&task_ctx).await;
                }
            });
            if let Some(old) = lock(&inner.watch_task).replace(handle) {
                old.abort();
            }
        }
        if let Some(interval) = inner.opts.claim_interval {
            // Weak, so that the task never keeps a dropped module alive.
            let weak = Arc::downgrade(&self.inner);
            // Weak too: a sleeping task must not keep the host's stores (a database) open.
            let weak_ctx = ctx.downgrade();
            let handle = tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    let (Some(inner), Some(task_ctx)) = (weak.upgrade(), weak_ctx.upgrade()) else {
                        return;
                    };
                    if let Err(err) = inner.submit_best_claim(&task_ctx).await {
                        tracing::warn!(account = task_ctx.account_id(), %err, "periodic claim submission failed");
                    }
                }
            });
            if let Some(old) = lock(&inner.claim_task).replace(handle) {
                old.abort();
            }
        }
        Ok(())
    }

    async fn disconnect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        if let Some(task) = lock(&self.inner.claim_task).take() {
            task.abort();
        }
        if let Some(task) = lock(&self.inner.watch_task).take() {
            task.abort();
        }
        match self.inner.redeem_best_claim(ctx).await? {
            Redemption::Nothing | Redemption::Redeemed(_) => Ok(()),
            // Nothing is left to protect by failing (a host may keep the records only while disconnect fails).
            Redemption::ChannelClosed(message) => {
                tracing::error!(account = ctx.account_id(), %message, "best incoming claim lost");
                Ok(())
            }
        }
    }

    fn account(&self) -> Option<String> {
        Some(self.inner.opts.address.clone())
    }

    fn peer_account(&self) -> Option<String> {
        lock(&self.inner.state)
            .peer
            .as_ref()
            .map(|c| c.facts.account.clone())
    }

    async fn handle_incoming_prepare(
        &self,
        ctx: &ChannelContext,
        _record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        let sums = ctx.main_log()?.sums();
        let mut secured = self.secured_drops(ctx).await?;
        if sums.incoming_fulfilled_and_prepared.saturating_sub(secured)
            > self.inner.opts.max_unsecured
            && sums.incoming_fulfilled > secured
            && self.fetch_latest_claim(ctx).await
        {
            secured = self.secured_drops(ctx).await?;
        }
        let unsecured = sums.incoming_fulfilled_and_prepared.saturating_sub(secured);
        if unsecured > self.inner.opts.max_unsecured {
            tracing::warn!(
                account = ctx.account_id(),
                unsecured_drops = unsecured,
                max_unsecured_drops = self.inner.opts.max_unsecured,
                "incoming transfer refused: not secured by a claim"
            );
            return Err(ModuleError::NotAccepted(format!(
                "unsecured balance {unsecured} drops would exceed maxUnsecured {} drops",
                self.inner.opts.max_unsecured
            )));
        }
        Ok(())
    }

    async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &BigUint,
    ) -> Result<Option<Claim>, ModuleError> {
        let inner = &self.inner;
        let Some(channel) = inner.opts.channel else {
            return Err(invalid(
                "xrp-paychan has no outgoing channel configured (option channel)",
            ));
        };
        let drops = total.to_u64().ok_or_else(|| {
            ModuleError::InsufficientBalance(format!("{total} drops exceeds any channel"))
        })?;
        if drops == 0 {
            return Ok(None);
        }
        let tracker = ctx.max_value_tracker(MVT_OUTGOING_CLAIM)?;
        let best = tracker.get_max().await?;
        // Claims are cumulative over one channel: signing our whole total on another would pay again.
        same_channel_as_before(&best, &channel).map_err(invalid)?;
        if best.value >= *total {
            // Already covered: hand out the best claim again (idempotent).
            return Ok(best.data.is_object().then_some(Claim::Json(best.data)));
        }
        let cached = lock(&inner.state).own.clone();
        let own = match cached {
            Some(c) if drops <= c.facts.amount => c,
            // Unknown or too small in the cache: the deposit may have grown since.
            _ => inner.load_own_channel(ctx, &channel).await?,
        };
        if drops > own.facts.amount {
            return Err(ModuleError::InsufficientBalance(format!(
                "claim of {drops} drops exceeds the channel deposit of {} drops",
                own.facts.amount
            )));
        }
        let signature = inner
            .opts
            .keys
            .sign_claim(&channel, drops)
            .map_err(|e| ModuleError::InvalidFields(e.to_string()))?;
        let claim = json!({
            "channel": channel.to_string(),
            "amount": drops.to_string(),
            "signature": hex::encode_upper(signature),
            "publicKey": inner.opts.keys.public_key().to_hex(),
        });
        tracker
            .set_if_max(MaxValue {
                value: BigUint::from(drops),
                data: claim.clone(),
            })
            .await?;
        tracing::debug!(account = ctx.account_id(), %channel, drops, "signed outgoing claim");
        Ok(Some(Claim::Json(claim)))
    }

    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        let Some(claim) = claim else {
            return Ok(None);
        };
        let inner = &self.inner;
        let claim = IncomingClaim::from_claim(claim)?;
        let expected = inner.learn_peer_channel(ctx).await?.ok_or_else(|| {
            ModuleError::NotAccepted("the peer has no payment channel to us".to_owned())
        })?;
        if claim.channel != expected {
            tracing::warn!(account = ctx.account_id(), claimed = %claim.channel, %expected, "claim on a foreign channel");
            return Err(ModuleError::NotAccepted(format!(
                "claim is for channel {}, not the peer's channel {expected}",
                claim.channel
            )));
        }
        let tracker = ctx.max_value_tracker(MVT_INCOMING_CLAIM)?;
        let best = tracker.get_max().await?;
        // The best claim's amount is cumulative on its channel; a claim on another channel cannot be compared
        // with it (crediting the difference while redeeming the whole claim would be wrong both ways).
        same_channel_as_before(&best, &claim.channel).map_err(ModuleError::NotAccepted)?;
        let value = BigUint::from(claim.drops);
        if value <= best.value {
            tracing::debug!(
                account = ctx.account_id(),
                drops = claim.drops,
                "claim not above the best; nothing new"
            );
            return Ok(None);
        }
        let facts = inner.peer_channel_facts(ctx, claim.drops).await?;
        if let Some(key) = &claim.public_key {
            if PublicKey::parse(key).ok().as_ref() != Some(&facts.public_key) {
                return Err(ModuleError::NotAccepted(
                    "claim public key is not the channel's key".to_owned(),
                ));
            }
        }
        if !facts
            .public_key
            .verify_claim(&claim.channel, claim.drops, &claim.signature)
        {
            tracing::warn!(
                account = ctx.account_id(),
                drops = claim.drops,
                "claim with an invalid signature"
            );
            return Err(ModuleError::NotAccepted(
                "claim signature is invalid".to_owned(),
            ));
        }
        if facts.is_expired_at(ctx.now()) {
            return Err(ModuleError::NotAccepted(format!(
                "channel {} has expired",
                claim.channel
            )));
        }
        if claim.drops > facts.amount {
            tracing::warn!(
                account = ctx.account_id(),
                drops = claim.drops,
                deposit_drops = facts.amount,
                "claim above the channel deposit"
            );
            return Err(ModuleError::NotAccepted(format!(
                "claim of {} drops exceeds the channel deposit of {} drops",
                claim.drops, facts.amount
            )));
        }
        if claim.drops <= facts.balance {
            // Already paid out on the ledger, by us, with a claim at least this high (the holder's best is never
            // below it): it can credit nothing, and since redeemed claims are public it proves nothing about who
            // controls the channel either, so it must not contest the channel's identity.
            tracing::warn!(
                account = ctx.account_id(),
                drops = claim.drops,
                paid_out_drops = facts.balance,
                "claim already paid out on the ledger"
            );
            return Err(ModuleError::NotAccepted(format!(
                "claim of {} drops is not above the {} drops the channel already paid out",
                claim.drops, facts.balance
            )));
        }
        // The claim is signed by the channel's key: only now may this account take the channel's identity, and
        // it re-checks it before every credit (refused if another account of the node holds it, or if it is
        // contested), before anything is kept or credited.
        if let Err(err) = inner.hold_peer_identity(ctx, &claim.channel).await {
            tracing::warn!(account = ctx.account_id(), channel = %claim.channel, %err, "claim on a channel another account holds");
            return Err(err);
        }
        let data = json!({
            "channel": claim.channel.to_string(),
            "amount": claim.drops.to_string(),
            "signature": hex::encode_upper(&claim.signature),
            "publicKey": facts.public_key.to_hex(),
        });
        let previous = tracker
            .set_if_max(MaxValue {
                value: value.clone(),
                data,
            })
            .await?;
        // Stored only if strictly larger, in which case `previous` is the old best; otherwise it is our entry.
        if previous.value >= value {
            return Ok(None);
        }
        let increase = &value - &previous.value;
        tracing::debug!(account = ctx.account_id(), drops = claim.drops, increase = %increase, "claim accepted");
        inner.submit_if_expiring(ctx, &facts).await;
        Ok(Some(IncomingCredit {
            amount: increase,
            settlement_id: format!("{}:{}", claim.channel, claim.drops),
        }))
    }

    async fn handle_rpc(
        &self,
        ctx: &ChannelContext,
        method: &str,
        _args: Value,
    ) -> Result<Value, ModuleError> {
        match method {
            RPC_CHANNEL_ID => Ok(self
                .inner
                .opts
                .channel
                .map(|c| Value::String(c.to_string()))
                .unwrap_or(Value::Null)),
            RPC_LATEST_CLAIM => {
                if self.inner.opts.channel.is_none() {
                    return Ok(Value::Null);
                }
                // Exactly what the Fulfill path signs: the claim for everything our log says we owe the peer.
                // Durable sums: the claim leaves the node and must not cover a fulfill a crash could undo.
                let owed = ctx
                    .main_log()?
                    .durable_sums()
                    .await
                    .map_err(|e| ModuleError::Ledger(format!("main log: {e}")))?
                    .outgoing_fulfilled;
                match self
                    .create_outgoing_claim(ctx, &BigUint::from(owed))
                    .await?
                {
                    Some(Claim::Json(claim)) => Ok(claim),
                    Some(_) | None => Ok(Value::Null),
                }
            }
            other => Err(ModuleError::UnknownMethod(other.to_owned())),
        }
    }
}

impl XrpPaychan {
    /// Drops covered by the best incoming claim.
    async fn secured_drops(&self, ctx: &ChannelContext) -> Result<u128, ModuleError> {
        let best = ctx.max_value_tracker(MVT_INCOMING_CLAIM)?.get_max().await?;
        Ok(best.value.to_u128().unwrap_or(u128::MAX))
    }

    /// Asks the payer for its latest claim ([`RPC_LATEST_CLAIM`]) and takes it like any incoming claim. True if
    /// it raised the best claim.
    async fn fetch_latest_claim(&self, ctx: &ChannelContext) -> bool {
        let claim = match ctx.rpc(RPC_LATEST_CLAIM, json!([])).await {
            Ok(Value::Null) => return false,
            Ok(claim) => claim,
            Err(err) => {
                tracing::warn!(account = ctx.account_id(), %err, "could not get the peer's latest claim");
                return false;
            }
        };
        match self
            .handle_incoming_claim(ctx, Some(&Claim::Json(claim)))
            .await
        {
            Ok(credit) => credit.is_some(),
            Err(err) => {
                tracing::warn!(account = ctx.account_id(), %err, "the peer's latest claim was refused");
                false
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.claim_task).take() {
            task.abort();
        }
        if let Some(task) = lock(&self.watch_task).take() {
            task.abort();
        }
    }
}
