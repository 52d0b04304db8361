//! The Ethereum modules' peer protocol (`eth::peer`): the proven `eth_address` exchange, where a squatter naming
//! another peer's address can never take it (neither as callee nor as caller), and the `eth_latest_claim` pull,
//! made only when a claim can help and rate-limited per account. Tests needing a chain start their own anvil
//! (killed on drop).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use channel_modules::amount::{LedgerAmount, LedgerSum, ModuleUnits};
use channel_modules::eth::channel::EthChannelModule;
use channel_modules::eth::latest_claim::{LATEST_CLAIM_PULL_MIN_INTERVAL_MS, RPC_LATEST_CLAIM};
use channel_modules::eth::payment::{EthPaymentModule, PAYMENTS_LOG_KEY};
use channel_modules::eth::peer::{
    address_proof, address_proof_digest, address_request, peer_identity, verify_address_proof,
    PEER_ADDRESS_KEY, RPC_ETH_ADDRESS,
};
use channel_modules::eth::testing::Anvil;
use channel_modules::eth::types::{decode_fixed_hex, encode_hex};
use channel_modules::eth::{Address, PrivateKey};
use channel_modules::memory::MemoryStores;
use channel_modules::store::{Direction, Transfer, TransferId, TransferRecord};
use channel_modules::testing::{TestHost, TestPair};
use channel_modules::{ChannelContext, ChannelModule, Claim, IncomingCredit, ModuleError};
use num_bigint::BigUint;
use serde_json::{json, Value};
use tokio::sync::Notify;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAYER_KEY_INDEX: usize = 7;
const PAYEE_KEY_INDEX: usize = 8;
const SQUATTER_KEY_INDEX: usize = 9;
/// Anvil's dev keys 0 and 1 (public test keys), for the tests that need no chain.
const DEV_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const DEV_KEY_1: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

fn options(anvil: &Anvil, key_index: usize) -> Value {
    json!({
        "rpcUri": anvil.url(),
        "privateKey": anvil.dev_key(key_index),
        "pollIntervalMs": 20,
        "receiptTimeoutMs": 20_000,
        "maxUnsecured": "1000",
        "channelDeposit": "10000000000000000",
        "channelTimeoutSecs": 86_400,
        "closeMarginSecs": 3_600,
        "expiryCheckIntervalMs": 3_600_000,
    })
}

fn address_of(anvil: &Anvil, index: usize) -> Result<Address, Box<dyn std::error::Error>> {
    Ok(PrivateKey::from_hex(anvil.dev_key(index))?.address())
}

type AddressReply = Box<dyn Fn(&Value) -> Value + Send + Sync>;

/// A peer module scripted by the test: answers `eth_address` with `address_reply(args)` and
/// `eth_latest_claim` with `null`, the latter only after `release` is notified when `hold` is set (it notifies
/// `started` first).
struct ScriptedPeer {
    address_reply: AddressReply,
    hold: Option<(Arc<Notify>, Arc<Notify>)>,
}

#[async_trait]
impl ChannelModule for ScriptedPeer {
    fn name(&self) -> &str {
        "scripted"
    }

    fn asset_scale(&self) -> u8 {
        18
    }

