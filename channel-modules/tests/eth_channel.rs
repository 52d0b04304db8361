//! `eth-channel` against a real chain: every test starts its own anvil (killed on drop), deploys channels
//! from the committed `PaymentChannel` artifact, and wires payer and payee through `TestHost::pair`.

use std::sync::Arc;

use channel_modules::amount::{LedgerAmount, ModuleUnits};
use channel_modules::eth::abi::{self, Token};
use channel_modules::eth::channel::contract::{
    claim_digest, payment_channel_init_code, payment_channel_v1_init_code, read_channel,
    v1_claim_digest, ChannelVersion,
};
use channel_modules::eth::channel::{
    EthChannelModule, CHANNEL_TXS_LOG_KEY, INCOMING_CLAIM_KEY, INCOMING_SUBMITTED_KEY,
    OUTGOING_CHANNEL_KEY, OUTGOING_CLAIM_KEY,
};
use channel_modules::eth::latest_claim::{pull_latest_claim, PullLimiter, RPC_LATEST_CLAIM};
use channel_modules::eth::peer::PEER_ADDRESS_KEY;
use channel_modules::eth::testing::{Anvil, ANVIL_DEFAULT_CHAIN_ID};
use channel_modules::eth::types::encode_hex;
use channel_modules::eth::wallet::{TxSettings, TxStatus, Wallet};
use channel_modules::eth::{Address, PrivateKey, TxHash};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{
    Direction, MaxValue, PrepareOutcome, Transfer, TransferId, TransferState,
};
use channel_modules::testing::{TestHost, TestPair};
use channel_modules::{ChannelModule, Claim, ModuleError};
use num_bigint::BigUint;
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAYER_KEY_INDEX: usize = 4;
const PAYEE_KEY_INDEX: usize = 5;
const STRANGER_KEY_INDEX: usize = 6;
const DEPOSIT_WEI: u64 = 10_000_000_000_000_000;
const TIMEOUT_SECS: u64 = 86_400;
const MARGIN_SECS: u64 = 3_600;
const RECEIPT_TIMEOUT_MS: u64 = 20_000;
/// A payee receipt timeout short enough that a test can leave a close pending (automine off) and go on.
const SHORT_RECEIPT_TIMEOUT_MS: u64 = 1_500;

fn options(anvil: &Anvil, key_index: usize) -> Value {
    options_with(anvil, key_index, RECEIPT_TIMEOUT_MS)
}

fn options_with(anvil: &Anvil, key_index: usize, receipt_timeout_ms: u64) -> Value {
    json!({
        "rpcUri": anvil.url(),
        "privateKey": anvil.dev_key(key_index),
        "pollIntervalMs": 20,
        "receiptTimeoutMs": receipt_timeout_ms,
        "maxUnsecured": "1000",
        "channelDeposit": DEPOSIT_WEI.to_string(),
        "channelTimeoutSecs": TIMEOUT_SECS,
        "closeMarginSecs": MARGIN_SECS,
        "expiryCheckIntervalMs": 3_600_000,
    })
}

struct Setup {
    anvil: Anvil,
    pair: TestPair,
    payer: Arc<EthChannelModule>,
    payee: Arc<EthChannelModule>,
    payer_opts: Value,
    payee_opts: Value,
}

async fn setup() -> Result<Option<Setup>, Box<dyn std::error::Error>> {
    setup_with(RECEIPT_TIMEOUT_MS).await
}

/// [`setup`] with the payee's `receiptTimeoutMs`.
async fn setup_with(
    payee_receipt_timeout_ms: u64,
) -> Result<Option<Setup>, Box<dyn std::error::Error>> {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(None);
    };
    setup_on(anvil, payee_receipt_timeout_ms, None)
        .await
        .map(Some)
}

/// [`setup_with`] on `anvil`, the payee reaching it through `payee_rpc` when given.
async fn setup_on(
    anvil: Anvil,
    payee_receipt_timeout_ms: u64,
    payee_rpc: Option<&str>,
) -> Result<Setup, Box<dyn std::error::Error>> {
    let payer_opts = options(&anvil, PAYER_KEY_INDEX);
    let mut payee_opts = options_with(&anvil, PAYEE_KEY_INDEX, payee_receipt_timeout_ms);
    if let Some(url) = payee_rpc {
        payee_opts["rpcUri"] = json!(url);
    }
    let payer = Arc::new(EthChannelModule::from_options(&payer_opts)?);
    let payee = Arc::new(EthChannelModule::from_options(&payee_opts)?);
    let pair = TestHost::pair(
        payer.clone() as Arc<dyn ChannelModule>,
        payer_opts.clone(),
        payee.clone() as Arc<dyn ChannelModule>,
        payee_opts.clone(),
    );
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    Ok(Setup {
        anvil,
        pair,
        payer,
        payee,
        payer_opts,
        payee_opts,
    })
}

/// A JSON-RPC proxy in front of `anvil` (loopback, port 0) that mines one block right before the first
/// `eth_getTransactionCount(…, "pending")` after [`MineBeforePendingNonce::arm`]: a pending transaction gets
/// mined at the worst moment for a check that reads the chain and then the nonces. Stopped when dropped.
struct MineBeforePendingNonce {
    url: String,
    armed: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl MineBeforePendingNonce {
    async fn start(anvil: &Anvil) -> Result<Self, Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let upstream = anvil.url().to_owned();
        let miner = Arc::new(anvil.client()?);
        let http = reqwest::Client::new();
        let flag = Arc::clone(&armed);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (upstream, miner, http, flag) = (
                    upstream.clone(),
                    Arc::clone(&miner),
                    http.clone(),
                    Arc::clone(&flag),
                );
                tokio::spawn(async move {
                    let _ = proxy_connection(socket, &upstream, &miner, &http, &flag).await;
                });
            }
        });
        Ok(MineBeforePendingNonce { url, armed, task })
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for MineBeforePendingNonce {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one keep-alive HTTP/1.1 connection of JSON-RPC POSTs for [`MineBeforePendingNonce`].
async fn proxy_connection(
    mut socket: tokio::net::TcpStream,
    upstream: &str,
    miner: &channel_modules::eth::rpc::RpcClient,
    http: &reqwest::Client,
    armed: &std::sync::atomic::AtomicBool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(Ok(0), |v| v.trim().parse())?;
        while buf.len() < head_end + 4 + length {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf
            .drain(..head_end + 4 + length)
            .skip(head_end + 4)
            .collect();
        let text = String::from_utf8_lossy(&body);
        if text.contains("eth_getTransactionCount")
            && text.contains("pending")
            && armed.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            miner.call("evm_mine", json!([])).await?;
        }
        let reply = http
            .post(upstream)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?
            .bytes()
            .await?;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(&reply).await?;
    }
}

fn address_of(anvil: &Anvil, index: usize) -> Result<Address, Box<dyn std::error::Error>> {
    Ok(PrivateKey::from_hex(anvil.dev_key(index))?.address())
}

fn channel_of(claim: &Claim) -> Result<Address, Box<dyn std::error::Error>> {
    match claim {
        Claim::Json(v) => Ok(v["channel"].as_str().ok_or("no channel")?.parse()?),
        _ => Err("not a JSON claim".into()),
    }
}

fn signed_claim(
    key: &PrivateKey,
    channel: &Address,
    amount: u64,
) -> Result<Claim, Box<dyn std::error::Error>> {
    let amount = BigUint::from(amount);
    let sig = key.sign_personal(&claim_digest(ANVIL_DEFAULT_CHAIN_ID, channel, &amount)?)?;
    Ok(Claim::Json(json!({
        "channel": channel.to_string(),
        "amount": amount.to_string(),
        "signature": encode_hex(&sig.to_bytes65()),
    })))
}

impl Setup {
    async fn pay(
        &self,
        total: u64,
    ) -> Result<(Claim, Option<BigUint>), Box<dyn std::error::Error>> {
        let claim = self
            .pair
            .a
            .module
            .create_outgoing_claim(&self.pair.a.ctx, &ModuleUnits::from(total))
            .await?
            .ok_or("no claim")?;
        let credit = self
            .pair
            .b
            .module
            .handle_incoming_claim(&self.pair.b.ctx, Some(&claim))
            .await?;
        Ok((claim, credit.map(|c| c.amount.0)))
    }

