//! Configuration: the node TOML ([`node`]), legacy plugin options JSON ([`legacy`]) and ILP Kit's `env.list` ([`ilp_kit`]);
//! the settlement engine's section ([`settlement`]); [`redact`] keeps secrets out of their `Debug` output.

pub mod ilp_kit;
pub mod legacy;
pub mod node;
pub mod redact;
pub mod settlement;
