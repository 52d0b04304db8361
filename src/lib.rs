//! # ilp-bridge
//!
//! One program that lets legacy Interledger deployments (ILP Kit, `ilp-plugin-payment-channel-framework`,
//! BTP/1.0) and modern ones (interledger-rs, the Java connector: BTP/2.0, ILPv4, RFC 38 settlement engines) talk
//! to each other. See `ARCHITECTURE.md` for the map.

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