    async fn incoming_best(&self) -> Result<BigUint, Box<dyn std::error::Error>> {
        Ok(self
            .pair
            .b
            .host
            .stores()
            .max_value_tracker(INCOMING_CLAIM_KEY)?
            .get_max()
            .await?
            .value)
    }

    /// Hashes of the payer's recorded (and confirmed) channel transactions.
    fn payer_tx_hashes(&self) -> Result<Vec<TxHash>, Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        for record in self
            .pair
            .a
            .host
            .stores()
            .memory_log(CHANNEL_TXS_LOG_KEY)?
            .records()
        {
            if matches!(record.state, TransferState::Fulfilled { .. }) {
                let custom = record.transfer.custom.ok_or("custom")?;
                out.push(custom["txHash"].as_str().ok_or("hash")?.parse()?);
            }
        }
        Ok(out)
    }
}

#[tokio::test]
async fn claims_move_money_on_close_and_balances_agree_to_the_wei() -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let rpc = s.anvil.client()?;
    let payer_addr = address_of(&s.anvil, PAYER_KEY_INDEX)?;
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    let payer_before = rpc.balance(&payer_addr).await?;
    let payee_before = rpc.balance(&payee_addr).await?;

    let (claim1, credit1) = s.pay(1_000_000_000_000_000).await?;
    assert_eq!(credit1, Some(BigUint::from(1_000_000_000_000_000u64)));
    let (claim2, credit2) = s.pay(3_000_000_000_000_000).await?;
    assert_eq!(credit2, Some(BigUint::from(2_000_000_000_000_000u64)));
    let channel = channel_of(&claim1)?;
    assert_eq!(channel_of(&claim2)?, channel);
    let state = read_channel(s.payer.wallet(), &channel)
        .await?
        .ok_or("no channel")?;
    assert_eq!(state.balance, BigUint::from(DEPOSIT_WEI));
    assert_eq!((state.payer, state.payee), (payer_addr, payee_addr));
    assert_eq!(
        s.incoming_best().await?,
        BigUint::from(3_000_000_000_000_000u64)
    );

    // The payee closes with its best claim on disconnect.
    s.pair.b.module.disconnect(&s.pair.b.ctx).await?;
    let submitted = s
        .pair
        .b
        .host
        .stores()
        .max_value_tracker(INCOMING_SUBMITTED_KEY)?
        .get_max()
        .await?;
    assert_eq!(submitted.value, BigUint::from(3_000_000_000_000_000u64));
    let close_hash: TxHash = submitted.data["txHash"].as_str().ok_or("hash")?.parse()?;
    let close_fee = rpc.receipt(&close_hash).await?.ok_or("receipt")?.fee();
    let state = read_channel(s.payer.wallet(), &channel)
        .await?
        .ok_or("no channel")?;
    assert!(state.closed);
    assert_eq!(state.balance, BigUint::default());

    let payee_after = rpc.balance(&payee_addr).await?;
    assert_eq!(
        payee_after + close_fee,
        payee_before + BigUint::from(3_000_000_000_000_000u64)
    );
    let mut payer_fees = BigUint::default();
    let hashes = s.payer_tx_hashes()?;
    assert_eq!(hashes.len(), 1, "one deployment, no top-up");
    for hash in &hashes {
        payer_fees += rpc.receipt(hash).await?.ok_or("receipt")?.fee();
    }
    let payer_after = rpc.balance(&payer_addr).await?;
    assert_eq!(
        payer_before - payer_after,
        BigUint::from(3_000_000_000_000_000u64) + payer_fees
    );
    let signed = s
        .pair
        .a
        .host
        .stores()
        .max_value_tracker(OUTGOING_CLAIM_KEY)?
        .get_max()
        .await?;
    assert_eq!(signed.value, BigUint::from(3_000_000_000_000_000u64));
    // A claim on the closed channel is refused.
    let again = s
        .pair
        .b
        .module
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim2))
        .await?;
    assert_eq!(again, None);
    Ok(())
}

#[tokio::test]
async fn forged_replayed_lower_over_deposit_and_foreign_claims_credit_nothing() -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let (claim, credit) = s.pay(1_000_000).await?;
    assert_eq!(credit, Some(BigUint::from(1_000_000u32)));
    let channel = channel_of(&claim)?;
    let payer_key = PrivateKey::from_hex(s.anvil.dev_key(PAYER_KEY_INDEX))?;
    let stranger_key = PrivateKey::from_hex(s.anvil.dev_key(STRANGER_KEY_INDEX))?;
    let b = &s.pair.b;

    // Replayed and lower claims: nothing new.
    assert_eq!(
        b.module.handle_incoming_claim(&b.ctx, Some(&claim)).await?,
        None
    );
    let lower = signed_claim(&payer_key, &channel, 500_000)?;
    assert_eq!(
        b.module.handle_incoming_claim(&b.ctx, Some(&lower)).await?,
        None
    );

    // Forged (not the payer's key), over the deposit, tampered amount.
    let forged = signed_claim(&stranger_key, &channel, 2_000_000)?;
    let over = signed_claim(&payer_key, &channel, DEPOSIT_WEI + 1)?;
    let mut tampered = claim.clone();
    if let Claim::Json(v) = &mut tampered {
        v["amount"] = json!("2000000");
    }
    // A genuine channel, but from a stranger to the payee.
    let stranger = Wallet::new(s.anvil.url(), stranger_key.clone(), TxSettings::default())?;
    let now = s.anvil.client()?.latest_timestamp().await?;
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    let foreign_channel = stranger
        .deploy(
            payment_channel_init_code(&payee_addr, now + TIMEOUT_SECS)?,
            BigUint::from(DEPOSIT_WEI),
        )
        .await?;
    let foreign = signed_claim(&stranger_key, &foreign_channel, 2_000_000)?;
    // Not a channel contract at all.
    let no_contract = signed_claim(&payer_key, &payee_addr, 2_000_000)?;
    for (name, bad) in [
        ("forged", forged),
        ("over deposit", over),
        ("tampered", tampered),
        ("foreign channel", foreign),
        ("no contract", no_contract),
    ] {
        let result = b.module.handle_incoming_claim(&b.ctx, Some(&bad)).await;
        assert!(
            matches!(result, Err(ModuleError::NotAccepted(_))),
            "{name}: {result:?}"
        );
    }
    assert!(b
        .module
        .handle_incoming_claim(&b.ctx, Some(&Claim::Text("x".into())))
        .await
        .is_err());
    assert_eq!(s.incoming_best().await?, BigUint::from(1_000_000u32));
    Ok(())
}

#[tokio::test]
async fn payer_tops_up_when_the_deposit_runs_low() -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let (claim1, _) = s.pay(DEPOSIT_WEI - 1).await?;
    let total = DEPOSIT_WEI + DEPOSIT_WEI / 2;
    let (claim2, credit) = s.pay(total).await?;
    assert_eq!(credit, Some(BigUint::from(DEPOSIT_WEI / 2 + 1)));
    let channel = channel_of(&claim1)?;
    assert_eq!(channel_of(&claim2)?, channel);
    let state = read_channel(s.payer.wallet(), &channel)
        .await?
        .ok_or("no channel")?;
    assert!(state.balance >= BigUint::from(total));
    assert_eq!(s.payer_tx_hashes()?.len(), 2, "deployment and one top-up");
    assert_eq!(s.incoming_best().await?, BigUint::from(total));
    Ok(())
}

