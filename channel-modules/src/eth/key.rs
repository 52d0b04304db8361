//! The local signing key: secp256k1 ECDSA with public-key recovery, as Ethereum uses it for transactions
//! (EIP-1559 `y_parity`) and for off-ledger messages (EIP-191 `personal_sign`).
//!
//! A [`PrivateKey`] is loaded from a file, an environment variable or (discouraged) the options JSON, is used
//! only in this process, and never printed: its `Debug` shows `[redacted]` and nothing logs it.

use std::fmt;
use std::path::Path;

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};

use super::types::{decode_fixed_hex, keccak256, Address};
use super::EthError;

/// Option naming a file that holds the hex private key.
pub const OPT_PRIVATE_KEY_FILE: &str = "privateKeyFile";
/// Option naming an environment variable that holds the hex private key.
pub const OPT_PRIVATE_KEY_ENV: &str = "privateKeyEnv";
/// Option holding the hex private key itself (tests and throw-away keys only).
pub const OPT_PRIVATE_KEY: &str = "privateKey";

/// A secp256k1 private key and its Ethereum address. `Debug` never shows the key.
#[derive(Clone)]
pub struct PrivateKey {
    key: SigningKey,
    address: Address,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey([redacted], address: {})", self.address)
    }
}

/// A recoverable ECDSA signature (low-S normalised).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoverableSignature {
    /// `r`, big-endian.
    pub r: [u8; 32],
    /// `s`, big-endian, always in the lower half of the curve order (EIP-2).
    pub s: [u8; 32],
    /// The recovery bit (0 or 1); `v = 27 + y_parity` in the 65-byte form.
    pub y_parity: u8,
}

impl RecoverableSignature {
    /// The 65-byte `r ‖ s ‖ v` form with `v ∈ {27, 28}` (what `ecrecover` and `personal_sign` use).
    pub fn to_bytes65(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..32].copy_from_slice(&self.r);
        out[32..64].copy_from_slice(&self.s);
        out[64] = 27 + self.y_parity;
        out
    }

    /// Parses the 65-byte form; accepts `v` as 0/1 or 27/28 and rejects high-S signatures.
    pub fn from_bytes65(bytes: &[u8]) -> Result<Self, EthError> {
        if bytes.len() != 65 {
            return Err(EthError::InvalidSignature(format!(
                "expected 65 bytes, got {}",
                bytes.len()
            )));
        }
        let y_parity = match bytes[64] {
            0 | 27 => 0,
            1 | 28 => 1,
            v => return Err(EthError::InvalidSignature(format!("bad v {v}"))),
        };
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&bytes[..32]);
        s.copy_from_slice(&bytes[32..64]);
        let sig = RecoverableSignature { r, s, y_parity };
        let parsed = sig.to_k256()?;
        if parsed.normalize_s().is_some() {
            return Err(EthError::InvalidSignature("high-s signature".to_owned()));
        }
        Ok(sig)
    }

    fn to_k256(self) -> Result<Signature, EthError> {
        Signature::from_scalars(self.r, self.s)
            .map_err(|_| EthError::InvalidSignature("r or s out of range".to_owned()))
    }
}

impl PrivateKey {
    /// A key from 32 bytes of hex (with or without `0x`).
    pub fn from_hex(hex_key: &str) -> Result<Self, EthError> {
        let bytes = decode_fixed_hex::<32>(hex_key.trim())
            .map_err(|_| EthError::InvalidKey("expected 32 bytes of hex".to_owned()))?;
        let key = SigningKey::from_slice(&bytes)
            .map_err(|_| EthError::InvalidKey("not a valid secp256k1 scalar".to_owned()))?;
        let address = address_of(key.verifying_key());
        Ok(PrivateKey { key, address })
    }

