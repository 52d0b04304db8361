//! The stock modules run the `ChannelModule` conformance suite (`channel_modules::testing::conformance`), the
//! way a third-party module would: `iou` and `claim-test` as they are, `xrp-paychan` on a fake rippled (a fresh
//! ledger and channel for every check).

use std::sync::Arc;

use async_trait::async_trait;
use channel_modules::amount::ModuleUnits;
use channel_modules::eth::testing::Anvil;
use channel_modules::iou::IouModule;
use channel_modules::testing::conformance::{self, HostMode, Subject, SubjectPair};
use channel_modules::testing::TestClock;
use channel_modules::xrp::crypto::KeyPair;
use channel_modules::xrp::fake_rippled::FakeRippled;
use channel_modules::xrp::XrpPaychan;
use channel_modules::{build_module, ChannelModule};
use serde_json::json;

type SetupResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Cumulative totals every subject settles (each increment within the payees' allowance of 1000).
fn totals() -> Vec<ModuleUnits> {
    [100u64, 250, 400, 700].map(ModuleUnits::from).to_vec()
}

/// `iou`: in peer mode as `build_module` builds it; in engine mode as the engine does
/// ([`IouModule::for_engine`]), with a trust limit that covers the totals.
struct Iou;

#[async_trait]
impl Subject for Iou {
    async fn pair(&self, mode: HostMode, _clock: &TestClock) -> SetupResult<SubjectPair> {
        let options = json!({ "scale": 6, "trustLimit": "1000" });
        let build = || -> SetupResult<Arc<dyn ChannelModule>> {
            Ok(match mode {
                HostMode::Peer => build_module("iou", &options)?,
                HostMode::Engine => Arc::new(IouModule::for_engine(&options)?),
            })
        };
        Ok(SubjectPair {
            payer: build()?,
            payer_options: options.clone(),
            payee: build()?,
            payee_options: options.clone(),
            keep_alive: None,
        })
    }

    fn totals(&self) -> Vec<ModuleUnits> {
        totals()
    }
}

/// `claim-test`, built by name in both modes.
struct ClaimTest;

#[async_trait]
impl Subject for ClaimTest {
    async fn pair(&self, _mode: HostMode, _clock: &TestClock) -> SetupResult<SubjectPair> {
        let options = json!({ "secret": "conformance", "maxUnsecured": "1000", "scale": 6 });
        Ok(SubjectPair {
            payer: build_module("claim-test", &options)?,
            payer_options: options.clone(),
            payee: build_module("claim-test", &options)?,
            payee_options: options,
            keep_alive: None,
        })
    }

    fn totals(&self) -> Vec<ModuleUnits> {
        totals()
    }
}

/// `xrp-paychan`: Alice pays Bob through a channel of 1000 drops on a fake rippled sharing the hosts' clock.
struct Xrp;

const ALICE_SEED: &str = "sEdSKaCy2JT7JaM7v95H9SxkhP9wS2r";
const BOB_SEED: &str = "sp5fghtJtpUorTwvof1NpDXAzNwf5";

#[async_trait]
impl Subject for Xrp {
    async fn pair(&self, _mode: HostMode, clock: &TestClock) -> SetupResult<SubjectPair> {
        let ledger_clock = clock.clone();
        let fake = FakeRippled::start_with_clock(Arc::new(move || ledger_clock.now())).await?;
        let alice = KeyPair::from_seed(ALICE_SEED)?;
        let bob = KeyPair::from_seed(BOB_SEED)?;
        let channel = fake.create_channel(&alice, &bob.public_key().address(), 1_000, 3_600, None);
        let payer_options =
            json!({ "rippled": fake.url(), "secret": ALICE_SEED, "channel": channel.to_string() });
        let payee_options =
            json!({ "rippled": fake.url(), "secret": BOB_SEED, "maxUnsecured": "1000" });
        Ok(SubjectPair {
            payer: Arc::new(XrpPaychan::from_options(&payer_options)?),
            payer_options,
            payee: Arc::new(XrpPaychan::from_options(&payee_options)?),
            payee_options,
            keep_alive: Some(Box::new(fake)),
        })
    }

    fn totals(&self) -> Vec<ModuleUnits> {
        totals()
    }
}

#[tokio::test]
async fn iou_conforms() -> Result<(), Box<dyn std::error::Error>> {
    conformance::run(&Iou).await?.into_result()?;
    Ok(())
}

#[tokio::test]
async fn claim_test_conforms() -> Result<(), Box<dyn std::error::Error>> {
    conformance::run(&ClaimTest).await?.into_result()?;
    Ok(())
}

#[tokio::test]
async fn xrp_paychan_conforms_on_a_fake_ledger() -> Result<(), Box<dyn std::error::Error>> {
    conformance::run(&Xrp).await?.into_result()?;
    Ok(())
}

/// The Ethereum modules on a fresh anvil chain per check (dev accounts 4 pays 5).
struct Eth {
    module: &'static str,
    extra: serde_json::Value,
}

const ETH_PAYER_KEY_INDEX: usize = 4;
const ETH_PAYEE_KEY_INDEX: usize = 5;

#[async_trait]
impl Subject for Eth {
    async fn pair(&self, _mode: HostMode, _clock: &TestClock) -> SetupResult<SubjectPair> {
        let anvil = Anvil::start(&[])?;
        let options = |key_index: usize| {
            let mut options = json!({
                "rpcUri": anvil.url(),
                "privateKey": anvil.dev_key(key_index),
                "pollIntervalMs": 20,
                "receiptTimeoutMs": 20_000,
                "maxUnsecured": "1000",
            });
            if let (Some(o), Some(extra)) = (options.as_object_mut(), self.extra.as_object()) {
                o.extend(extra.clone());
            }
            options
        };
        let payer_options = options(ETH_PAYER_KEY_INDEX);
        let payee_options = options(ETH_PAYEE_KEY_INDEX);
        Ok(SubjectPair {
            payer: build_module(self.module, &payer_options)?,
            payer_options,
            payee: build_module(self.module, &payee_options)?,
            payee_options,
            keep_alive: Some(Box::new(anvil)),
        })
    }

    fn totals(&self) -> Vec<ModuleUnits> {
        totals()
    }
}

/// Whether anvil runs here (outside CI a missing binary skips the test, as every anvil test does).
fn anvil_available() -> bool {
    Anvil::for_test().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_payment_conforms_on_anvil() -> Result<(), Box<dyn std::error::Error>> {
    if !anvil_available() {
        return Ok(());
    }
    let subject = Eth {
        module: "eth-payment",
        extra: json!({}),
    };
    conformance::run(&subject).await?.into_result()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_channel_conforms_on_anvil() -> Result<(), Box<dyn std::error::Error>> {
    if !anvil_available() {
        return Ok(());
    }
    let subject = Eth {
        module: "eth-channel",
        extra: json!({ "channelDeposit": "1000", "channelTimeoutSecs": 86_400, "closeMarginSecs": 3_600 }),
    };
    conformance::run(&subject).await?.into_result()?;
    Ok(())
}
