//! Bridge mode: a legacy BTP/1.0 peer and a modern ILPv4 connector paying each other through this node.
//!
//! * [`pair`]: [`BridgedPair`], one legacy peer and the modern connector that stands in for it; the flows are
//!   in `to_modern` (P → M), `to_legacy` (M → P), `peer_protocols` (IL-DCP, CCP), `quote` (ILQP) and
//!   [`recover`] (after a restart);
//! * [`translate`]: how a packet crosses (ILP v1 ⇄ ILPv4), the contract in one table; [`scale`]: amounts
//!   between the two sides' scales; [`codes`]: ILP error code names of both generations;
//! * [`modern`]: the links to the modern connector (BTP/2.0 either way, ILP-over-HTTP);
//! * [`settlement`]: the pair's module settling with P and standing in for P's settlement engine towards M
//!   (RFC 38), with the reconciliation ledger; [`run`]: wiring it all from the configuration.

pub mod codes;
pub mod modern;
pub mod pair;
pub mod peer_protocols;
pub mod quote;
pub mod recover;
pub mod run;
pub mod scale;
pub mod settlement;
mod to_legacy;
mod to_modern;
pub mod translate;

pub use pair::{Books, BridgedPair, PairSettings, Relation};
