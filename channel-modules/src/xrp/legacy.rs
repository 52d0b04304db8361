//! The records of the 2017 `ilp-plugin-xrp-paychan` (the one built on `ilp-plugin-payment-channel-framework`,
//! as ILP Kit ran it) and their conversion into this module's records, for `migrate-ilp-kit`.
//!
//! That plugin kept three max-value trackers in its store, beside the framework's transfer log:
//!
//! * `outgoing_channel`: `{"value":"2","data":"<channel id>"}` once its channel to the peer existed
//!   (`"1"` with a random process ID while a process was creating it);
//! * `incoming_claim`: `{"value":"<drops>","data":"<signature hex>"}`, the best claim on the peer's channel.
//!   The channel's ID is **not** stored: the plugin asked the peer (`ripple_channel_id`) at every connect;
//! * `incoming_claim_submitted`: `{"value":"<drops>"}`, the most it redeemed on the ledger.
//!
//! It signed claims on its own channel with an ed25519 key derived from the account secret, not with the account
//! key: seed = HMAC-SHA256(key = secret, message = `ilp-plugin-xrp-paychan-channel-keys` ‖ peer address); early
//! 2017 versions used seed = SHA-256(secret). It kept no outgoing claim: every claim it signed covered the
//! outgoing-fulfilled total of its transfer log, which the log import carries over.
//!
//! [`convert_legacy_records`] turns these into this module's options and trackers, reading the ledger to find
//! what the plugin did not store: the key its channel names (one of the derivations, checked against the ledger)
//! and the peer's channel (the one, among the peer's channels to us, on which the best claim's signature
//! verifies). Anything it cannot establish is refused with the reason, so no claim is lost silently.

use hmac::{Hmac, Mac};
use num_bigint::BigUint;
use num_traits::{ToPrimitive, Zero};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::crypto::{ChannelId, KeyPair, PublicKey};
use super::rpc::{ChannelFacts, RippledClient, RippledError};
use super::wire::claim_json;
use super::{MVT_INCOMING_CLAIM, MVT_INCOMING_CLAIM_SUBMITTED};
use crate::store::MaxValue;

/// The npm name of the plugin whose records are converted here.
pub const LEGACY_XRP_PLUGIN_NAME: &str = "ilp-plugin-xrp-paychan";
/// The plugin's tracker holding its outgoing channel's creation state and ID.
pub const LEGACY_MVT_OUTGOING_CHANNEL: &str = "outgoing_channel";
/// The plugin's tracker holding its best incoming claim (value: drops, data: signature hex).
pub const LEGACY_MVT_INCOMING_CLAIM: &str = "incoming_claim";
/// The plugin's tracker holding the most it redeemed (value: drops).
pub const LEGACY_MVT_INCOMING_CLAIM_SUBMITTED: &str = "incoming_claim_submitted";
/// `outgoing_channel` value once the channel exists (its data is the channel ID).
pub const LEGACY_STATE_CHANNEL: u32 = 2;
/// `outgoing_channel` value while a process creates the channel (its data is that process's ID).
pub const LEGACY_STATE_CREATING_CHANNEL: u32 = 1;
/// The HMAC message prefix of the plugin's per-peer channel key.
pub const LEGACY_CHANNEL_KEYS_LABEL: &str = "ilp-plugin-xrp-paychan-channel-keys";

/// The plugin's trackers as read from its store (absent: never written).
#[derive(Debug, Clone, Default)]
pub struct LegacyTrackers {
    /// `outgoing_channel`.
    pub outgoing_channel: Option<MaxValue>,
    /// `incoming_claim`.
    pub incoming_claim: Option<MaxValue>,
    /// `incoming_claim_submitted`.
    pub incoming_claim_submitted: Option<MaxValue>,
}

/// How the key of the plugin's outgoing channel was derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKeyDerivation {
    /// ed25519 seed = HMAC-SHA256(secret, [`LEGACY_CHANNEL_KEYS_LABEL`] ‖ peer address) (the later 2017 plugin).
    PeerHmac,
    /// ed25519 seed = SHA-256(secret) (early 2017 versions).
    SecretSha256,
    /// The account's own key (a channel created by hand).
    AccountKey,
}

impl std::fmt::Display for ChannelKeyDerivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChannelKeyDerivation::PeerHmac => {
                "the ed25519 key the plugin derived from the secret and the peer's address (HMAC-SHA256)"
            }
            ChannelKeyDerivation::SecretSha256 => {
                "the ed25519 key early versions of the plugin derived from the secret (SHA-256)"
            }
            ChannelKeyDerivation::AccountKey => "the account's own key",
        })
    }
}

