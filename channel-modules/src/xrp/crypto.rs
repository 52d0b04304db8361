//! XRP Ledger payment-channel claim cryptography, byte-compatible with rippled's `channel_authorize` /
//! `channel_verify` and the `PaymentChannelClaim` transactor.
//!
//! A claim authorises the channel's destination to receive up to a cumulative number of drops. The signed
//! message is `"CLM\0"` (the hash prefix `0x434C4D00`) ‖ channel ID (32 bytes) ‖ drops (UInt64 big-endian),
//! 44 bytes in all. Two key types exist:
//!
//! * **ed25519**: the public key is 33 bytes, `0xED` followed by the 32-byte key; the signature (64 bytes) is
//!   over the raw 44-byte message.
//! * **secp256k1**: the public key is 33 bytes, SEC1-compressed; the signature is ECDSA over SHA-512Half of the
//!   message (the first 32 bytes of SHA-512), DER-encoded, with a low S ("fully canonical", which rippled
//!   requires for claims). Nonces follow RFC 6979, so signatures are reproducible.
//!
//! Secrets are accepted as XRPL family seeds (`s…`, base58) and derived as rippled does, or as hex private
//! keys (see [`KeyPair::from_secret`]). Addresses are `base58check(0x00 ‖ RIPEMD160(SHA256(public key)))` in
//! the XRPL alphabet.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::Verifier as _;
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use k256::elliptic_curve::sec1::ToEncodedPoint;
use ripemd::Ripemd160;
use sha2::{Digest, Sha256, Sha512};

/// Hash prefix of a payment-channel claim: ASCII `CLM` and a zero byte.
pub const CLAIM_PREFIX: [u8; 4] = *b"CLM\0";
/// Length of the signed claim message: prefix, channel ID, drops.
pub const CLAIM_MESSAGE_LEN_BYTES: usize = 4 + 32 + 8;
/// First byte of an ed25519 public key in XRPL encoding.
pub const ED25519_KEY_PREFIX: u8 = 0xED;
/// Length of an XRPL public key (either type).
pub const PUBLIC_KEY_LEN_BYTES: usize = 33;
/// Base58 version byte of a classic address (`r…`).
const ADDRESS_VERSION: u8 = 0x00;
/// Base58 version byte of an account public key (`a…`), as rippled prints `public_key` in `account_channels`.
const ACCOUNT_PUBLIC_KEY_VERSION: u8 = 0x23;
/// Base58 version byte of a secp256k1 family seed (`s…`).
const SECP256K1_SEED_VERSION: &[u8] = &[0x21];
/// Base58 version bytes of an ed25519 family seed (`sEd…`).
const ED25519_SEED_VERSION: &[u8] = &[0x01, 0xE1, 0x4B];
/// Entropy in a family seed.
const SEED_LEN_BYTES: usize = 16;

/// Errors of key parsing and signing. Messages never contain secret material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// A channel ID that is not 64 hex characters.
    #[error("invalid channel id {0:?}: expected 64 hex characters")]
    InvalidChannelId(String),
    /// A public key that is neither `ED`+32 bytes nor a compressed secp256k1 point.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    /// A secret that is neither a family seed nor a hex private key (the value itself is never included).
    #[error("invalid secret: {0}")]
    InvalidSecret(&'static str),
    /// A signature that does not decode (bad DER, wrong length).
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// The signing primitive failed (practically unreachable with valid keys).
    #[error("signing failed")]
    SigningFailed,
}

/// SHA-512Half: the first 32 bytes of SHA-512, the XRP Ledger's standard hash.
pub fn sha512_half(data: &[u8]) -> [u8; 32] {
    let digest = Sha512::digest(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest[..32]);
    out
}

/// A payment channel ID (the PayChannel ledger entry's index), 32 bytes; displayed as 64 uppercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelId(pub [u8; 32]);

impl FromStr for ChannelId {
    type Err = CryptoError;
    /// Parses 64 hex digits, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| CryptoError::InvalidChannelId(s.to_owned()))?;
        Ok(ChannelId(out))
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(self.0))
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

