//! Helpers shared by the `xrp-paychan` end-to-end tests (`tests/xrp_trustline.rs`, `tests/xrp_engine.rs`): the
//! test keys, a fake rippled with Alice's channel to Bob, hand-made claims, polling and database reopening.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use btp::ilp_v1::{IlpV1Packet, Payment};
use bytes::Bytes;
use channel_modules::amount::LedgerAmount;
use channel_modules::store::{Transfer, TransferId};
use channel_modules::xrp::crypto::{ChannelId, KeyPair};
use channel_modules::xrp::fake_rippled::FakeRippled;
use ilp_bridge::store::Db;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type TestResult = Result<(), BoxError>;

/// Alice, the payer (ed25519 family seed; ripple-keypairs test vector).
pub(crate) const ALICE_SEED: &str = "sEdSKaCy2JT7JaM7v95H9SxkhP9wS2r";
/// Bob, the payee (secp256k1 family seed; ripple-keypairs test vector).
pub(crate) const BOB_SEED: &str = "sp5fghtJtpUorTwvof1NpDXAzNwf5";
/// Carol, a stranger whose key forges claims.
pub(crate) const CAROL_SEED: &str = "sEdT7wHTCLzDG7ueaw4hroSTBvH7Mk5";
/// Drops Alice deposits in her channel to Bob.
pub(crate) const DEPOSIT_DROPS: u64 = 1_000_000;
/// Settle delay of the channels, seconds (the module's default minimum).
pub(crate) const SETTLE_DELAY_SECS: u32 = 3_600;
/// Upper bound for polling loops (a guard against hanging, not a speed assertion).
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The three key pairs.
pub(crate) struct Keys {
    pub alice: KeyPair,
    pub bob: KeyPair,
    pub carol: KeyPair,
}

impl Keys {
    pub(crate) fn new() -> Result<Self, BoxError> {
        Ok(Keys {
            alice: KeyPair::from_seed(ALICE_SEED)?,
            bob: KeyPair::from_seed(BOB_SEED)?,
            carol: KeyPair::from_seed(CAROL_SEED)?,
        })
    }

    pub(crate) fn bob_address(&self) -> String {
        self.bob.public_key().address()
    }
}

/// A fake rippled on 127.0.0.1:0 holding Alice's channel to Bob (`DEPOSIT_DROPS`). Dropping it stops it.
pub(crate) struct Ledger {
    pub fake: FakeRippled,
    pub keys: Keys,
    pub a_to_b: ChannelId,
}

impl Ledger {
    pub(crate) async fn start() -> Result<Self, BoxError> {
        Self::start_with_deposit(DEPOSIT_DROPS).await
    }

    /// As [`Ledger::start`], with `deposit` drops in Alice's channel.
    pub(crate) async fn start_with_deposit(deposit: u64) -> Result<Self, BoxError> {
        let fake = FakeRippled::start().await?;
        let keys = Keys::new()?;
        let a_to_b = fake.create_channel(
            &keys.alice,
            &keys.bob_address(),
            deposit,
            SETTLE_DELAY_SECS,
            None,
        );
        Ok(Ledger { fake, keys, a_to_b })
    }

    /// The channel's redeemed balance on the ledger (drops paid to Bob so far).
    pub(crate) fn redeemed(&self) -> Result<u64, BoxError> {
        Ok(self
            .fake
            .channel(&self.a_to_b)
            .ok_or("alice's channel is gone from the ledger")?
            .balance)
    }

    /// Alice's options (payer: her outgoing channel).
    pub(crate) fn alice_options(&self) -> Value {
        json!({
            "rippled": self.fake.url(),
            "secret": ALICE_SEED,
            "channel": self.a_to_b.to_string(),
        })
    }

    /// Bob's options (payee: learns Alice's channel by RPC).
    pub(crate) fn bob_options(&self, max_unsecured: u64) -> Value {
        json!({
            "rippled": self.fake.url(),
            "secret": BOB_SEED,
            "maxUnsecured": max_unsecured.to_string(),
        })
    }
}

/// A claim in the module's wire shape, signed by `signer`, naming `public_key`'s key.
pub(crate) fn claim_json(
    channel: &ChannelId,
    drops: u64,
    signer: &KeyPair,
    public_key: &KeyPair,
) -> Result<Value, BoxError> {
    Ok(json!({
        "channel": channel.to_string(),
        "amount": drops.to_string(),
        "signature": hex::encode_upper(signer.sign_claim(channel, drops)?),
        "publicKey": public_key.public_key().to_hex(),
    }))
}

/// Polls `check` every 20 ms until it returns true; fails after [`WAIT`].
pub(crate) async fn eventually<F, Fut>(what: &str, check: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    Ok(crate::poll_common::poll_until(what, WAIT, check).await?)
}

/// Opens the RocksDB folder, waiting while a previous instance still lets go of its lock.
pub(crate) async fn open_db(path: &Path) -> Result<Arc<Db>, BoxError> {
    let mut last = None;
    for _ in 0..100 {
        match Db::open(path) {
            Ok(db) => return Ok(db),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("open db {}: {last:?}", path.display()).into())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Transfer `n` of `drops` to the ILP address `account` (expires in a minute), with its fulfillment.
pub(crate) fn transfer_to(n: u8, drops: u64, account: &str) -> (Transfer, [u8; 32]) {
    let fulfillment = [n; 32];
    let t = Transfer {
        id: TransferId([n; 16]),
        amount: LedgerAmount(drops),
        execution_condition: Sha256::digest(fulfillment).into(),
        expires_at_ms: now_ms() + 60_000,
        ilp: IlpV1Packet::Payment(Payment {
            amount: drops,
            account: account.to_owned(),
            data: Bytes::new(),
        })
        .to_bytes()
        .to_vec(),
        custom: None,
    };
    (t, fulfillment)
}