    async fn connect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn disconnect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn handle_incoming_prepare(
        &self,
        _ctx: &ChannelContext,
        _record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn create_outgoing_claim(
        &self,
        _ctx: &ChannelContext,
        _total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        Ok(None)
    }

    async fn handle_incoming_claim(
        &self,
        _ctx: &ChannelContext,
        _claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        Ok(None)
    }

    async fn handle_rpc(
        &self,
        _ctx: &ChannelContext,
        method: &str,
        args: Value,
    ) -> Result<Value, ModuleError> {
        match method {
            RPC_ETH_ADDRESS => Ok((self.address_reply)(&args)),
            RPC_LATEST_CLAIM => {
                if let Some((started, release)) = &self.hold {
                    started.notify_one();
                    release.notified().await;
                }
                Ok(Value::Null)
            }
            other => Err(ModuleError::UnknownMethod(other.to_owned())),
        }
    }
}

/// The challenge and caller address of `eth_address` args (the new form).
fn challenge_of(args: &Value) -> Option<([u8; 32], Address)> {
    let request = args.get(0)?;
    let challenge = decode_fixed_hex::<32>(request.get("challenge")?.as_str()?).ok()?;
    let caller = request.get("address")?.as_str()?.parse().ok()?;
    Some((challenge, caller))
}

/// A host of another account of `node`, whose module RPCs go to `peer`; and the peer's host (keep it alive).
fn account_on(
    node: &Arc<TestHost>,
    peer: Arc<dyn ChannelModule>,
) -> (Arc<TestHost>, Arc<TestHost>) {
    let host = node.same_node(MemoryStores::unbounded());
    let peer_host = TestHost::with_stores(MemoryStores::unbounded(), node.clock().clone());
    host.connect_to(&peer_host, peer, json!({}), "peer");
    (host, peer_host)
}

async fn pinned(host: &TestHost) -> Result<BigUint, Box<dyn std::error::Error>> {
    Ok(host
        .stores()
        .max_value_tracker(PEER_ADDRESS_KEY)?
        .get_max()
        .await?
        .value)
}

/// The victim's account on `node`: an `eth-payment` payee wired to the real payer. Connects both, checks the
/// payee learned the payer's address, has the payer pay `wei` and returns the claim once the payee credited
/// exactly that.
async fn victim_is_credited(
    anvil: &Anvil,
    node: &Arc<TestHost>,
    wei: u64,
) -> Result<Claim, Box<dyn std::error::Error>> {
    let payer_opts = options(anvil, PAYER_KEY_INDEX);
    let payee_opts = options(anvil, PAYEE_KEY_INDEX);
    let payer = Arc::new(EthPaymentModule::from_options(&payer_opts)?);
    let payee = Arc::new(EthPaymentModule::from_options(&payee_opts)?);
    let victim_host = node.same_node(MemoryStores::unbounded());
    let payer_host = TestHost::with_stores(MemoryStores::unbounded(), node.clock().clone());
    victim_host.connect_to(
        &payer_host,
        payer.clone() as Arc<dyn ChannelModule>,
        payer_opts.clone(),
        "payer",
    );
    payer_host.connect_to(
        &victim_host,
        payee.clone() as Arc<dyn ChannelModule>,
        payee_opts.clone(),
        "victim",
    );
    let payer_ctx = payer_host.context(payer_opts, "payer");
    let victim_ctx = victim_host.context(payee_opts, "victim");
    payer.connect(&payer_ctx).await?;
    payee.connect(&victim_ctx).await?;
    let payer_addr = address_of(anvil, PAYER_KEY_INDEX)?;
    assert_eq!(payee.peer_account(), Some(payer_addr.to_string()));
    let total = ModuleUnits::from(wei);
    let claim = payer
        .create_outgoing_claim(&payer_ctx, &total)
        .await?
        .ok_or("no claim")?;
    let credit = payee
        .handle_incoming_claim(&victim_ctx, Some(&claim))
        .await?
        .ok_or("the victim was not credited")?;
    assert_eq!(credit.amount, total);
    // A caller naming another address than the victim's pinned peer is refused (a relayed challenge).
    let stranger = PrivateKey::from_hex(anvil.dev_key(SQUATTER_KEY_INDEX))?.address();
    let relayed = payee
        .handle_rpc(
            &victim_ctx,
            RPC_ETH_ADDRESS,
            address_request(&stranger, &[9u8; 32]),
        )
        .await;
    assert!(
        matches!(relayed, Err(ModuleError::NotAccepted(_))),
        "{relayed:?}"
    );
    Ok(claim)
}

#[test]
fn address_proofs_verify_only_for_their_signer_and_exact_request() -> TestResult {
    let callee = PrivateKey::from_hex(DEV_KEY_0)?;
    let caller = PrivateKey::from_hex(DEV_KEY_1)?.address();
    let challenge = [7u8; 32];
    let chain = 31_337;
    let proof = address_proof(&callee, chain, &caller, &challenge)?;
    assert_eq!(
        verify_address_proof(chain, &caller, &challenge, &proof)?,
        callee.address()
    );
    // The signature binds the chain, the caller, the challenge and the claimed address.
    let callee_addr = callee.address();
    assert!(verify_address_proof(1, &caller, &challenge, &proof).is_err());
    assert!(verify_address_proof(chain, &callee_addr, &challenge, &proof).is_err());
    assert!(verify_address_proof(chain, &caller, &[8u8; 32], &proof).is_err());
    let mut other_claimed = proof.clone();
    other_claimed["address"] = json!(caller.to_string());
    assert!(verify_address_proof(chain, &caller, &challenge, &other_claimed).is_err());
    // The same digest signed by another key proves nothing about the claimed address.
    let impostor = PrivateKey::from_hex(DEV_KEY_1)?;
    let forged = json!({
        "address": callee_addr.to_string(),
        "signature": encode_hex(
            &impostor
                .sign_hash(&address_proof_digest(chain, &caller, &challenge, &callee_addr))?
                .to_bytes65()
        ),
    });
    assert!(verify_address_proof(chain, &caller, &challenge, &forged).is_err());
    // The unproven form (a bare address) is refused, saying why.
    let bare = verify_address_proof(chain, &caller, &challenge, &json!(callee_addr.to_string()));
    assert!(
        matches!(&bare, Err(ModuleError::NotAccepted(m)) if m.contains("older ilp-bridge")),
        "{bare:?}"
    );
    assert!(verify_address_proof(chain, &caller, &challenge, &json!({})).is_err());
    Ok(())
}

/// Two squatter accounts on the payee's node answer `eth_address` with the payer's address before the payer's
/// own account ever asked: one with the bare address (the unproven form), one with a "proof" signed by its own
/// key. Neither pins the address nor takes its identity; the victim account then learns the payer's address,
/// is credited, and the squatters cannot be credited with the victim's payment.
#[tokio::test]
async fn a_squatter_answering_with_the_victims_address_cannot_take_it() -> TestResult {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let chain = anvil.client()?.chain_id().await?;
    let payer_addr = address_of(&anvil, PAYER_KEY_INDEX)?;
    let squatter_key = PrivateKey::from_hex(anvil.dev_key(SQUATTER_KEY_INDEX))?;
    let node = TestHost::new();
    let bare = ScriptedPeer {
        address_reply: Box::new(move |_| json!(payer_addr.to_string())),
        hold: None,
    };
    let forged = ScriptedPeer {
        address_reply: Box::new(move |args| {
            let Some((challenge, caller)) = challenge_of(args) else {
                return Value::Null;
            };
            let digest = address_proof_digest(chain, &caller, &challenge, &payer_addr);
            match squatter_key.sign_hash(&digest) {
                Ok(sig) => json!({
                    "address": payer_addr.to_string(),
                    "signature": encode_hex(&sig.to_bytes65()),
                }),
                Err(_) => Value::Null,
            }
        }),
        hold: None,
    };
    let payee_opts = options(&anvil, PAYEE_KEY_INDEX);
    let mut squatters = Vec::new();
    for (name, script) in [("squat-bare", bare), ("squat-forged", forged)] {
        let (host, peer_host) = account_on(&node, Arc::new(script));
        let module = EthPaymentModule::from_options(&payee_opts)?;
        let ctx = host.context(payee_opts.clone(), name);
        module.connect(&ctx).await?;
        assert_eq!(module.peer_account(), None, "{name}");
        assert_eq!(pinned(&host).await?, BigUint::from(0u8), "{name}");
        // The squatter's peer was asked (and its answer refused).
        assert!(
            peer_host
                .rpc_log()
                .iter()
                .any(|(method, _)| method == RPC_ETH_ADDRESS),
            "{name}"
        );
        squatters.push((name, host, peer_host, module, ctx));
    }
    // The identity is still free: the test node's registry hands it to whoever claims it next.
    let claim = victim_is_credited(&anvil, &node, 4_000_000_000_000).await?;
    for (name, host, _peer_host, module, ctx) in squatters {
        let refused = module.handle_incoming_claim(&ctx, Some(&claim)).await;
        assert!(
            matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.starts_with("eth_address reply")),
            "{name}: {refused:?}"
        );
        let sums = host.stores().transfer_log(PAYMENTS_LOG_KEY)?.sums();
        assert_eq!(
            sums.incoming_fulfilled_and_prepared,
            LedgerSum::ZERO,
            "{name}"
        );
    }
    // And the identity is the victim's now: a squatter account claiming it is refused.
    let taken = node
        .same_node(MemoryStores::unbounded())
        .context(json!({}), "squat-late")
        .hold_identity(
            &peer_identity(chain, &payer_addr),
            channel_modules::identity::IdentityOrigin::Proven,
        )
        .await;
    assert!(
        matches!(taken, Err(ModuleError::NotAccepted(_))),
        "{taken:?}"
    );
    Ok(())
}

