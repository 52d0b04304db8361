//! EIP-1559 (type 2) transactions, signed locally. The chain ID inside the signed payload gives EIP-155 replay
//! protection: a transaction signed for one chain is invalid on every other.

use num_bigint::BigUint;

use super::key::PrivateKey;
use super::rlp::{self, Item};
use super::types::{keccak256, Address, TxHash};
use super::EthError;

/// The EIP-2718 type byte of EIP-1559 transactions.
pub const EIP1559_TX_TYPE: u8 = 0x02;

/// An unsigned EIP-1559 transaction (empty access list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eip1559Tx {
    /// EIP-155 chain ID.
    pub chain_id: u64,
    /// Sender's nonce.
    pub nonce: u64,
    /// Tip per gas, wei.
    pub max_priority_fee_per_gas: BigUint,
    /// Fee cap per gas, wei.
    pub max_fee_per_gas: BigUint,
    /// Gas limit.
    pub gas_limit: u64,
    /// Recipient; `None` deploys a contract.
    pub to: Option<Address>,
    /// Wei sent along.
    pub value: BigUint,
    /// Call data or init code.
    pub data: Vec<u8>,
}

/// A signed transaction: the raw EIP-2718 envelope to broadcast and its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    /// `0x02 ‖ rlp([...fields, y_parity, r, s])`.
    pub raw: Vec<u8>,
    /// keccak256 of `raw`: the transaction hash nodes report.
    pub hash: TxHash,
    /// The nonce it uses (kept for reconciliation).
    pub nonce: u64,
}

impl Eip1559Tx {
    fn fields(&self) -> Vec<Item> {
        vec![
            Item::u64(self.chain_id),
            Item::u64(self.nonce),
            Item::uint(&self.max_priority_fee_per_gas),
            Item::uint(&self.max_fee_per_gas),
            Item::u64(self.gas_limit),
            Item::Bytes(self.to.map(|a| a.0.to_vec()).unwrap_or_default()),
            Item::uint(&self.value),
            Item::Bytes(self.data.clone()),
            Item::List(Vec::new()),
        ]
    }

    /// The digest the sender signs: `keccak256(0x02 ‖ rlp(fields))`.
    pub fn signing_hash(&self) -> [u8; 32] {
        let mut payload = vec![EIP1559_TX_TYPE];
        payload.extend(rlp::encode(&Item::List(self.fields())));
        keccak256(&payload)
    }

    /// Signs with `key`.
    pub fn sign(&self, key: &PrivateKey) -> Result<SignedTx, EthError> {
        let sig = key.sign_hash(&self.signing_hash())?;
        let mut fields = self.fields();
        fields.push(Item::u64(u64::from(sig.y_parity)));
        fields.push(Item::uint(&BigUint::from_bytes_be(&sig.r)));
        fields.push(Item::uint(&BigUint::from_bytes_be(&sig.s)));
        let mut raw = vec![EIP1559_TX_TYPE];
        raw.extend(rlp::encode(&Item::List(fields)));
        let hash = TxHash(keccak256(&raw));
        Ok(SignedTx {
            raw,
            hash,
            nonce: self.nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::key::recover_address;

    #[test]
    fn signature_recovers_the_sender_and_binds_the_chain_id() -> Result<(), EthError> {
        let key = PrivateKey::from_hex(
            "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        )?;
        let tx = Eip1559Tx {
            chain_id: 31337,
            nonce: 7,
            max_priority_fee_per_gas: BigUint::from(1_000_000_000u64),
            max_fee_per_gas: BigUint::from(3_000_000_000u64),
            gas_limit: 21_000,
            to: Some(key.address()),
            value: BigUint::from(12345u32),
            data: Vec::new(),
        };
        let signed = tx.sign(&key)?;
        assert_eq!(signed.raw[0], EIP1559_TX_TYPE);
        assert_eq!(signed.hash, TxHash(keccak256(&signed.raw)));
        let sig = key.sign_hash(&tx.signing_hash())?;
        assert_eq!(recover_address(&tx.signing_hash(), &sig)?, key.address());
        let other_chain = Eip1559Tx {
            chain_id: 1,
            ..tx.clone()
        };
        assert_ne!(other_chain.signing_hash(), tx.signing_hash());
        Ok(())
    }
}
