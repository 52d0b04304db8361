//! The `PaymentChannel` contract as this module sees it (`channel-modules/contracts/PaymentChannel.sol`, one
//! contract per channel, and the frozen first version in `contracts/v1`): the compiled artifacts, recognising a
//! deployed channel's code and version, the claim digest a payer signs, the init code that deploys a channel,
//! and reading a channel's state. The payer (`super::payer`) deploys and funds channels; the payee
//! (`super::payee`, `super::close`) checks and closes them.

use std::sync::OnceLock;

use num_bigint::BigUint;
use num_traits::Zero;
use serde::Deserialize;

use super::super::abi::{self, Token};
use super::super::rlp::{self, Item};
use super::super::types::{decode_hex, keccak256, u256_word, Address};
use super::super::wallet::Wallet;
use super::super::EthError;
use crate::error::ModuleError;

/// The compiled contract (`contracts/build.sh` regenerates it from `PaymentChannel.sol`).
pub(crate) const PAYMENT_CHANNEL_ARTIFACT: &str =
    include_str!("../../../contracts/PaymentChannel.json");
/// The first contract version, frozen (`contracts/v1`): its channels are recognised in order to close and
/// reclaim them, never to take claims (see [`ChannelVersion::V1`]).
pub(crate) const PAYMENT_CHANNEL_V1_ARTIFACT: &str =
    include_str!("../../../contracts/v1/PaymentChannel.json");

/// Which `PaymentChannel` contract a channel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelVersion {
    /// This release's contract: claims commit to the chain ID ([`claim_digest`]).
    Current,
    /// The first contract version (`contracts/v1`): claims sign only the contract and the amount
    /// ([`v1_claim_digest`]), so one earned on a chain would close the channel at the same address on another
    /// chain. Takes no new claims; closed with the claims already kept, and reclaimed.
    V1,
}

/// A compiled contract, parsed once.
struct Artifact {
    bytecode: Vec<u8>,
    runtime: Vec<u8>,
    immutables: Vec<(usize, usize)>,
}

fn artifact() -> Result<&'static Artifact, EthError> {
    static ARTIFACT: OnceLock<Result<Artifact, EthError>> = OnceLock::new();
    ARTIFACT
        .get_or_init(|| parse_artifact(PAYMENT_CHANNEL_ARTIFACT))
        .as_ref()
        .map_err(Clone::clone)
}

/// Fails when this version's compiled contract does not parse (checked when a module is built, so that a
/// broken artifact is found at start, not at the first settlement).
pub(super) fn check_artifact() -> Result<(), EthError> {
    artifact().map(|_| ())
}

fn v1_artifact() -> Result<&'static Artifact, EthError> {
    static ARTIFACT: OnceLock<Result<Artifact, EthError>> = OnceLock::new();
    ARTIFACT
        .get_or_init(|| parse_artifact(PAYMENT_CHANNEL_V1_ARTIFACT))
        .as_ref()
        .map_err(Clone::clone)
}

/// The fields of a compiled artifact (`contracts/build.js` writes them from solc's output) this module reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactJson {
    bytecode: String,
    deployed_bytecode: String,
    /// solc's `immutableReferences`: AST node ID → the byte ranges of the runtime code holding that immutable.
    #[serde(default)]
    immutable_references: std::collections::BTreeMap<String, Vec<CodeRange>>,
}

/// One byte range of runtime code (solc's `{"start", "length"}`).
#[derive(Deserialize)]
struct CodeRange {
    start: usize,
    length: usize,
}

fn parse_artifact(text: &str) -> Result<Artifact, EthError> {
    let json: ArtifactJson =
        serde_json::from_str(text).map_err(|e| EthError::BadResponse(format!("artifact: {e}")))?;
    let immutables = json
        .immutable_references
        .values()
        .flatten()
        .map(|range| (range.start, range.length))
        .collect();
    Ok(Artifact {
        bytecode: decode_hex(&json.bytecode)?,
        runtime: decode_hex(&json.deployed_bytecode)?,
        immutables,
    })
}