#[tokio::test]
async fn a_restart_while_opening_the_channel_deposits_exactly_once() -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let rpc = s.anvil.client()?;
    let payer_addr = address_of(&s.anvil, PAYER_KEY_INDEX)?;
    let nonce_before = rpc.transaction_count(&payer_addr, "latest").await?;

    s.anvil.set_automine(false).await?;
    let mut impatient_opts = s.payer_opts.clone();
    impatient_opts["receiptTimeoutMs"] = json!(300);
    let impatient = EthChannelModule::from_options(&impatient_opts)?;
    let failed = impatient
        .create_outgoing_claim(&s.pair.a.ctx, &ModuleUnits::from(5_000))
        .await;
    assert!(matches!(failed, Err(ModuleError::Ledger(_))), "{failed:?}");
    let log = s.pair.a.host.stores().transfer_log(CHANNEL_TXS_LOG_KEY)?;
    let pending = log.prepared().await?;
    assert_eq!(pending.len(), 1);
    let hash: TxHash = pending[0].transfer.custom.as_ref().ok_or("custom")?["txHash"]
        .as_str()
        .ok_or("hash")?
        .parse()?;
    s.anvil.drop_transaction(&hash).await?;
    drop(impatient);
    s.anvil.set_automine(true).await?;

    let restarted = Arc::new(EthChannelModule::from_options(&s.payer_opts)?);
    s.pair.b.host.connect_to(
        &s.pair.a.host,
        restarted.clone() as Arc<dyn ChannelModule>,
        s.payer_opts.clone(),
        "a",
    );
    restarted.connect(&s.pair.a.ctx).await?;
    assert!(log.prepared().await?.is_empty());
    let claim = restarted
        .create_outgoing_claim(&s.pair.a.ctx, &ModuleUnits::from(5_000))
        .await?
        .ok_or("no claim")?;
    let credit = s
        .pair
        .b
        .module
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, ModuleUnits::from(5_000));
    assert_eq!(
        rpc.transaction_count(&payer_addr, "latest").await?,
        nonce_before + 1,
        "exactly one deployment"
    );
    let channel = channel_of(&claim)?;
    assert_eq!(
        rpc.receipt(&hash).await?.ok_or("receipt")?.contract_address,
        Some(channel)
    );
    assert_eq!(rpc.balance(&channel).await?, BigUint::from(DEPOSIT_WEI));
    Ok(())
}

#[tokio::test]
async fn payee_closes_before_expiry_and_payer_reclaims_after_it() -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let rpc = s.anvil.client()?;
    let (claim1, _) = s.pay(1_000).await?;
    let first = channel_of(&claim1)?;

    // Nothing to do far from expiry; inside the margin the payee closes with its best claim.
    assert!(s.payee.submit_if_expiring(&s.pair.b.ctx).await?.is_empty());
    s.anvil
        .advance_time(TIMEOUT_SECS - MARGIN_SECS + 60)
        .await?;
    assert_eq!(s.payee.submit_if_expiring(&s.pair.b.ctx).await?.len(), 1);
    let state = read_channel(s.payer.wallet(), &first)
        .await?
        .ok_or("no channel")?;
    assert!(state.closed);

    // The payer moves to a new channel; claims there continue the cumulative total.
    let (claim2, credit2) = s.pay(3_000).await?;
    let second = channel_of(&claim2)?;
    assert_ne!(second, first);
    assert_eq!(credit2, Some(BigUint::from(2_000u32)));
    assert_eq!(s.incoming_best().await?, BigUint::from(3_000u32));

    // The payee neglects the second channel; once it expired the payer opens a third and reclaims it.
    s.anvil.advance_time(TIMEOUT_SECS + 1).await?;
    let payer_claim = s
        .pair
        .a
        .module
        .create_outgoing_claim(&s.pair.a.ctx, &ModuleUnits::from(4_000))
        .await?
        .ok_or("no claim")?;
    assert_ne!(channel_of(&payer_claim)?, second);
    let reclaimed = s.payer.reclaim_expired(&s.pair.a.ctx).await?;
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(rpc.balance(&second).await?, BigUint::default());
    assert!(s.payer.reclaim_expired(&s.pair.a.ctx).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn incoming_prepares_are_limited_to_max_unsecured_above_the_best_claim() -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let main = s.pair.b.host.stores().transfer_log("")?;
    let transfer = |n: u8, amount: u64| Transfer {
        id: TransferId([n; 16]),
        amount: LedgerAmount(amount),
        execution_condition: [n; 32],
        expires_at_ms: i64::MAX,
        ilp: Vec::new(),
        custom: None,
    };
    let b = &s.pair.b;
    let t1 = transfer(1, 1_000);
    assert_eq!(
        main.prepare(&t1, Direction::Incoming).await?,
        PrepareOutcome::Prepared
    );
    b.module
        .handle_incoming_prepare(&b.ctx, &main.get(&t1.id).await?.ok_or("t1")?)
        .await?;
    let t2 = transfer(2, 1);
    main.prepare(&t2, Direction::Incoming).await?;
    let refused = b
        .module
        .handle_incoming_prepare(&b.ctx, &main.get(&t2.id).await?.ok_or("t2")?)
        .await;
    assert!(matches!(refused, Err(ModuleError::NotAccepted(_))));
    main.cancel(&t2.id, "refused").await?;
    s.pay(700).await?;
    let t3 = transfer(3, 700);
    main.prepare(&t3, Direction::Incoming).await?;
    b.module
        .handle_incoming_prepare(&b.ctx, &main.get(&t3.id).await?.ok_or("t3")?)
        .await?;
    Ok(())
}

