//! Test doubles that integration tests, benchmarks and examples share. Compiled only with the `testing` cargo
//! feature (this crate's own tests, benchmarks and examples get it through a dev-dependency on the crate
//! itself), so a release build of the binary holds none of it. It only ever talks to loopback addresses it is
//! given.
//!
//! The feature also turns on the test doubles that live beside what they stand in for: the in-memory stores
//! of the settlement engine (`MemorySeStore`, `MemoryModuleLogs`) and peer mode's `MemoryLink`; the failure
//! injection of the stores (`Db::inject_write_failures`, `MemorySeStore::fail_next_writes`,
//! `IdentityRegistry::fail_next_writes`); the test hooks `Engine::forget_cached_idempotency_keys`,
//! `Trustline::armed_expiries` and `RocksTransferLog::overlay_len`; and `channel_modules::testing`, whose
//! `store_conformance` suite runs on any TransferLog / MaxValueTracker implementation
//! (`tests/store_conformance.rs` runs it on both of ours).
//!
//! * [`mock_connector`]: a mock RFC 38 accounting system that behaves like interledger-rs (credits are recorded,
//!   messages are handed to a linked connector's engine);
//! * [`ilp_node`]: a mock interledger-rs 1.0 node (accounts, balances, BTP/2.0 and ILP-over-HTTP, IL-DCP, CCP,
//!   `peer.settle`, the settlement API), the modern peer of the bridge;
//! * [`settle_client`] and `settlement_api`: interledger-rs's settlement client and the connector-side RFC 38
//!   routes, shared by both;
//! * [`TokioClock`]: a clock that tokio's paused time moves.

mod clock;
pub mod ilp_node;
pub mod mock_connector;
pub use channel_modules::testing::store_conformance;
pub mod settle_client;
pub(crate) mod settlement_api;

pub use clock::TokioClock;