/// Whether `code` is `artifact`'s runtime code with some values in the immutable slots.
fn runs(artifact: &Artifact, code: &[u8]) -> bool {
    if code.len() != artifact.runtime.len() {
        return false;
    }
    let mut masked = code.to_vec();
    for (start, length) in &artifact.immutables {
        if let Some(slot) = masked.get_mut(*start..start + length) {
            slot.fill(0);
        }
    }
    masked == artifact.runtime
}

/// Which `PaymentChannel` `code` is the runtime code of (immutables masked), if any.
pub(crate) fn payment_channel_version(code: &[u8]) -> Result<Option<ChannelVersion>, EthError> {
    if runs(artifact()?, code) {
        Ok(Some(ChannelVersion::Current))
    } else if runs(v1_artifact()?, code) {
        Ok(Some(ChannelVersion::V1))
    } else {
        Ok(None)
    }
}

/// Whether `code` is this version's contract's runtime code with some values in the immutable slots.
#[cfg(test)]
fn is_payment_channel_code(code: &[u8]) -> Result<bool, EthError> {
    Ok(payment_channel_version(code)? == Some(ChannelVersion::Current))
}

/// The address a contract deployed by `sender` with `nonce` gets: `keccak256(rlp([sender, nonce]))[12..]`.
pub(crate) fn create_address(sender: &Address, nonce: u64) -> Address {
    let encoded = rlp::encode(&Item::List(vec![
        Item::Bytes(sender.0.to_vec()),
        Item::u64(nonce),
    ]));
    let hash = keccak256(&encoded);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    Address(out)
}

/// The digest a claim signs (before the EIP-191 prefix): `keccak256(uint256 chain ID ‖ channel ‖ uint256
/// amount)`, the contract's `abi.encodePacked(block.chainid, address(this), amount)`. The chain ID comes from
/// `eth_chainId` ([`Wallet::chain_id`]).
pub fn claim_digest(
    chain_id: u64,
    channel: &Address,
    amount: &BigUint,
) -> Result<[u8; 32], EthError> {
    let mut data = u256_word(&BigUint::from(chain_id))?.to_vec();
    data.extend_from_slice(&channel.0);
    data.extend_from_slice(&u256_word(amount)?);
    Ok(keccak256(&data))
}

/// The first contract version's claim digest (`keccak256(channel ‖ uint256 amount)`, no chain ID): used only to
/// tell a peer that still signs this way apart from a forger in the refusal.
pub fn v1_claim_digest(channel: &Address, amount: &BigUint) -> Result<[u8; 32], EthError> {
    let mut data = channel.0.to_vec();
    data.extend_from_slice(&u256_word(amount)?);
    Ok(keccak256(&data))
}

/// Init code deploying a channel to `payee` expiring at `expires_at` (Unix seconds): bytecode ‖ arguments.
pub fn payment_channel_init_code(payee: &Address, expires_at: u64) -> Result<Vec<u8>, EthError> {
    init_code(artifact()?, payee, expires_at)
}

/// [`payment_channel_init_code`] of the first contract version ([`ChannelVersion::V1`]): for tests of the
/// upgrade.
pub fn payment_channel_v1_init_code(payee: &Address, expires_at: u64) -> Result<Vec<u8>, EthError> {
    init_code(v1_artifact()?, payee, expires_at)
}

fn init_code(artifact: &Artifact, payee: &Address, expires_at: u64) -> Result<Vec<u8>, EthError> {
    let mut init = artifact.bytecode.clone();
    init.extend(abi::encode(&[
        Token::Address(*payee),
        Token::Uint(BigUint::from(expires_at)),
    ])?);
    Ok(init)
}

/// A channel's on-chain state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelState {
    /// Contract address.
    pub address: Address,
    /// Funder and signer.
    pub payer: Address,
    /// Who may close.
    pub payee: Address,
    /// Unix seconds from which the payer may reclaim.
    pub expires_at: u64,
    /// Closed or reclaimed.
    pub closed: bool,
    /// Current deposit, wei.
    pub balance: BigUint,
    /// Which contract it runs: only [`ChannelVersion::Current`] takes new claims.
    pub version: ChannelVersion,
}