/// A squatter's peer *calls* `eth_address` on the payee's node naming the payer's address as its own, before
/// the payer's own account exists: the unproven form is refused, the challenged form is answered with the
/// payee's proof, and neither pins anything or takes the identity. The victim then works.
#[tokio::test]
async fn a_caller_naming_the_victims_address_pins_nothing() -> TestResult {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let chain = anvil.client()?.chain_id().await?;
    let payer_addr = address_of(&anvil, PAYER_KEY_INDEX)?;
    let payee_addr = address_of(&anvil, PAYEE_KEY_INDEX)?;
    let node = TestHost::new();
    let payee_opts = options(&anvil, PAYEE_KEY_INDEX);
    for module in [
        Arc::new(EthPaymentModule::from_options(&payee_opts)?) as Arc<dyn ChannelModule>,
        Arc::new(EthChannelModule::from_options(&payee_opts)?) as Arc<dyn ChannelModule>,
    ] {
        let squat_host = node.same_node(MemoryStores::unbounded());
        let squat_ctx = squat_host.context(payee_opts.clone(), "squat");
        let old_form = module
            .handle_rpc(&squat_ctx, RPC_ETH_ADDRESS, json!([payer_addr.to_string()]))
            .await;
        assert!(
            matches!(&old_form, Err(ModuleError::InvalidFields(m)) if m.contains("older ilp-bridge")),
            "{}: {old_form:?}",
            module.name()
        );
        let challenge = [3u8; 32];
        let proof = module
            .handle_rpc(
                &squat_ctx,
                RPC_ETH_ADDRESS,
                address_request(&payer_addr, &challenge),
            )
            .await?;
        assert_eq!(
            verify_address_proof(chain, &payer_addr, &challenge, &proof)?,
            payee_addr
        );
        let own = module
            .handle_rpc(
                &squat_ctx,
                RPC_ETH_ADDRESS,
                address_request(&payee_addr, &challenge),
            )
            .await;
        assert!(matches!(own, Err(ModuleError::NotAccepted(_))), "{own:?}");
        assert_eq!(pinned(&squat_host).await?, BigUint::from(0u8));
        assert_eq!(module.peer_account(), None);
    }
    victim_is_credited(&anvil, &node, 3_000_000_000_000).await?;
    Ok(())
}

