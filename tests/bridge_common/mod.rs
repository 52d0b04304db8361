//! What the bridge-mode end-to-end tests share: a bridge node on RocksDB started from TOML ([`Bridge`]), and
//! helpers to wait and to make ILPv4 Prepares.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::time::Duration;

use btp::ilp_v4::{Address, Prepare};
use btp::Timestamp;
use bytes::Bytes;
use ilp_bridge::bridge::run::{BridgeNode, ModernStores};
use ilp_bridge::config::node::NodeConfig;
use ilp_bridge::peer::{NodeOptions, PeerNode, PeerStores};
use ilp_bridge::store::{Db, DbOptions, RocksStores};
use sha2::{Digest, Sha256};

use crate::legacy_common::{now_ms, R, WAIT};

pub(crate) struct Bridge {
    pub(crate) node: PeerNode,
    pub(crate) bridge: BridgeNode,
    /// The node's database (tests inject slow writes through it).
    pub(crate) db: Arc<Db>,
}

impl Bridge {
    pub(crate) async fn start(toml: &str, dir: &std::path::Path) -> R<Bridge> {
        Self::start_with(toml, dir, DbOptions::default()).await
    }

    /// [`Bridge::start`] on a database opened with `db_options`.
    pub(crate) async fn start_with(
        toml: &str,
        dir: &std::path::Path,
        db_options: DbOptions,
    ) -> R<Bridge> {
        let config = NodeConfig::parse(toml)?;
        // After a stop, the tasks of the previous run let go of the database within moments.
        let deadline = tokio::time::Instant::now() + WAIT;
        let db = loop {
            match Db::open_with(dir, db_options) {
                Ok(db) => break db,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let options = NodeOptions {
            bind_host: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            bridged: config.modern.keys().cloned().collect(),
            ..NodeOptions::default()
        };
        let stores = |c: &ilp_bridge::config::legacy::PeerConfig| -> Arc<dyn PeerStores> {
            Arc::new(RocksStores::new(
                Arc::clone(&db),
                &c.name,
                c.max_balance,
                c.min_balance,
            ))
        };
        let mut node = PeerNode::build(config.peers.clone(), stores, options)?;
        let mut bridge = BridgeNode::wire(
            &node,
            &config.peers,
            &config.modern,
            ModernStores::Rocks(Arc::clone(&db)),
            None,
        )
        .await?;
        node.launch().await?;
        bridge.launch().await;
        Ok(Bridge { node, bridge, db })
    }

    pub(crate) async fn stop(self) {
        self.bridge.shutdown().await;
        self.node.shutdown().await;
    }
}

pub(crate) fn bridge_toml(p_port: u16, m_btp: &str) -> String {
    format!(
        r#"
        [[peer]]
        name = "kit"
        options = {{ server = "btp+ws://:sp@127.0.0.1:{p_port}", maxBalance = "100000000000000", prefix = "test.kit.", store = true, info = {{ currencyCode = "USD", currencyScale = 9 }} }}
        [peer.modern]
        link = "btp-client"
        url = "{m_btp}"
        relation = "peer"
        asset_scale = 6
        ilp_address = "test.kit.bridge"
        "#
    )
}

pub(crate) async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> R<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub(crate) fn prepare(
    amount: u64,
    destination: &str,
    fulfillment: &[u8; 32],
    expires_in_ms: i64,
) -> R<Prepare> {
    Ok(Prepare {
        amount,
        expires_at: Timestamp::from_unix_millis(now_ms() + expires_in_ms).ok_or("time")?,
        execution_condition: Sha256::digest(fulfillment).into(),
        destination: Address::new(destination)?,
        data: Bytes::from_static(b"stream-ish"),
    })
}

pub(crate) fn preimage(tag: u8, i: u64) -> [u8; 32] {
    let mut f = [tag; 32];
    f[..8].copy_from_slice(&i.to_be_bytes());
    f
}
