//! Test doubles for modules and the `ChannelModule` conformance suite, for this crate's tests and, with the
//! `testing` feature, for other crates (a third-party module runs [`conformance::run`]):
//!
//! * [`TestHost`]: a [`ContextHost`] backed by [`MemoryStores`] with a controllable clock (peer mode), and
//!   [`TestHost::pair`], which wires two modules so that `ctx.rpc(method, args)` on one side calls
//!   [`ChannelModule::handle_rpc`] of the other, with no networking;
//! * [`StagedHost`] ([`TestHost::stage`]): engine mode's staged tracker writes around `handle_incoming_claim`;
//! * [`conformance`]: every hook's contract, checked in both host modes.
//!
//! ```ignore
//! # use std::sync::Arc;
//! # use channel_modules::testing::TestHost;
//! # use channel_modules::store::Limit;
//! # async fn demo(a: Arc<dyn channel_modules::ChannelModule>, b: Arc<dyn channel_modules::ChannelModule>) {
//! let pair = TestHost::pair(a, serde_json::json!({}), b, serde_json::json!({}));
//! pair.a.module.connect(&pair.a.ctx).await.expect("connect a");
//! pair.a.host.clock().advance(std::time::Duration::from_secs(60)); // both sides share the clock
//! let _ = pair.b.host.rpc_log(); // the RPCs b received from a
//! # }
//! ```

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::context::{ChannelContext, ContextHost};
use crate::error::ModuleError;
use crate::identity::{decide_identity_hold, IdentityOrigin, IdentityRecord};
use crate::memory::MemoryStores;
use crate::module::ChannelModule;
use crate::store::{Limit, MaxValueTracker, StoreError, TransferLog};
use crate::sync::lock;

pub mod conformance;
mod staging;
pub mod store_conformance;

pub use self::staging::StagedHost;

/// Start of every [`TestClock`]: 2017-10-01T00:00:00Z (the legacy era; any fixed instant would do).
pub const TEST_CLOCK_START_UNIX_MS: u64 = 1_506_816_000_000;

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Clone, Debug)]
pub struct TestClock {
    now: Arc<Mutex<SystemTime>>,
}

impl Default for TestClock {
    fn default() -> Self {
        TestClock {
            now: Arc::new(Mutex::new(
                SystemTime::UNIX_EPOCH + Duration::from_millis(TEST_CLOCK_START_UNIX_MS),
            )),
        }
    }
}

impl TestClock {
    /// The current test time.
    pub fn now(&self) -> SystemTime {
        *lock(&self.now)
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.now);
        *now += by;
    }

    /// Sets the clock to an instant (may go backwards).
    pub fn set(&self, to: SystemTime) {
        *lock(&self.now) = to;
    }
}

/// The peer side a host forwards RPCs to. Weak, so that two paired hosts do not keep each other alive.
struct PairedPeer {
    host: Weak<TestHost>,
    module: Arc<dyn ChannelModule>,
    options: serde_json::Value,
    account_id: String,
}

/// One RPC a host received from its peer: `(method, args)`.
pub type RpcCall = (String, serde_json::Value);

/// A [`ContextHost`] for tests: in-memory stores, a [`TestClock`], and RPCs delivered to a paired module.
pub struct TestHost {
    stores: MemoryStores,
    clock: TestClock,
    peer: Mutex<Option<PairedPeer>>,
    received: Mutex<Vec<RpcCall>>,
    rpc_failure: Mutex<Option<String>>,
    /// Ledger identities claimed through this host: identity → record (one node's registry).
    identities: Arc<Mutex<std::collections::HashMap<String, IdentityRecord>>>,
    /// Every claim made through this host: `(identity, account, origin)`.
    identity_holds: Mutex<Vec<(String, String, IdentityOrigin)>>,
}

impl TestHost {
    /// A host whose logs have no limits and whose RPCs fail (no peer).
    pub fn new() -> Arc<Self> {
        Self::with_stores(MemoryStores::unbounded(), TestClock::default())
    }

    /// A host whose new logs use these limits.
    pub fn with_limits(maximum: Limit, minimum: Limit) -> Arc<Self> {
        Self::with_stores(MemoryStores::new(maximum, minimum), TestClock::default())
    }

    /// A host on given stores and clock (share a clock between hosts to keep them in one timeline).
    pub fn with_stores(stores: MemoryStores, clock: TestClock) -> Arc<Self> {
        Arc::new(TestHost {
            stores,
            clock,
            peer: Mutex::new(None),
            received: Mutex::new(Vec::new()),
            rpc_failure: Mutex::new(None),
            identities: Arc::new(Mutex::new(std::collections::HashMap::new())),
            identity_holds: Mutex::new(Vec::new()),
        })
    }