/// The 44 bytes a claim signs: `CLM\0` ‖ channel ‖ drops (big-endian).
pub fn claim_message(channel: &ChannelId, drops: u64) -> [u8; CLAIM_MESSAGE_LEN_BYTES] {
    let mut msg = [0u8; CLAIM_MESSAGE_LEN_BYTES];
    msg[..4].copy_from_slice(&CLAIM_PREFIX);
    msg[4..36].copy_from_slice(&channel.0);
    msg[36..].copy_from_slice(&drops.to_be_bytes());
    msg
}

/// An XRPL public key of either type.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// `0xED` ‖ 32-byte ed25519 key.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// Compressed secp256k1 point.
    Secp256k1(k256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Decodes the 33-byte XRPL form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != PUBLIC_KEY_LEN_BYTES {
            return Err(CryptoError::InvalidPublicKey(format!(
                "expected {PUBLIC_KEY_LEN_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        match bytes[0] {
            ED25519_KEY_PREFIX => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes[1..]);
                ed25519_dalek::VerifyingKey::from_bytes(&key)
                    .map(PublicKey::Ed25519)
                    .map_err(|_| CryptoError::InvalidPublicKey("not an ed25519 point".to_owned()))
            }
            0x02 | 0x03 => k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                .map(PublicKey::Secp256k1)
                .map_err(|_| CryptoError::InvalidPublicKey("not a secp256k1 point".to_owned())),
            other => Err(CryptoError::InvalidPublicKey(format!(
                "unknown key type prefix 0x{other:02X}"
            ))),
        }
    }

    /// Parses 66 hex digits, or the base58 account-public-key form (`a…`) rippled also prints.
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        if s.len() == 2 * PUBLIC_KEY_LEN_BYTES {
            if let Ok(bytes) = hex::decode(s) {
                return Self::from_bytes(&bytes);
            }
        }
        let decoded = base58_check_decode(s)
            .ok_or_else(|| CryptoError::InvalidPublicKey("neither hex nor base58".to_owned()))?;
        match decoded.split_first() {
            Some((&ACCOUNT_PUBLIC_KEY_VERSION, key)) => Self::from_bytes(key),
            _ => Err(CryptoError::InvalidPublicKey(
                "base58 value is not an account public key".to_owned(),
            )),
        }
    }

    /// The 33-byte XRPL form.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN_BYTES] {
        let mut out = [0u8; PUBLIC_KEY_LEN_BYTES];
        match self {
            PublicKey::Ed25519(key) => {
                out[0] = ED25519_KEY_PREFIX;
                out[1..].copy_from_slice(key.as_bytes());
            }
            PublicKey::Secp256k1(key) => {
                out.copy_from_slice(key.to_encoded_point(true).as_bytes());
            }
        }
        out
    }

    /// Uppercase hex of [`PublicKey::to_bytes`], as rippled writes `PublicKey` fields.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.to_bytes())
    }

    /// The 20-byte account ID: RIPEMD160(SHA256(key)).
    pub fn account_id(&self) -> [u8; 20] {
        let sha = Sha256::digest(self.to_bytes());
        let mut out = [0u8; 20];
        out.copy_from_slice(&Ripemd160::digest(sha));
        out
    }

    /// The classic address (`r…`) of the account whose master key this is.
    pub fn address(&self) -> String {
        encode_address(&self.account_id())
    }

    /// Checks a signature over arbitrary bytes the way rippled does (secp256k1: ECDSA over SHA-512Half with a
    /// fully canonical DER signature; ed25519: over the raw bytes).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(key) => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                key.verify(message, &sig).is_ok()
            }
            PublicKey::Secp256k1(key) => {
                let Ok(sig) = k256::ecdsa::Signature::from_der(signature) else {
                    return false;
                };
                // rippled demands a fully canonical (low-S) signature for claims.
                if sig.normalize_s().is_some() {
                    return false;
                }
                key.verify_prehash(&sha512_half(message), &sig).is_ok()
            }
        }
    }

    /// Checks a claim signature for `drops` on `channel`.
    pub fn verify_claim(&self, channel: &ChannelId, drops: u64, signature: &[u8]) -> bool {
        self.verify(&claim_message(channel, drops), signature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// A signing key of either type, with the family seed it came from (if any), which rippled's sign-and-submit
/// mode needs. `Debug` never prints secret material.
#[derive(Clone)]
pub struct KeyPair {
    key: SigningKey,
    seed: Option<String>,
}

#[derive(Clone)]
enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    Secp256k1(k256::ecdsa::SigningKey),
}

impl KeyPair {
    /// Parses a secret:
    /// * a family seed `s…` (secp256k1) or `sEd…` (ed25519), derived like rippled (the account's master key);
    /// * `ED` + 64 hex digits: an ed25519 private key;
    /// * 64 hex digits, or `00` + 64 hex digits: a secp256k1 private key.
    pub fn from_secret(secret: &str) -> Result<Self, CryptoError> {
        let secret = secret.trim();
        if secret.starts_with('s') {
            return Self::from_seed(secret);
        }
        let bytes = hex::decode(secret)
            .map_err(|_| CryptoError::InvalidSecret("not a seed and not hex"))?;
        match bytes.len() {
            33 if bytes[0] == ED25519_KEY_PREFIX => Self::ed25519_from_private(&bytes[1..]),
            33 if bytes[0] == 0x00 => Self::secp256k1_from_private(&bytes[1..]),
            32 => Self::secp256k1_from_private(&bytes),
            _ => Err(CryptoError::InvalidSecret(
                "hex private key must be 32 bytes (secp256k1), 00+32 bytes or ED+32 bytes",
            )),
        }
    }

    /// Derives the master key pair of a family seed (`s…`), as rippled and ripple-keypairs do.
    pub fn from_seed(seed: &str) -> Result<Self, CryptoError> {
        let decoded = base58_check_decode(seed)
            .ok_or(CryptoError::InvalidSecret("seed is not valid base58check"))?;
        let (key, entropy) = if let Some(entropy) = decoded.strip_prefix(ED25519_SEED_VERSION) {
            (KeyType::Ed25519, entropy)
        } else if let Some(entropy) = decoded.strip_prefix(SECP256K1_SEED_VERSION) {
            (KeyType::Secp256k1, entropy)
        } else {
            return Err(CryptoError::InvalidSecret("unknown seed version"));
        };
        if entropy.len() != SEED_LEN_BYTES {
            return Err(CryptoError::InvalidSecret("seed entropy must be 16 bytes"));
        }
        let mut pair = match key {
            KeyType::Ed25519 => Self::ed25519_from_private(&sha512_half(entropy))?,
            KeyType::Secp256k1 => {
                Self::secp256k1_from_private(&derive_secp256k1_private(entropy)?)?
            }
        };
        pair.seed = Some(seed.to_owned());
        Ok(pair)
    }

    fn ed25519_from_private(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::InvalidSecret("ed25519 private key must be 32 bytes"))?;
        Ok(KeyPair {
            key: SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&key)),
            seed: None,
        })
    }

    fn secp256k1_from_private(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key = k256::ecdsa::SigningKey::from_slice(bytes)
            .map_err(|_| CryptoError::InvalidSecret("secp256k1 private key out of range"))?;
        Ok(KeyPair {
            key: SigningKey::Secp256k1(key),
            seed: None,
        })
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        match &self.key {
            SigningKey::Ed25519(key) => PublicKey::Ed25519(key.verifying_key()),
            SigningKey::Secp256k1(key) => PublicKey::Secp256k1(*key.verifying_key()),
        }
    }

    /// The family seed this pair was derived from, if it was given as one (needed for rippled's
    /// sign-and-submit mode). Treat as secret.
    pub fn seed(&self) -> Option<&str> {
        self.seed.as_deref()
    }

    /// The private key in ripple-keypairs' hex form (`ED`… for ed25519, `00`… for secp256k1). Treat as
    /// secret; used by tests to compare against published vectors.
    pub fn private_key_hex(&self) -> String {
        match &self.key {
            SigningKey::Ed25519(key) => format!("ED{}", hex::encode_upper(key.to_bytes())),
            SigningKey::Secp256k1(key) => format!("00{}", hex::encode_upper(key.to_bytes())),
        }
    }

    /// Signs arbitrary bytes the XRPL way (secp256k1: low-S DER ECDSA over SHA-512Half, RFC 6979 nonce;
    /// ed25519: over the raw bytes).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.key {
            SigningKey::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                Ok(key.sign(message).to_bytes().to_vec())
            }
            SigningKey::Secp256k1(key) => {
                let sig: k256::ecdsa::Signature = key
                    .sign_prehash(&sha512_half(message))
                    .map_err(|_| CryptoError::SigningFailed)?;
                // k256 already normalises to low S; keep the guarantee explicit.
                let sig = sig.normalize_s().unwrap_or(sig);
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }

    /// Signs a claim for cumulative `drops` on `channel`.
    pub fn sign_claim(&self, channel: &ChannelId, drops: u64) -> Result<Vec<u8>, CryptoError> {
        self.sign(&claim_message(channel, drops))
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key", &self.public_key())
            .field("secret", &"<redacted>")
            .finish()
    }
}