    /// A key read from a file holding its hex (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, EthError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EthError::InvalidKey(format!("cannot read key file {}: {e}", path.display()))
        })?;
        Self::from_hex(&text)
    }

    /// A key read from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, EthError> {
        let text = std::env::var(var)
            .map_err(|_| EthError::InvalidKey(format!("environment variable {var} is not set")))?;
        Self::from_hex(&text)
    }

    /// The key named by module options: exactly one of `privateKeyFile`, `privateKeyEnv`, `privateKey`.
    pub fn from_options(options: &serde_json::Value) -> Result<Self, EthError> {
        let file = options.get(OPT_PRIVATE_KEY_FILE).and_then(|v| v.as_str());
        let env = options.get(OPT_PRIVATE_KEY_ENV).and_then(|v| v.as_str());
        let inline = options.get(OPT_PRIVATE_KEY).and_then(|v| v.as_str());
        match (file, env, inline) {
            (Some(path), None, None) => Self::from_file(Path::new(path)),
            (None, Some(var), None) => Self::from_env(var),
            (None, None, Some(hex_key)) => Self::from_hex(hex_key),
            (None, None, None) => Err(EthError::InvalidKey(format!(
                "one of {OPT_PRIVATE_KEY_FILE}, {OPT_PRIVATE_KEY_ENV}, {OPT_PRIVATE_KEY} is required"
            ))),
            _ => Err(EthError::InvalidKey(format!(
                "only one of {OPT_PRIVATE_KEY_FILE}, {OPT_PRIVATE_KEY_ENV}, {OPT_PRIVATE_KEY} may be given"
            ))),
        }
    }

    /// The key's Ethereum address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs a 32-byte digest (no further hashing), low-S.
    pub fn sign_hash(&self, hash: &[u8; 32]) -> Result<RecoverableSignature, EthError> {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(hash)
            .map_err(|e| EthError::InvalidSignature(format!("signing failed: {e}")))?;
        // k256 already returns low-S; normalise anyway so the recovery bit always matches the S we emit.
        let (sig, recid) = match sig.normalize_s() {
            Some(normalised) => (
                normalised,
                RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced()),
            ),
            None => (sig, recid),
        };
        let (r, s) = sig.split_bytes();
        let mut out = RecoverableSignature {
            r: [0u8; 32],
            s: [0u8; 32],
            y_parity: u8::from(recid.is_y_odd()),
        };
        out.r.copy_from_slice(&r);
        out.s.copy_from_slice(&s);
        Ok(out)
    }

    /// EIP-191 `personal_sign` of `message` (`"\x19Ethereum Signed Message:\n" + len + message`).
    pub fn sign_personal(&self, message: &[u8]) -> Result<RecoverableSignature, EthError> {
        self.sign_hash(&eip191_hash(message))
    }
}

/// The EIP-191 version 0x45 digest of `message`.
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut data = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
    data.extend_from_slice(message);
    keccak256(&data)
}

/// The address whose key made `signature` over the digest `hash`.
pub fn recover_address(
    hash: &[u8; 32],
    signature: &RecoverableSignature,
) -> Result<Address, EthError> {
    let sig = signature.to_k256()?;
    let recid = RecoveryId::from_byte(signature.y_parity)
        .ok_or_else(|| EthError::InvalidSignature("bad recovery id".to_owned()))?;
    let key = VerifyingKey::recover_from_prehash(hash, &sig, recid)
        .map_err(|_| EthError::InvalidSignature("public key not recoverable".to_owned()))?;
    Ok(address_of(&key))
}

fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_encoded_point(false);
    // Uncompressed SEC1 is 0x04 ‖ X ‖ Y; the address is the last 20 bytes of keccak(X ‖ Y).
    let digest = keccak256(&point.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&digest[12..]);
    Address(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anvil's (and Hardhat's) well-known first dev account.
    const DEV_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const DEV_ADDRESS_0: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

    #[test]
    fn address_derivation_matches_known_dev_account() -> Result<(), EthError> {
        let key = PrivateKey::from_hex(DEV_KEY_0)?;
        assert_eq!(key.address().to_string(), DEV_ADDRESS_0);
        Ok(())
    }

    #[test]
    fn debug_never_shows_the_key() -> Result<(), EthError> {
        let key = PrivateKey::from_hex(DEV_KEY_0)?;
        let shown = format!("{key:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains("ac0974bec39a17e3"));
        Ok(())
    }

    #[test]
    fn sign_and_recover_round_trip_and_tamper_detection() -> Result<(), EthError> {
        let key = PrivateKey::from_hex(DEV_KEY_0)?;
        let sig = key.sign_personal(b"hello")?;
        let hash = eip191_hash(b"hello");
        assert_eq!(recover_address(&hash, &sig)?, key.address());
        let parsed = RecoverableSignature::from_bytes65(&sig.to_bytes65())?;
        assert_eq!(parsed, sig);
        let other = eip191_hash(b"hellO");
        assert_ne!(recover_address(&other, &sig)?, key.address());
        Ok(())
    }

    #[test]
    fn bad_keys_and_options_are_refused() {
        assert!(PrivateKey::from_hex("0x00").is_err());
        assert!(PrivateKey::from_hex(&format!("0x{}", "00".repeat(32))).is_err());
        assert!(PrivateKey::from_options(&serde_json::json!({})).is_err());
        assert!(PrivateKey::from_options(&serde_json::json!({
            "privateKey": DEV_KEY_0, "privateKeyEnv": "X"
        }))
        .is_err());
        assert!(PrivateKey::from_env("ILP_BRIDGE_SURELY_UNSET_VAR").is_err());
    }

    #[test]
    fn key_file_is_read_and_trimmed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{DEV_KEY_0}\n"))?;
        let key = PrivateKey::from_options(
            &serde_json::json!({ "privateKeyFile": path.to_string_lossy() }),
        )?;
        assert_eq!(key.address().to_string(), DEV_ADDRESS_0);
        Ok(())
    }
}