    /// Another account of the same node: a host with its own `stores` and no peer yet, sharing this host's
    /// clock and its ledger identity registry ([`ContextHost::hold_identity`]).
    pub fn same_node(self: &Arc<Self>, stores: MemoryStores) -> Arc<Self> {
        Arc::new(TestHost {
            stores,
            clock: self.clock.clone(),
            peer: Mutex::new(None),
            received: Mutex::new(Vec::new()),
            rpc_failure: Mutex::new(None),
            identities: Arc::clone(&self.identities),
            identity_holds: Mutex::new(Vec::new()),
        })
    }

    /// The registry's record of `identity` (shared by every host of this node), if any.
    pub fn identity_record(&self, identity: &str) -> Option<IdentityRecord> {
        lock(&self.identities).get(identity).cloned()
    }

    /// Every identity claim made through this host, in order: `(identity, account, origin)`.
    pub fn identity_holds(&self) -> Vec<(String, String, IdentityOrigin)> {
        lock(&self.identity_holds).clone()
    }

    /// The host's stores (inspect logs and trackers directly).
    pub fn stores(&self) -> &MemoryStores {
        &self.stores
    }

    /// The host's clock.
    pub fn clock(&self) -> &TestClock {
        &self.clock
    }

    /// A context for a module running on this host.
    pub fn context(
        self: &Arc<Self>,
        options: serde_json::Value,
        account_id: &str,
    ) -> ChannelContext {
        ChannelContext::new(
            Arc::clone(self) as Arc<dyn ContextHost>,
            options,
            account_id,
        )
    }

    /// Sends this host's RPCs to `module` running on `peer` (with its options and account ID).
    pub fn connect_to(
        &self,
        peer: &Arc<TestHost>,
        module: Arc<dyn ChannelModule>,
        options: serde_json::Value,
        account_id: &str,
    ) {
        *lock(&self.peer) = Some(PairedPeer {
            host: Arc::downgrade(peer),
            module,
            options,
            account_id: account_id.to_owned(),
        });
    }

    /// Makes every outgoing RPC fail with [`ModuleError::Rpc`] carrying `message` (`None` restores delivery).
    pub fn fail_rpcs(&self, message: Option<&str>) {
        *lock(&self.rpc_failure) = message.map(str::to_owned);
    }

    /// Every RPC this host's module received from its peer, in order.
    pub fn rpc_log(&self) -> Vec<RpcCall> {
        lock(&self.received).clone()
    }

    /// Two hosts sharing one clock, each running one module, wired to each other. Side `a` has account ID
    /// `"a"` and side `b` `"b"`. Each host gets its own unbounded stores.
    pub fn pair(
        module_a: Arc<dyn ChannelModule>,
        options_a: serde_json::Value,
        module_b: Arc<dyn ChannelModule>,
        options_b: serde_json::Value,
    ) -> TestPair {
        Self::pair_on(
            TestClock::default(),
            module_a,
            options_a,
            module_b,
            options_b,
        )
    }

