//! # Settlement engine (RFC 38)
//!
//! ilp-bridge as an RFC 38 settlement engine: a connector (interledger-rs, the Java connector) asks it over HTTP
//! to settle; it settles through a channel module (`channel_modules`) by sending the module's claims to the
//! peer's engine through the connectors, and credits the connector with what the peer's engine sends back.
//! Protocol facts: docs/modern.md §1 (RFC 38), §5–§6 (the engines it works with), §8 (their known issues).
//!
//! Layout:
//! * [`engine`]: the [`Engine`] handle. Its parts, private: accounts (`account.rs`) and their lifecycle
//!   (`lifecycle.rs`), settle requests (`settle.rs`), messages from the peer's engine (`incoming.rs`), the
//!   settle and credit workers (`workers.rs`), idempotency keys (`idempotency.rs`), the purge (`purge.rs`);
//!   [`views`]: what the operator API shows; [`error`]: [`EngineError`];
//! * [`api`]: the RFC 38 HTTP API the connector calls; [`admin`]: the operator API; [`http`]: the accept loop
//!   and limits both servers share, `auth.rs` their bearer token; [`run()`] and [`start`]: the engine with its
//!   servers;
//! * [`quantity`]: Quantities, scale conversion with leftovers; [`store`]: the durable state and its key
//!   layout; [`host`]: the engine-mode `ContextHost` a module runs on;
//! * [`client`]: calls to the connector; [`wire`]: engine-to-engine messages.
//!
//! Neighbours: its configuration is [`crate::config::settlement::SeConfig`]; it stores through
//! [`crate::store::Db`]; its accounts hold their ledger identities in the node's registry
//! ([`crate::identity::IdentityRegistry`]); modules and the clock come from `channel_modules`. The OpenAPI
//! document of both APIs is `src/settlement/openapi.yaml` ([`admin::OPENAPI_YAML`]).

mod account;
pub mod admin;
pub mod api;
pub(crate) mod auth;
pub mod client;
pub mod engine;
pub mod error;
pub mod host;
pub mod http;
mod idempotency;
mod incoming;
mod lifecycle;
mod purge;
pub mod quantity;
mod run;
mod settle;
pub mod store;
pub mod views;
pub mod wire;
mod workers;

pub use engine::Engine;
pub use error::EngineError;
pub use run::{run, run_observed, start, SeError, SeHandle};