fn transfer(n: u8, amount: u64) -> Transfer {
    Transfer {
        id: TransferId([n; 16]),
        amount: LedgerAmount(amount),
        execution_condition: [n; 32],
        expires_at_ms: i64::MAX,
        ilp: Vec::new(),
        custom: None,
    }
}

/// Prepares `t` incoming on `side`'s main log and runs the module's check; cancels it again if refused.
async fn offer(
    side: &channel_modules::testing::TestSide,
    t: &Transfer,
) -> Result<bool, ModuleError> {
    let main = side.host.stores().transfer_log("")?;
    main.prepare(t, Direction::Incoming)
        .await
        .map_err(|e| ModuleError::Ledger(e.to_string()))?;
    let record = main
        .get(&t.id)
        .await
        .map_err(|e| ModuleError::Ledger(e.to_string()))?
        .ok_or_else(|| ModuleError::Ledger("missing".into()))?;
    match side
        .module
        .handle_incoming_prepare(&side.ctx, &record)
        .await
    {
        Ok(()) => Ok(true),
        Err(ModuleError::NotAccepted(_)) => {
            main.cancel(&t.id, "refused")
                .await
                .map_err(|e| ModuleError::Ledger(e.to_string()))?;
            Ok(false)
        }
        Err(other) => Err(other),
    }
}

/// How many `eth_latest_claim` RPCs `side`'s peer received.
fn pulls(pair: &TestPair) -> usize {
    pair.a
        .host
        .rpc_log()
        .iter()
        .filter(|(method, _)| method == RPC_LATEST_CLAIM)
        .count()
}

/// Runs the pull checks on a wired payer (`a`) / payee (`b`) pair with maxUnsecured = 1000: no pull while the
/// payer owes nothing fulfilled; then one pull per interval; then a pull that secures the transfer.
async fn pulls_are_needed_and_rate_limited(pair: &TestPair) -> TestResult {
    let b = &pair.b;
    // Only prepared (not fulfilled) transfers over the limit: the payer owes nothing yet, asking cannot help.
    assert!(b
        .module
        .handle_incoming_prepare(&b.ctx, &{
            let main = b.host.stores().transfer_log("")?;
            main.prepare(&transfer(1, 1_001), Direction::Incoming)
                .await?;
            main.get(&TransferId([1; 16])).await?.ok_or("t1")?
        })
        .await
        .is_err());
    assert_eq!(pulls(pair), 0);
    b.host
        .stores()
        .transfer_log("")?
        .cancel(&TransferId([1; 16]), "refused")
        .await?;

    // 1500 fulfilled that the payer does not (yet) agree it owes: each refused prepare could be helped by a
    // claim, but the payer is asked at most once per interval.
    let main = b.host.stores().transfer_log("")?;
    main.prepare(&transfer(2, 1_500), Direction::Incoming)
        .await?;
    main.fulfill(&TransferId([2; 16]), &[2; 32]).await?;
    assert!(!offer(b, &transfer(3, 1)).await?);
    assert_eq!(pulls(pair), 1);
    assert!(!offer(b, &transfer(4, 1)).await?);
    assert_eq!(pulls(pair), 1, "a second pull within the interval");
    b.host
        .clock()
        .advance(Duration::from_millis(LATEST_CLAIM_PULL_MIN_INTERVAL_MS - 1));
    assert!(!offer(b, &transfer(5, 1)).await?);
    assert_eq!(pulls(pair), 1, "a second pull within the interval");
    b.host.clock().advance(Duration::from_millis(1));
    assert!(!offer(b, &transfer(6, 1)).await?);
    assert_eq!(pulls(pair), 2);

    // The payer's log now shows the 1500 fulfilled: the next pull (after the interval) brings its claim and
    // the transfer fits.
    let payer_main = pair.a.host.stores().transfer_log("")?;
    payer_main
        .prepare(&transfer(2, 1_500), Direction::Outgoing)
        .await?;
    payer_main.fulfill(&TransferId([2; 16]), &[2; 32]).await?;
    assert!(!offer(b, &transfer(7, 1)).await?);
    assert_eq!(pulls(pair), 2);
    b.host
        .clock()
        .advance(Duration::from_millis(LATEST_CLAIM_PULL_MIN_INTERVAL_MS));
    assert!(offer(b, &transfer(8, 1)).await?);
    assert_eq!(pulls(pair), 3);

    // That pull credited something: the next one needed may go at once (a payee whose claims keep getting
    // lost is not held back).
    main.prepare(&transfer(9, 1_500), Direction::Incoming)
        .await?;
    main.fulfill(&TransferId([9; 16]), &[9; 32]).await?;
    payer_main
        .prepare(&transfer(9, 1_500), Direction::Outgoing)
        .await?;
    payer_main.fulfill(&TransferId([9; 16]), &[9; 32]).await?;
    assert!(offer(b, &transfer(10, 1)).await?);
    assert_eq!(pulls(pair), 4);
    Ok(())
}