/// The plugin's records as this module's.
#[derive(Debug)]
pub struct LegacyConversion {
    /// Option `channel`: our outgoing channel, if the plugin had created one.
    pub channel: Option<ChannelId>,
    /// Option `channelSecret` (and how it was derived) when the channel names another key than the account's.
    pub channel_key: Option<(ChannelKeyDerivation, KeyPair)>,
    /// Option `peerChannel`: the peer's channel to us, when the ledger shows which it is.
    pub peer_channel: Option<ChannelId>,
    /// The peer channel's settle delay (seconds), when known (the module refuses channels below its
    /// `minSettleDelay`).
    pub peer_settle_delay: Option<u32>,
    /// This module's trackers to write, by key.
    pub trackers: Vec<(String, MaxValue)>,
    /// What was found and done, one line each, for the report.
    pub findings: Vec<String>,
}

/// Why the records cannot be converted. Nothing of the ledger should be imported then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyConversionError {
    /// rippled could not be asked.
    #[error("rippled: {0}")]
    Ledger(#[from] RippledError),
    /// The records or the ledger do not allow a conversion that loses nothing.
    #[error("{0}")]
    Refused(String),
}

fn refused(message: impl Into<String>) -> LegacyConversionError {
    LegacyConversionError::Refused(message.into())
}

/// The ed25519 key pair whose seed is `seed`.
fn ed25519_from_seed(seed: &[u8]) -> Result<KeyPair, LegacyConversionError> {
    KeyPair::from_secret(&format!("ED{}", hex::encode_upper(seed)))
        .map_err(|e| refused(format!("deriving the channel key: {e}")))
}

/// The keys the plugin may have signed its channel's claims with, in the order tried.
pub fn legacy_channel_key_candidates(
    secret: &str,
    peer_address: &str,
) -> Result<Vec<(ChannelKeyDerivation, KeyPair)>, LegacyConversionError> {
    let mut candidates = Vec::with_capacity(3);
    if !peer_address.is_empty() {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|e| refused(format!("deriving the channel key: {e}")))?;
        mac.update(LEGACY_CHANNEL_KEYS_LABEL.as_bytes());
        mac.update(peer_address.as_bytes());
        candidates.push((
            ChannelKeyDerivation::PeerHmac,
            ed25519_from_seed(&mac.finalize().into_bytes())?,
        ));
    }
    candidates.push((
        ChannelKeyDerivation::SecretSha256,
        ed25519_from_seed(&Sha256::digest(secret.as_bytes()))?,
    ));
    let account =
        KeyPair::from_secret(secret).map_err(|e| refused(format!("the plugin's secret: {e}")))?;
    candidates.push((ChannelKeyDerivation::AccountKey, account));
    Ok(candidates)
}

/// A tracker value that fits a claim (`u64` drops).
fn drops_of(value: &BigUint, what: &str) -> Result<u64, LegacyConversionError> {
    value
        .to_u64()
        .ok_or_else(|| refused(format!("{what} of {value} drops exceeds any XRP amount")))
}

/// Converts the plugin's trackers of the account `address` (secret `secret`) peering with `peer_address`; see
/// the module docs. Reads the ledger through `client`; writes nothing.
pub async fn convert_legacy_records(
    client: &RippledClient,
    secret: &str,
    address: &str,
    peer_address: &str,
    legacy: &LegacyTrackers,
) -> Result<LegacyConversion, LegacyConversionError> {
    let mut conversion = LegacyConversion {
        channel: None,
        channel_key: None,
        peer_channel: None,
        peer_settle_delay: None,
        trackers: Vec::new(),
        findings: Vec::new(),
    };
    convert_outgoing_channel(
        client,
        secret,
        address,
        peer_address,
        legacy,
        &mut conversion,
    )
    .await?;
    convert_incoming_claims(client, address, peer_address, legacy, &mut conversion).await?;
    Ok(conversion)
}

