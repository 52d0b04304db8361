//! Test support that integration tests and benchmarks share. Part of the library (not `cfg(test)`) so `tests/`,
//! `benches/` and `examples/` can use it; it only ever talks to loopback addresses it is given.
//!
//! * [`mock_connector`]: a mock RFC 38 accounting system that behaves like interledger-rs (credits are recorded,
//!   messages are handed to a linked connector's engine);
//! * [`ilp_node`]: a mock interledger-rs 1.0 node (accounts, balances, BTP/2.0 and ILP-over-HTTP, IL-DCP, CCP,
//!   `peer.settle`, the settlement API), the modern peer of the bridge;
//! * [`settle_client`] and [`settlement_api`]: interledger-rs's settlement client and the connector-side RFC 38
//!   routes, shared by both.

pub mod ilp_node;
pub mod mock_connector;
pub mod settle_client;
pub(crate) mod settlement_api;