/// Reads a channel; `Ok(None)` when there is no code at `address` (not deployed, or not yet).
/// `Err(NotAccepted)` when the code there is neither this version's contract nor [`ChannelVersion::V1`].
pub async fn read_channel(
    wallet: &Wallet,
    address: &Address,
) -> Result<Option<ChannelState>, ModuleError> {
    let rpc = wallet.rpc();
    let code = rpc.code(address).await?;
    if code.is_empty() {
        return Ok(None);
    }
    let version = payment_channel_version(&code)?.ok_or_else(|| {
        ModuleError::NotAccepted(format!("{address} is not a PaymentChannel contract"))
    })?;
    let call = |sig: &'static str| async move {
        rpc.eth_call(address, &abi::encode_call(sig, &[])?).await
    };
    let payer = Address::from_word(abi::word(&call("payer()").await?, 0)?)?;
    let payee = Address::from_word(abi::word(&call("payee()").await?, 0)?)?;
    let expires_at = u64::try_from(abi::uint_word(&call("expiresAt()").await?, 0)?)
        .map_err(|_| ModuleError::NotAccepted("channel expiry out of range".into()))?;
    let closed = !abi::uint_word(&call("closed()").await?, 0)?.is_zero();
    let balance = rpc.balance(address).await?;
    Ok(Some(ChannelState {
        address: *address,
        payer,
        payee,
        expires_at,
        closed,
        balance,
        version,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_address_matches_known_vector() -> Result<(), EthError> {
        // The first contract deployed by anvil's dev account 0 lands here (widely used in Foundry docs).
        let sender: Address = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266".parse()?;
        assert_eq!(
            create_address(&sender, 0).to_string(),
            "0x5fbdb2315678afecb367f032d93f642f64180aa3"
        );
        Ok(())
    }

    #[test]
    fn artifact_parses_and_runtime_check_masks_immutables() -> Result<(), EthError> {
        let a = artifact()?;
        assert!(!a.bytecode.is_empty());
        assert!(!a.immutables.is_empty());
        let mut code = a.runtime.clone();
        let (start, len) = a.immutables[0];
        code[start..start + len].fill(0xaa);
        assert!(is_payment_channel_code(&code)?);
        let mut tampered = code.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(!is_payment_channel_code(&tampered)?);
        assert!(!is_payment_channel_code(&code[1..])?);
        Ok(())
    }

    #[test]
    fn the_first_contract_version_is_recognised_as_v1_and_not_as_current() -> Result<(), EthError> {
        let (current, v1) = (artifact()?, v1_artifact()?);
        assert_ne!(current.runtime, v1.runtime);
        for (a, version) in [(current, ChannelVersion::Current), (v1, ChannelVersion::V1)] {
            let mut code = a.runtime.clone();
            for (start, len) in &a.immutables {
                code[*start..start + len].fill(0x5c);
            }
            assert_eq!(payment_channel_version(&code)?, Some(version));
            assert_eq!(
                is_payment_channel_code(&code)?,
                version == ChannelVersion::Current
            );
        }
        assert_eq!(payment_channel_version(&[0x60, 0x80])?, None);
        Ok(())
    }

    #[test]
    fn claim_digests_commit_to_the_chain_and_differ_from_the_v1_digest() -> Result<(), EthError> {
        let channel: Address = "0xbded0d2bf404bdcba897a74e6657f1f12e5c6fb6".parse()?;
        let amount = BigUint::from(3_000_000u32);
        let on_a = claim_digest(31337, &channel, &amount)?;
        assert_ne!(on_a, claim_digest(31338, &channel, &amount)?);
        assert_ne!(on_a, v1_claim_digest(&channel, &amount)?);
        // The preimage is abi.encodePacked(uint256 chainid, address, uint256 amount): 32 + 20 + 32 bytes.
        let mut preimage = [0u8; 84];
        preimage[24..32].copy_from_slice(&31337u64.to_be_bytes());
        preimage[32..52].copy_from_slice(&channel.0);
        preimage[80..84].copy_from_slice(&3_000_000u32.to_be_bytes());
        assert_eq!(on_a, keccak256(&preimage));
        Ok(())
    }
}
