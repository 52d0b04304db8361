//! `eth-payment` against a real chain: every test starts its own anvil (killed on drop) and wires two modules
//! through `TestHost::pair`.

use std::sync::Arc;

use channel_modules::amount::{LedgerAmount, LedgerSum, ModuleUnits};
use channel_modules::eth::payment::{
    EthPaymentModule, AMOUNT_RECEIVED_KEY, MAX_TX_HASHES_PER_CLAIM,
    MAX_TX_HASHES_PER_PAYMENTS_REPLY, PAYMENTS_LOG_KEY, RPC_PAYMENTS_SINCE,
};
use channel_modules::eth::peer::peer_identity;
use channel_modules::eth::rpc::RpcClient;
use channel_modules::eth::testing::{test_token_init_code, Anvil};
use channel_modules::eth::wallet::{TxSettings, TxStatus, Wallet};
use channel_modules::eth::{abi, Address, PrivateKey, TxHash};
use channel_modules::identity::{IdentityOrigin, IdentityRecord};
use channel_modules::store::{Direction, Transfer, TransferId};
use channel_modules::testing::{TestHost, TestPair};
use channel_modules::{ChannelModule, Claim, ModuleError};
use num_bigint::BigUint;
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAYER_KEY_INDEX: usize = 1;
const PAYEE_KEY_INDEX: usize = 2;
const STRANGER_KEY_INDEX: usize = 3;

fn options(anvil: &Anvil, key_index: usize, extra: Value) -> Value {
    let mut opts = json!({
        "rpcUri": anvil.url(),
        "privateKey": anvil.dev_key(key_index),
        "pollIntervalMs": 20,
        "receiptTimeoutMs": 20_000,
        "maxUnsecured": "1000",
    });
    if let (Some(o), Some(e)) = (opts.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    opts
}

struct Setup {
    anvil: Anvil,
    pair: TestPair,
    payer: Arc<EthPaymentModule>,
    payee: Arc<EthPaymentModule>,
    payer_opts: Value,
}

async fn setup(extra: Value) -> Result<Option<Setup>, Box<dyn std::error::Error>> {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(None);
    };
    let payer_opts = options(&anvil, PAYER_KEY_INDEX, extra.clone());
    let payee_opts = options(&anvil, PAYEE_KEY_INDEX, extra);
    let payer = Arc::new(EthPaymentModule::from_options(&payer_opts)?);
    let payee = Arc::new(EthPaymentModule::from_options(&payee_opts)?);
    let pair = TestHost::pair(
        payer.clone() as Arc<dyn ChannelModule>,
        payer_opts.clone(),
        payee.clone() as Arc<dyn ChannelModule>,
        payee_opts,
    );
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    Ok(Some(Setup {
        anvil,
        pair,
        payer,
        payee,
        payer_opts,
    }))
}

fn address_of(anvil: &Anvil, index: usize) -> Result<Address, Box<dyn std::error::Error>> {
    Ok(PrivateKey::from_hex(anvil.dev_key(index))?.address())
}

fn claim_hashes(claim: &Claim) -> Vec<TxHash> {
    match claim {
        Claim::Json(v) => v["txHashes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().and_then(|s| s.parse().ok()))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Wei spent on gas by the transactions in `hashes`.
async fn fees(rpc: &RpcClient, hashes: &[TxHash]) -> Result<BigUint, Box<dyn std::error::Error>> {
    let mut total = BigUint::default();
    for hash in hashes {
        total += rpc.receipt(hash).await?.ok_or("no receipt")?.fee();
    }
    Ok(total)
}

#[tokio::test]
async fn payments_move_money_and_balances_agree_to_the_wei() -> TestResult {
    let Some(s) = setup(json!({})).await? else {
        return Ok(());
    };
    let rpc = s.anvil.client()?;
    let payer_addr = address_of(&s.anvil, PAYER_KEY_INDEX)?;
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    assert_eq!(s.payer.peer_account(), Some(payee_addr.to_string()));
    assert_eq!(s.payee.peer_account(), Some(payer_addr.to_string()));
    let payer_before = rpc.balance(&payer_addr).await?;
    let payee_before = rpc.balance(&payee_addr).await?;

    let first_total = ModuleUnits::from(1_000_000_000_000_000);
    let claim = s
        .pair
        .a
        .module
        .create_outgoing_claim(&s.pair.a.ctx, &first_total)
        .await?
        .ok_or("no claim")?;
    let credit = s
        .pair
        .b
        .module
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, first_total);

    // A second settlement pays only the difference.
    let second_total = ModuleUnits::from(2_500_000_000_000_000);
    let claim2 = s
        .pair
        .a
        .module
        .create_outgoing_claim(&s.pair.a.ctx, &second_total)
        .await?
        .ok_or("no claim")?;
    let credit2 = s
        .pair
        .b
        .module
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim2))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit2.amount, &second_total - &first_total);
    assert_ne!(credit.settlement_id, credit2.settlement_id);

    // The same total again pays nothing and the replayed claim credits nothing.
    let claim3 = s
        .pair
        .a
        .module
        .create_outgoing_claim(&s.pair.a.ctx, &second_total)
        .await?
        .ok_or("no claim")?;
    assert_eq!(claim3, claim2);
    assert_eq!(
        s.pair
            .b
            .module
            .handle_incoming_claim(&s.pair.b.ctx, Some(&claim))
            .await?,
        None
    );
    assert_eq!(
        s.pair
            .b
            .module
            .handle_incoming_claim(&s.pair.b.ctx, Some(&claim3))
            .await?,
        None
    );

    // Chain, payer's log and payee's log agree to the wei.
    let hashes = claim_hashes(&claim2);
    assert_eq!(hashes.len(), 2);
    let payer_after = rpc.balance(&payer_addr).await?;
    let payee_after = rpc.balance(&payee_addr).await?;
    assert_eq!(&payee_after - &payee_before, second_total.0);
    assert_eq!(
        &payer_before - &payer_after,
        &second_total.0 + fees(&rpc, &hashes).await?
    );
    let payer_sums = s
        .pair
        .a
        .host
        .stores()
        .transfer_log(PAYMENTS_LOG_KEY)?
        .sums();
    let payee_sums = s
        .pair
        .b
        .host
        .stores()
        .transfer_log(PAYMENTS_LOG_KEY)?
        .sums();
    assert_eq!(
        ModuleUnits::from_own_log(payer_sums.outgoing_fulfilled),
        second_total
    );
    assert_eq!(
        payer_sums.outgoing_fulfilled,
        payer_sums.outgoing_fulfilled_and_prepared
    );
    assert_eq!(
        ModuleUnits::from_own_log(payee_sums.incoming_fulfilled),
        second_total
    );
    Ok(())
}