fn wired<M: ChannelModule + 'static>(
    anvil: &Anvil,
    build: fn(&Value) -> Result<M, ModuleError>,
) -> Result<TestPair, Box<dyn std::error::Error>> {
    let payer_opts = options(anvil, PAYER_KEY_INDEX);
    let payee_opts = options(anvil, PAYEE_KEY_INDEX);
    Ok(TestHost::pair(
        Arc::new(build(&payer_opts)?),
        payer_opts,
        Arc::new(build(&payee_opts)?),
        payee_opts,
    ))
}

#[tokio::test]
async fn eth_payment_pulls_the_latest_claim_only_when_it_can_help_and_once_per_interval(
) -> TestResult {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let pair = wired(&anvil, EthPaymentModule::from_options)?;
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    pulls_are_needed_and_rate_limited(&pair).await
}

#[tokio::test]
async fn eth_channel_pulls_the_latest_claim_only_when_it_can_help_and_once_per_interval(
) -> TestResult {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let pair = wired(&anvil, EthChannelModule::from_options)?;
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    pulls_are_needed_and_rate_limited(&pair).await
}

/// The real payer, except that its `eth_latest_claim` replies wait for `release` (after notifying `started`).
struct HeldPayer {
    inner: Arc<EthPaymentModule>,
    started: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait]
impl ChannelModule for HeldPayer {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn asset_scale(&self) -> u8 {
        self.inner.asset_scale()
    }

    async fn connect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        self.inner.connect(ctx).await
    }

    async fn disconnect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
        self.inner.disconnect(ctx).await
    }

    async fn handle_incoming_prepare(
        &self,
        ctx: &ChannelContext,
        record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        self.inner.handle_incoming_prepare(ctx, record).await
    }

    async fn create_outgoing_claim(
        &self,
        ctx: &ChannelContext,
        total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        self.inner.create_outgoing_claim(ctx, total).await
    }

    async fn handle_incoming_claim(
        &self,
        ctx: &ChannelContext,
        claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        self.inner.handle_incoming_claim(ctx, claim).await
    }

    async fn handle_rpc(
        &self,
        ctx: &ChannelContext,
        method: &str,
        args: Value,
    ) -> Result<Value, ModuleError> {
        if method == RPC_LATEST_CLAIM {
            self.started.notify_one();
            self.release.notified().await;
        }
        self.inner.handle_rpc(ctx, method, args).await
    }
}

/// A prepare arriving while a latest-claim pull is in flight does not start a second pull and is not refused
/// outright: it waits for the pull in flight and re-checks, so the claim that pull brings covers it too. After
/// an unproductive pull, the rate limit still holds.
#[tokio::test]
async fn prepares_arriving_during_a_pull_wait_for_it_and_are_covered_by_it() -> TestResult {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let payer_opts = options(&anvil, PAYER_KEY_INDEX);
    let payer = Arc::new(HeldPayer {
        inner: Arc::new(EthPaymentModule::from_options(&payer_opts)?),
        started: Arc::clone(&started),
        release: Arc::clone(&release),
    });
    let payee_opts = options(&anvil, PAYEE_KEY_INDEX);
    let payee = Arc::new(EthPaymentModule::from_options(&payee_opts)?);
    let pair = TestHost::pair(
        payer as Arc<dyn ChannelModule>,
        payer_opts,
        payee as Arc<dyn ChannelModule>,
        payee_opts,
    );
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    // 1500 fulfilled, which the payer's log agrees it owes, but no claim reached the payee.
    let main = pair.b.host.stores().transfer_log("")?;
    main.prepare(&transfer(1, 1_500), Direction::Incoming)
        .await?;
    main.fulfill(&TransferId([1; 16]), &[1; 32]).await?;
    let payer_main = pair.a.host.stores().transfer_log("")?;
    payer_main
        .prepare(&transfer(1, 1_500), Direction::Outgoing)
        .await?;
    payer_main.fulfill(&TransferId([1; 16]), &[1; 32]).await?;

    let spawn_offer = |id: u8| {
        let side_module = Arc::clone(&pair.b.module);
        let ctx = pair.b.ctx.clone();
        let main = Arc::clone(&main);
        tokio::spawn(async move {
            main.prepare(&transfer(id, 1), Direction::Incoming)
                .await
                .map_err(|e| ModuleError::Ledger(e.to_string()))?;
            let record = main
                .get(&TransferId([id; 16]))
                .await
                .map_err(|e| ModuleError::Ledger(e.to_string()))?
                .ok_or_else(|| ModuleError::Ledger("missing".into()))?;
            side_module.handle_incoming_prepare(&ctx, &record).await
        })
    };
    let first = spawn_offer(2);
    started.notified().await;
    // Two more prepares arrive while the pull is held: they start no pull of their own and wait.
    let waiting = [spawn_offer(3), spawn_offer(4)];
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "a prepare arriving during a pull was decided without waiting for it"
    );
    assert_eq!(pulls(&pair), 1, "a second pull while one is in flight");
    // The pull brings the payer's claim (paid on chain now): all three prepares fit.
    release.notify_one();
    first.await??;
    for w in waiting {
        w.await??;
    }
    assert_eq!(pulls(&pair), 1);

    // An unproductive pull (the payer owes nothing more) still holds the next one back for the interval.
    main.prepare(&transfer(5, 1_500), Direction::Incoming)
        .await?;
    main.fulfill(&TransferId([5; 16]), &[5; 32]).await?;
    let refused = spawn_offer(6);
    started.notified().await;
    release.notify_one();
    assert!(matches!(refused.await?, Err(ModuleError::NotAccepted(_))));
    assert_eq!(pulls(&pair), 2);
    assert!(!offer(&pair.b, &transfer(7, 1)).await?);
    assert_eq!(
        pulls(&pair),
        2,
        "a pull within the interval after an unproductive one"
    );
    Ok(())
}

