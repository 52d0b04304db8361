//! Configuration: the node TOML ([`node`]), legacy plugin options JSON ([`legacy`]) and ILP Kit's `env.list`
//! ([`ilp_kit`]); a bridged peer's modern side ([`bridge`]); the node TOML's `[routing]` ([`routing`]), per-peer
//! limits ([`prepare_limits`]) and the settlement engine's section ([`settlement`]); [`redact`] keeps secrets
//! out of their `Debug` output; [`admin`] is the node's operator listener; [`error`] says why a configuration is refused. Nothing here imports the runtime
//! that applies it.

pub mod admin;
pub mod bridge;
pub mod error;
pub mod ilp_kit;
pub mod legacy;
pub mod legacy_options;
pub mod node;
pub mod peer_set;
pub mod prepare_limits;
pub mod redact;
pub mod routing;
pub mod settlement;