#[tokio::test]
async fn foreign_forged_and_misdirected_payments_are_refused_and_credit_nothing() -> TestResult {
    let Some(s) = setup(json!({})).await? else {
        return Ok(());
    };
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    let stranger_addr = address_of(&s.anvil, STRANGER_KEY_INDEX)?;
    let settings = TxSettings::default();

    // Someone else pays the payee: the payer must not be able to claim it.
    let stranger = Wallet::new(
        s.anvil.url(),
        PrivateKey::from_hex(s.anvil.dev_key(STRANGER_KEY_INDEX))?,
        settings.clone(),
    )?;
    let foreign = match stranger
        .send_and_follow(Some(payee_addr), BigUint::from(5_000u32), Vec::new())
        .await?
    {
        TxStatus::Confirmed(r) => r.transaction_hash,
        other => return Err(format!("stranger payment failed: {other:?}").into()),
    };
    // The payer pays a third party, not the payee.
    let misdirected = match s
        .payer
        .wallet()
        .send_and_follow(Some(stranger_addr), BigUint::from(7_000u32), Vec::new())
        .await?
    {
        TxStatus::Confirmed(r) => r.transaction_hash,
        other => return Err(format!("misdirected payment failed: {other:?}").into()),
    };
    let forged = TxHash([0x42; 32]);
    for hash in [foreign, misdirected, forged] {
        let claim = Claim::Json(json!({ "txHashes": [hash.to_string()] }));
        let result = s
            .pair
            .b
            .module
            .handle_incoming_claim(&s.pair.b.ctx, Some(&claim))
            .await;
        assert!(
            matches!(result, Err(ModuleError::NotAccepted(_))),
            "{hash}: {result:?}"
        );
    }
    // Garbage claims are refused too.
    for bad in [
        Claim::Text("not a hash".into()),
        Claim::Json(json!({ "amount": "5" })),
        Claim::Binary(vec![1, 2, 3]),
    ] {
        assert!(s
            .pair
            .b
            .module
            .handle_incoming_claim(&s.pair.b.ctx, Some(&bad))
            .await
            .is_err());
    }
    let sums = s
        .pair
        .b
        .host
        .stores()
        .transfer_log(PAYMENTS_LOG_KEY)?
        .sums();
    assert_eq!(sums.incoming_fulfilled, LedgerSum::ZERO);
    assert_eq!(sums.incoming_fulfilled_and_prepared, LedgerSum::ZERO);
    Ok(())
}

#[tokio::test]
async fn incoming_prepares_are_limited_to_max_unsecured_above_payments() -> TestResult {
    let Some(s) = setup(json!({})).await? else {
        return Ok(());
    };
    let main = s.pair.b.host.stores().transfer_log("")?;
    let mut n = 0u8;
    let mut prepare = |amount: u64| {
        n += 1;
        Transfer {
            id: TransferId([n; 16]),
            amount: LedgerAmount(amount),
            execution_condition: [n; 32],
            expires_at_ms: i64::MAX,
            ilp: Vec::new(),
            custom: None,
        }
    };
    // maxUnsecured = 1000: 600 + 400 fit, one more unit does not.
    for amount in [600, 400] {
        let t = prepare(amount);
        let record = main.prepare(&t, Direction::Incoming).await?;
        assert!(matches!(
            record,
            channel_modules::store::PrepareOutcome::Prepared
        ));
        let stored = main.get(&t.id).await?.ok_or("missing")?;
        s.pair
            .b
            .module
            .handle_incoming_prepare(&s.pair.b.ctx, &stored)
            .await?;
    }
    let over = prepare(1);
    main.prepare(&over, Direction::Incoming).await?;
    let stored = main.get(&over.id).await?.ok_or("missing")?;
    let refused = s
        .pair
        .b
        .module
        .handle_incoming_prepare(&s.pair.b.ctx, &stored)
        .await;
    assert!(matches!(refused, Err(ModuleError::NotAccepted(_))));
    main.cancel(&over.id, "refused").await?;

    // After the peer pays 500 wei, 500 more may go unsecured.
    let claim = s
        .pair
        .a
        .module
        .create_outgoing_claim(&s.pair.a.ctx, &ModuleUnits::from(500))
        .await?
        .ok_or("no claim")?;
    s.pair
        .b
        .module
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim))
        .await?
        .ok_or("no credit")?;
    let fits = prepare(500);
    main.prepare(&fits, Direction::Incoming).await?;
    let stored = main.get(&fits.id).await?.ok_or("missing")?;
    s.pair
        .b
        .module
        .handle_incoming_prepare(&s.pair.b.ctx, &stored)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_payment_pays_exactly_once() -> TestResult {
    let Some(s) = setup(json!({})).await? else {
        return Ok(());
    };
    let rpc = s.anvil.client()?;
    let payer_addr = address_of(&s.anvil, PAYER_KEY_INDEX)?;
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    let payee_before = rpc.balance(&payee_addr).await?;
    let nonce_before = rpc.transaction_count(&payer_addr, "latest").await?;
    let total = ModuleUnits::from(3_000_000_000_000);

    // The chain stops mining and the payer gives up waiting: the payment is recorded and broadcast, not mined.
    s.anvil.set_automine(false).await?;
    let impatient_opts = {
        let mut o = s.payer_opts.clone();
        o["receiptTimeoutMs"] = json!(300);
        o
    };
    let impatient = Arc::new(EthPaymentModule::from_options(&impatient_opts)?);
    let failed = impatient.create_outgoing_claim(&s.pair.a.ctx, &total).await;
    assert!(matches!(failed, Err(ModuleError::Ledger(_))), "{failed:?}");
    let log = s.pair.a.host.stores().transfer_log(PAYMENTS_LOG_KEY)?;
    let pending = log.prepared().await?;
    assert_eq!(pending.len(), 1);
    let hash: TxHash = pending[0].transfer.custom.as_ref().ok_or("custom")?["txHash"]
        .as_str()
        .ok_or("hash")?
        .parse()?;
    // The node loses the transaction (as after a crash before the broadcast reached it).
    s.anvil.drop_transaction(&hash).await?;
    drop(impatient);
    s.anvil.set_automine(true).await?;

    // A new module on the same stores reconciles at connect: it rebroadcasts the same signed transaction.
    let restarted = Arc::new(EthPaymentModule::from_options(&s.payer_opts)?);
    s.pair.b.host.connect_to(
        &s.pair.a.host,
        restarted.clone() as Arc<dyn ChannelModule>,
        s.payer_opts.clone(),
        "a",
    );
    restarted.connect(&s.pair.a.ctx).await?;
    assert!(log.prepared().await?.is_empty());
    let receipt = rpc
        .receipt(&hash)
        .await?
        .ok_or("the recorded tx was not mined")?;
    assert!(receipt.success);

    // Settling the same total again pays nothing more, and the claim still reaches the peer.
    let claim = restarted
        .create_outgoing_claim(&s.pair.a.ctx, &total)
        .await?
        .ok_or("no claim")?;
    assert_eq!(claim_hashes(&claim), vec![hash]);
    let credit = s
        .pair
        .b
        .module
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, total);
    assert_eq!(rpc.balance(&payee_addr).await? - payee_before, total.0);
    assert_eq!(
        rpc.transaction_count(&payer_addr, "latest").await?,
        nonce_before + 1
    );
    assert_eq!(
        ModuleUnits::from_own_log(log.sums().outgoing_fulfilled),
        total
    );
    Ok(())
}

