//! [`NodeIdentities`]: peer mode's view of the node's ledger-identity registry ([`crate::identity`]): every
//! trustline of a node holds its ledger identities there under the name `peer:<name>` ([`peer_holder`]), and
//! peers no longer configured let go of theirs at start ([`NodeIdentities::release_unconfigured`]).

use std::collections::HashSet;
use std::sync::Arc;

use channel_modules::identity::{IdentityOrigin, IdentityRecord};
use channel_modules::ModuleError;

use crate::identity::IdentityRegistry;
use crate::store::Db;

/// How a trustline's peer name is recorded as an identity holder: `peer:<name>`, never equal to a settlement
/// engine's account ID (those never hold a `:`), so both host modes share one registry without mixing their
/// accounts up.
pub fn peer_holder(peer: &str) -> String {
    format!("peer:{peer}")
}

/// The node-wide registry of ledger identities in peer mode
/// ([`ContextHost::hold_identity`](channel_modules::ContextHost::hold_identity)): every trustline of one
/// [`PeerNode`](super::PeerNode) shares it (through [`TrustlineOptions`](super::trustline::TrustlineOptions)),
/// so two peers can never both be credited for the same on-chain payments or channel claims. It is the node's
/// [`IdentityRegistry`], with trustlines named [`peer_holder`].
#[derive(Debug)]
pub struct NodeIdentities {
    registry: Arc<IdentityRegistry>,
}

impl NodeIdentities {
    /// Peer mode's view of `registry`.
    pub fn new(registry: Arc<IdentityRegistry>) -> Arc<Self> {
        Arc::new(NodeIdentities { registry })
    }

    /// A registry in memory (not durable: tests, and trustlines built outside a [`PeerNode`](super::PeerNode)).
    pub fn memory() -> Arc<Self> {
        Self::new(IdentityRegistry::memory())
    }

    /// The durable registry in `db` (a node: every trustline shares its one [`Db`]).
    pub fn on_db(db: Arc<Db>) -> Arc<Self> {
        Self::new(IdentityRegistry::on_db(db))
    }

    /// The stored record of `identity`, if any.
    pub fn record(&self, identity: &str) -> Result<Option<IdentityRecord>, ModuleError> {
        Ok(self.registry.record(identity)?)
    }

    /// Lets go of what trustline peers that are no longer configured held, once the node knows its whole
    /// configuration (`peers`: the names of every configured peer): a renamed or removed peer's hold (proven or
    /// configured) is deleted, and it leaves the contests it was in ([`IdentityRegistry::release`]). Otherwise
    /// a peer renamed in the configuration would be refused its own identity for good. Engine accounts' records
    /// are not touched. Returns how many records changed; each change is logged at warn.
    pub async fn release_unconfigured(&self, peers: &[String]) -> Result<usize, ModuleError> {
        let configured: HashSet<String> = peers.iter().map(|p| peer_holder(p)).collect();
        let released = self
            .registry
            .release(|holder| holder.starts_with("peer:") && !configured.contains(holder))
            .await?;
        for change in &released {
            tracing::warn!(
                identity = %change.identity, previous = %change.previous.to_json(),
                now = %change.now.as_ref().map(IdentityRecord::to_json).unwrap_or_default(),
                "ledger identity released by a peer that is no longer configured"
            );
        }
        Ok(released.len())
    }

    /// Has trustline `peer` hold `identity` with `origin` ([`IdentityRegistry::hold_identity`], as
    /// [`peer_holder`]`(peer)`).
    pub async fn hold_identity(
        &self,
        identity: &str,
        peer: &str,
        origin: IdentityOrigin,
    ) -> Result<(), ModuleError> {
        self.registry
            .hold_identity(identity, &peer_holder(peer), origin)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVEN: IdentityOrigin = IdentityOrigin::Proven;
    const CONFIGURED: IdentityOrigin = IdentityOrigin::Configured;

    fn refused_naming(result: &Result<(), ModuleError>, names: &[&str]) -> bool {
        matches!(result, Err(ModuleError::NotAccepted(m)) if names.iter().all(|n| m.contains(n)))
    }

    /// A node running a settlement engine and trustline peers on one database keeps one registry: an identity
    /// an engine account holds cannot also be held by a trustline, and the other way round.
    #[tokio::test]
    async fn engine_accounts_and_trustlines_of_one_database_share_the_registry(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        // What the engine's accounts hold through (their IDs never hold a `:`).
        let engine = IdentityRegistry::on_db(Arc::clone(&db));
        let trustlines = NodeIdentities::on_db(Arc::clone(&db));

        engine.hold_identity("eth:1:0xabc", "acct", PROVEN).await?;
        let refused = trustlines
            .hold_identity("eth:1:0xabc", "alice", PROVEN)
            .await;
        assert!(
            refused_naming(&refused, &["contested", "acct", "peer:alice"]),
            "{refused:?}"
        );
        assert!(engine
            .hold_identity("eth:1:0xabc", "acct", PROVEN)
            .await
            .is_err());

        trustlines
            .hold_identity("xrp:ABC", "bob", CONFIGURED)
            .await?;
        let refused = engine.hold_identity("xrp:ABC", "acct", PROVEN).await;
        assert!(refused_naming(&refused, &["peer:bob"]), "{refused:?}");
        // Both sides read the same records.
        let listed = engine.records()?;
        assert_eq!(listed.len(), 2, "{listed:?}");
        Ok(())
    }

    /// A trustline peer renamed or removed in the configuration lets go of what it held, so the renamed peer
    /// is not refused its own identity for good; engine accounts and configured peers keep theirs.
    #[tokio::test]
    async fn identities_of_peers_no_longer_configured_are_released(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        let engine = IdentityRegistry::on_db(Arc::clone(&db));
        let node = NodeIdentities::on_db(Arc::clone(&db));
        node.hold_identity("eth:1:0xa", "alice", CONFIGURED).await?;
        node.hold_identity("eth:1:0xb", "bob", PROVEN).await?;
        node.hold_identity("xrp:C", "bob", PROVEN).await?;
        assert!(node.hold_identity("xrp:C", "carol", PROVEN).await.is_err());
        engine.hold_identity("xrp:D", "acct", PROVEN).await?;
        assert!(node.hold_identity("xrp:D", "dave", PROVEN).await.is_err());

        // alice is renamed alice-eth; bob is kept; carol and dave are gone.
        let configured = ["alice-eth".to_owned(), "bob".to_owned()];
        assert_eq!(node.release_unconfigured(&configured).await?, 3);
        node.hold_identity("eth:1:0xa", "alice-eth", CONFIGURED)
            .await?;
        node.hold_identity("eth:1:0xb", "bob", PROVEN).await?;
        // bob is left alone in the contest over xrp:C: it holds it again.
        node.hold_identity("xrp:C", "bob", PROVEN).await?;
        // The engine account's hold stands.
        engine.hold_identity("xrp:D", "acct", PROVEN).await?;
        assert!(node.hold_identity("xrp:D", "bob", PROVEN).await.is_err());
        // Nothing left to release (bob is configured, so its contest stands).
        assert_eq!(node.release_unconfigured(&configured).await?, 0);
        Ok(())
    }
}