/// A `channelDeposit` that one transaction cannot carry is refused when the options are parsed.
#[test]
fn a_channel_deposit_above_one_transaction_is_refused_at_parse_time() {
    let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    let with_deposit = |deposit: &str| {
        EthChannelModule::from_options(&json!({
            "rpcUri": "http://127.0.0.1:1",
            "privateKey": key,
            "channelDeposit": deposit,
        }))
    };
    let too_big = (BigUint::from(u64::MAX) + 1u8).to_string();
    match with_deposit(&too_big) {
        Err(ModuleError::InvalidFields(message)) => {
            assert!(message.contains("channelDeposit"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(with_deposit(&u64::MAX.to_string()).is_ok());
}

/// Settling more than 2^64-1 wei into a new channel opens it with the most one transaction carries and tops
/// up the rest, instead of failing forever.
#[tokio::test]
async fn a_first_settlement_above_one_transaction_opens_then_tops_up() -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let total = ModuleUnits(BigUint::from(u64::MAX) + BigUint::from(DEPOSIT_WEI));
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
    let state = read_channel(s.payer.wallet(), &channel_of(&claim)?)
        .await?
        .ok_or("no channel")?;
    assert!(state.balance >= total.0);
    assert_eq!(s.payer_tx_hashes()?.len(), 2, "deployment and one top-up");
    assert_eq!(s.incoming_best().await?, total.0);
    Ok(())
}

/// The JSON of a claim (test helper).
fn json_of(claim: &Claim) -> Result<&Value, Box<dyn std::error::Error>> {
    match claim {
        Claim::Json(v) => Ok(v),
        _ => Err("not a JSON claim".into()),
    }
}

/// A claim's `{"channel", "amount", "signature"}`: what a retired claim on the wire carries.
fn signed_part(claim: &Claim) -> Result<Value, Box<dyn std::error::Error>> {
    let v = json_of(claim)?;
    Ok(json!({ "channel": v["channel"], "amount": v["amount"], "signature": v["signature"] }))
}

/// A `{"channel", "amount", "signature"}` entry signed by `key` over `signed_channel` and `signed_amount`,
/// labelled `channel` and `amount` (test helper: equal labels give a genuine entry).
fn retired_entry(
    key: &PrivateKey,
    signed_channel: &Address,
    signed_amount: u64,
    channel: &Address,
    amount: u64,
) -> Result<Value, Box<dyn std::error::Error>> {
    let sig = key.sign_personal(&claim_digest(
        ANVIL_DEFAULT_CHAIN_ID,
        signed_channel,
        &BigUint::from(signed_amount),
    )?)?;
    Ok(json!({
        "channel": channel.to_string(),
        "amount": amount.to_string(),
        "signature": encode_hex(&sig.to_bytes65()),
    }))
}

impl Setup {
    /// Moves the chain to where the current channel has less than twice the close margin left, but more than
    /// one margin: the payer retires it, the payee may still close it.
    async fn age_current_channel(&self) -> TestResult {
        self.anvil
            .advance_time(TIMEOUT_SECS - 2 * MARGIN_SECS + 60)
            .await?;
        Ok(())
    }

    /// The payer signs a claim for `total` that never reaches the payee.
    async fn sign_lost(&self, total: u64) -> Result<Claim, Box<dyn std::error::Error>> {
        Ok(self
            .pair
            .a
            .module
            .create_outgoing_claim(&self.pair.a.ctx, &ModuleUnits::from(total))
            .await?
            .ok_or("no claim")?)
    }

    /// Runs the payee's close of retired channels now (what its background check does when a claim retires
    /// or raises a channel).
    async fn close_retired(&self) -> TestResult {
        self.payee.submit_if_expiring(&self.pair.b.ctx).await?;
        Ok(())
    }

    async fn submitted(&self) -> Result<Value, Box<dyn std::error::Error>> {
        Ok(self
            .pair
            .b
            .host
            .stores()
            .max_value_tracker(INCOMING_SUBMITTED_KEY)?
            .get_max()
            .await?
            .data)
    }
}

/// The payer signed 100 on channel A but the payee holds only 80 (the last claim was lost); the payer then
/// moves to channel B. The first claim on B carries A's final claim: the payee is credited the 20 with B's
/// 10, closes A with 100 (the payee's balance rises by 100 to the wei), and a repeat credits nothing.
#[tokio::test]
async fn a_claim_lost_before_the_payer_moves_on_is_credited_with_the_new_channels_claim(
) -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let rpc = s.anvil.client()?;
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    let (claim_a, credit) = s.pay(80).await?;
    assert_eq!(credit, Some(BigUint::from(80u32)));
    let channel_a = channel_of(&claim_a)?;
    let lost = s.sign_lost(100).await?;
    assert_eq!(channel_of(&lost)?, channel_a);

    s.age_current_channel().await?;
    let payee_before = rpc.balance(&payee_addr).await?;
    let claim_b = s.sign_lost(110).await?;
    let channel_b = channel_of(&claim_b)?;
    assert_ne!(channel_b, channel_a);
    let wire = json_of(&claim_b)?;
    assert_eq!(wire["amount"], json!("10"));
    assert_eq!(wire["base"], json!("100"));
    assert_eq!(json_of(&lost)?["base"], json!("0"));
    assert_eq!(wire["retired"], json!([signed_part(&lost)?]));
    // Delivered with A's claim listed twice: still credited once.
    let mut doubled = wire.clone();
    doubled["retired"] = json!([signed_part(&lost)?, signed_part(&lost)?]);
    let credit = s
        .pair
        .b
        .module
        .handle_incoming_claim(&s.pair.b.ctx, Some(&Claim::Json(doubled)))
        .await?
        .map(|c| c.amount);
    assert_eq!(
        credit,
        Some(ModuleUnits::from(30)),
        "A's missing 20 and B's 10"
    );
    assert_eq!(s.incoming_best().await?, BigUint::from(110u32));

    // A is closed with the better claim (by the background check, woken by the claim; or here, whichever
    // comes first): the payee got 100 from it.
    s.close_retired().await?;
    let state = read_channel(s.payee.wallet(), &channel_a)
        .await?
        .ok_or("no channel")?;
    assert!(state.closed);
    let submitted = s.submitted().await?;
    assert_eq!(submitted["channel"], json!(channel_a.to_string()));
    assert_eq!(submitted["amount"], json!("100"));
    let close_hash: TxHash = submitted["txHash"].as_str().ok_or("hash")?.parse()?;
    let close_fee = rpc.receipt(&close_hash).await?.ok_or("receipt")?.fee();
    assert_eq!(
        rpc.balance(&payee_addr).await? + close_fee,
        payee_before + BigUint::from(100u32)
    );

    // Repeats credit nothing: the same claim, and the payer's latest claim (which carries A's claim too).
    let b = &s.pair.b;
    assert_eq!(
        b.module
            .handle_incoming_claim(&b.ctx, Some(&claim_b))
            .await?,
        None
    );
    let latest = s
        .pair
        .a
        .module
        .handle_rpc(&s.pair.a.ctx, RPC_LATEST_CLAIM, json!([]))
        .await?;
    assert_eq!(&latest, wire);
    assert_eq!(
        b.module
            .handle_incoming_claim(&b.ctx, Some(&Claim::Json(latest)))
            .await?,
        None
    );
    assert_eq!(s.incoming_best().await?, BigUint::from(110u32));

    // A genuine but higher claim on A, now closed, can no longer be redeemed: it credits nothing (twice).
    let payer_key = PrivateKey::from_hex(s.anvil.dev_key(PAYER_KEY_INDEX))?;
    let mut too_late = wire.clone();
    too_late["retired"] = json!([retired_entry(&payer_key, &channel_a, 150, &channel_a, 150)?]);
    for _ in 0..2 {
        assert_eq!(
            b.module
                .handle_incoming_claim(&b.ctx, Some(&Claim::Json(too_late.clone())))
                .await?,
            None
        );
    }
    assert_eq!(s.incoming_best().await?, BigUint::from(110u32));

    // The rest of the money moves too: B closes with 10 on disconnect.
    b.module.disconnect(&b.ctx).await?;
    let submitted = s.submitted().await?;
    assert_eq!(submitted["channel"], json!(channel_b.to_string()));
    assert_eq!(submitted["amount"], json!("10"));
    Ok(())
}

/// The payee missed the payer's last claim on A and its first claims on B: its latest-claim pull
/// (`eth_latest_claim`) returns B's claim with A's final claim, and the payee is credited all of it.
#[tokio::test]
async fn a_latest_claim_pull_after_the_payer_moved_on_recovers_the_retired_channels_claim(
) -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let (claim_a, _) = s.pay(80).await?;
    let channel_a = channel_of(&claim_a)?;
    s.sign_lost(100).await?;
    s.age_current_channel().await?;
    let lost_b = s.sign_lost(110).await?;
    assert_ne!(channel_of(&lost_b)?, channel_a);

    let limiter = PullLimiter::default();
    assert!(pull_latest_claim(&*s.payee, &s.pair.b.ctx, &limiter).await);
    assert_eq!(s.incoming_best().await?, BigUint::from(110u32));
    s.close_retired().await?;
    let submitted = s.submitted().await?;
    assert_eq!(submitted["channel"], json!(channel_a.to_string()));
    assert_eq!(submitted["amount"], json!("100"));
    Ok(())
}

/// Retired claims that are forged (another key), signed for another channel or amount, above the deposit,
/// on a foreign channel or on the claim's own channel credit nothing; the genuine one credits its amount once.
/// Here the payee never saw channel A at all: every claim on it was lost.
#[tokio::test]
async fn forged_foreign_and_over_deposit_retired_claims_credit_nothing_and_a_genuine_one_credits_once(
) -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let lost = s.sign_lost(100).await?;
    let channel_a = channel_of(&lost)?;
    s.age_current_channel().await?;
    let claim_b = s.sign_lost(110).await?;
    let channel_b = channel_of(&claim_b)?;
    let genuine = json_of(&claim_b)?["retired"][0].clone();
    assert_eq!(genuine, signed_part(&lost)?);

    let payer_key = PrivateKey::from_hex(s.anvil.dev_key(PAYER_KEY_INDEX))?;
    let stranger_key = PrivateKey::from_hex(s.anvil.dev_key(STRANGER_KEY_INDEX))?;
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    let stranger = Wallet::new(s.anvil.url(), stranger_key.clone(), TxSettings::default())?;
    let now = s.anvil.client()?.latest_timestamp().await?;
    let foreign_channel = stranger
        .deploy(
            payment_channel_init_code(&payee_addr, now + TIMEOUT_SECS)?,
            BigUint::from(DEPOSIT_WEI),
        )
        .await?;
    let with_retired = |entries: Vec<Value>| -> Result<Claim, Box<dyn std::error::Error>> {
        let mut wire = json_of(&claim_b)?.clone();
        wire["retired"] = json!(entries);
        Ok(Claim::Json(wire))
    };
    let b = &s.pair.b;

    // B's own claim, with a forged claim on A: only B's 10 (the payee holds nothing on A).
    let forged = retired_entry(&stranger_key, &channel_a, 100, &channel_a, 100)?;
    let credit = b
        .module
        .handle_incoming_claim(&b.ctx, Some(&with_retired(vec![forged])?))
        .await?;
    assert_eq!(credit.map(|c| c.amount), Some(ModuleUnits::from(10)));

    let bad = [
        (
            "signed for another channel",
            retired_entry(&payer_key, &channel_b, 100, &channel_a, 100)?,
        ),
        (
            "signed for another amount",
            retired_entry(&payer_key, &channel_a, 50, &channel_a, 100)?,
        ),
        (
            "above the deposit",
            retired_entry(
                &payer_key,
                &channel_a,
                DEPOSIT_WEI + 1,
                &channel_a,
                DEPOSIT_WEI + 1,
            )?,
        ),
        (
            "foreign channel",
            retired_entry(&stranger_key, &foreign_channel, 100, &foreign_channel, 100)?,
        ),
        (
            "the payer's key on a foreign channel",
            retired_entry(&payer_key, &foreign_channel, 100, &foreign_channel, 100)?,
        ),
        (
            "the claim's own channel",
            retired_entry(&payer_key, &channel_b, 1_000, &channel_b, 1_000)?,
        ),
    ];
    for (name, entry) in bad {
        let credit = b
            .module
            .handle_incoming_claim(&b.ctx, Some(&with_retired(vec![entry])?))
            .await?;
        assert_eq!(credit, None, "{name}");
        assert_eq!(s.incoming_best().await?, BigUint::from(10u32), "{name}");
    }

    // The genuine claim credits A's 100 once, even listed twice, and never again.
    let credit = b
        .module
        .handle_incoming_claim(
            &b.ctx,
            Some(&with_retired(vec![genuine.clone(), genuine.clone()])?),
        )
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, ModuleUnits::from(100));
    assert_eq!(s.incoming_best().await?, BigUint::from(110u32));
    for _ in 0..2 {
        assert_eq!(
            b.module
                .handle_incoming_claim(&b.ctx, Some(&claim_b))
                .await?,
            None
        );
    }
    assert_eq!(s.incoming_best().await?, BigUint::from(110u32));
    // A is closed with it.
    s.close_retired().await?;
    let submitted = s.submitted().await?;
    assert_eq!(submitted["channel"], json!(channel_a.to_string()));
    assert_eq!(submitted["amount"], json!("100"));
    assert!(
        read_channel(s.payee.wallet(), &channel_a)
            .await?
            .ok_or("no channel")?
            .closed
    );
    Ok(())
}