#[tokio::test]
async fn erc20_payments_are_verified_from_transfer_events() -> TestResult {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let deployer = Wallet::new(
        anvil.url(),
        PrivateKey::from_hex(anvil.dev_key(PAYER_KEY_INDEX))?,
        TxSettings::default(),
    )?;
    let token = deployer
        .deploy(
            test_token_init_code(&BigUint::from(1_000_000_000u64))?,
            BigUint::default(),
        )
        .await?;
    let extra = json!({ "tokenAddress": token.to_string(), "tokenDecimals": 6 });
    let payer_opts = options(&anvil, PAYER_KEY_INDEX, extra.clone());
    let payee_opts = options(&anvil, PAYEE_KEY_INDEX, extra);
    let payer = Arc::new(EthPaymentModule::from_options(&payer_opts)?);
    let payee = Arc::new(EthPaymentModule::from_options(&payee_opts)?);
    assert_eq!(payee.asset_scale(), 6);
    let pair = TestHost::pair(payer.clone(), payer_opts, payee.clone(), payee_opts);
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    let claim = pair
        .a
        .module
        .create_outgoing_claim(&pair.a.ctx, &ModuleUnits::from(123_456))
        .await?
        .ok_or("no claim")?;
    let credit = pair
        .b
        .module
        .handle_incoming_claim(&pair.b.ctx, Some(&claim))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, ModuleUnits::from(123_456));
    let payee_addr = address_of(&anvil, PAYEE_KEY_INDEX)?;
    let data = abi::encode_call("balanceOf(address)", &[abi::Token::Address(payee_addr)])?;
    let balance = abi::uint_word(&anvil.client()?.eth_call(&token, &data).await?, 0)?;
    assert_eq!(balance, BigUint::from(123_456u32));
    Ok(())
}

/// How a [`FaultyHost`] breaks the next `set_if_max` on the `amount_settled` tracker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SettledFault {
    /// Works.
    None,
    /// Fails without writing (a crash just before the tracker write).
    BeforeWrite,
    /// Writes, then fails (a crash just after the tracker write, before the log is updated).
    AfterWrite,
}

/// A host over a [`TestHost`] whose `amount_settled` tracker fails once as told.
struct FaultyHost {
    inner: Arc<TestHost>,
    fault: Arc<std::sync::Mutex<SettledFault>>,
}

struct FaultyTracker {
    inner: Arc<dyn channel_modules::store::MaxValueTracker>,
    fault: Arc<std::sync::Mutex<SettledFault>>,
}

fn take_fault(fault: &std::sync::Mutex<SettledFault>) -> SettledFault {
    let mut guard = fault.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::replace(&mut *guard, SettledFault::None)
}

#[async_trait::async_trait]
impl channel_modules::store::MaxValueTracker for FaultyTracker {
    async fn set_if_max(
        &self,
        entry: channel_modules::store::MaxValue,
    ) -> Result<channel_modules::store::MaxValue, channel_modules::store::StoreError> {
        let injected = channel_modules::store::StoreError::Io("injected crash".into());
        match take_fault(&self.fault) {
            SettledFault::None => self.inner.set_if_max(entry).await,
            SettledFault::BeforeWrite => Err(injected),
            SettledFault::AfterWrite => {
                self.inner.set_if_max(entry).await?;
                Err(injected)
            }
        }
    }

    async fn get_max(
        &self,
    ) -> Result<channel_modules::store::MaxValue, channel_modules::store::StoreError> {
        self.inner.get_max().await
    }
}

#[async_trait::async_trait]
impl channel_modules::ContextHost for FaultyHost {
    fn transfer_log(
        &self,
        key: &str,
    ) -> Result<Arc<dyn channel_modules::store::TransferLog>, channel_modules::store::StoreError>
    {
        self.inner.transfer_log(key)
    }

    fn max_value_tracker(
        &self,
        key: &str,
    ) -> Result<Arc<dyn channel_modules::store::MaxValueTracker>, channel_modules::store::StoreError>
    {
        let inner = self.inner.max_value_tracker(key)?;
        if key == channel_modules::eth::payment::AMOUNT_SETTLED_KEY {
            Ok(Arc::new(FaultyTracker {
                inner,
                fault: self.fault.clone(),
            }))
        } else {
            Ok(inner)
        }
    }

    async fn rpc(&self, method: &str, args: Value) -> Result<Value, ModuleError> {
        self.inner.rpc(method, args).await
    }

    fn now(&self) -> std::time::SystemTime {
        self.inner.now()
    }

    async fn hold_identity(
        &self,
        key: &str,
        account_id: &str,
        origin: channel_modules::identity::IdentityOrigin,
    ) -> Result<(), ModuleError> {
        self.inner.hold_identity(key, account_id, origin).await
    }
}