/// Writes a pin the way versions before proofs did: value 1, data the bare address.
async fn set_bare_pin(host: &TestHost, address: &Address) -> TestResult {
    host.stores()
        .max_value_tracker(PEER_ADDRESS_KEY)?
        .set_if_max(channel_modules::store::MaxValue {
            value: BigUint::from(1u8),
            data: json!(address.to_string()),
        })
        .await?;
    Ok(())
}

async fn pin_of(host: &TestHost) -> Result<(BigUint, Value), Box<dyn std::error::Error>> {
    let pin = host
        .stores()
        .max_value_tracker(PEER_ADDRESS_KEY)?
        .get_max()
        .await?;
    Ok((pin.value, pin.data))
}

fn proven_pin(address: &Address, via: &str) -> (BigUint, Value) {
    (
        BigUint::from(2u8),
        json!({ "address": address.to_string(), "via": via }),
    )
}

/// An unproven pin (the bare form) gives way to a configured `peerAddress`, even one naming another address:
/// the operator's word is the way out when the pinned address was a squatter's.
#[tokio::test]
async fn a_configured_address_replaces_an_unproven_pin_of_an_earlier_version() -> TestResult {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let chain = anvil.client()?.chain_id().await?;
    let payer_addr = address_of(&anvil, PAYER_KEY_INDEX)?;
    let squatter_addr = address_of(&anvil, SQUATTER_KEY_INDEX)?;
    let payer_opts = options(&anvil, PAYER_KEY_INDEX);
    let mut payee_opts = options(&anvil, PAYEE_KEY_INDEX);
    payee_opts["peerAddress"] = json!(payer_addr.to_string());
    let pair = TestHost::pair(
        Arc::new(EthPaymentModule::from_options(&payer_opts)?),
        payer_opts,
        Arc::new(EthPaymentModule::from_options(&payee_opts)?),
        payee_opts,
    );
    set_bare_pin(&pair.b.host, &squatter_addr).await?;
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    let total = ModuleUnits::from(1_000_000_000_000);
    let claim = pair
        .a
        .module
        .create_outgoing_claim(&pair.a.ctx, &total)
        .await?
        .ok_or("no claim")?;
    let credit = pair
        .b
        .module
        .handle_incoming_claim(&pair.b.ctx, Some(&claim))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, total);
    assert_eq!(
        pin_of(&pair.b.host).await?,
        proven_pin(&payer_addr, "configured")
    );
    assert!(pair
        .b
        .host
        .identity_record(&peer_identity(chain, &payer_addr))
        .is_some());
    assert_eq!(
        pair.b
            .host
            .identity_record(&peer_identity(chain, &squatter_addr)),
        None
    );
    Ok(())
}