/// A claim without its `retired` entries: as a payer that lost them (or an older one) would send it.
fn without_retired(claim: &Claim) -> Result<Claim, Box<dyn std::error::Error>> {
    let mut wire = json_of(claim)?.clone();
    wire.as_object_mut()
        .ok_or("not an object")?
        .remove("retired");
    Ok(Claim::Json(wire))
}

/// `claim` carrying exactly `entries` as its retired claims.
fn with_retired(claim: &Claim, entries: Vec<Value>) -> Result<Claim, Box<dyn std::error::Error>> {
    let mut wire = json_of(claim)?.clone();
    wire["retired"] = json!(entries);
    Ok(Claim::Json(wire))
}

impl Setup {
    /// A second payee module on the payee's records that was never connected: it runs no background check,
    /// so a channel it retires stays open until the test closes it.
    fn quiet_payee(&self) -> Result<EthChannelModule, Box<dyn std::error::Error>> {
        Ok(EthChannelModule::from_options(&self.payee_opts)?)
    }

    async fn is_closed(&self, channel: &Address) -> Result<bool, Box<dyn std::error::Error>> {
        Ok(read_channel(self.payee.wallet(), channel)
            .await?
            .ok_or("no channel")?
            .closed)
    }

    /// The payer signed 100 on A, the payee holds 80; the payer moved to B (110 in all, B's claim carrying
    /// A's final claim), and that move reached the payee without A's claim: A is retired at 80 and still open,
    /// B holds 10. Returns (A, B's claim).
    /// What an engine hands the module while it handles a claim: another host of the payee's node holding a
    /// copy of the payee's claim and peer records, whose writes reach the payee only if the test copies them back
    /// (the engine's commit).
    async fn staged_copy(&self) -> Result<Arc<TestHost>, Box<dyn std::error::Error>> {
        let staged = self.pair.b.host.same_node(MemoryStores::unbounded());
        for key in [INCOMING_CLAIM_KEY, PEER_ADDRESS_KEY] {
            let value = self
                .pair
                .b
                .host
                .stores()
                .max_value_tracker(key)?
                .get_max()
                .await?;
            staged
                .stores()
                .max_value_tracker(key)?
                .set_if_max(value)
                .await?;
        }
        Ok(staged)
    }

    async fn retired_at_80_and_open(&self) -> Result<(Address, Claim), Box<dyn std::error::Error>> {
        let (claim_a, _) = self.pay(80).await?;
        let channel_a = channel_of(&claim_a)?;
        self.sign_lost(100).await?;
        self.age_current_channel().await?;
        let claim_b = self.sign_lost(110).await?;
        assert_ne!(channel_of(&claim_b)?, channel_a);
        let credit = self
            .quiet_payee()?
            .handle_incoming_claim(&self.pair.b.ctx, Some(&without_retired(&claim_b)?))
            .await?;
        assert_eq!(credit.map(|c| c.amount), Some(ModuleUnits::from(10)));
        assert_eq!(self.incoming_best().await?, BigUint::from(90u32));
        Ok((channel_a, claim_b))
    }
}

/// An engine runs `handle_incoming_claim` on a staged context whose tracker writes are committed after it
/// returns, or never (the request dropped, the process gone). A raise of a retired channel handled there
/// closes nothing (closing A with 100 before the raise is recorded would leave the retry refused: A paid
/// out, 20 never credited), and until the raise is committed no close uses the recorded 80 (the payee would
/// credit 20 it never collects). The retry of the dropped request credits the raise, and A closes with 100.
#[tokio::test]
async fn a_raise_on_a_staged_context_closes_nothing_until_it_is_committed() -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let (channel_a, claim_b) = s.retired_at_80_and_open().await?;

    // A staged copy of the payee's records: its writes are thrown away (the request is dropped).
    let staged = s.staged_copy().await?;
    let staged_ctx = staged.context(s.payee_opts.clone(), "b");
    let credit = s
        .payee
        .handle_incoming_claim(&staged_ctx, Some(&claim_b))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, ModuleUnits::from(20));
    assert!(!s.is_closed(&channel_a).await?, "closed by a staged call");
    // The background check (or any close) meanwhile must not close A with the recorded 80.
    assert_eq!(
        s.payee.submit_if_expiring(&s.pair.b.ctx).await?,
        Vec::<TxHash>::new()
    );
    assert!(!s.is_closed(&channel_a).await?, "closed below the raise");
    assert_eq!(s.incoming_best().await?, BigUint::from(90u32));

    // The payer sends the claim again: the raise is credited once and A closes with it.
    let retry = s
        .payee
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim_b))
        .await?
        .ok_or("no credit on retry")?;
    assert_eq!(retry.amount, ModuleUnits::from(20));
    assert_eq!(s.incoming_best().await?, BigUint::from(110u32));
    s.close_retired().await?;
    assert!(s.is_closed(&channel_a).await?);
    let submitted = s.submitted().await?;
    assert_eq!(submitted["channel"], json!(channel_a.to_string()));
    assert_eq!(submitted["amount"], json!("100"));
    Ok(())
}