    /// [`TestHost::pair`] on `clock` (share it with a fake ledger to keep both in one timeline).
    pub fn pair_on(
        clock: TestClock,
        module_a: Arc<dyn ChannelModule>,
        options_a: serde_json::Value,
        module_b: Arc<dyn ChannelModule>,
        options_b: serde_json::Value,
    ) -> TestPair {
        let host_a = Self::with_stores(MemoryStores::unbounded(), clock.clone());
        let host_b = Self::with_stores(MemoryStores::unbounded(), clock);
        host_a.connect_to(&host_b, Arc::clone(&module_b), options_b.clone(), "b");
        host_b.connect_to(&host_a, Arc::clone(&module_a), options_a.clone(), "a");
        TestPair {
            a: TestSide {
                ctx: host_a.context(options_a, "a"),
                host: host_a,
                module: module_a,
            },
            b: TestSide {
                ctx: host_b.context(options_b, "b"),
                host: host_b,
                module: module_b,
            },
        }
    }
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("stores", &self.stores)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ContextHost for TestHost {
    fn transfer_log(&self, key: &str) -> Result<Arc<dyn TransferLog>, StoreError> {
        self.stores.transfer_log(key)
    }

    fn max_value_tracker(&self, key: &str) -> Result<Arc<dyn MaxValueTracker>, StoreError> {
        self.stores.max_value_tracker(key)
    }

    async fn rpc(
        &self,
        method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, ModuleError> {
        if let Some(message) = lock(&self.rpc_failure).clone() {
            return Err(ModuleError::Rpc(message));
        }
        let (peer_host, module, options, account_id) = {
            let link = lock(&self.peer);
            let link = link
                .as_ref()
                .ok_or_else(|| ModuleError::Rpc("test host has no peer".to_owned()))?;
            let host = link
                .host
                .upgrade()
                .ok_or_else(|| ModuleError::Rpc("peer test host was dropped".to_owned()))?;
            (
                host,
                Arc::clone(&link.module),
                link.options.clone(),
                link.account_id.clone(),
            )
        };
        lock(&peer_host.received).push((method.to_owned(), args.clone()));
        let ctx = peer_host.context(options, &account_id);
        module.handle_rpc(&ctx, method, args).await
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    async fn hold_identity(
        &self,
        identity: &str,
        account_id: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        lock(&self.identity_holds).push((identity.to_owned(), account_id.to_owned(), origin));
        let mut identities = lock(&self.identities);
        let decision = decide_identity_hold(identity, identities.get(identity), account_id, origin);
        if let Some(record) = decision.write {
            identities.insert(identity.to_owned(), record);
        }
        decision.outcome
    }
}

/// One side of a [`TestHost::pair`].
pub struct TestSide {
    /// The side's host (stores, clock, received RPCs).
    pub host: Arc<TestHost>,
    /// The side's module.
    pub module: Arc<dyn ChannelModule>,
    /// A context for calling the module's hooks on this side.
    pub ctx: ChannelContext,
}

/// Two wired sides, see [`TestHost::pair`].
pub struct TestPair {
    /// Side `a`.
    pub a: TestSide,
    /// Side `b`.
    pub b: TestSide,
}

#[cfg(test)]
mod tests {
    use num_bigint::BigUint;

    use super::*;
    use crate::amount::ModuleUnits;
    use crate::claim::{Claim, IncomingCredit};
    use crate::store::TransferRecord;

    /// Echoes RPCs, and on "count" bumps a tracker in its own host's store (to prove the callee runs with its
    /// own context).
    struct Echo;

    #[async_trait]
    impl ChannelModule for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn asset_scale(&self) -> u8 {
            0
        }
        async fn connect(&self, ctx: &ChannelContext) -> Result<(), ModuleError> {
            let reply = ctx
                .rpc("hello", serde_json::json!([ctx.account_id()]))
                .await?;
            if reply == serde_json::json!(["hello", "a"])
                || reply == serde_json::json!(["hello", "b"])
            {
                Ok(())
            } else {
                Err(ModuleError::NotAccepted(format!("bad reply {reply}")))
            }
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
            ctx: &ChannelContext,
            method: &str,
            args: serde_json::Value,
        ) -> Result<serde_json::Value, ModuleError> {
            match method {
                "hello" => Ok(serde_json::json!([method, args[0]])),
                "count" => {
                    let tracker = ctx.max_value_tracker("count")?;
                    let value = BigUint::from(args[0].as_u64().unwrap_or(0));
                    tracker
                        .set_if_max(crate::store::MaxValue {
                            value,
                            data: serde_json::json!(ctx.account_id()),
                        })
                        .await?;
                    Ok(serde_json::Value::Null)
                }
                other => Err(ModuleError::UnknownMethod(other.to_owned())),
            }
        }
    }

    #[tokio::test]
    async fn paired_rpc_reaches_the_other_module_with_its_own_context() {
        let pair = TestHost::pair(
            Arc::new(Echo),
            serde_json::json!({}),
            Arc::new(Echo),
            serde_json::json!({}),
        );
        pair.a
            .module
            .connect(&pair.a.ctx)
            .await
            .expect("a connects");
        pair.a
            .ctx
            .rpc("count", serde_json::json!([5]))
            .await
            .expect("count rpc");
        // The tracker was bumped in b's store, by b's module, under b's account ID.
        let max = pair
            .b
            .host
            .stores()
            .max_value_tracker("count")
            .expect("key")
            .get_max()
            .await
            .expect("get");
        assert_eq!(max.value, BigUint::from(5u8));
        assert_eq!(max.data, serde_json::json!("b"));
        let untouched = pair
            .a
            .host
            .stores()
            .max_value_tracker("count")
            .expect("key")
            .get_max()
            .await
            .expect("get");
        assert_eq!(untouched.value, BigUint::default());
        assert_eq!(
            pair.b.host.rpc_log(),
            vec![
                ("hello".to_owned(), serde_json::json!(["a"])),
                ("count".to_owned(), serde_json::json!([5]))
            ]
        );
        assert!(matches!(
            pair.b.ctx.rpc("nope", serde_json::json!([])).await,
            Err(ModuleError::UnknownMethod(m)) if m == "nope"
        ));
        pair.b.host.fail_rpcs(Some("down"));
        assert_eq!(
            pair.b.ctx.rpc("hello", serde_json::json!(["x"])).await,
            Err(ModuleError::Rpc("down".to_owned()))
        );
    }

    #[test]
    fn paired_hosts_share_one_clock() {
        let pair = TestHost::pair(
            Arc::new(Echo),
            serde_json::json!({}),
            Arc::new(Echo),
            serde_json::json!({}),
        );
        let before = pair.b.ctx.now();
        pair.a.host.clock().advance(Duration::from_secs(90));
        assert_eq!(
            pair.b.ctx.now().duration_since(before).expect("forward"),
            Duration::from_secs(90)
        );
    }

    #[tokio::test]
    async fn unpaired_host_rpc_fails() {
        let host = TestHost::new();
        let ctx = host.context(serde_json::json!({}), "solo");
        assert!(matches!(
            ctx.rpc("x", serde_json::Value::Null).await,
            Err(ModuleError::Rpc(_))
        ));
    }
}