/// A confirmed payment whose claim data write "crashes" (before or after the write) still reaches the peer
/// through the next settlement, exactly once, and is paid once.
#[tokio::test]
async fn a_crash_around_the_claim_write_never_loses_a_confirmed_payment() -> TestResult {
    for fault in [SettledFault::BeforeWrite, SettledFault::AfterWrite] {
        let Some(s) = setup(json!({})).await? else {
            return Ok(());
        };
        let rpc = s.anvil.client()?;
        let payer_addr = address_of(&s.anvil, PAYER_KEY_INDEX)?;
        let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
        let payee_before = rpc.balance(&payee_addr).await?;
        let nonce_before = rpc.transaction_count(&payer_addr, "latest").await?;
        let total = ModuleUnits::from(5_000_000_000_000);

        let faulty = Arc::new(FaultyHost {
            inner: s.pair.a.host.clone(),
            fault: Arc::new(std::sync::Mutex::new(fault)),
        });
        let faulty_ctx = channel_modules::ChannelContext::new(
            faulty as Arc<dyn channel_modules::ContextHost>,
            s.payer_opts.clone(),
            "a",
        );
        let failed = s.payer.create_outgoing_claim(&faulty_ctx, &total).await;
        assert!(
            matches!(failed, Err(ModuleError::Store(_))),
            "{fault:?}: {failed:?}"
        );

        // A restarted payer settles the same total: nothing more is paid, the confirmed payment's hash is in
        // the claim once, and the payee credits it.
        let restarted = Arc::new(EthPaymentModule::from_options(&s.payer_opts)?);
        restarted.connect(&s.pair.a.ctx).await?;
        let claim = restarted
            .create_outgoing_claim(&s.pair.a.ctx, &total)
            .await?
            .ok_or("the confirmed payment is in no claim")?;
        let hashes = claim_hashes(&claim);
        assert_eq!(hashes.len(), 1, "{fault:?}: {hashes:?}");
        let credit = s
            .pair
            .b
            .module
            .handle_incoming_claim(&s.pair.b.ctx, Some(&claim))
            .await?
            .ok_or("no credit")?;
        assert_eq!(credit.amount, total, "{fault:?}");
        assert_eq!(rpc.balance(&payee_addr).await? - &payee_before, total.0);
        assert_eq!(
            rpc.transaction_count(&payer_addr, "latest").await?,
            nonce_before + 1
        );
        let log = s.pair.a.host.stores().transfer_log(PAYMENTS_LOG_KEY)?;
        assert!(log.prepared().await?.is_empty());
        assert_eq!(
            ModuleUnits::from_own_log(log.sums().outgoing_fulfilled),
            total
        );
        let settled = s
            .pair
            .a
            .host
            .stores()
            .max_value_tracker(channel_modules::eth::payment::AMOUNT_SETTLED_KEY)?
            .get_max()
            .await?;
        assert_eq!(settled.value, total.0, "{fault:?}");
    }
    Ok(())
}

/// Two accounts of one node: a second account whose peer proves the first account's peer address in
/// `eth_address` (the same payer behind a second account, or a squatter relaying the owner's proof) makes the
/// address *contested*: from then on **neither** account is credited (the first one is re-checked at credit
/// time, not only when it pinned), with an error naming the identity and both accounts. The operator then
/// configures `peerAddress` on the rightful account, which takes the identity over and is credited again
/// (including the payment refused meanwhile); the other stays refused, and a second configured account too.
#[tokio::test]
async fn a_second_account_proving_the_same_peer_address_contests_it_until_the_operator_configures_it(
) -> TestResult {
    let Some(s) = setup(json!({})).await? else {
        return Ok(());
    };
    let payer_address = address_of(&s.anvil, PAYER_KEY_INDEX)?;
    let total = ModuleUnits::from(2_000_000_000_000);
    let claim = s
        .pair
        .a
        .module
        .create_outgoing_claim(&s.pair.a.ctx, &total)
        .await?
        .ok_or("no claim")?;
    let credit = s
        .pair
        .b
        .module
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, total);

    // Account "b2" on the payee's node: its peer (the payer again) proves the payer's address.
    let other_host = s
        .pair
        .b
        .host
        .same_node(channel_modules::memory::MemoryStores::unbounded());
    other_host.connect_to(
        &s.pair.a.host,
        s.pair.a.module.clone(),
        s.payer_opts.clone(),
        "a",
    );
    let other_opts = s.pair.b.ctx.options().clone();
    let other = EthPaymentModule::from_options(&other_opts)?;
    let other_ctx = other_host.context(other_opts, "b2");
    other.connect(&other_ctx).await?;
    assert_eq!(other.peer_account(), None);
    let refused = other.handle_incoming_claim(&other_ctx, Some(&claim)).await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m))
            if m.contains("contested") && m.contains(&payer_address.to_string())
                && m.contains("b, b2") && m.contains("peerAddress")),
        "{refused:?}"
    );
    let chain_id = s.anvil.client()?.chain_id().await?;
    let identity_key = peer_identity(chain_id, &payer_address);
    let identity = s.pair.b.host.identity_record(&identity_key);
    assert!(
        matches!(&identity, Some(IdentityRecord::Contested { accounts }) if accounts == &["b", "b2"]),
        "{identity:?}"
    );

    // The first account, which held the address uncontested, is refused from now on: a second payment is
    // not credited to it.
    let second_total = ModuleUnits::from(3_000_000_000_000);
    let claim = s
        .pair
        .a
        .module
        .create_outgoing_claim(&s.pair.a.ctx, &second_total)
        .await?
        .ok_or("no claim")?;
    let refused = s
        .pair
        .b
        .module
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim))
        .await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.contains("contested")),
        "{refused:?}"
    );
    let logged = |host: &TestHost| -> Result<LedgerSum, Box<dyn std::error::Error>> {
        Ok(host
            .stores()
            .transfer_log(PAYMENTS_LOG_KEY)?
            .sums()
            .incoming_fulfilled_and_prepared)
    };
    assert_eq!(logged(&s.pair.b.host)?, LedgerSum(2_000_000_000_000));
    assert_eq!(logged(&other_host)?, LedgerSum::ZERO);

    // The operator configures peerAddress on the rightful account "b" (same stores, restarted module): it takes
    // the identity over and is credited again, including the payment refused meanwhile.
    let mut configured_opts = s.pair.b.ctx.options().clone();
    configured_opts["peerAddress"] = json!(payer_address.to_string());
    let configured = EthPaymentModule::from_options(&configured_opts)?;
    let configured_ctx = s.pair.b.host.context(configured_opts.clone(), "b");
    configured.connect(&configured_ctx).await?;
    let credit = configured
        .handle_incoming_claim(&configured_ctx, Some(&claim))
        .await?
        .ok_or("no credit for the configured account")?;
    assert_eq!(credit.amount, &second_total - &total);
    assert_eq!(
        s.pair.b.host.identity_record(&identity_key),
        Some(IdentityRecord::Held {
            account: "b".to_owned(),
            origin: IdentityOrigin::Configured
        })
    );
    // The other proven account stays refused, and so does a second configured account.
    let refused = other.handle_incoming_claim(&other_ctx, Some(&claim)).await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.contains("(b)")),
        "{refused:?}"
    );
    let third_host = s
        .pair
        .b
        .host
        .same_node(channel_modules::memory::MemoryStores::unbounded());
    let third = EthPaymentModule::from_options(&configured_opts)?;
    let third_ctx = third_host.context(configured_opts, "b3");
    third.connect(&third_ctx).await?;
    let refused = third.handle_incoming_claim(&third_ctx, Some(&claim)).await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.contains("(b)")),
        "{refused:?}"
    );
    assert_eq!(logged(&other_host)?, LedgerSum::ZERO);
    assert_eq!(logged(&third_host)?, LedgerSum::ZERO);
    Ok(())
}