/// Pins in the bare form (a bare address, value 1: the callee pinned whatever a caller named) are
/// unproven. Such a pin is kept only once the peer proves that same address with a challenge (it is then
/// rewritten with its origin); a peer proving another address, or none (a peer that only names its address),
/// is refused with an error saying so, the pin left as it was and no identity held. A pin equal to the configured peerAddress
/// is kept as configured without asking.
#[tokio::test]
async fn an_unproven_pin_of_an_earlier_version_is_kept_only_once_the_peer_proves_it() -> TestResult
{
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let chain = anvil.client()?.chain_id().await?;
    let payer_addr = address_of(&anvil, PAYER_KEY_INDEX)?;
    let squatter_addr = address_of(&anvil, SQUATTER_KEY_INDEX)?;
    let some_claim = Claim::Json(json!({ "txHash": format!("0x{}", "ab".repeat(32)) }));

    // The pin names the peer's real address: proven again at connect, rewritten with its origin.
    let pair = wired(&anvil, EthPaymentModule::from_options)?;
    set_bare_pin(&pair.b.host, &payer_addr).await?;
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    assert_eq!(
        pin_of(&pair.b.host).await?,
        proven_pin(&payer_addr, "proof")
    );
    assert_eq!(pair.b.module.peer_account(), Some(payer_addr.to_string()));
    assert!(pair
        .a
        .host
        .rpc_log()
        .iter()
        .any(|(method, _)| method == RPC_ETH_ADDRESS));
    // And it works: the payer pays, the payee credits.
    let total = ModuleUnits::from(1_000_000_000_000);
    let claim = pair
        .a
        .module
        .create_outgoing_claim(&pair.a.ctx, &total)
        .await?
        .ok_or("no claim")?;
    let credit = pair
        .b
        .module
        .handle_incoming_claim(&pair.b.ctx, Some(&claim))
        .await?
        .ok_or("no credit")?;
    assert_eq!(credit.amount, total);

    // The pin names another address than the one the peer proves: refused, pin and registry untouched.
    let pair = wired(&anvil, EthPaymentModule::from_options)?;
    set_bare_pin(&pair.b.host, &squatter_addr).await?;
    pair.a.module.connect(&pair.a.ctx).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    assert_eq!(pair.b.module.peer_account(), None);
    let refused = pair
        .b
        .module
        .handle_incoming_claim(&pair.b.ctx, Some(&some_claim))
        .await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m))
            if m.contains("without a proof of ownership") && m.contains(&format!("proves {payer_addr}"))
                && m.contains("peerAddress")),
        "{refused:?}"
    );
    assert_eq!(
        pin_of(&pair.b.host).await?,
        (BigUint::from(1u8), json!(squatter_addr.to_string()))
    );
    for address in [&payer_addr, &squatter_addr] {
        assert_eq!(
            pair.b.host.identity_record(&peer_identity(chain, address)),
            None
        );
    }

    // A peer that proves nothing (a bare address reply): refused.
    let bare_reply = payer_addr.to_string();
    let old_peer = Arc::new(ScriptedPeer {
        address_reply: Box::new(move |_| json!(bare_reply)),
        hold: None,
    });
    let payee_opts = options(&anvil, PAYEE_KEY_INDEX);
    let pair = TestHost::pair(
        old_peer as Arc<dyn ChannelModule>,
        json!({}),
        Arc::new(EthPaymentModule::from_options(&payee_opts)?) as Arc<dyn ChannelModule>,
        payee_opts.clone(),
    );
    set_bare_pin(&pair.b.host, &payer_addr).await?;
    pair.b.module.connect(&pair.b.ctx).await?;
    let refused = pair
        .b
        .module
        .handle_incoming_claim(&pair.b.ctx, Some(&some_claim))
        .await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m))
            if m.contains("without a proof of ownership") && m.contains("could not prove it")),
        "{refused:?}"
    );
    assert_eq!(
        pin_of(&pair.b.host).await?,
        (BigUint::from(1u8), json!(payer_addr.to_string()))
    );

    // The pin is the configured peerAddress: kept as configured, without asking the peer.
    let mut configured_opts = payee_opts;
    configured_opts["peerAddress"] = json!(payer_addr.to_string());
    let configured = EthPaymentModule::from_options(&configured_opts)?;
    let ctx = pair.b.host.context(configured_opts, "b");
    configured.connect(&ctx).await?;
    assert_eq!(
        pin_of(&pair.b.host).await?,
        proven_pin(&payer_addr, "configured")
    );
    assert_eq!(
        pair.b
            .host
            .identity_record(&peer_identity(chain, &payer_addr)),
        Some(channel_modules::identity::IdentityRecord::Held {
            account: "b".to_owned(),
            origin: channel_modules::identity::IdentityOrigin::Configured,
        })
    );
    Ok(())
}

/// A squatter's module that relays every `eth_address` call to the victim's module (as if the squatter had
/// opened a link to the victim and forwarded our challenge there), and answers nothing else.
struct RelayPeer {
    victim: Arc<EthPaymentModule>,
    victim_ctx: ChannelContext,
}

#[async_trait]
impl ChannelModule for RelayPeer {
    fn name(&self) -> &str {
        "relay"
    }

    fn asset_scale(&self) -> u8 {
        18
    }

    async fn connect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn disconnect(&self, _ctx: &ChannelContext) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn handle_incoming_prepare(
        &self,
        _ctx: &ChannelContext,
        _record: &TransferRecord,
    ) -> Result<(), ModuleError> {
        Ok(())
    }

    async fn create_outgoing_claim(
        &self,
        _ctx: &ChannelContext,
        _total: &ModuleUnits,
    ) -> Result<Option<Claim>, ModuleError> {
        Ok(None)
    }

    async fn handle_incoming_claim(
        &self,
        _ctx: &ChannelContext,
        _claim: Option<&Claim>,
    ) -> Result<Option<IncomingCredit>, ModuleError> {
        Ok(None)
    }