enum KeyType {
    Ed25519,
    Secp256k1,
}

/// rippled's secp256k1 derivation: the root key is the first SHA-512Half(seed ‖ i) that is a valid scalar; the
/// account (master) key adds the first valid SHA-512Half(root public key ‖ account index 0 ‖ j), mod n.
fn derive_secp256k1_private(entropy: &[u8]) -> Result<[u8; 32], CryptoError> {
    let root = first_valid_scalar(entropy, None)?;
    let root_public = root.public_key().to_encoded_point(true);
    let intermediate = first_valid_scalar(root_public.as_bytes(), Some(0))?;
    let sum = *root.to_nonzero_scalar() + *intermediate.to_nonzero_scalar();
    let mut out = [0u8; 32];
    out.copy_from_slice(&sum.to_bytes());
    Ok(out)
}

/// Upper bound on derivation attempts; the chance of needing a second one is about 2^-128.
const MAX_DERIVATION_ATTEMPTS: u32 = 1024;

fn first_valid_scalar(
    bytes: &[u8],
    discriminator: Option<u32>,
) -> Result<k256::SecretKey, CryptoError> {
    for counter in 0..MAX_DERIVATION_ATTEMPTS {
        let mut hasher = Sha512::new();
        hasher.update(bytes);
        if let Some(d) = discriminator {
            hasher.update(d.to_be_bytes());
        }
        hasher.update(counter.to_be_bytes());
        let digest = hasher.finalize();
        // `from_slice` refuses zero and values ≥ n, exactly rippled's "valid scalar" test.
        if let Ok(key) = k256::SecretKey::from_slice(&digest[..32]) {
            return Ok(key);
        }
    }
    Err(CryptoError::InvalidSecret(
        "no valid secp256k1 scalar derived",
    ))
}

/// Decodes base58check in the XRPL alphabet; returns version bytes and payload, without the checksum.
pub fn base58_check_decode(s: &str) -> Option<Vec<u8>> {
    bs58::decode(s)
        .with_alphabet(bs58::Alphabet::RIPPLE)
        .with_check(None)
        .into_vec()
        .ok()
}

/// Encodes a 20-byte account ID as a classic address (`r…`).
pub fn encode_address(account_id: &[u8; 20]) -> String {
    let mut payload = Vec::with_capacity(21);
    payload.push(ADDRESS_VERSION);
    payload.extend_from_slice(account_id);
    bs58::encode(payload)
        .with_alphabet(bs58::Alphabet::RIPPLE)
        .with_check()
        .into_string()
}

/// Decodes a classic address (`r…`) to its account ID; `None` if it is not one.
pub fn decode_address(address: &str) -> Option<[u8; 20]> {
    let decoded = base58_check_decode(address)?;
    let (&version, id) = decoded.split_first()?;
    if version != ADDRESS_VERSION {
        return None;
    }
    id.try_into().ok()
}