/// Records `hash` (paying `amount`) as an incoming payment in `log`, the way `eth-payment` records a verified
/// payment (key: the hash's first 16 bytes).
async fn record_incoming_payment(
    log: &dyn channel_modules::store::TransferLog,
    hash: &TxHash,
    amount: u64,
) -> TestResult {
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.0[..16]);
    let condition = <sha2::Sha256 as sha2::Digest>::digest(hash.0).into();
    let transfer = Transfer {
        id: TransferId(id),
        amount: LedgerAmount(amount),
        execution_condition: condition,
        expires_at_ms: i64::MAX,
        ilp: Vec::new(),
        custom: Some(json!({ "txHash": hash.to_string() })),
    };
    log.prepare(&transfer, Direction::Incoming).await?;
    log.fulfill(&TransferId(id), &hash.0).await?;
    Ok(())
}

/// A payee module on `stores` (peer address configured), wired to the setup's payer, connected.
async fn payee_on(
    s: &Setup,
    stores: channel_modules::memory::MemoryStores,
) -> Result<
    (
        Arc<TestHost>,
        EthPaymentModule,
        channel_modules::ChannelContext,
    ),
    Box<dyn std::error::Error>,
> {
    let mut opts = options(&s.anvil, PAYEE_KEY_INDEX, json!({}));
    opts["peerAddress"] = json!(address_of(&s.anvil, PAYER_KEY_INDEX)?.to_string());
    let host = TestHost::with_stores(stores, s.pair.a.host.clock().clone());
    host.connect_to(
        &s.pair.a.host,
        s.pair.a.module.clone(),
        s.payer_opts.clone(),
        "a",
    );
    let module = EthPaymentModule::from_options(&opts)?;
    let ctx = host.context(opts, "b-store");
    module.connect(&ctx).await?;
    Ok((host, module, ctx))
}

/// A store written before `amount_received` existed (incoming payments in `eth_payments`, each credited when
/// recorded, no tracker): the first `connect` seeds the tracker from the log, so the next claim, which carries
/// the old payment's hash again, credits only the new payment. A store started fresh is not seeded later: a
/// payment recorded there whose credit was lost (a crash between the two) is still credited by the next claim.
#[tokio::test]
async fn amount_received_is_seeded_once_from_a_store_that_predates_it() -> TestResult {
    let Some(s) = setup(json!({})).await? else {
        return Ok(());
    };
    let first = ModuleUnits::from(1_000_000_000_000);
    let claim = s
        .pair
        .a
        .module
        .create_outgoing_claim(&s.pair.a.ctx, &first)
        .await?
        .ok_or("no claim")?;
    let old_hash = claim_hashes(&claim)[0];

    // The old version's store: the payment recorded (and credited back then), no amount_received.
    let old_stores = channel_modules::memory::MemoryStores::unbounded();
    record_incoming_payment(
        old_stores.transfer_log(PAYMENTS_LOG_KEY)?.as_ref(),
        &old_hash,
        1_000_000_000_000,
    )
    .await?;
    let (host, payee, ctx) = payee_on(&s, old_stores).await?;
    let received = host
        .stores()
        .max_value_tracker(channel_modules::eth::payment::AMOUNT_RECEIVED_KEY)?;
    assert_eq!(received.get_max().await?.value, first.0);

    let second = ModuleUnits::from(3_000_000_000_000);
    let claim = s
        .pair
        .a
        .module
        .create_outgoing_claim(&s.pair.a.ctx, &second)
        .await?
        .ok_or("no claim")?;
    assert_eq!(
        claim_hashes(&claim).len(),
        2,
        "the old hash is carried again"
    );
    let credit = payee
        .handle_incoming_claim(&ctx, Some(&claim))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, &second - &first);
    assert_eq!(received.get_max().await?.value, second.0);
    // Connecting again changes nothing.
    payee.connect(&ctx).await?;
    assert_eq!(received.get_max().await?.value, second.0);
    assert!(payee
        .handle_incoming_claim(&ctx, Some(&claim))
        .await?
        .is_none());

    // A fresh store: connected (marked) before anything was received. A payment recorded there whose credit a
    // crash lost is credited by the next claim, also after a reconnect.
    let (fresh_host, fresh, fresh_ctx) =
        payee_on(&s, channel_modules::memory::MemoryStores::unbounded()).await?;
    let fresh_log = fresh_host.stores().transfer_log(PAYMENTS_LOG_KEY)?;
    record_incoming_payment(fresh_log.as_ref(), &old_hash, 1_000_000_000_000).await?;
    fresh.connect(&fresh_ctx).await?;
    let restarted = EthPaymentModule::from_options(fresh_ctx.options())?;
    restarted.connect(&fresh_ctx).await?;
    let credit = restarted
        .handle_incoming_claim(&fresh_ctx, Some(&claim))
        .await?
        .ok_or("the lost credit was not recovered")?;
    assert_eq!(credit.amount, second);
    Ok(())
}