/// The payee's close of retired channel A with 80 is still pending (its follow timed out) when A's final
/// claim of 100 arrives: the chain's latest block shows A open, but crediting the 20 would credit what the
/// pending close never collects. The claim fails (a ledger error: sent again later); once the close is mined
/// the retry credits nothing.
#[tokio::test]
async fn a_raise_is_refused_for_a_retry_while_our_close_of_that_channel_is_pending() -> TestResult {
    let Some(s) = setup_with(SHORT_RECEIPT_TIMEOUT_MS).await? else {
        return Ok(());
    };
    let (channel_a, claim_b) = s.retired_at_80_and_open().await?;
    s.anvil.set_automine(false).await?;
    // Closes A with 80; not mined, so the follow gives up (an error or an unconfirmed status).
    let closes = s.payee.submit_if_expiring(&s.pair.b.ctx).await;
    assert!(closes.as_ref().map_or(true, Vec::is_empty), "{closes:?}");
    assert!(!s.is_closed(&channel_a).await?);

    let raised = s
        .payee
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim_b))
        .await;
    assert!(matches!(raised, Err(ModuleError::Ledger(_))), "{raised:?}");
    assert_eq!(s.incoming_best().await?, BigUint::from(90u32));

    s.anvil.set_automine(true).await?;
    s.anvil.mine(1).await?;
    assert!(s.is_closed(&channel_a).await?);
    assert_eq!(
        s.payee
            .handle_incoming_claim(&s.pair.b.ctx, Some(&claim_b))
            .await?,
        None
    );
    assert_eq!(s.incoming_best().await?, BigUint::from(90u32));
    Ok(())
}

/// Our close of A (with 80) is pending when A's final claim (100) arrives, and it is mined in the middle of the
/// payee's checks, right before it reads the wallet's nonces. The payee must not credit the raise: whatever
/// order the checks run in, either the pending close or the closed channel must be seen, so the total stays
/// what the closes collect (80 on A + 10 on B).
#[tokio::test]
async fn a_close_of_ours_mined_during_the_checks_is_never_raised_past() -> TestResult {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let proxy = MineBeforePendingNonce::start(&anvil).await?;
    let s = setup_on(anvil, SHORT_RECEIPT_TIMEOUT_MS, Some(&proxy.url)).await?;
    let (channel_a, claim_b) = s.retired_at_80_and_open().await?;
    s.anvil.set_automine(false).await?;
    let closes = s.payee.submit_if_expiring(&s.pair.b.ctx).await;
    assert!(closes.as_ref().map_or(true, Vec::is_empty), "{closes:?}");
    assert!(!s.is_closed(&channel_a).await?);

    proxy.arm();
    let raised = s
        .payee
        .handle_incoming_claim(&s.pair.b.ctx, Some(&claim_b))
        .await;
    s.anvil.set_automine(true).await?;
    assert!(
        matches!(raised, Ok(None) | Err(ModuleError::Ledger(_))),
        "{raised:?}"
    );
    assert!(s.is_closed(&channel_a).await?, "the close was mined");
    assert_eq!(s.incoming_best().await?, BigUint::from(90u32));
    Ok(())
}

/// A retired claim whose check fails for want of the chain (here: the node is gone) is not a verdict: the
/// whole claim fails (a ledger error, so it is sent or pulled again) instead of A being left at 80. A retired
/// claim refused for a lasting reason (the payer's key on a channel that is not from it) is remembered: carried
/// again, it costs no chain read.
#[tokio::test]
async fn an_unverifiable_retired_claim_fails_the_claim_and_a_refused_one_is_not_read_again(
) -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let (_, claim_b) = s.retired_at_80_and_open().await?;
    let payer_key = PrivateKey::from_hex(s.anvil.dev_key(PAYER_KEY_INDEX))?;
    let stranger = Wallet::new(
        s.anvil.url(),
        PrivateKey::from_hex(s.anvil.dev_key(STRANGER_KEY_INDEX))?,
        TxSettings::default(),
    )?;
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    let now = s.anvil.client()?.latest_timestamp().await?;
    let foreign = stranger
        .deploy(
            payment_channel_init_code(&payee_addr, now + TIMEOUT_SECS)?,
            BigUint::from(DEPOSIT_WEI),
        )
        .await?;
    let with_foreign = with_retired(
        &claim_b,
        vec![retired_entry(&payer_key, &foreign, 100, &foreign, 100)?],
    )?;
    let quiet = s.quiet_payee()?;
    let b_ctx = &s.pair.b.ctx;
    assert_eq!(
        quiet
            .handle_incoming_claim(b_ctx, Some(&with_foreign))
            .await?,
        None
    );

    let Setup { anvil, pair, .. } = s;
    drop(anvil);
    assert_eq!(
        quiet
            .handle_incoming_claim(&pair.b.ctx, Some(&with_foreign))
            .await?,
        None,
        "a remembered refusal needs no chain"
    );
    let unverifiable = quiet
        .handle_incoming_claim(&pair.b.ctx, Some(&claim_b))
        .await;
    assert!(
        matches!(unverifiable, Err(ModuleError::Ledger(_))),
        "{unverifiable:?}"
    );
    let best = pair
        .b
        .host
        .stores()
        .max_value_tracker(INCOMING_CLAIM_KEY)?
        .get_max()
        .await?;
    assert_eq!(best.value, BigUint::from(90u32));
    assert_eq!(best.data["retired"][0]["amount"], json!("80"));
    Ok(())
}

/// Two retired channels, A (80 held, 100 signed) then B (closed by the payee with 10, which moved the payer
/// to C). A's final claim arrives with C's: the totals through A and through B (`cumulative`, what a close
/// records in `incoming_claim_submitted`) both grow by the 20.
#[tokio::test]
async fn raising_a_retired_channel_raises_the_totals_through_the_channels_retired_after_it(
) -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let (channel_a, claim_b) = s.retired_at_80_and_open().await?;
    let channel_b = channel_of(&claim_b)?;
    // The payee closes B with its 10 (directly, leaving A open): the payer moves to C.
    let payee_wallet = Wallet::new(
        s.anvil.url(),
        PrivateKey::from_hex(s.anvil.dev_key(PAYEE_KEY_INDEX))?,
        TxSettings::default(),
    )?;
    let signature = json_of(&claim_b)?["signature"]
        .as_str()
        .ok_or("signature")?
        .to_owned();
    let close = abi::encode_call(
        "close(uint256,bytes)",
        &[
            Token::Uint(BigUint::from(10u32)),
            Token::Bytes(channel_modules::eth::types::decode_hex(&signature)?),
        ],
    )?;
    let status = payee_wallet
        .send_and_follow(Some(channel_b), BigUint::from(0u32), close)
        .await?;
    assert!(matches!(status, TxStatus::Confirmed(_)), "{status:?}");
    let claim_c = s.sign_lost(120).await?;
    let channel_c = channel_of(&claim_c)?;
    assert!(channel_c != channel_a && channel_c != channel_b);
    let quiet = s.quiet_payee()?;
    let b_ctx = &s.pair.b.ctx;
    // C's move first (B retired at 10, total 100), then A's final claim with C's.
    let moved = quiet
        .handle_incoming_claim(b_ctx, Some(&without_retired(&claim_c)?))
        .await?;
    assert_eq!(moved.map(|c| c.amount), Some(ModuleUnits::from(10)));
    let raise = quiet.handle_incoming_claim(b_ctx, Some(&claim_c)).await?;
    assert_eq!(raise.map(|c| c.amount), Some(ModuleUnits::from(20)));
    let best = s
        .pair
        .b
        .host
        .stores()
        .max_value_tracker(INCOMING_CLAIM_KEY)?
        .get_max()
        .await?;
    assert_eq!(best.value, BigUint::from(120u32));
    let retired = best.data["retired"].as_array().ok_or("retired")?;
    assert_eq!(retired.len(), 2);
    assert_eq!(retired[0]["channel"], json!(channel_a.to_string()));
    assert_eq!(retired[0]["amount"], json!("100"));
    assert_eq!(retired[0]["cumulative"], json!("100"));
    assert_eq!(retired[1]["channel"], json!(channel_b.to_string()));
    assert_eq!(retired[1]["cumulative"], json!("110"));
    Ok(())
}