async fn convert_outgoing_channel(
    client: &RippledClient,
    secret: &str,
    address: &str,
    peer_address: &str,
    legacy: &LegacyTrackers,
    conversion: &mut LegacyConversion,
) -> Result<(), LegacyConversionError> {
    let Some(entry) = legacy
        .outgoing_channel
        .as_ref()
        .filter(|e| !e.value.is_zero())
    else {
        conversion.findings.push(
            "no outgoing channel: the plugin had not created one, so the module cannot pay the peer until \
             option channel names one"
                .to_owned(),
        );
        return Ok(());
    };
    if entry.value == BigUint::from(LEGACY_STATE_CREATING_CHANNEL) {
        return Err(refused(format!(
            "{LEGACY_MVT_OUTGOING_CHANNEL} says a process ({}) was creating the outgoing channel when the plugin \
             stopped: whether the channel exists is not recorded; start the plugin once more so it finishes, or \
             find the channel on the ledger",
            entry.data
        )));
    }
    if entry.value != BigUint::from(LEGACY_STATE_CHANNEL) {
        return Err(refused(format!(
            "{LEGACY_MVT_OUTGOING_CHANNEL} has state {}, which the plugin never writes",
            entry.value
        )));
    }
    let id: ChannelId = entry
        .data
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            refused(format!(
                "{LEGACY_MVT_OUTGOING_CHANNEL} data {} is not a channel ID",
                entry.data
            ))
        })?;
    let facts = client.payment_channel(&id).await?.ok_or_else(|| {
        refused(format!(
            "the outgoing channel {id} does not exist on the ledger (closed?): the module would refuse to start \
             with it; close the books with the peer first"
        ))
    })?;
    if facts.account != address {
        return Err(refused(format!(
            "the outgoing channel {id} belongs to {}, not to the plugin's account {address}",
            facts.account
        )));
    }
    let candidates = legacy_channel_key_candidates(secret, peer_address)?;
    let (derivation, keys) = candidates
        .into_iter()
        .find(|(_, keys)| keys.public_key() == facts.public_key)
        .ok_or_else(|| {
            refused(format!(
                "the outgoing channel {id} names key {}, none of the keys the plugin derives from its secret: \
                 its claims could not be signed",
                facts.public_key.to_hex()
            ))
        })?;
    conversion.findings.push(format!(
        "outgoing channel {id} ({} drops deposited, {} paid out): option channel; its claims are signed with \
         {derivation}{}",
        facts.amount,
        facts.balance,
        if derivation == ChannelKeyDerivation::AccountKey {
            ""
        } else {
            ", written as option channelSecret"
        }
    ));
    conversion.channel = Some(id);
    if derivation != ChannelKeyDerivation::AccountKey {
        conversion.channel_key = Some((derivation, keys));
    }
    Ok(())
}

async fn convert_incoming_claims(
    client: &RippledClient,
    address: &str,
    peer_address: &str,
    legacy: &LegacyTrackers,
    conversion: &mut LegacyConversion,
) -> Result<(), LegacyConversionError> {
    let mut channels: Vec<(ChannelId, ChannelFacts)> = Vec::new();
    if !peer_address.is_empty() {
        for id in client.account_channels(peer_address, address).await? {
            if let Some(facts) = client.payment_channel(&id).await? {
                channels.push((id, facts));
            }
        }
    }
    let best = legacy.incoming_claim.clone().filter(|e| !e.value.is_zero());
    let submitted = legacy
        .incoming_claim_submitted
        .clone()
        .filter(|e| !e.value.is_zero());
    let Some(best) = best else {
        if let [(id, facts)] = channels.as_slice() {
            conversion.peer_channel = Some(*id);
            conversion.peer_settle_delay = Some(facts.settle_delay);
            conversion.findings.push(format!(
                "no incoming claim; the peer's one channel to us, {id}, is option peerChannel"
            ));
        } else {
            conversion.findings.push(format!(
                "no incoming claim; the peer has {} channels to us, so the module asks it which (ripple_channel_id)",
                channels.len()
            ));
        }
        if let Some(s) = submitted {
            conversion.trackers.push(submitted_tracker(&s));
        }
        return Ok(());
    };
    let drops = drops_of(&best.value, "the best incoming claim")?;
    let signature = best
        .data
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| {
            refused(format!(
                "{LEGACY_MVT_INCOMING_CLAIM} data {} is not a signature in hex",
                best.data
            ))
        })?;
    let verifying: Vec<&(ChannelId, ChannelFacts)> = channels
        .iter()
        .filter(|(id, facts)| facts.public_key.verify_claim(id, drops, &signature))
        .collect();
    let (id, facts) = match verifying.as_slice() {
        [one] => *one,
        [] => {
            return Err(refused(format!(
                "the best incoming claim ({drops} drops) verifies on none of the {} open channels from \
                 {peer_address} to {address}: the plugin did not store its channel, and without one it cannot \
                 be redeemed; redeem or settle it with the legacy plugin first",
                channels.len()
            )))
        }
        several => {
            let ids: Vec<String> = several.iter().map(|(id, _)| id.to_string()).collect();
            return Err(refused(format!(
                "the best incoming claim ({drops} drops) verifies on several channels ({}): which one the plugin \
                 used is not recorded",
                ids.join(", ")
            )));
        }
    };
    let public_key: &PublicKey = &facts.public_key;
    conversion.trackers.push((
        MVT_INCOMING_CLAIM.to_owned(),
        MaxValue {
            value: best.value.clone(),
            data: claim_json(id, drops, &signature, &public_key.to_hex()),
        },
    ));
    conversion.peer_channel = Some(*id);
    conversion.peer_settle_delay = Some(facts.settle_delay);
    conversion.findings.push(format!(
        "best incoming claim {drops} drops: its signature verifies on the peer's channel {id} ({} drops \
         deposited, {} paid out), which is option peerChannel; kept as {MVT_INCOMING_CLAIM}",
        facts.amount, facts.balance
    ));
    if drops > facts.amount {
        conversion.findings.push(format!(
            "warning: the best incoming claim ({drops} drops) is above the channel's deposit ({} drops): only the \
             deposit can be redeemed unless the peer funds the channel",
            facts.amount
        ));
    }
    if let Some(s) = &submitted {
        conversion.trackers.push(submitted_tracker(s));
    }
    let recorded = submitted.map(|s| s.value).unwrap_or_default();
    if BigUint::from(facts.balance) != recorded {
        conversion.findings.push(format!(
            "the ledger shows {} drops paid out of {id}, the plugin recorded {recorded} redeemed; the module \
             redeems the best claim only above what the ledger paid",
            facts.balance
        ));
    }
    Ok(())
}