/// How a [`ListingPayer`] answers `eth_payments_since`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Listing {
    /// As the real payer does.
    Honest,
    /// The real payer's reply with these extra hashes put in front of every non-empty page.
    WithForeign([TxHash; 3]),
    /// As a payer without `eth_payments_since`: the method is unknown.
    Unknown,
}

/// A payer: the real `eth-payment` module, whose `eth_payments_since` replies are tampered with as told.
struct ListingPayer {
    inner: Arc<EthPaymentModule>,
    listing: std::sync::Mutex<Listing>,
}

#[async_trait::async_trait]
impl ChannelModule for ListingPayer {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn asset_scale(&self) -> u8 {
        self.inner.asset_scale()
    }

    async fn connect(&self, ctx: &channel_modules::ChannelContext) -> Result<(), ModuleError> {
        self.inner.connect(ctx).await
    }

    async fn disconnect(&self, ctx: &channel_modules::ChannelContext) -> Result<(), ModuleError> {
        self.inner.disconnect(ctx).await
    }

    async fn handle_incoming_prepare(
        &self,
        ctx: &channel_modules::ChannelContext,
        record: &channel_modules::store::TransferRecord,
    ) -> Result<(), ModuleError> {
        self.inner.handle_incoming_prepare(ctx, record).await
    }

    async fn create_outgoing_claim(
        &self,
        ctx: &channel_modules::ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        self.inner.create_outgoing_claim(ctx, total).await
    }

    async fn handle_incoming_claim(
        &self,
        ctx: &channel_modules::ChannelContext,
        claim: Option<&Claim>,
    ) -> Result<Option<channel_modules::IncomingCredit>, ModuleError> {
        self.inner.handle_incoming_claim(ctx, claim).await
    }

    async fn handle_rpc(
        &self,
        ctx: &channel_modules::ChannelContext,
        method: &str,
        args: Value,
    ) -> Result<Value, ModuleError> {
        let listing = *self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if method != RPC_PAYMENTS_SINCE {
            return self.inner.handle_rpc(ctx, method, args).await;
        }
        match listing {
            Listing::Honest => self.inner.handle_rpc(ctx, method, args).await,
            Listing::Unknown => Err(ModuleError::UnknownMethod(method.to_owned())),
            Listing::WithForeign(extra) => {
                let mut reply = self.inner.handle_rpc(ctx, method, args).await?;
                if let Some(hashes) = reply["txHashes"].as_array_mut() {
                    if !hashes.is_empty() {
                        for hash in extra.iter().rev() {
                            hashes.insert(0, json!(hash.to_string()));
                        }
                    }
                }
                Ok(reply)
            }
        }
    }
}

/// A payer (wrapped in a [`ListingPayer`]) and a payee, wired and connected.
struct ListingSetup {
    anvil: Anvil,
    pair: TestPair,
    payer: Arc<ListingPayer>,
}

async fn listing_setup() -> Result<Option<ListingSetup>, Box<dyn std::error::Error>> {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(None);
    };
    let payer_opts = options(&anvil, PAYER_KEY_INDEX, json!({}));
    let payee_opts = options(&anvil, PAYEE_KEY_INDEX, json!({}));
    let payer = Arc::new(ListingPayer {
        inner: Arc::new(EthPaymentModule::from_options(&payer_opts)?),
        listing: std::sync::Mutex::new(Listing::Honest),
    });
    let payee = Arc::new(EthPaymentModule::from_options(&payee_opts)?);
    let pair = TestHost::pair(
        payer.clone() as Arc<dyn ChannelModule>,
        payer_opts,
        payee as Arc<dyn ChannelModule>,
        payee_opts,
    );
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    Ok(Some(ListingSetup { anvil, pair, payer }))
}

/// Wei of the `i`-th lost payment (distinct amounts, so a total names one set of payments).
fn lost_payment_wei(i: u64) -> u64 {
    1_000_000_000_000 + i * 1_000
}

/// The payer makes `count` payments whose claims are all lost (never handed to the payee), and the payee's
/// books show the same total as fulfilled (the payer owes it). Returns the hashes, oldest first, and the total.
async fn pay_with_lost_claims(
    pair: &TestPair,
    count: u64,
) -> Result<(Vec<TxHash>, BigUint), Box<dyn std::error::Error>> {
    let mut total = BigUint::default();
    let mut hashes = Vec::new();
    for i in 1..=count {
        total += lost_payment_wei(i);
        let claim = pair
            .a
            .module
            .create_outgoing_claim(&pair.a.ctx, &ModuleUnits(total.clone()))
            .await?
            .ok_or("no claim")?;
        let latest = *claim_hashes(&claim).last().ok_or("empty claim")?;
        hashes.push(latest);
    }
    owe(pair, 0xf0, u64::try_from(&total)?).await?;
    Ok((hashes, total))
}

/// Records on the payee's main log an incoming transfer of `amount`, fulfilled: the payer owes it.
async fn owe(pair: &TestPair, id: u8, amount: u64) -> TestResult {
    let main = pair.b.host.stores().transfer_log("")?;
    let t = Transfer {
        id: TransferId([id; 16]),
        amount: LedgerAmount(amount),
        execution_condition: [id; 32],
        expires_at_ms: i64::MAX,
        ilp: Vec::new(),
        custom: None,
    };
    main.prepare(&t, Direction::Incoming).await?;
    main.fulfill(&t.id, &[id; 32]).await?;
    Ok(())
}

/// Offers the payee an incoming transfer of 1 unit: `true` if accepted (it stays prepared), `false` if refused
/// over `maxUnsecured` (it is cancelled).
async fn offer(pair: &TestPair, id: u8) -> Result<bool, Box<dyn std::error::Error>> {
    let main = pair.b.host.stores().transfer_log("")?;
    let t = Transfer {
        id: TransferId([id; 16]),
        amount: LedgerAmount(1),
        execution_condition: [id; 32],
        expires_at_ms: i64::MAX,
        ilp: Vec::new(),
        custom: None,
    };
    main.prepare(&t, Direction::Incoming).await?;
    let record = main.get(&t.id).await?.ok_or("missing")?;
    match pair
        .b
        .module
        .handle_incoming_prepare(&pair.b.ctx, &record)
        .await
    {
        Ok(()) => Ok(true),
        Err(ModuleError::NotAccepted(_)) => {
            main.cancel(&t.id, "refused").await?;
            Ok(false)
        }
        Err(other) => Err(other.into()),
    }
}