/// Most time the background check gets to close a retired channel in a test (it is woken at once; this only
/// bounds a hung test).
const BACKGROUND_CLOSE_WAIT_MS: u64 = 30_000;

/// The engine's order: a raise handled on a staged context (nothing closed, the payee's background check put
/// off), then committed. The background check, woken by the claim, closes A with the committed 100 by itself.
#[tokio::test]
async fn the_background_check_closes_a_raised_retired_channel_once_the_raise_is_committed(
) -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let (channel_a, claim_b) = s.retired_at_80_and_open().await?;
    let staged = s.staged_copy().await?;
    let real = s.pair.b.host.stores();
    let credit = s
        .payee
        .handle_incoming_claim(&staged.context(s.payee_opts.clone(), "b"), Some(&claim_b))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, ModuleUnits::from(20));
    // The commit: the staged record becomes the payee's.
    let raised = staged
        .stores()
        .max_value_tracker(INCOMING_CLAIM_KEY)?
        .get_max()
        .await?;
    real.max_value_tracker(INCOMING_CLAIM_KEY)?
        .set_if_max(raised)
        .await?;
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_millis(BACKGROUND_CLOSE_WAIT_MS);
    while !s.is_closed(&channel_a).await? {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the background check did not close A"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The close is recorded right after it is confirmed, under the close lock.
    s.close_retired().await?;
    let submitted = s.submitted().await?;
    assert_eq!(submitted["channel"], json!(channel_a.to_string()));
    assert_eq!(submitted["amount"], json!("100"));
    Ok(())
}