    async fn handle_rpc(
        &self,
        _ctx: &ChannelContext,
        method: &str,
        args: Value,
    ) -> Result<Value, ModuleError> {
        match method {
            RPC_ETH_ADDRESS => self.victim.handle_rpc(&self.victim_ctx, method, args).await,
            other => Err(ModuleError::UnknownMethod(other.to_owned())),
        }
    }
}

/// The relay this protocol cannot stop: a squatter peering with both our node (our account "squatter") and the
/// payer relays our challenge to the payer, which signs it (it never learned the squatter's address: the
/// squatter never answers the payer's own challenge), so the squatter's account pins the payer's address first.
/// When the payer's real account proves the same address, the identity becomes contested instead of staying
/// the squatter's: neither account is credited with the payer's on-chain payments (whose hashes are public),
/// and the error names both. The operator configures peerAddress on the real account, which is credited again;
/// the squatter stays refused.
#[tokio::test]
async fn a_relayed_proof_contests_the_identity_instead_of_taking_it() -> TestResult {
    let Some(anvil) = Anvil::for_test() else {
        return Ok(());
    };
    let chain = anvil.client()?.chain_id().await?;
    let payer_addr = address_of(&anvil, PAYER_KEY_INDEX)?;
    let node = TestHost::new();
    let payer_opts = options(&anvil, PAYER_KEY_INDEX);
    let payee_opts = options(&anvil, PAYEE_KEY_INDEX);
    let payer = Arc::new(EthPaymentModule::from_options(&payer_opts)?);
    let payer_host = TestHost::with_stores(MemoryStores::unbounded(), node.clock().clone());

    // The squatter's account pins the payer's address through the relayed proof.
    let relay = Arc::new(RelayPeer {
        victim: Arc::clone(&payer),
        victim_ctx: payer_host.context(payer_opts.clone(), "squatter-link"),
    });
    let (squat_host, _relay_host) = account_on(&node, relay);
    let squat = EthPaymentModule::from_options(&payee_opts)?;
    let squat_ctx = squat_host.context(payee_opts.clone(), "squatter");
    squat.connect(&squat_ctx).await?;
    assert_eq!(squat.peer_account(), Some(payer_addr.to_string()));

    // The payer's real account on the same node.
    let payee = Arc::new(EthPaymentModule::from_options(&payee_opts)?);
    let victim_host = node.same_node(MemoryStores::unbounded());
    victim_host.connect_to(
        &payer_host,
        payer.clone() as Arc<dyn ChannelModule>,
        payer_opts.clone(),
        "payer",
    );
    payer_host.connect_to(
        &victim_host,
        payee.clone() as Arc<dyn ChannelModule>,
        payee_opts.clone(),
        "victim",
    );
    let payer_ctx = payer_host.context(payer_opts, "payer");
    let victim_ctx = victim_host.context(payee_opts.clone(), "victim");
    payer.connect(&payer_ctx).await?;
    payee.connect(&victim_ctx).await?;
    let total = ModuleUnits::from(5_000_000_000_000);
    let claim = payer
        .create_outgoing_claim(&payer_ctx, &total)
        .await?
        .ok_or("no claim")?;
    let identity = peer_identity(chain, &payer_addr);
    for (name, module, ctx) in [
        ("victim", &*payee, &victim_ctx),
        ("squatter", &squat, &squat_ctx),
    ] {
        let refused = module.handle_incoming_claim(ctx, Some(&claim)).await;
        assert!(
            matches!(&refused, Err(ModuleError::NotAccepted(m))
                if m.contains(&identity) && m.contains("squatter, victim") && m.contains("peerAddress")),
            "{name}: {refused:?}"
        );
    }
    for host in [&victim_host, &squat_host] {
        let sums = host.stores().transfer_log(PAYMENTS_LOG_KEY)?.sums();
        assert_eq!(sums.incoming_fulfilled_and_prepared, LedgerSum::ZERO);
    }

    // The operator configures the payer's address on the real account: credited; the squatter stays refused.
    let mut configured_opts = payee_opts;
    configured_opts["peerAddress"] = json!(payer_addr.to_string());
    let configured = EthPaymentModule::from_options(&configured_opts)?;
    let configured_ctx = victim_host.context(configured_opts, "victim");
    configured.connect(&configured_ctx).await?;
    let credit = configured
        .handle_incoming_claim(&configured_ctx, Some(&claim))
        .await?
        .ok_or("the configured account was not credited")?;
    assert_eq!(credit.amount, total);
    let refused = squat.handle_incoming_claim(&squat_ctx, Some(&claim)).await;
    assert!(
        matches!(&refused, Err(ModuleError::NotAccepted(m)) if m.contains("(victim)")),
        "{refused:?}"
    );
    let sums = squat_host.stores().transfer_log(PAYMENTS_LOG_KEY)?.sums();
    assert_eq!(sums.incoming_fulfilled_and_prepared, LedgerSum::ZERO);
    Ok(())
}