/// The payee's payments log (incoming fulfilled) and its `amount_received`.
async fn payee_received(pair: &TestPair) -> Result<(BigUint, BigUint), Box<dyn std::error::Error>> {
    let stores = pair.b.host.stores();
    let logged = ModuleUnits::from_own_log(
        stores
            .transfer_log(PAYMENTS_LOG_KEY)?
            .sums()
            .incoming_fulfilled,
    )
    .0;
    let credited = stores
        .max_value_tracker(AMOUNT_RECEIVED_KEY)?
        .get_max()
        .await?
        .value;
    Ok((logged, credited))
}

/// Whether the payee recorded `hash` as a verified incoming payment.
async fn payee_recorded(
    pair: &TestPair,
    hash: &TxHash,
) -> Result<bool, Box<dyn std::error::Error>> {
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.0[..16]);
    let log = pair.b.host.stores().transfer_log(PAYMENTS_LOG_KEY)?;
    Ok(matches!(
        log.get(&TransferId(id)).await?,
        Some(channel_modules::store::TransferRecord {
            direction: Direction::Incoming,
            state: channel_modules::store::TransferState::Fulfilled { .. },
            ..
        })
    ))
}

/// How many `eth_payments_since` requests the payer received.
fn since_requests(pair: &TestPair) -> usize {
    pair.a
        .host
        .rpc_log()
        .iter()
        .filter(|(method, _)| method == RPC_PAYMENTS_SINCE)
        .count()
}

/// More consecutive payments lose their claims than a claim carries (and than one `eth_payments_since` reply
/// lists): before refusing a transfer, the payee asks, pages through the payer's list and credits every payment
/// exactly once; asking again credits nothing.
#[tokio::test]
async fn payments_of_more_lost_claims_than_a_claim_carries_are_all_credited_once() -> TestResult {
    let Some(s) = listing_setup().await? else {
        return Ok(());
    };
    let count = u64::try_from(MAX_TX_HASHES_PER_PAYMENTS_REPLY + MAX_TX_HASHES_PER_CLAIM + 5)?;
    let (hashes, total) = pay_with_lost_claims(&s.pair, count).await?;
    assert_eq!(
        payee_received(&s.pair).await?,
        (BigUint::default(), BigUint::default())
    );

    assert!(
        offer(&s.pair, 1).await?,
        "the payee still refuses: not every payment was credited"
    );
    assert_eq!(
        payee_received(&s.pair).await?,
        (total.clone(), total.clone())
    );
    for hash in &hashes {
        assert!(payee_recorded(&s.pair, hash).await?, "{hash} not recorded");
    }
    let asked = since_requests(&s.pair);
    assert!(
        asked >= 2,
        "one page cannot list them all, yet {asked} request(s)"
    );

    // The payer owes more than it paid (not settled yet): the payee asks again, and nothing is credited twice.
    owe(&s.pair, 0xf1, 5_000).await?;
    s.pair
        .b
        .host
        .clock()
        .advance(std::time::Duration::from_secs(60));
    assert!(!offer(&s.pair, 2).await?);
    assert!(
        since_requests(&s.pair) > asked,
        "the payee did not ask again"
    );
    assert_eq!(payee_received(&s.pair).await?, (total.clone(), total));
    Ok(())
}

/// A payer listing someone else's payment, its own payment to someone else and a forged hash among its real
/// ones: only the real ones are credited.
#[tokio::test]
async fn a_listing_with_foreign_hashes_credits_only_the_genuine_payments() -> TestResult {
    let Some(s) = listing_setup().await? else {
        return Ok(());
    };
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    let stranger_addr = address_of(&s.anvil, STRANGER_KEY_INDEX)?;
    let stranger = Wallet::new(
        s.anvil.url(),
        PrivateKey::from_hex(s.anvil.dev_key(STRANGER_KEY_INDEX))?,
        TxSettings::default(),
    )?;
    let foreign = match stranger
        .send_and_follow(Some(payee_addr), BigUint::from(5_000u32), Vec::new())
        .await?
    {
        TxStatus::Confirmed(r) => r.transaction_hash,
        other => return Err(format!("stranger payment failed: {other:?}").into()),
    };
    let misdirected = match s
        .payer
        .inner
        .wallet()
        .send_and_follow(Some(stranger_addr), BigUint::from(7_000u32), Vec::new())
        .await?
    {
        TxStatus::Confirmed(r) => r.transaction_hash,
        other => return Err(format!("misdirected payment failed: {other:?}").into()),
    };
    let forged = TxHash([0x42; 32]);
    *s.payer.listing.lock().unwrap_or_else(|p| p.into_inner()) =
        Listing::WithForeign([foreign, misdirected, forged]);

    let count = u64::try_from(MAX_TX_HASHES_PER_CLAIM + 4)?;
    let (hashes, total) = pay_with_lost_claims(&s.pair, count).await?;
    assert!(offer(&s.pair, 1).await?);
    assert_eq!(payee_received(&s.pair).await?, (total.clone(), total));
    for hash in &hashes {
        assert!(payee_recorded(&s.pair, hash).await?, "{hash} not recorded");
    }
    for hash in [foreign, misdirected, forged] {
        assert!(!payee_recorded(&s.pair, &hash).await?, "{hash} recorded");
    }
    assert!(since_requests(&s.pair) >= 1);
    Ok(())
}

/// A payer without `eth_payments_since` does not know the method: the payee credits what the latest claim
/// brings and refuses the transfer as before, without failing otherwise.
#[tokio::test]
async fn a_payer_without_the_listing_still_gets_its_latest_claim_credited() -> TestResult {
    let Some(s) = listing_setup().await? else {
        return Ok(());
    };
    *s.payer.listing.lock().unwrap_or_else(|p| p.into_inner()) = Listing::Unknown;
    let count = u64::try_from(MAX_TX_HASHES_PER_CLAIM + 3)?;
    let (hashes, _total) = pay_with_lost_claims(&s.pair, count).await?;
    assert!(!offer(&s.pair, 1).await?);
    let latest: BigUint = (4..=count).map(lost_payment_wei).map(BigUint::from).sum();
    assert_eq!(payee_received(&s.pair).await?, (latest.clone(), latest));
    assert_eq!(since_requests(&s.pair), 1);
    for (i, hash) in hashes.iter().enumerate() {
        assert_eq!(payee_recorded(&s.pair, hash).await?, i >= 3, "payment {i}");
    }
    Ok(())
}