/// `incoming_claim_submitted` as this module keeps it (its data says where it came from).
fn submitted_tracker(entry: &MaxValue) -> (String, MaxValue) {
    (
        MVT_INCOMING_CLAIM_SUBMITTED.to_owned(),
        MaxValue {
            value: entry.value.clone(),
            data: json!({ "migratedFrom": LEGACY_XRP_PLUGIN_NAME, "legacyData": entry.data.clone() }),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hmac_derivation_depends_on_the_peer_and_differs_from_the_account_key(
    ) -> Result<(), LegacyConversionError> {
        let secret = "sEdSKaCy2JT7JaM7v95H9SxkhP9wS2r";
        let a = legacy_channel_key_candidates(secret, "rPeerOne")?;
        let b = legacy_channel_key_candidates(secret, "rPeerTwo")?;
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].0, ChannelKeyDerivation::PeerHmac);
        assert_ne!(a[0].1.public_key(), b[0].1.public_key());
        assert_eq!(a[1].1.public_key(), b[1].1.public_key());
        assert_ne!(a[0].1.public_key(), a[2].1.public_key());
        // Without a peer address only the derivations that do not need one are tried.
        assert_eq!(legacy_channel_key_candidates(secret, "")?.len(), 2);
        Ok(())
    }

    #[test]
    fn the_hmac_seed_is_hmac_sha256_of_label_and_peer_keyed_by_the_secret(
    ) -> Result<(), LegacyConversionError> {
        // The textbook construction, H((K ⊕ opad) ‖ H((K ⊕ ipad) ‖ m)), for a key shorter than the block.
        let secret = "sEdSKaCy2JT7JaM7v95H9SxkhP9wS2r";
        let peer = "rPeer";
        let mut key = [0u8; 64];
        key[..secret.len()].copy_from_slice(secret.as_bytes());
        let inner: Vec<u8> = key
            .iter()
            .map(|b| b ^ 0x36)
            .chain(format!("{LEGACY_CHANNEL_KEYS_LABEL}{peer}").bytes())
            .collect();
        let outer: Vec<u8> = key
            .iter()
            .map(|b| b ^ 0x5c)
            .chain(Sha256::digest(&inner).iter().copied())
            .collect();
        let expected = ed25519_from_seed(&Sha256::digest(&outer))?.public_key();
        let candidates = legacy_channel_key_candidates(secret, peer)?;
        assert_eq!(candidates[0].1.public_key(), expected);
        let early = ed25519_from_seed(&Sha256::digest(secret.as_bytes()))?.public_key();
        assert_eq!(candidates[1].1.public_key(), early);
        Ok(())
    }
}
