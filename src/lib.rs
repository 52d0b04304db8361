//! # ilp-bridge
//!
//! One program that lets legacy Interledger deployments (ILP Kit, `ilp-plugin-payment-channel-framework`,
//! BTP/1.0, ILP v1) and modern ones (interledger-rs, the Java connector: BTP/2.0, ILPv4, RFC 38 settlement
//! engines) talk to each other: a BTP/1.0 peer byte-compatible with the legacy plugin, a bridge from such a peer
//! to a modern connector, and an RFC 38 settlement engine, each running the channel modules of
//! `channel_modules`. The codecs are the `btp` crate's.
//!
//! Layout (`ARCHITECTURE.md` has the map and the rules between the parts):
//! * [`config`]: the node TOML, legacy plugin options and ILP Kit's `env.list`, validated; imports no runtime;
//! * [`store`]: the node's RocksDB database and the durable transfer logs and max-value trackers on it;
//! * [`identity`]: the node's ledger-identity registry, shared by both host modes;
//! * [`peer`]: BTP/1.0 peers (peer mode): trustlines, their transport and routing between them;
//! * [`settlement`]: the RFC 38 settlement engine (engine mode);
//! * [`bridge`]: bridge mode, a legacy peer paired with a modern connector;
//! * [`fd_budget`]: the file descriptors the node may use, split between its parts;
//! * `testing` (feature `testing`): test doubles shared by tests, benchmarks and examples.

pub mod admin;
pub mod bridge;
pub mod config;
pub mod fd_budget;
pub mod identity;
pub mod migrate;
pub mod peer;
pub mod settlement;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