/// The payer's side of `eth_payments_since`: its confirmed payments after a total, oldest first, paged.
#[tokio::test]
async fn the_payer_lists_its_payments_after_a_total_oldest_first() -> TestResult {
    let Some(s) = listing_setup().await? else {
        return Ok(());
    };
    let count = u64::try_from(MAX_TX_HASHES_PER_PAYMENTS_REPLY + 2)?;
    let (hashes, total) = pay_with_lost_claims(&s.pair, count).await?;
    let ask = |after: String| {
        let payer = s.payer.inner.clone();
        let ctx = s.pair.a.ctx.clone();
        async move {
            payer
                .handle_rpc(&ctx, RPC_PAYMENTS_SINCE, json!([{ "after": after }]))
                .await
        }
    };
    let listed = |reply: &Value| -> Vec<TxHash> {
        reply["txHashes"]
            .as_array()
            .map(|a| a.iter().filter_map(|h| h.as_str()?.parse().ok()).collect())
            .unwrap_or_default()
    };
    let first = ask("0".to_owned()).await?;
    assert_eq!(listed(&first), hashes[..MAX_TX_HASHES_PER_PAYMENTS_REPLY]);
    assert_eq!(first["more"], json!(true));
    let through: u64 = (1..=u64::try_from(MAX_TX_HASHES_PER_PAYMENTS_REPLY)?)
        .map(lost_payment_wei)
        .sum();
    assert_eq!(first["last"], json!(through.to_string()));
    let second = ask(through.to_string()).await?;
    assert_eq!(listed(&second), hashes[MAX_TX_HASHES_PER_PAYMENTS_REPLY..]);
    assert_eq!(second["more"], json!(false));
    assert_eq!(second["last"], json!(total.to_string()));
    // Just below a payment's total lists it; at the total, nothing is left.
    let before_last = ask((&total - 1u8).to_string()).await?;
    assert_eq!(listed(&before_last), hashes[hashes.len() - 1..]);
    let none = ask(total.to_string()).await?;
    assert_eq!(none, json!({ "txHashes": [], "last": null, "more": false }));
    for bad in [
        json!([]),
        json!([{ "after": 5 }]),
        json!([{ "after": "-1" }]),
        json!(["0"]),
    ] {
        let refused = s
            .payer
            .inner
            .handle_rpc(&s.pair.a.ctx, RPC_PAYMENTS_SINCE, bad.clone())
            .await;
        assert!(
            matches!(refused, Err(ModuleError::InvalidFields(_))),
            "{bad}: {refused:?}"
        );
    }
    Ok(())
}

/// A payer store written before the payments list was kept (`amount_settled` holds only `txHashes`): its next
/// confirmed payment seeds the list with those hashes and their totals, so they can be listed too.
#[tokio::test]
async fn a_payer_store_without_the_payments_list_is_seeded_from_its_recent_hashes() -> TestResult {
    let Some(s) = setup(json!({})).await? else {
        return Ok(());
    };
    let mut total = ModuleUnits::zero();
    let mut hashes = Vec::new();
    for i in 1..=3 {
        total += &ModuleUnits::from(lost_payment_wei(i));
        let claim = s
            .payer
            .create_outgoing_claim(&s.pair.a.ctx, &total)
            .await?
            .ok_or("no claim")?;
        hashes.push(*claim_hashes(&claim).last().ok_or("empty claim")?);
    }
    // The same payments in a store with no `amount_received` tracker.
    let old = channel_modules::memory::MemoryStores::unbounded();
    let log = s.pair.a.host.stores().transfer_log(PAYMENTS_LOG_KEY)?;
    let old_log = old.transfer_log(PAYMENTS_LOG_KEY)?;
    for hash in &hashes {
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash.0[..16]);
        let record = log
            .get(&TransferId(id))
            .await?
            .ok_or("payment not logged")?;
        old_log
            .prepare(&record.transfer, Direction::Outgoing)
            .await?;
        old_log.fulfill(&TransferId(id), &hash.0).await?;
    }
    let texts: Vec<String> = hashes.iter().map(ToString::to_string).collect();
    old.max_value_tracker(channel_modules::eth::payment::AMOUNT_SETTLED_KEY)?
        .set_if_max(channel_modules::store::MaxValue {
            value: total.0.clone(),
            data: json!({ "txHashes": texts }),
        })
        .await?;
    let mut opts = s.payer_opts.clone();
    opts["peerAddress"] = json!(address_of(&s.anvil, PAYEE_KEY_INDEX)?.to_string());
    let host = TestHost::with_stores(old, s.pair.a.host.clock().clone());
    let ctx = host.context(opts.clone(), "a-old");
    let payer = EthPaymentModule::from_options(&opts)?;
    payer.connect(&ctx).await?;
    let listed = payer
        .handle_rpc(&ctx, RPC_PAYMENTS_SINCE, json!([{ "after": "0" }]))
        .await?;
    assert_eq!(
        listed["txHashes"],
        json!([]),
        "nothing kept before a payment"
    );

    total += &ModuleUnits::from(lost_payment_wei(4));
    let claim = payer
        .create_outgoing_claim(&ctx, &total)
        .await?
        .ok_or("no claim")?;
    hashes.push(*claim_hashes(&claim).last().ok_or("empty claim")?);
    let texts: Vec<String> = hashes.iter().map(ToString::to_string).collect();
    let listed = payer
        .handle_rpc(&ctx, RPC_PAYMENTS_SINCE, json!([{ "after": "0" }]))
        .await?;
    assert_eq!(listed["txHashes"], json!(texts));
    assert_eq!(listed["last"], json!(total.to_string()));
    // Each seeded total is right: asking after the second payment's total lists the third and fourth.
    let second = lost_payment_wei(1) + lost_payment_wei(2);
    let listed = payer
        .handle_rpc(
            &ctx,
            RPC_PAYMENTS_SINCE,
            json!([{ "after": second.to_string() }]),
        )
        .await?;
    assert_eq!(listed["txHashes"], json!(texts[2..]));
    Ok(())
}