/// An engine moves the payee to the payer's new channel B on a staged context and commits the records only
/// after the module returned, so the background check woken by the move may still read A as current. It looks
/// once more shortly after, and closes A (retired at 80) without waiting for its next periodic check.
#[tokio::test]
async fn the_background_check_closes_the_channel_a_staged_move_retired() -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let (claim_a, _) = s.pay(80).await?;
    let channel_a = channel_of(&claim_a)?;
    s.age_current_channel().await?;
    let claim_b = s.sign_lost(110).await?;
    assert_ne!(channel_of(&claim_b)?, channel_a);
    let staged = s.staged_copy().await?;
    let real = s.pair.b.host.stores();
    let credit = s
        .payee
        .handle_incoming_claim(&staged.context(s.payee_opts.clone(), "b"), Some(&claim_b))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, ModuleUnits::from(30));
    // The engine's commit, a moment after the module returned (and after the woken check read the records).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let moved = staged
        .stores()
        .max_value_tracker(INCOMING_CLAIM_KEY)?
        .get_max()
        .await?;
    real.max_value_tracker(INCOMING_CLAIM_KEY)?
        .set_if_max(moved)
        .await?;
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_millis(BACKGROUND_CLOSE_WAIT_MS);
    while !s.is_closed(&channel_a).await? {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the background check did not close A after the move was committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The payee's close of its current channel at disconnect is still pending (its follow timed out; or the
/// process restarted) when the payer, which still sees the channel open, signs more on it: the higher claim
/// is not credited while the close that pays only 80 is pending (a ledger error: sent again later), and once
/// that close is mined the claim is refused.
#[tokio::test]
async fn a_higher_claim_on_a_channel_whose_close_of_ours_is_pending_is_not_credited() -> TestResult
{
    let Some(s) = setup_with(SHORT_RECEIPT_TIMEOUT_MS).await? else {
        return Ok(());
    };
    let (claim_a, _) = s.pay(80).await?;
    let channel_a = channel_of(&claim_a)?;
    s.anvil.set_automine(false).await?;
    // Closes A with 80; not mined, so the follow gives up (an error or an unconfirmed status).
    let _ = s.payee.disconnect(&s.pair.b.ctx).await;
    assert!(!s.is_closed(&channel_a).await?);
    let higher = s.sign_lost(100).await?;
    assert_eq!(channel_of(&higher)?, channel_a);
    let credit = s
        .payee
        .handle_incoming_claim(&s.pair.b.ctx, Some(&higher))
        .await;
    assert!(matches!(credit, Err(ModuleError::Ledger(_))), "{credit:?}");
    assert_eq!(s.incoming_best().await?, BigUint::from(80u32));

    s.anvil.set_automine(true).await?;
    s.anvil.mine(1).await?;
    assert!(s.is_closed(&channel_a).await?);
    let refused = s
        .payee
        .handle_incoming_claim(&s.pair.b.ctx, Some(&higher))
        .await;
    assert!(
        matches!(refused, Err(ModuleError::NotAccepted(_))),
        "{refused:?}"
    );
    assert_eq!(s.incoming_best().await?, BigUint::from(80u32));
    Ok(())
}

/// Most time a test waits for a spawned step to reach a given point (bounds a hung test only).
const STEP_WAIT_MS: u64 = 20_000;

/// Waits until `ready` holds, polling (bounded by [`STEP_WAIT_MS`]).
async fn wait_until<F, Fut>(what: &str, mut ready: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, Box<dyn std::error::Error>>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(STEP_WAIT_MS);
    while !ready().await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Another account of the payee's node takes the peer's identity over (a configured claim) while a claim of
/// the peer waits for the payee's chain checks (here: behind a close in flight). The identity is checked
/// again right before the credit, so the claim is refused and credits nothing.
#[tokio::test]
async fn a_claim_whose_peers_identity_is_taken_over_while_it_is_checked_credits_nothing(
) -> TestResult {
    use channel_modules::eth::peer::peer_identity;
    use channel_modules::identity::IdentityOrigin;

    let Some(s) = setup().await? else {
        return Ok(());
    };
    let (_, claim_b) = s.retired_at_80_and_open().await?;
    let rpc = s.anvil.client()?;
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    s.anvil.set_automine(false).await?;
    // The payee closes A (retired): the close holds the close lock until it is mined.
    let closing = {
        let (payee, ctx) = (s.payee.clone(), s.pair.b.ctx.clone());
        tokio::spawn(async move { payee.submit_if_expiring(&ctx).await })
    };
    wait_until("the close to be sent", || async {
        Ok(rpc.transaction_count(&payee_addr, "pending").await?
            > rpc.transaction_count(&payee_addr, "latest").await?)
    })
    .await?;
    let claim = s.sign_lost(120).await?;
    assert_eq!(channel_of(&claim)?, channel_of(&claim_b)?);
    let identity_checks = s.pair.b.host.identity_holds().len();
    let handling = {
        let (payee, ctx) = (s.payee.clone(), s.pair.b.ctx.clone());
        tokio::spawn(async move { payee.handle_incoming_claim(&ctx, Some(&claim)).await })
    };
    // The claim passed the first identity check and waits behind the close.
    wait_until("the first identity check", || async {
        Ok(s.pair.b.host.identity_holds().len() > identity_checks)
    })
    .await?;
    let chain_id = rpc.chain_id().await?;
    let payer_addr = address_of(&s.anvil, PAYER_KEY_INDEX)?;
    let intruder = s.pair.b.host.same_node(MemoryStores::unbounded());
    intruder
        .context(s.payee_opts.clone(), "intruder")
        .hold_identity(
            &peer_identity(chain_id, &payer_addr),
            IdentityOrigin::Configured,
        )
        .await?;
    s.anvil.set_automine(true).await?;
    s.anvil.mine(1).await?;
    closing.await??;
    let credit = handling.await?;
    assert!(
        matches!(credit, Err(ModuleError::NotAccepted(_))),
        "{credit:?}"
    );
    assert_eq!(s.incoming_best().await?, BigUint::from(90u32));
    Ok(())
}

/// Chain ID of the second anvil in the cross-chain test (the first runs anvil's default, 31337).
const OTHER_CHAIN_ID: &str = "31338";

/// A claim commits to its chain: the same payer key at the same nonce deploys a channel at the same address
/// on two chains, so a claim earned on chain A would otherwise close the channel on chain B too. Signed for A,
/// it is refused on B by the payee module and by the contract (its `close` reverts).
#[tokio::test]
async fn a_claim_signed_for_one_chain_is_refused_on_another_chain_at_the_same_address() -> TestResult
{
    let Some(chain_a) = Anvil::for_test() else {
        return Ok(());
    };
    let Some(chain_b) = Anvil::for_test_with(&["--chain-id", OTHER_CHAIN_ID]) else {
        return Ok(());
    };
    assert_ne!(
        chain_a.client()?.chain_id().await?,
        chain_b.client()?.chain_id().await?
    );
    let a = setup_on(chain_a, RECEIPT_TIMEOUT_MS, None).await?;
    let b = setup_on(chain_b, RECEIPT_TIMEOUT_MS, None).await?;
    // Each payer's first transaction on its chain deploys its first channel: same key, nonce 0, same address.
    let (on_b, credit_b) = b.pay(1_000_000).await?;
    assert_eq!(credit_b, Some(BigUint::from(1_000_000u32)));
    let (on_a, credit_a) = a.pay(3_000_000).await?;
    assert_eq!(credit_a, Some(BigUint::from(3_000_000u32)));
    let channel = channel_of(&on_a)?;
    assert_eq!(
        channel_of(&on_b)?,
        channel,
        "the two channels share an address"
    );

    // The payee module on chain B, handed A's higher claim.
    let module_verdict = b
        .pair
        .b
        .module
        .handle_incoming_claim(&b.pair.b.ctx, Some(&on_a))
        .await;
    // The contract on chain B, closed by its payee with A's claim.
    let claim = json_of(&on_a)?;
    let signature = channel_modules::eth::types::decode_hex(
        claim["signature"].as_str().ok_or("no signature")?,
    )?;
    let close = abi::encode_call(
        "close(uint256,bytes)",
        &[
            Token::Uint(BigUint::from(3_000_000u32)),
            Token::Bytes(signature),
        ],
    )?;
    let contract_verdict = b
        .payee
        .wallet()
        .send_and_follow(Some(channel), BigUint::default(), close)
        .await;
    let module_refused = matches!(module_verdict, Err(ModuleError::NotAccepted(_)));
    let contract_refused = !matches!(contract_verdict, Ok(TxStatus::Confirmed(_)));
    assert!(
        module_refused && contract_refused,
        "chain A's claim on chain B: module {module_verdict:?}; contract close {contract_verdict:?}"
    );
    assert_eq!(b.incoming_best().await?, BigUint::from(1_000_000u32));
    assert!(!b.is_closed(&channel).await?);
    // The contract and the module hash a claim alike: chain ID, contract, amount.
    let amount = BigUint::from(3_000_000u32);
    for (setup, chain_id) in [(&a, ANVIL_DEFAULT_CHAIN_ID), (&b, OTHER_CHAIN_ID.parse()?)] {
        let on_chain = setup
            .anvil
            .client()?
            .eth_call(
                &channel,
                &abi::encode_call("claimHash(uint256)", &[Token::Uint(amount.clone())])?,
            )
            .await?;
        assert_eq!(
            on_chain,
            claim_digest(chain_id, &channel, &amount)?.to_vec()
        );
    }
    Ok(())
}

/// Channels deployed from the earlier contract (`contracts/v1`, claims without the chain ID), as an earlier
/// release leaves them in the records: they take no claims, the payer moves to a new channel instead of
/// paying on one, the payee still closes one with the claim it kept, and the payer still reclaims one.
#[tokio::test]
async fn a_channel_of_the_earlier_contract_takes_no_claims_but_is_still_closed_and_reclaimed(
) -> TestResult {
    let Some(s) = setup().await? else {
        return Ok(());
    };
    let payer_key = PrivateKey::from_hex(s.anvil.dev_key(PAYER_KEY_INDEX))?;
    let payee_addr = address_of(&s.anvil, PAYEE_KEY_INDEX)?;
    let payer_wallet = Wallet::new(s.anvil.url(), payer_key.clone(), TxSettings::default())?;
    let now = s.anvil.client()?.latest_timestamp().await?;
    let mut old = Vec::new();
    for _ in 0..2 {
        let init = payment_channel_v1_init_code(&payee_addr, now + TIMEOUT_SECS)?;
        old.push(
            payer_wallet
                .deploy(init, BigUint::from(DEPOSIT_WEI))
                .await?,
        );
    }
    let (held, expiring) = (old[0], old[1]);
    let state = read_channel(s.payee.wallet(), &held)
        .await?
        .ok_or("no channel")?;
    assert_eq!(state.version, ChannelVersion::V1);

    // Claims on it are refused, signed the earlier way (without the chain ID) or the current way.
    let b = &s.pair.b;
    let v1_sig = payer_key.sign_personal(&v1_claim_digest(&held, &BigUint::from(500u32))?)?;
    let v1_claim = Claim::Json(json!({
        "channel": held.to_string(), "amount": "500", "signature": encode_hex(&v1_sig.to_bytes65()),
    }));
    for (claim, reason) in [
        (v1_claim, "signed without the chain ID"),
        (
            signed_claim(&payer_key, &held, 500)?,
            "earlier PaymentChannel",
        ),
    ] {
        let result = b.module.handle_incoming_claim(&b.ctx, Some(&claim)).await;
        assert!(
            matches!(&result, Err(ModuleError::NotAccepted(m)) if m.contains(reason)),
            "{reason}: {result:?}"
        );
    }

    // Records holding channels of the first contract version: the payer pays on `held` (and retired `expiring`), the payee
    // holds the payer's 500 on `held`.
    let v1_sig = json!(encode_hex(&v1_sig.to_bytes65()));
    s.pair
        .a
        .host
        .stores()
        .max_value_tracker(OUTGOING_CHANNEL_KEY)?
        .set_if_max(MaxValue {
            value: BigUint::from(2u32),
            data: json!({ "address": held.to_string(), "base": "0", "retired": [expiring.to_string()],
                          "expiresAt": now + TIMEOUT_SECS }),
        })
        .await?;
    let held_claim =
        json!({ "channel": held.to_string(), "amount": "500", "signature": v1_sig, "base": "0" });
    s.pair
        .a
        .host
        .stores()
        .max_value_tracker(OUTGOING_CLAIM_KEY)?
        .set_if_max(MaxValue {
            value: BigUint::from(500u32),
            data: held_claim.clone(),
        })
        .await?;
    let mut payee_record = held_claim;
    payee_record["retired"] = json!([]);
    b.host
        .stores()
        .max_value_tracker(INCOMING_CLAIM_KEY)?
        .set_if_max(MaxValue {
            value: BigUint::from(500u32),
            data: payee_record,
        })
        .await?;

    // The payer opens a new channel rather than sign on the earlier contract, and carries no claim for it.
    let (claim, credit) = s.pay(1_500).await?;
    let new_channel = channel_of(&claim)?;
    assert!(!old.contains(&new_channel));
    assert_eq!(json_of(&claim)?.get("retired"), None);
    assert_eq!(credit, Some(BigUint::from(1_000u32)));
    assert_eq!(
        read_channel(s.payee.wallet(), &new_channel)
            .await?
            .ok_or("no channel")?
            .version,
        ChannelVersion::Current
    );

    // The payee closes both with what it holds: the earlier contract checks the earlier claim.
    b.module.disconnect(&b.ctx).await?;
    for channel in [held, new_channel] {
        let state = read_channel(s.payee.wallet(), &channel)
            .await?
            .ok_or("no channel")?;
        assert!(state.closed, "{channel} not closed");
        assert_eq!(state.balance, BigUint::default());
    }
    // The payer reclaims the expired one.
    s.anvil.advance_time(TIMEOUT_SECS + 1).await?;
    let reclaimed = s.payer.reclaim_expired(&s.pair.a.ctx).await?;
    assert_eq!(reclaimed.len(), 1, "{reclaimed:?}");
    let state = read_channel(s.payee.wallet(), &expiring)
        .await?
        .ok_or("no channel")?;
    assert!(state.closed);
    assert_eq!(state.balance, BigUint::default());
    Ok(())
}
